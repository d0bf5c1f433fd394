@testable import Collectives
import Foundation
import InMemoryLogging
import Logging
import NIOConcurrencyHelpers
import PeerTestSupport
import Testing
import Transport

// Control messages are taken only from the sender and in the direction the protocol allows
// (issue 12): a node holding the cluster key but outside the view, or a member in the wrong
// role, is refused with a log line naming it.

private func node(_ id: UInt64) -> NodeInfo {
    NodeInfo(id: id, controlHost: "h\(id)", controlPort: Int(7000 + id), dataHost: "h\(id)", dataPort: Int(8000 + id), inRing: true)
}

private let t0 = ContinuousClock.now
private let view2 = MembershipView(epoch: 2, coordinator: 1, nodes: [node(1), node(2), node(3), node(4)])

private func memberOfView2(_ me: UInt64) -> MemberMachine {
    var m = MemberMachine(me: node(me), interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    _ = m.join(seedHost: "h1", seedPort: 7001, now: t0)
    _ = m.linkOpened(1, now: t0)
    _ = m.receive(.commit(view2, departed: []), from: 1, now: t0)
    return m
}

private func isRefusal(_ actions: [MemberMachine.Action], from: UInt64) -> Bool {
    actions.count == 1 && { if case .refused(from, _) = actions[0] { true } else { false } }()
}

private func isRefusal(_ actions: [CoordinatorMachine.Action], from: UInt64) -> Bool {
    actions.contains { if case .refused(from, _) = $0 { true } else { false } }
}

@Test func aMemberRefusesProposalsFromAStrangerAndFromAMemberInTheWrongRole() {
    var m = memberOfView2(3)
    let empty = MembershipView(epoch: 3, line: view2.line, coordinator: 99, nodes: [])
    // A stranger (99), and member 4, which is neither the coordinator (1) nor its successor (2).
    #expect(isRefusal(m.receive(.propose(empty), from: 99, now: t0), from: 99))
    let byFour = MembershipView(epoch: 3, coordinator: 4, nodes: [node(3), node(4)])
    #expect(isRefusal(m.receive(.propose(byFour), from: 4, now: t0), from: 4))
    // Nothing was acknowledged: the coordinator's own proposal still gets this member's vote.
    let real = MembershipView(epoch: 3, coordinator: 1, nodes: [node(1), node(2), node(3)])
    #expect(m.receive(.propose(real), from: 1, now: t0) == [.send(1, .ack(epoch: 3, accepted: true, acked: nil))])
}

@Test func aMemberRefusesCommitRemovedProceedAndDecisionNotFromItsCoordinator() {
    var m = memberOfView2(3)
    _ = m.requestUpdate()
    let foreign = MembershipView(epoch: 9, coordinator: 99, nodes: [node(99)])
    for sender: UInt64 in [99, 2] {
        #expect(isRefusal(m.receive(.commit(foreign, departed: []), from: sender, now: t0), from: sender))
        #expect(isRefusal(m.receive(.removed(reason: "go away"), from: sender, now: t0), from: sender))
        #expect(isRefusal(m.receive(.proceed(epoch: 2, point: 1), from: sender, now: t0), from: sender))
        #expect(isRefusal(m.receive(.decision(RoundKey(epoch: 2, tag: 1), commit: true), from: sender, now: t0), from: sender))
        #expect(isRefusal(m.receive(.merge(foreign), from: sender, now: t0), from: sender))
        #expect(isRefusal(m.receive(.redirect(id: 99, host: "evil", port: 1), from: sender, now: t0), from: sender))
    }
    #expect(m.phase == .member && m.view == view2)
    // A line message is taken only from a node speaking for a line it is in.
    #expect(isRefusal(m.receive(.line(foreign, reply: false), from: 98, now: t0), from: 98))
}

@Test func aCoordinatorRefusesStaleOutcomeAndDecisionsFromOutsideTheView() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    // A stranger claims a newer view of this line: no deposition.
    let newer = MembershipView(epoch: 3, line: view2.line, coordinator: 99, nodes: [node(99)])
    #expect(isRefusal(c.receive(.stale(newer), from: 99, now: t0), from: 99))
    // A member naming a newer view it is not in: refused too.
    #expect(isRefusal(c.receive(.stale(newer), from: 2, now: t0), from: 2))
    // A stranger's "failed" report of the current epoch's round, or of the next epoch's, decides
    // nothing for the ring: the members' own reports still commit it.
    let key = RoundKey(epoch: 2, tag: 5)
    let stranger = c.receive(.outcome(key, done: false), from: 99, now: t0)
    #expect(isRefusal(stranger, from: 99) && !stranger.contains(.send(2, .decision(key, commit: false))))
    #expect(isRefusal(c.receive(.outcome(RoundKey(epoch: 3, tag: 5), done: false), from: 99, now: t0), from: 99))
    // Decisions carried by a stranger's rejoin are not taken.
    let carried = c.receive(.rejoin(node(99), epoch: 2, decisions: [.init(key: RoundKey(epoch: 2, tag: 6), commit: true)]),
                            from: 99, now: t0)
    #expect(isRefusal(carried, from: 99))
    for id: UInt64 in [1, 2, 3] { _ = c.receive(.outcome(key, done: true), from: id, now: t0) }
    #expect(c.receive(.outcome(key, done: true), from: 4, now: t0) == [1, 2, 3, 4].map { .send($0, .decision(key, commit: true)) })
    let six = RoundKey(epoch: 2, tag: 6)
    #expect(c.receive(.outcome(six, done: false), from: 2, now: t0).contains(.send(2, .decision(six, commit: false))))
    // An ack and an update request from a stranger are refused; the coordinator is still the coordinator.
    #expect(isRefusal(c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 99, now: t0), from: 99))
    #expect(isRefusal(c.receive(.updateRequest(epoch: 2), from: 99, now: t0), from: 99))
    #expect(c.view == view2)
}

