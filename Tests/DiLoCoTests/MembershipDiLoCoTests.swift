import Collectives
import Foundation
import Logging
import Models
import PeerTestSupport
import Testing
import Transport
@testable import DiLoCo

/// In async mode the joiner has no pseudo-gradient at its first step: it sends zeros, the average
/// is taken over the three members that have one, and its second sync must find it in parity.
@Test(arguments: DiLoCoOptions.Mode.allCases)
func aJoinerMidRunDownloadsTheStateAndEndsBitIdentical(mode: DiLoCoOptions.Mode) async throws {
    let peers = try (0..<4).map { try Peer(index: $0, mode: mode) }
    try await peers[0].start(seed: nil)
    for p in peers[1..<3] { try await p.start(seed: peers[0].controlPort) }
    let results = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]).self) { group in
            for p in peers[0..<3] { group.addTask { (p.index, try await p.train(until: 6)) } }
            group.addTask {
                // Join through a member that is not the coordinator, once the run is under way.
                while peers[0].trainer.revision < 2 { try await Task.sleep(for: .milliseconds(20)) }
                try await peers[3].start(seed: peers[1].controlPort)
                return (3, try await peers[3].train(until: 6))
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { out[i] = d }
            return out
        }
    }
    // (Read before the peers stop: stopping them one by one makes the others fail over.)
    let joinerRing = peers[3].node.status.view?.ringView.count
    for p in peers { await p.stop() }
    let final = results[0]![6]
    #expect(final != nil)
    for i in 0..<4 { #expect(results[i]![6] == final, "peer \(i) ends with another state") }
    // The joiner came in later: it has fewer steps of its own, all equal to the others'.
    #expect(results[3]!.count < results[0]!.count)
    for (revision, digest) in results[3]! { #expect(results[0]![revision] == digest) }
    #expect(joinerRing == 4)
    // One download, at the first sync; at the second the joiner already held the same θ.
    #expect(peers[3].session.downloads == 1)
    for p in peers[0..<3] { #expect(p.session.downloads == 0) }
    let first = try #require(peers[3].history.first)
    #expect(first.peers == 4)
    #expect(first.contributors == (mode == .async ? 3 : 4))
    #expect(peers[0].history.first { $0.revision == first.revision }?.contributors == first.contributors)
    #expect(peers[3].history.dropFirst().allSatisfy { $0.contributors == 4 })
}

/// The joiner's first steps pinned by hand on the one-parameter model (no quantization). Sync:
/// from the step it joins at, three pseudo-gradients are averaged. Async: at that step the
/// average is over the two members only (the joiner's zeros are not counted), the joiner's round
/// starts from the θ it downloaded, and from the next step on it contributes like the others.
@Test(arguments: DiLoCoOptions.Mode.allCases)
func aJoinersFirstStepsMatchTheHandComputedOuterUpdates(mode: DiLoCoOptions.Mode) async throws {
    let targets: [Float] = [1, 3, 5]
    let peers = try (0..<3).map { i in
        try Peer(index: i, mode: mode, task: HalfwayModel.task(target: targets[i])) {
            $0.innerSteps = 2
            $0.quantization = .none
        }
    }
    try await peers[0].start(seed: nil)
    try await peers[1].start(seed: peers[0].controlPort)
    let registered = Flag()
    _ = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The toy's steps take microseconds: the members wait at revision 2 for the joiner to
            // register, so that it is admitted at the update point of revision 3.
            for p in peers[0..<2] {
                group.addTask {
                    _ = try await p.train(until: 2)
                    while !registered.isSet { try await Task.sleep(for: .milliseconds(10)) }
                    _ = try await p.train(until: 6)
                }
            }
            group.addTask {
                while peers[0].revision < 2 { try await Task.sleep(for: .milliseconds(10)) }
                try await peers[2].start(seed: peers[1].controlPort)
                registered.set()
                _ = try await peers[2].train(until: 6)
            }
            try await group.waitForAll()
        }
    }
    for p in peers { await p.stop() }
    let joinedAt = try #require(peers[2].history.first).revision
    #expect(joinedAt == 3)
    var reference = ToyReference(h: 2)
    var pending: [Float?] = [nil, nil]
    for revision in UInt64(1)...6 {
        if revision == joinedAt { pending.append(nil) }
        let active = revision >= joinedAt ? targets : Array(targets[0..<2])
        let want = mode == .sync ? reference.syncStep(targets: active) : reference.asyncStep(targets: active, pending: &pending)
        let got = try #require(peers[0].thetaHead[revision])
        #expect(abs(got - want) <= 1e-5 * max(1, abs(want)), "revision \(revision) (joined at \(joinedAt)): θ \(got), by hand \(want)")
        #expect(peers[1].thetaHead[revision] == got)
        if revision >= joinedAt { #expect(peers[2].thetaHead[revision] == got) }
    }
    #expect(peers[2].history.first?.contributors == (mode == .async ? 2 : 3))
}

@Test(arguments: DiLoCoOptions.Mode.allCases)
func survivorsOfAKilledPeerFinishTheRunBitIdentical(mode: DiLoCoOptions.Mode) async throws {
    let peers = try (0..<3).map { try Peer(index: $0, mode: mode) }
    try await peers[0].start(seed: nil)
    for p in peers[1...] { try await p.start(seed: peers[0].controlPort) }
    let results = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]?).self) { group in
            for p in peers[0..<2] { group.addTask { (p.index, try await p.train(until: 6)) } }
            group.addTask {
                // Peer 2 trains a little, then vanishes without a goodbye (a crash).
                _ = try? await peers[2].train(until: 2)
                await peers[2].stop()
                return (2, nil)
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { if let d { out[i] = d } }
            return out
        }
    }
    for p in peers { await p.stop() }
    #expect(results[0]?[6] != nil)
    #expect(results[0] == results[1], "survivors must agree at every revision")
}

