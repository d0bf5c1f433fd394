import Collectives
import Logging
import Models
import PeerTestSupport
import Testing
@testable import DiLoCo

private func quietLogger() -> Logger {
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    return logger
}

private struct Run: Sendable {
    var digests: [String]
    var losses: [Float]
    var contributors: [Int]
    var retries: Int
    var before: Double
    var after: Double
}

/// Trains the MoE classifier on digits over a fixed ring on loopback, in `mode`, for `steps`
/// outer steps; every peer returns its digests and mean inner losses per step.
private func trainMoE(peers: [Communicator], mode: DiLoCoOptions.Mode, steps: Int) async throws -> [Run] {
    try await onEveryPeer(peers) { rank, peer -> Run in
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", shard: Shard(index: rank, count: peers.count), seed: 7))
        var options = DiLoCoOptions()
        options.innerSteps = 8
        options.mode = mode
        let trainer = try DiLoCoTrainer(task: task, session: FixedRingSession(communicator: peer, size: peers.count),
                                        options: options, logger: quietLogger())
        let before = trainer.evaluate().value
        var run = Run(digests: [], losses: [], contributors: [], retries: 0, before: before, after: 0)
        for step in 1...steps {
            let report = try await trainer.outerStep()
            #expect(report.revision == UInt64(step), "one revision per call in every mode")
            run.digests.append(report.digest.description)
            run.losses.append(report.meanInnerLoss)
            run.contributors.append(report.contributors)
            run.retries += report.retries
        }
        run.after = trainer.evaluate().value
        return run
    }
}

/// (a) Three peers in async mode: bit-identical θ and momentum on every peer after every step,
/// and the model learns.
@Test func asyncPeersStayInBitParityAndLearn() async throws {
    let steps = 5
    let runs = try await withCluster(size: 3) { peers in try await trainMoE(peers: peers, mode: .async, steps: steps) }
    for r in 1..<3 { #expect(runs[r].digests == runs[0].digests, "peer \(r) drifted from peer 0") }
    #expect(Set(runs[0].digests).count == steps, "θ must change every step")
    for run in runs {
        #expect(run.contributors == Array(repeating: 3, count: steps))
        #expect(run.retries == 0)
        #expect(run.losses.allSatisfy { $0.isFinite })
        #expect(run.losses.last! < run.losses.first!, "mean inner loss \(run.losses)")
        #expect(run.after > run.before + 0.2, "accuracy \(run.before) -> \(run.after)")
    }
}

/// (d) The same seed and data in both modes: different trajectories (the async updates are one
/// step late), both finite and learning.
@Test func syncAndAsyncDifferButBothLearn() async throws {
    let steps = 4
    // A ring each: both runs start at revision 0, and a collective's identity runs once per ring.
    let sync = try await withCluster(size: 2) { peers in try await trainMoE(peers: peers, mode: .sync, steps: steps) }
    let async = try await withCluster(size: 2) { peers in try await trainMoE(peers: peers, mode: .async, steps: steps) }
    for runs in [sync, async] {
        #expect(runs[1].digests == runs[0].digests)
        #expect(runs[0].losses.allSatisfy { $0.isFinite })
        #expect(runs[0].losses.last! < runs[0].losses.first!, "mean inner loss \(runs[0].losses)")
        #expect(runs[0].after > runs[0].before + 0.2)
    }
    #expect(sync[0].digests.last != async[0].digests.last, "async must not silently run the sync algorithm")
    #expect(sync[0].contributors == [2, 2, 2, 2] && async[0].contributors == [2, 2, 2, 2])
}

/// (d) The delayed semantics pinned on a model whose inner round is known in closed form: two
/// peers with targets 1 and 3, H = 2, no quantization. Each call's θ must match the hand-computed
/// outer update: sync applies this round's average; async applies the previous round's, with the
/// inner steps started from θ minus the peer's own pending pseudo-gradient (rebase) or from θ
/// (restart).
@Test(arguments: [(DiLoCoOptions.Mode.sync, DiLoCoOptions.AsyncStart.rebase), (.async, .rebase), (.async, .restart)])
func theOuterUpdateMatchesTheHandComputedOne(mode: DiLoCoOptions.Mode, start: DiLoCoOptions.AsyncStart) async throws {
    let targets: [Float] = [1, 3]
    let steps = 5
    let thetas = try await withCluster(size: 2) { peers in
        try await onEveryPeer(peers) { rank, peer -> [Float] in
            let task = HalfwayModel.task(target: targets[rank])
            var options = DiLoCoOptions()
            options.innerSteps = 2
            options.quantization = .none
            options.mode = mode
            options.asyncStart = start
            let trainer = try DiLoCoTrainer(task: task, session: FixedRingSession(communicator: peer, size: 2),
                                            options: options, logger: quietLogger())
            var out: [Float] = []
            for _ in 0..<steps {
                _ = try await trainer.outerStep()
                out.append(trainer.state.floats("theta")![0])
            }
            return out
        }
    }
    var syncReference = ToyReference(h: 2)
    let syncThetas = (0..<steps).map { _ in syncReference.syncStep(targets: targets) }
    var asyncReference = ToyReference(h: 2)
    var pending: [Float?] = [nil, nil]
    let asyncThetas = (0..<steps).map { _ in
        asyncReference.asyncStep(targets: targets, pending: &pending, rebase: start == .rebase)
    }
    let expected = mode == .sync ? syncThetas : asyncThetas
    #expect(thetas[0] == thetas[1])
    for (got, want) in zip(thetas[0], expected) {
        #expect(abs(got - want) <= 1e-5 * max(1, abs(want)), "θ \(thetas[0]) vs hand-computed \(expected)")
    }
    #expect(abs(syncThetas[1] - asyncThetas[1]) > 1e-2, "the two modes must be told apart by this test")
}
