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

/// Every node passes update points until one admits the last of them: members meet at each
/// point (a barrier), a node still joining waits in its call until admitted, and the point that
/// admits it returns the full ring to everyone at once. Checks one view, one ring.
private func everyoneInOneRing(_ nodes: [MembershipNode], coordinator: MembershipNode, joiners: Int) async throws {
    let everyone = Set(nodes.map(\.localId))
    let rings = try await within(60, "one ring of \(nodes.count)") {
        try await withThrowingTaskGroup(of: (Int, RingView).self) { group in
            for (i, node) in nodes.enumerated() {
                group.addTask {
                    while true {
                        let ring = try await node.updateTopology()
                        if Set(ring.members.map(\.id)) == everyone { return (i, ring) }
                    }
                }
            }
            var out = [RingView?](repeating: nil, count: nodes.count)
            for try await (i, ring) in group { out[i] = ring }
            return out.map { $0! }
        }
    }
    #expect(rings.allSatisfy { $0 == rings[0] }, "\(rings)")
    #expect(coordinator.status.role == .coordinator)
}

@Test func aMemberRemovedWhileFrozenRejoinsByItselfAfterThawing() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let rejoining = Task { try await waitForEvent(nodes[2], 60, "rejoining", isRole(.rejoining)) }
        nodes[2].freezeForTesting()
        try await waitUntil(30, "removal of the frozen member", watching: nodes) { nodes[0].status.epoch == 3 && nodes[1].status.epoch == 3 }
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
        // (Under load node 2 may itself be timed out and rejoin on the way: any epoch will do.)
        try await waitUntil(30, "the failover view", watching: nodes) {
            nodes[2].view?.coordinator == nodes[1].localId && nodes[2].status.role == .member
        }
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
        try await waitUntil(15, "the joiner registered", watching: nodes) { nodes[0].status.pendingJoiners == 1 }
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
        // Joining, and trying the seed that is down for a while.
        try await waitForEvent(joiner, 30, "the joiner tries the seed", isRole(.joining))
        try await Task.sleep(for: .milliseconds(1000))
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

/// Forking after one heartbeat timeout without a quorum (3 s), to keep the tests short.
let forkSoon: MembershipOptions = {
    var o = fastOptions
    o.forkAfterTimeouts = 1
    return o
}()

@Test func aTwoMemberViewThatLosesItsCoordinatorGoesOnAsANewLine() async throws {
    let (nodes, _) = try await makeCluster(2, options: forkSoon)
    let joiner = makeNode(5, options: forkSoon)
    try await cleanUp({ await shutdownAll(nodes + [joiner]) }) {
        let line = try #require(nodes[1].view?.line)
        let started = ContinuousClock.now
        await nodes[0].shutdown()
        let ring = try await within(30, "the survivor's update point") { try await nodes[1].updateTopology() }
        #expect(ring.members.map(\.id) == [nodes[1].localId])
        // The bound: a heartbeat timeout of failover plus forkAfter, with slack for a busy machine.
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(nodes[1].status.forks == 1 && nodes[1].status.role == .coordinator)
        #expect(nodes[1].view?.line != line)
        // The new line admits joiners.
        _ = try await joiner.start(dataPort: 41005, seed: ("127.0.0.1", nodes[1].status.view!.nodes[0].controlPort))
        try await everyoneInOneRing([nodes[1], joiner], coordinator: nodes[1], joiners: 1)
    }
}

@Test func aViewThatShrinksOneDeathAtATimeNeverStalls() async throws {
    let (nodes, _) = try await makeCluster(4, options: forkSoon)
    try await cleanUp({ await shutdownAll(nodes) }) {
        // Members die one by one, the coordinator last: each time the survivors meet again.
        for (victim, alive) in [(3, [0, 1, 2]), (2, [0, 1]), (0, [1])] {
            await nodes[victim].shutdown()
            let survivors = alive.map { nodes[$0] }
            let rings = try await within(40, "survivors \(alive) meet") {
                while true {
                    let rings = try await updateAll(survivors, seconds: 40)
                    if rings[0].count == alive.count { return rings }
                }
            }
            #expect(rings.allSatisfy { $0 == rings[0] } && rings[0].members.map(\.id) == alive.map { nodes[$0].localId })
        }
        #expect(nodes[1].status.forks == 1)
    }
}

/// A 2-2 split: the coordinator's half goes on in the original line (half of the view with its
/// coordinator is a quorum), the other half forks after the bound. Once the network heals, the
/// lines find each other and become one view again, with no human action.
@Test func aSplitClusterForksAndItsLinesMergeWhenTheNetworkHeals() async throws {
    let (nodes, _) = try await makeCluster(4, options: forkSoon)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let original = try #require(nodes[0].view?.line)
        let left = Set(nodes[0..<2].map(\.localId))
        let right = Set(nodes[2..<4].map(\.localId))
        for node in nodes[0..<2] { node.dropTrafficForTesting(with: right) }
        for node in nodes[2..<4] { node.dropTrafficForTesting(with: left) }
        try await waitUntil(30, "both halves commit a view of their own", watching: nodes) {
            nodes[0].view?.count == 2 && nodes[1].view == nodes[0].view
                && nodes[2].view?.count == 2 && nodes[3].view == nodes[2].view
        }
        #expect(nodes[0].view?.line == original)
        let forked = try #require(nodes[2].view?.line)
        #expect(forked != original)
        #expect(nodes[2...].contains { $0.status.forks == 1 })
        // Both halves reach their own update points.
        _ = try await updateAll(Array(nodes[0..<2]))
        _ = try await updateAll(Array(nodes[2..<4]))
        for node in nodes { node.dropTrafficForTesting(with: []) }
        // The loser's two nodes register at the winner's coordinator, and one update point later
        // all four share one view of one line.
        try await waitUntil(60, "the lines meet", watching: nodes) { nodes.contains { $0.status.pendingJoiners == 2 } }
        let rings = try await updateAll(nodes)
        #expect(rings.allSatisfy { $0 == rings[0] } && rings[0].count == 4, "\(rings)")
        let lines = Set(nodes.compactMap { $0.view?.line })
        #expect(lines.count == 1 && (lines.first == original || lines.first == forked))
        #expect(nodes.map(\.status.merges).reduce(0, +) == 1)
    }
}

/// What retrying cannot fix ends `start()` at once with one clear error: a joiner whose settings
/// differ from the cluster's (another model, say) is refused, and the cluster is not disturbed.
@Test func aJoinerWithOtherSettingsIsRefusedAtOnce() async throws {
    let founder = makeNode(0)
    let fits = makeNode(1)
    let other = makeNode(2)
    try await cleanUp({ await shutdownAll([founder, fits, other]) }) {
        let port = try await founder.start(dataPort: 41200, seed: nil, settings: "model=moe parameters=100")
        _ = try await fits.start(dataPort: 41201, seed: ("127.0.0.1", port), settings: "model=moe parameters=100")
        let started = ContinuousClock.now
        do {
            _ = try await within(30, "refusal") {
                try await other.start(dataPort: 41202, seed: ("127.0.0.1", port), settings: "model=gin parameters=7")
            }
            Issue.record("a joiner with other settings was registered")
        } catch let error as MembershipError {
            #expect(error.code == .incompatible)
            #expect(error.message.contains("model=gin parameters=7") && error.message.contains("model=moe parameters=100"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        try await everyoneInOneRing([founder, fits], coordinator: founder, joiners: 1)
    }
}