/// A member dies at its third pseudo-gradient all-reduce, without taking part in it: in sync mode
/// after the survivors' inner steps, in async mode while the all-reduce runs in the background
/// during them. The survivors' collective fails; they form a ring of two, sync, and retry with the
/// pseudo-gradients they hold (never a local update), and stay bit-identical.
@Test(arguments: DiLoCoOptions.Mode.allCases)
func aPeerDyingInThePseudoGradientAllReduceIsRetriedOnTheSurvivors(mode: DiLoCoOptions.Mode) async throws {
    let peers = try (0..<3).map { i in
        try Peer(index: i, mode: mode, wrap: i == 2 ? { DyingSession($0, dieAt: 3) } : nil)
    }
    try await peers[0].start(seed: nil)
    for p in peers[1...] { try await p.start(seed: peers[0].controlPort) }
    let results = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]).self) { group in
            for p in peers[0..<2] { group.addTask { (p.index, try await p.train(until: 5)) } }
            group.addTask { (2, await peers[2].trainUntilStopped(until: 5)) }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { out[i] = d }
            return out
        }
    }
    for p in peers { await p.stop() }
    #expect(results[0]?[5] != nil)
    #expect(results[0] == results[1], "survivors must agree at every revision")
    #expect(results[2]?.keys.sorted() == [1, 2], "the victim completed two steps")
    for (revision, digest) in results[2] ?? [:] { #expect(results[0]?[revision] == digest) }
    for p in peers[0..<2] {
        let third = try #require(p.history.first { $0.revision == 3 })
        #expect(third.retries >= 1, "the step the victim died in was retried")
        #expect(third.peers == 2 && third.contributors == 2)
        #expect(p.history.filter { $0.revision != 3 }.allSatisfy { $0.retries == 0 })
    }
}

/// Churn: over 12 outer steps two peers join, one leaves gracefully, one is killed between steps
/// and one in the middle of a step. At every revision, every peer that completed it holds the
/// same state, and nobody hangs.
@Test func churnNeverBreaksParity() async throws {
    let peers = try (0..<6).map { try Peer(index: $0) }
    try await peers[0].start(seed: nil)
    for p in peers[1..<4] { try await p.start(seed: peers[0].controlPort) }
    let start = Date()
    let results = try await withTimeout(180) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]).self) { group in
            group.addTask { (0, try await peers[0].train(until: 12)) }
            group.addTask { (1, try await peers[1].train(until: 12)) }
            group.addTask {
                // Leaves gracefully after revision 4.
                let d = try await peers[2].train(until: 4)
                await peers[2].node.leave()
                await peers[2].communicator.shutdown()
                return (2, d)
            }
            group.addTask {
                // Killed between steps after revision 6.
                let d = try await peers[3].train(until: 6)
                await peers[3].stop()
                return (3, d)
            }
            group.addTask {
                // Joins once revision 3 is done, through a member that is not the coordinator; killed
                // in the middle of a step after revision 8.
                while peers[1].revision < 3 { try await Task.sleep(for: .milliseconds(10)) }
                try await peers[4].start(seed: peers[1].controlPort)
                async let digests = peers[4].trainUntilStopped(until: 12)
                while peers[4].revision < 8 { try await Task.sleep(for: .milliseconds(10)) }
                try await Task.sleep(for: .milliseconds(30))
                await peers[4].stop()
                return (4, await digests)
            }
            group.addTask {
                // Joins late, once revision 7 is done, and stays to the end.
                while peers[0].revision < 7 { try await Task.sleep(for: .milliseconds(10)) }
                try await peers[5].start(seed: peers[0].controlPort)
                return (5, try await peers[5].train(until: 12))
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { out[i] = d }
            return out
        }
    }
    for p in peers { await p.stop() }
    var mismatches = 0
    for revision in UInt64(1)...12 {
        let seen = Set(results.values.compactMap { $0[revision] })
        if seen.count > 1 { mismatches += 1 }
    }
    let steps = results.values.reduce(0) { $0 + $1.count }
    print("churn: 2 joins, 1 graceful leave, 2 kills; \(steps) peer-steps over 12 revisions; "
          + "\(mismatches) digest mismatches; \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    #expect(mismatches == 0)
    #expect(results[0]?[12] != nil && results[0]?[12] == results[1]?[12] && results[0]?[12] == results[5]?[12])
    #expect(results[5]!.count < 12, "the late joiner started from a downloaded state")
}
