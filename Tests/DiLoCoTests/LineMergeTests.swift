import Collectives
import Foundation
import Testing
@testable import DiLoCo

// Lines of a cluster that trained apart (a partition) and meet again: lineage bookkeeping and
// the weighted merge, to the bit; then the merge through the real shared-state sync.

private func state(theta: [Float], momentum: [Float], revision: UInt64, lineage: Lineage) throws -> SharedState {
    let s = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [theta.count]),
                                    TensorSpec(name: "momentum", dtype: .f32, shape: [momentum.count]), Lineage.spec])
    _ = s.floats("theta")!.update(fromContentsOf: theta)
    _ = s.floats("momentum")!.update(fromContentsOf: momentum)
    s.lineage = lineage
    s.setRevision(revision)
    return s
}

@Test func aStepInAnotherLineRecordsTheForkAndTheOldLineAsAncestor() {
    let fresh = Lineage()
    #expect(fresh.isBlank && fresh.isContained(in: Lineage(line: 5, peerSteps: 1)))
    let first = fresh.advanced(line: 5, contributors: 3)
    #expect(first == Lineage(line: 5, peerSteps: 3, forkBase: 0, ancestors: []))
    let same = first.advanced(line: 5, contributors: 2)
    #expect(same.peerSteps == 5 && same.forkBase == 0)
    let forked = same.advanced(line: 9, contributors: 1)
    #expect(forked == Lineage(line: 9, peerSteps: 6, forkBase: 5, ancestors: [.init(line: 5, peerSteps: 5)]))
    // Line 5 at 5 peer-steps is contained in the fork; line 5 trained further is not.
    #expect(Lineage(line: 5, peerSteps: 5).isContained(in: forked))
    #expect(!Lineage(line: 5, peerSteps: 6).isContained(in: forked))
    #expect(Lineage(bytes: forked.bytes) == forked && forked.bytes.count == Lineage.byteCount)
}

@Test func twoLinesMergeWeightedByThePeerStepsEachTrainedApart() throws {
    // Line 5 went on from 4 peer-steps to 10; line 9 forked from it at 6 (after a first,
    // healed split) and reached 7: since the latest parting (6), line 5 trained 4, line 9 one.
    let a = try state(theta: [1, 2, -3], momentum: [0.5, 0, 1], revision: 12, lineage: Lineage(line: 5, peerSteps: 10, forkBase: 4))
    let b = try state(theta: [4, 8, 1e-3], momentum: [1, 1, 1], revision: 9,
                      lineage: Lineage(line: 9, peerSteps: 7, forkBase: 6, ancestors: [.init(line: 5, peerSteps: 6)]))
    let out = try SharedState(specs: a.specs)
    try LineMerge.merge([.init(state: b, lineage: b.lineage), .init(state: a, lineage: a.lineage)], viewLine: 9, into: out)
    func expected(_ x: Float, _ y: Float) -> Float { Float((4 * Double(x) + 1 * Double(y)) / 5) }
    #expect(Array(out.floats("theta")!) == [expected(1, 4), expected(2, 8), expected(-3, 1e-3)])
    #expect(Array(out.floats("momentum")!) == [expected(0.5, 1), expected(0, 1), expected(1, 1)])
    #expect(out.revision == 13)
    #expect(out.lineage == Lineage(line: 9, peerSteps: 11, forkBase: 6, ancestors: [.init(line: 5, peerSteps: 10)]))
    // The order the parts come in does not matter: the same bits.
    let again = try SharedState(specs: a.specs)
    try LineMerge.merge([.init(state: a, lineage: a.lineage), .init(state: b, lineage: b.lineage)], viewLine: 9, into: again)
    #expect(again.digest() == out.digest())
}

