import Collectives
import Foundation
import Testing

@Test func aGracefulLeaveMakesANewEpochWithoutWaitingForATimeout() async throws {
    var slow = fastOptions
    slow.heartbeatTimeout = .seconds(30)   // a leave must not depend on failure detection
    let (nodes, _) = try await makeCluster(3, options: slow)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let started = ContinuousClock.now
        await nodes[2].leave()
        try await waitUntil(15, "the others commit the view without the leaver", watching: nodes) {
            nodes[0].status.epoch == 3 && nodes[1].status.epoch == 3
        }
        // Far below the 30 s heartbeat timeout (not a speed figure: the machine may be loaded).
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(nodes[0].view?.ids == [nodes[0].localId, nodes[1].localId])
        #expect(nodes[1].view == nodes[0].view)
        #expect(nodes[0].status.leaves == 1 && nodes[0].status.deaths == 0)
        #expect(nodes[2].status.role == .left)
        let rings = try await updateAll(Array(nodes[0..<2]))
        #expect(rings[0] == rings[1] && rings[0].count == 2)
    }
}

@Test func leaveGivesUpAfterLeaveTimeoutWhenNobodyAnswers() async throws {
    let (nodes, _) = try await makeCluster(2)
    try await cleanUp({ await shutdownAll(nodes) }) {
        nodes[0].freezeForTesting()
        let started = ContinuousClock.now
        await nodes[1].leave()
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(1900) && took < .seconds(20), "leaveTimeout is 2 s; took \(took)")
        #expect(nodes[1].status.role == .left)
    }
}

@Test func theCoordinatorLeavingHandsItsRoleToTheNextNode() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        await nodes[0].leave()
        try await waitUntil(15, "handover", watching: nodes) {
            nodes[1].status.role == .coordinator && nodes[2].view?.coordinator == nodes[1].localId
        }
        #expect(nodes[1].status.epoch == 3 && nodes[1].status.leaves == 1)
        try await Task.sleep(for: .seconds(3))   // longer than the timeout: nobody is timed out
        #expect(nodes[1].status.role == .coordinator && nodes[2].status.epoch == 3)
        let rings = try await updateAll(Array(nodes[1...]))
        #expect(rings[0] == rings[1] && rings[0].members.map(\.id) == [nodes[1].localId, nodes[2].localId])
    }
}

@Test func aCrashedMemberIsRemovedAtOnce() async throws {
    var slow = fastOptions
    slow.heartbeatTimeout = .seconds(30)   // the closed TCP link alone must suffice
    let (nodes, _) = try await makeCluster(3, options: slow)
    try await cleanUp({ await shutdownAll(nodes) }) {
        await nodes[1].shutdown()
        try await waitUntil(15, "removal of the crashed member", watching: nodes) { nodes[0].status.epoch == 3 && nodes[2].status.epoch == 3 }
        #expect(nodes[2].view?.ids == [nodes[0].localId, nodes[2].localId])
        #expect(nodes[0].status.deaths == 1 && nodes[2].status.deaths == 1 && nodes[0].status.leaves == 0)
    }
}

@Test func aMemberThatStopsHeartbeatingIsRemovedWithinTheTimeout() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let started = ContinuousClock.now
        nodes[2].freezeForTesting()   // links stay open, as with SIGSTOP
        try await waitUntil(15, "removal of the frozen member", watching: nodes) { nodes[0].status.epoch == 3 && nodes[1].status.epoch == 3 }
        let took = ContinuousClock.now - started
        // 2 s of silence, plus up to one tick and the vote.
        #expect(took >= .milliseconds(1900) && took < .seconds(20), "took \(took)")
        #expect(nodes[1].view?.ids == [nodes[0].localId, nodes[1].localId])
        #expect(nodes[2].status.epoch == 2, "a frozen node learns nothing")
    }
}

