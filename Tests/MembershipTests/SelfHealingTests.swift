import Collectives
import Foundation
import NIOPosix
import Testing
import Transport

// The faults that once needed a human (issue: a frozen member removed and exiting, a frozen
// coordinator asking for a quorum for ever, joiners giving up): each heals by itself.

/// Waits for the first event of `node` that `matches` (the stream starts with the current role
/// and view, so a condition that already holds is seen at once).
func waitForEvent(_ node: MembershipNode, _ seconds: Double, _ what: String,
                  _ matches: @escaping @Sendable (MembershipEvent) -> Bool) async throws {
    let events = node.events()
    try await within(seconds, what) {
        for await event in events where matches(event) { return }
        throw TimedOut(what: "\(what): the node stopped")
    }
}

func isRole(_ role: MembershipStatus.Role) -> @Sendable (MembershipEvent) -> Bool {
    { if case .roleChanged(role, _) = $0 { true } else { false } }
}

/// Admits whoever registered, then checks that every node is in one view with one ring.
private func everyoneInOneRing(_ nodes: [MembershipNode], coordinator: MembershipNode, joiners: Int) async throws {
    try await waitUntil(30, "\(joiners) joiner(s) registered") { coordinator.status.pendingJoiners == joiners }
    let rings = try await updateAll(nodes)
    #expect(rings.allSatisfy { $0 == rings[0] }, "\(rings)")
    #expect(Set(rings[0].members.map(\.id)) == Set(nodes.map(\.localId)))
}

@Test func aMemberRemovedWhileFrozenRejoinsByItselfAfterThawing() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let rejoining = Task { try await waitForEvent(nodes[2], 60, "rejoining", isRole(.rejoining)) }
        nodes[2].freezeForTesting()
        try await waitUntil(30, "removal of the frozen member") { nodes[0].status.epoch == 3 && nodes[1].status.epoch == 3 }
        nodes[2].thawForTesting()
        try await rejoining.value
        #expect(nodes[2].status.rejoins == 1)
        #expect(nodes[2].status.rejoinReason?.contains("removed") == true, "\(String(describing: nodes[2].status.rejoinReason))")
        try await everyoneInOneRing(nodes, coordinator: nodes[0], joiners: 1)
        #expect(nodes[2].status.role == .member && nodes[2].status.epoch == 4)
    }
}

@Test func aFrozenCoordinatorReplacedByItsSuccessorLearnsOfTheNewerViewAndRejoins() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        nodes[0].freezeForTesting()
        try await waitForEvent(nodes[1], 30, "the successor takes over", isRole(.coordinator))
        try await waitUntil(30, "the failover view") { nodes[2].status.epoch == 3 && nodes[2].view?.coordinator == nodes[1].localId }
        let back = Task { try await waitForEvent(nodes[0], 60, "the old coordinator rejoins", isRole(.rejoining)) }
        nodes[0].thawForTesting()
        try await back.value
        #expect(nodes[0].status.rejoinReason != nil)
        try await everyoneInOneRing(nodes, coordinator: nodes[1], joiners: 1)
        #expect(nodes[0].view?.coordinator == nodes[1].localId && nodes[0].status.role == .member)
        #expect(nodes[1].status.role == .coordinator)
    }
}

@Test func aJoinerWhoseCoordinatorDiesBeforeAdmissionJoinsItsSuccessor() async throws {
    let (nodes, ports) = try await makeCluster(3)
    let joiner = makeNode(9)
    try await cleanUp({ await shutdownAll(nodes + [joiner]) }) {
        // Through a member: redirected to the coordinator, which registers it.
        _ = try await joiner.start(dataPort: 41009, seed: ("127.0.0.1", ports[1]))
        try await waitUntil(15, "the joiner registered") { nodes[0].status.pendingJoiners == 1 }
        await nodes[0].shutdown()
        try await waitForEvent(nodes[1], 30, "the successor takes over", isRole(.coordinator))
        let survivors = [nodes[1], nodes[2], joiner]
        try await everyoneInOneRing(survivors, coordinator: nodes[1], joiners: 1)
        #expect(joiner.status.role == .member)
    }
}

/// A free port on loopback (bound, then released).
private func freePort() async throws -> Int {
    let probe = makeNode(90)
    let port = try await probe.start(dataPort: 0, seed: nil)
    await probe.shutdown()
    return port
}

@Test func aSeedThatIsDownAtStartIsTriedUntilItComesUp() async throws {
    let port = try await freePort()
    let founder = makeNode(0)
    let joiner = makeNode(1)
    try await cleanUp({ await shutdownAll([founder, joiner]) }) {
        let joined = Task { try await joiner.start(dataPort: 41101, seed: ("127.0.0.1", port)) }
        try await Task.sleep(for: .milliseconds(1500))
        #expect(joiner.status.role == .joining)
        _ = try await founder.start(controlPort: port, dataPort: 41100, seed: nil)
        _ = try await within(30, "the joiner registers once the seed is up") { try await joined.value }
        try await everyoneInOneRing([founder, joiner], coordinator: founder, joiners: 1)
    }
}

@Test func aJoinTimeoutGivesUpOnASeedThatNeverComes() async throws {
    let port = try await freePort()
    var options = fastOptions
    options.joinTimeout = .seconds(1)
    let joiner = makeNode(1, options: options)
    try await cleanUp({ await joiner.shutdown() }) {
        let started = ContinuousClock.now
        await #expect(throws: MembershipError.self) {
            _ = try await within(30, "give up") { try await joiner.start(dataPort: 41102, seed: ("127.0.0.1", port)) }
        }
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}