@Test func linesThatDidNotTrainApartKeepTheViewLinesState() throws {
    let a = try state(theta: [1], momentum: [0], revision: 3, lineage: Lineage(line: 5, peerSteps: 4, forkBase: 4))
    let b = try state(theta: [2], momentum: [0], revision: 3, lineage: Lineage(line: 9, peerSteps: 4, forkBase: 4))
    let out = try SharedState(specs: a.specs)
    try LineMerge.merge([.init(state: a, lineage: a.lineage), .init(state: b, lineage: b.lineage)], viewLine: 9, into: out)
    #expect(Array(out.floats("theta")!) == [2])
}

/// Four members in one ring whose states come from two lines (as after a partition healed):
/// one sync later all hold the same merged state, computed from both, bit for bit.
@Test func theSharedStateSyncMergesTwoLinesOnEveryMember() async throws {
    let peers = try (0..<4).map { try Peer(index: $0) }
    try await peers[0].start(seed: nil)
    for p in peers[1...] { try await p.start(seed: peers[0].controlPort) }
    try await withTimeout(60) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in peers { group.addTask { _ = try await p.session.updateTopology() } }
            try await group.waitForAll()
        }
    }
    let count = peers[0].trainer.state.floats("theta")!.count
    let thetaA = (0..<count).map { Float($0 % 7) * 0.25 }
    let thetaB = (0..<count).map { Float($0 % 5) * -0.5 }
    let lineA = Lineage(line: 11, peerSteps: 20, forkBase: 8)
    let lineB = Lineage(line: 22, peerSteps: 14, forkBase: 12, ancestors: [.init(line: 11, peerSteps: 12)])
    for (i, p) in peers.enumerated() {
        let s = p.trainer.state
        _ = s.floats("theta")!.update(fromContentsOf: i < 2 ? thetaA : thetaB)
        s.lineage = i < 2 ? lineA : lineB
        s.setRevision(i < 2 ? 30 : 25)
    }
    let a = try state(theta: thetaA, momentum: [Float](repeating: 0, count: count), revision: 30, lineage: lineA)
    let b = try state(theta: thetaB, momentum: [Float](repeating: 0, count: count), revision: 25, lineage: lineB)
    let expected = try SharedState(specs: a.specs)
    try LineMerge.merge([.init(state: a, lineage: lineA), .init(state: b, lineage: lineB)],
                        viewLine: peers[0].session.line, into: expected)
    try await withTimeout(60) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in peers { group.addTask { try await p.session.syncSharedState(p.trainer.state) } }
            try await group.waitForAll()
        }
    }
    for p in peers {
        #expect(p.trainer.state.digest() == expected.digest(), "peer \(p.index)")
        #expect(p.session.merges == 1)
    }
    // Weights 8 (line 11: 20 − 12) and 2 (line 22: 14 − 12).
    #expect(expected.lineage.peerSteps == 22 && expected.revision == 31)
    for p in peers { await p.stop() }
}

/// Waits (polling the peers' progress) until `condition` holds.
private func until(_ seconds: Double, _ what: String, _ condition: @escaping @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimeoutError(what: what) }
        try await Task.sleep(for: .milliseconds(50))
    }
}

private struct TimeoutError: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out: \(what)" }
}

