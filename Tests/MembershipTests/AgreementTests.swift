import Collectives
import Testing

private func agreeAll(_ nodes: [MembershipNode], epoch: UInt64, tag: UInt64, failing: Set<Int> = []) async throws -> [Bool] {
    try await within(30, "agreement round") {
        try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for (i, node) in nodes.enumerated() {
                group.addTask { (i, try await node.agree(epoch: epoch, tag: tag, succeeded: !failing.contains(i))) }
            }
            var out = [Bool](repeating: false, count: nodes.count)
            for try await (i, answer) in group { out[i] = answer }
            return out
        }
    }
}

@Test func everyoneCommitsOnlyWhenEveryMemberSucceeded() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let epoch = nodes[0].status.epoch
        #expect(try await agreeAll(nodes, epoch: epoch, tag: 1) == [true, true, true])
        #expect(try await agreeAll(nodes, epoch: epoch, tag: 2, failing: [1]) == [false, false, false])
        #expect(nodes.allSatisfy { $0.status.aborts == 1 })
        // The decision is remembered: asking again gives the same answer.
        #expect(try await nodes[0].agree(epoch: epoch, tag: 1, succeeded: true))
        #expect(try await !nodes[0].agree(epoch: epoch, tag: 2, succeeded: true))
        // An abort followed by updateTopology counts as a retry.
        _ = try await updateAll(nodes)
        #expect(nodes.allSatisfy { $0.status.retries == 1 })
    }
}

@Test func aRoundEverySurvivorFinishedCommitsWhenAMemberDies() async throws {
    let (nodes, _) = try await makeCluster(3)
    try await cleanUp({ await shutdownAll(nodes) }) {
        let epoch = nodes[0].status.epoch
        // Two report done, then the third dies before reporting. A member that finished a ring
        // collective holds the whole result (every contribution reached it), so the survivors
        // keep it: the dead member has no say in what they hold (docs/membership.md, "Outcome rounds").
        let answers = try await within(30, "round with a death") {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for node in nodes[0..<2] { group.addTask { try await node.agree(epoch: epoch, tag: 7, succeeded: true) } }
                try await Task.sleep(for: .milliseconds(50))
                await nodes[2].shutdown()
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
        }
        #expect(answers == [true, true])
        // A survivor that did not finish a round of that epoch aborts it for both.
        let late = try await within(30, "late failure") {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await nodes[0].agree(epoch: epoch, tag: 8, succeeded: true) }
                group.addTask { try await nodes[1].agree(epoch: epoch, tag: 8, succeeded: false) }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
        }
        #expect(late == [false, false])
    }
}

@Test func aDecisionSurvivesTheCoordinatorsDeath() async throws {
    // A coordinate-only coordinator decides, then dies: the ring members still agree.
    let coordinator = makeNode(0)
    let members = (1...3).map { makeNode($0) }
    try await cleanUp({ await shutdownAll([coordinator] + members) }) {
        let port = try await coordinator.start(dataPort: 0, seed: nil, coordinatorOnly: true)
        _ = try await members[0].start(dataPort: 42001, seed: ("127.0.0.1", port))
        _ = try await updateAll([members[0]])
        for m in members[1...] { _ = try await m.start(dataPort: 42001, seed: ("127.0.0.1", port)) }
        try await waitUntil(15, "joiners queued", watching: [coordinator]) { coordinator.status.pendingJoiners == 2 }
        _ = try await updateAll(members)
        let epoch = members[0].status.epoch
        #expect(try await agreeAll(members, epoch: epoch, tag: 3) == [true, true, true])
        await coordinator.shutdown()
        try await waitUntil(15, "failover", watching: members) { members.allSatisfy { $0.view?.coordinator == members[0].localId } }
        // Asked again after the failover (from the members' caches or the new coordinator): same answer.
        #expect(try await agreeAll(members, epoch: epoch, tag: 3) == [true, true, true])
    }
}