@Test func killingTheCoordinatorElectsTheNextNodeAndTheRunGoesOn() async throws {
    let (nodes, _) = try await makeCluster(4)
    try await cleanUp({ await shutdownAll(nodes) }) {
        await nodes[0].shutdown()
        try await waitUntil(15, "failover", watching: nodes) {
            nodes[1...].allSatisfy { $0.view?.coordinator == nodes[1].localId && $0.status.epoch == 3 }
        }
        #expect(nodes[1].status.role == .coordinator)
        #expect(nodes[2].status.role == .member)
        // Quiet for longer than the timeout: the new coordinator must not time itself (or anyone) out.
        try await Task.sleep(for: .seconds(3))
        #expect(nodes[1].status.role == .coordinator)
        #expect(nodes[1...].allSatisfy { $0.status.epoch == 3 })
        let rings = try await updateAll(Array(nodes[1...]))
        #expect(rings.allSatisfy { $0 == rings[0] })
        #expect(rings[0].members.map(\.id) == nodes[1...].map(\.localId))

        // The new coordinator admits joiners too, through any member as seed.
        let late = makeNode(9)
        try await cleanUp({ await late.shutdown() }) {
            _ = try await late.start(dataPort: 41009, seed: ("127.0.0.1", nodes[3].view!.node(nodes[3].localId)!.controlPort))
            try await waitUntil(15, "joiner queued", watching: nodes) { nodes[1].status.pendingJoiners == 1 }
            let after = try await updateAll(Array(nodes[1...]) + [late])
            #expect(after.allSatisfy { $0 == after[0] } && after[0].count == 4)
        }
    }
}

@Test func aFrozenCoordinatorIsReplacedToo() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        nodes[0].freezeForTesting()
        // (On a loaded machine node 2 may be timed out too and join anew on the way.)
        try await waitUntil(30, "failover", watching: nodes) {
            nodes[1...].allSatisfy { $0.view?.coordinator == nodes[1].localId && $0.status.role != .rejoining }
                && nodes[1].view?.ids == [nodes[1].localId, nodes[2].localId]
        }
        #expect(nodes[2].view == nodes[1].view)
    }
}

/// The quorum rule alone (forking off): a minority never commits.
private let neverFork: MembershipOptions = {
    var o = fastOptions
    o.forkAfterTimeouts = nil
    return o
}()

@Test func aTwoTwoSplitDoesNotMakeTwoClusters() async throws {
    let (nodes, _) = try await makeCluster(4, options: neverFork)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let left = Set(nodes[0..<2].map(\.localId))
        let right = Set(nodes[2..<4].map(\.localId))
        for node in nodes[0..<2] { node.dropTrafficForTesting(with: right) }
        for node in nodes[2..<4] { node.dropTrafficForTesting(with: left) }
        // The coordinator's half holds exactly half of view 2 including its coordinator: it goes on.
        // (The two silent nodes may be removed in one view change or in two.)
        let half = Array(nodes[0..<2].map(\.localId))
        try await waitUntil(15, "the coordinator's half commits", watching: nodes) { nodes[0].view?.ids == half && nodes[1].view?.ids == half }
        #expect(nodes[0].view == nodes[1].view)
        // The other half elects a coordinator of its own, whose proposal finds no quorum.
        try await waitUntil(20, "the other half fails to reach a quorum", watching: nodes) {
            nodes[2...].contains { $0.status.proposalsWithoutQuorum >= 2 }
        }
        // Neither node of the other half committed a view of its own. (On a loaded machine one of
        // them may have been timed out before the split took hold and be joining anew: no view.)
        #expect(nodes[2...].allSatisfy { ($0.view?.epoch ?? 2) == 2 }, "a second cluster formed: \(nodes[2...].map { $0.view })")
        #expect(nodes[2...].allSatisfy { $0.view.map { $0.count == 4 } ?? true })
    }
}

@Test func aThreeOneSplitLeavesTheMajorityInCharge() async throws {
    let (nodes, _) = try await makeCluster(4, options: neverFork)
    try await cleanUp({ await shutdownAll(nodes) }) {
        // The coordinator alone on one side: the three others elect the next one and go on.
        let rest = Set(nodes[1...].map(\.localId))
        nodes[0].dropTrafficForTesting(with: rest)
        for node in nodes[1...] { node.dropTrafficForTesting(with: [nodes[0].localId]) }
        try await waitUntil(20, "the majority commits", watching: nodes) {
            nodes[1...].allSatisfy { $0.status.epoch == 3 && $0.view?.coordinator == nodes[1].localId }
        }
        #expect(nodes[3].view?.ids == nodes[1...].map(\.localId))
        try await waitUntil(20, "the lone coordinator finds no quorum", watching: nodes) { nodes[0].status.proposalsWithoutQuorum >= 1 }
        #expect(nodes[0].status.epoch == 2)
    }
}

extension MembershipView {
    var count: Int { nodes.count }
}