/// A 2-2 partition of four training peers: the coordinator's half goes on in the original line,
/// the other half forks after the bound and trains too. Once the network heals, the lines meet,
/// the loser's peers join the winner's, and one sync merges both sides' progress: every peer
/// ends with one state whose lineage holds the training of both sides.
@Test func aPartitionedClusterTrainsOnBothSidesAndMergesWhenItHeals() async throws {
    let peers = try (0..<4).map { try Peer(index: $0, membershipOptions: { $0.forkAfterTimeouts = 1 }) }
    try await peers[0].start(seed: nil)
    for p in peers[1...] { try await p.start(seed: peers[0].controlPort) }
    let stop = Flag()
    let ids = peers.map(\.node.localId)
    try await withTimeout(240) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in peers { group.addTask { await p.trainUntil(stop) } }
            group.addTask {
                defer { stop.set() }
                try await until(60, "all four train together") { peers.allSatisfy { ($0.history.last?.peers ?? 0) == 4 } }
                let original = peers[0].session.line
                for p in peers[0..<2] { p.node.dropTrafficForTesting(with: Set(ids[2...])) }
                for p in peers[2...] { p.node.dropTrafficForTesting(with: Set(ids[0..<2])) }
                // Both halves train apart: two steps each in its own line.
                let splitAt = peers.map(\.revision).max()!
                try await until(90, "both halves train apart") {
                    peers.allSatisfy { p in p.history.filter { $0.revision > splitAt + 1 && $0.peers == 2 }.count >= 2 }
                        && peers[2].session.line != original
                }
                for p in peers { p.node.dropTrafficForTesting(with: []) }
                // One line again, four peers, and a step every peer took together.
                try await until(90, "the lines merge and train as one") {
                    let lines = Set(peers.map(\.session.line))
                    let together = peers.map { Set($0.history.filter { $0.peers == 4 && $0.revision > splitAt + 3 }.map(\.revision)) }
                    return lines.count == 1 && !together.dropFirst().reduce(together[0]) { $0.intersection($1) }.isEmpty
                }
            }
            try await group.next()
            for p in peers { await p.stop() }
            try await group.waitForAll()
        }
    }
    // Within a line, never two states at one revision; after the merge, one state everywhere.
    for (a, b) in [(0, 1), (2, 3)] {
        let da = Dictionary(peers[a].history.map { ($0.revision, $0.digest) }, uniquingKeysWith: { $1 })
        for r in peers[b].history where da[r.revision] != nil { #expect(da[r.revision] == r.digest, "peers \(a), \(b) at \(r.revision)") }
    }
    let last = peers.map { Dictionary(uniqueKeysWithValues: $0.history.filter { $0.peers == 4 }.map { ($0.revision, $0.digest) }) }
    let common = last.dropFirst().reduce(Set(last[0].keys)) { $0.intersection($1.keys) }.max()!
    #expect(last.allSatisfy { $0[common] == last[0][common] }, "digests at revision \(common)")
    #expect(peers.allSatisfy { $0.session.merges == 1 }, "\(peers.map(\.session.merges))")
    // The merged history holds both sides' training since they parted.
    let lineage = peers[0].trainer.state.lineage
    let loser = try #require(lineage.ancestors.first { $0.peerSteps > lineage.forkBase })
    #expect(loser.peerSteps - lineage.forkBase >= 4, "the losing side's two peers trained two steps at least")
    #expect(lineage.peerSteps - lineage.forkBase - (loser.peerSteps - lineage.forkBase) >= 4, "the winning side trained too")
}

@Test func threeLinesMergeWithoutCountingASharedStretchTwiceOrCuttingTheThirdShort() throws {
    // Line 1 ran on to 150 peer-steps; line 2 forked from it at 100 and reached 130; line 3
    // forked from line 2 at 120 and reached 140. Line 1 trained 50 apart from both, line 2 ten
    // apart from line 3, line 3 twenty; the stretch 100-120 that lines 2 and 3 share is in both
    // of their states already. One base for all (120) would give line 1 only 30.
    let one = Lineage(line: 1, peerSteps: 150)
    let two = Lineage(line: 2, peerSteps: 130, forkBase: 100, ancestors: [.init(line: 1, peerSteps: 100)])
    let three = Lineage(line: 3, peerSteps: 140, forkBase: 120, ancestors: [.init(line: 2, peerSteps: 120), .init(line: 1, peerSteps: 100)])
    #expect(LineMerge.weights([one, two, three], viewLine: 1).weights == [50, 10, 20])
    // The order of the parts changes nothing but the order of the weights.
    #expect(LineMerge.weights([three, one, two], viewLine: 1).weights == [20, 50, 10])
    // Two lines: exactly what each trained apart since the fork.
    #expect(LineMerge.weights([one, two], viewLine: 1).weights == [50, 30])
}