/// What forges the messages: a node holding the key, with a node id of its choosing.
private final class Sink: ConnectionDelegate, @unchecked Sendable {
    let received = NIOLockedValueBox<[MembershipMessage]>([])
    func connection(_ connection: Connection, received event: FrameEvent) {
        if case .frame(_, let payload) = event, let message = try? MembershipMessage.decode(Array(payload.readableBytesView)) {
            received.withLockedValue { $0.append(message) }
        }
    }
    func connectionWritabilityChanged(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, error: (any Error)?) {}
}

/// The attack end to end: a stranger with the key sends the coordinator a `propose` of
/// the next epoch with an empty view, and a member a `commit` of a foreign view and a `removed`.
/// Both refuse with a log line naming it, the member stays, and a joiner is still admitted.
@Test func forgedProposeCommitAndRemovedFromAStrangerAreRefusedAndTheClusterGoesOn() async throws {
    let coordinatorLogs = InMemoryLogHandler()
    let memberLogs = InMemoryLogHandler()
    var quiet = fastOptions
    quiet.transport.handshakeTimeout = .seconds(10)
    let coordinator = MembershipNode(localId: 0xB000, key: testKey, options: quiet,
                                     logger: Logger(label: "c", factory: { _ in coordinatorLogs }))
    let member = MembershipNode(localId: 0xB001, key: testKey, options: quiet, logger: Logger(label: "m", factory: { _ in memberLogs }))
    let joiner = makeNode(2)
    let group = TransportNode.makeEventLoopGroup(threads: 1)
    try await cleanUp({
        await shutdownAll([coordinator, member, joiner])
        try? await group.shutdownGracefully()
    }) {
        let port = try await coordinator.start(dataPort: 40000, seed: nil)
        let memberPort = try await member.start(dataPort: 40001, seed: ("127.0.0.1", port))
        _ = try await updateAll([coordinator, member])
        let view = try #require(coordinator.view)
        #expect(view.epoch == 2)

        let stranger = TransportNode(localId: 0xBAD, key: testKey, group: group, logger: Logger(label: "stranger"))
        let toCoordinator = try await stranger.dial(host: "127.0.0.1", port: port, purpose: .control, delegate: Sink())
        let empty = MembershipView(epoch: view.epoch + 1, line: view.line, coordinator: 0xBAD, nodes: [])
        try await toCoordinator.send(.control, bytes: MembershipMessage.propose(empty).encode()).get()
        let toMember = try await stranger.dial(host: "127.0.0.1", port: memberPort, purpose: .control, delegate: Sink())
        let foreign = MembershipView(epoch: view.epoch + 5, line: view.line, coordinator: 0xBAD,
                                     nodes: [NodeInfo(id: 0xBAD, controlHost: "127.0.0.1", controlPort: 1, dataHost: "127.0.0.1",
                                                      dataPort: 1, inRing: true)])
        try await toMember.send(.control, bytes: MembershipMessage.commit(foreign, departed: []).encode()).get()
        try await toMember.send(.control, bytes: MembershipMessage.removed(reason: "forged\nline").encode()).get()

        try await pollUntil(15, "both log the refusals") {
            coordinatorLogs.entries.contains { "\($0.message)".contains("refused a control message from 0000000000000bad") }
                && memberLogs.entries.filter { "\($0.message)".contains("refused a control message from 0000000000000bad") }.count >= 2
        }
        #expect(member.view == view && member.status.role == .member)

        // Not wedged: a joiner is admitted at the next update point.
        _ = try await joiner.start(dataPort: 40002, seed: ("127.0.0.1", port))
        let rings = try await updateAll([coordinator, member, joiner])
        #expect(rings.allSatisfy { $0.members.count == 3 })
        toCoordinator.close()
        toMember.close()
    }
}
