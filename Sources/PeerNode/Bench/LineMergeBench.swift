import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Logging
import Models
import Transport

/// The quality of a line merge (docs/diloco.md, "Merging two lines"): the merged model's metric
/// against each side's just before the heal, and against a run that was never split.
///
/// One process, real rings on 127.0.0.1 (in-process communicators), the real trainer and
/// ``LineMerge``. Per repeat (seed `seed + r`):
///
/// 1. **Split run.** N peers (shards 0..<N of N) train T1 outer steps in one ring (line 1). Then
///    the cluster splits: peers 0..<A go on in a ring of their own in line 1, the others in a ring
///    in line 2, each from a copy of the shared state, each peer with its own task (model, shard,
///    AdamW state, batch order) as a daemon keeps it; T2 outer steps each. The trainer records the
///    fork in side B's lineage (its first step is in another line), as in the daemon.
/// 2. **Merge.** ``LineMerge/merge(_:viewLine:into:)`` of the two sides' states, in line 1 (side
///    A's: the ring the other side joins), weights by peer-steps trained apart.
/// 3. **Never split.** The same N peers from the same seed, T1 + T2 outer steps in one ring; its
///    state at T1 equals the split run's at the split (training is deterministic; the line says
///    `fork_state=equal`).
/// 4. Optionally one more outer step on an N-ring from the merged state, and one more on the
///    never-split ring (`--after`).
///
/// Metrics are the task's own (`TrainingTask.evaluate`, the test split: accuracy for MoE, RMSE
/// for GIN), computed on peer 0 (side A) as the demo's workers report them; `merged_on_b` is the
/// merged θ evaluated on side B's first peer, `side_a_on_b` side A's θ there (models with local
/// buffers outside θ, such as GIN's batch-norm running statistics, differ there).
struct LineMergeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "line-merge",
        abstract: "Merged model quality after a split and heal, against each side and a run never split (in-process rings).")

    @Option(help: "Peers before the split (shards 0..<peers).") var peers = 4
    @Option(name: .customLong("side-a"), help: "Peers that keep the line at the split (the first ones; default half).")
    var sideA: Int?
    @Option(help: "Model: moe, gin or gcn.") var model = ModelKind.moe
    @Option(help: "Dataset (default: the model's shipped default).") var data: String?
    @Option(name: .customLong("steps-before"), help: "Outer steps of the whole cluster before the split (T1).")
    var stepsBefore = 15
    @Option(name: .customLong("steps-apart"), help: "Outer steps of each side apart (T2).") var stepsApart = 15
    @Option(name: .customLong("inner-steps"), help: "Inner steps per outer step (H).") var innerSteps = 20
    @Option(help: "Pseudo-gradient encoding.") var quant = PseudoGradientEncoding.int8
    @Option(help: "Seed of the first repeat; repeat r uses seed + r.") var seed: UInt64 = 1
    @Option(help: "Repeats (seeds).") var repeats = 5
    @Option(help: "Outer steps after the merge (merged + k vs never split + k); 0: none.") var after = 1

    func validate() throws {
        guard (2...16).contains(peers) else { throw ValidationError("--peers must be 2...16") }
        if let sideA, !(1..<peers).contains(sideA) { throw ValidationError("--side-a must be 1...\(peers - 1)") }
        if let data, !model.datasets.contains(data) { throw ValidationError("model \(model.rawValue) does not train on '\(data)'") }
        guard stepsBefore >= 1, stepsApart >= 1, innerSteps >= 1, repeats >= 1, after >= 0 else {
            throw ValidationError("need --steps-before ≥ 1, --steps-apart ≥ 1, --inner-steps ≥ 1, --repeats ≥ 1, --after ≥ 0")
        }
    }

    func run() async throws {
        // Peers share this process's cores: one BLAS thread each, as the quality benchmarks run.
        BLAS.setThreads(1)
        let dataset = data ?? model.defaultDataset
        let a = sideA ?? peers / 2
        print("# peernode bench line-merge: model=\(model.rawValue) data=\(dataset) peers=\(peers) split=\(a)+\(peers - a) "
              + "T1=\(stepsBefore) T2=\(stepsApart) H=\(innerSteps) quant=\(quant.rawValue) after=\(after) "
              + "seeds=\(seed)...\(seed + UInt64(repeats - 1)) host=\(ProcessInfo.processInfo.hostName)")
        fflush(nil)
        var results: [Result] = []
        for r in 0..<repeats {
            let result = try await runOnce(seed: seed + UInt64(r), dataset: dataset, sideA: a)
            results.append(result)
            print(result.line)
            fflush(nil)
        }
        guard let first = results.first else { return }
        print("# \(first.metric): \(first.higherIsBetter ? "higher" : "lower") is better; min / median / max over \(results.count) seeds")
        for key in first.figures.map(\.key) {
            let values = results.compactMap { r in r.figures.first { $0.key == key }?.value }
            print("summary \(key) min=\(fmt4(values.min()!)) median=\(fmt4(median(values))) max=\(fmt4(values.max()!))")
        }
    }

    /// One peer: its task lives through the split and the merge, as a daemon's does; a trainer
    /// is made per ring it is in.
    private final class Peer: @unchecked Sendable {
        let task: TrainingTask
        var trainer: DiLoCoTrainer?
        init(task: TrainingTask) { self.task = task }
    }

    private struct Result {
        var line: String
        var metric: String
        var higherIsBetter: Bool
        var figures: [(key: String, value: Double)]
    }

    private var options: DiLoCoOptions {
        var options = DiLoCoOptions()
        options.innerSteps = innerSteps
        options.quantization = quant.quantization
        return options
    }

    private func runOnce(seed: UInt64, dataset: String, sideA keep: Int) async throws -> Result {
        let start = Date()
        var logger = Logger(label: "peernode.bench.line-merge")
        logger.logLevel = .warning
        let key = try LoopbackRing.randomKey()
        var nextId: UInt64 = 0xB000
        func ring(_ size: Int) async throws -> LoopbackRing {
            defer { nextId += 0x100 }
            // Errors only: shutting a ring down member by member makes the others log a broken ring.
            var ringLogger = logger
            ringLogger.logLevel = .error
            return try await LoopbackRing.make(size: size, firstId: nextId, key: key, logger: ringLogger)
        }
        func makePeers() throws -> [Peer] {
            try (0..<peers).map { rank in
                Peer(task: try TrainingTask.make(TaskSpec(model: model, dataset: dataset, shard: Shard(index: rank, count: peers), seed: seed)))
            }
        }
        let lineA: UInt64 = 1, lineB: UInt64 = 2

        // The split run: together, then apart.
        let split = try makePeers()
        let whole = try await ring(peers)
        try attach(split, to: whole, line: lineA, state: nil, logger: logger)
        let forkDigest = try await train(split, steps: stepsBefore)
        let forkState = split[0].trainer!.state
        await whole.shutdown()

        let sideA = Array(split[..<keep]), sideB = Array(split[keep...])
        let ringA = try await ring(sideA.count), ringB = try await ring(sideB.count)
        try attach(sideA, to: ringA, line: lineA, state: forkState, logger: logger)
        try attach(sideB, to: ringB, line: lineB, state: forkState, logger: logger)
        // The two sides train at once, as two parts of a cluster do.
        async let apartA = train(sideA, steps: stepsApart)
        async let apartB = train(sideB, steps: stepsApart)
        _ = try await (apartA, apartB)
        await ringA.shutdown()
        await ringB.shutdown()
        let stateA = sideA[0].trainer!.state, stateB = sideB[0].trainer!.state
        let metricA = sideA[0].trainer!.evaluate(), metricB = sideB[0].trainer!.evaluate()
        // Side A's θ on a peer of side B: how much a model's local buffers (GIN's batch-norm
        // statistics) alone change the metric, for comparison with `merged_on_b`.
        let metricAOnB = Self.evaluate(sideB[0].task, stateA)

        // The heal: side B's peers join side A's ring (line A); every member computes this merge.
        let lineages = [stateA.lineage, stateB.lineage]
        let expectedBase = UInt64(peers * stepsBefore)
        guard lineages[1].forkBase == expectedBase, lineages[1].ancestors.contains(.init(line: lineA, peerSteps: expectedBase)),
              lineages[0].line == lineA, lineages[1].line == lineB else {
            throw BenchError("unexpected lineages after the split: \(lineages)")
        }
        let (base, weights) = LineMerge.weights(lineages, viewLine: lineA)
        let merged = try DiLoCoTrainer.sharedState(for: split[0].task)
        try LineMerge.merge([.init(state: stateA, lineage: stateA.lineage), .init(state: stateB, lineage: stateB.lineage)],
                            viewLine: lineA, into: merged)
        // Evaluated on a peer of each side: a model's buffers outside θ (GIN's batch-norm running
        // statistics) are each peer's own and are not merged, so the merged θ meets side A's
        // statistics on side A's peers and side B's on side B's.
        let metricMerged = Self.evaluate(split[0].task, merged)
        let metricMergedOnB = Self.evaluate(sideB[0].task, merged)
        var metricMergedAfter: Metrics?
        if after > 0 {
            let healed = try await ring(peers)
            try attach(split, to: healed, line: lineA, state: merged, logger: logger)
            _ = try await train(split, steps: after)
            await healed.shutdown()
            metricMergedAfter = split[0].trainer!.evaluate()
        }

        // The run that never split: the same peers from the same seed, one ring throughout.
        let never = try makePeers()
        let neverRing = try await ring(peers)
        try attach(never, to: neverRing, line: lineA, state: nil, logger: logger)
        let neverForkDigest = try await train(never, steps: stepsBefore)
        // Training is deterministic, so this holds; were it not, the baseline would still be a run
        // never split, from the same seed, but not the same trajectory up to the split.
        let forkStateEqual = neverForkDigest == forkDigest
        _ = try await train(never, steps: stepsApart)
        let metricNever = never[0].trainer!.evaluate()
        var metricNeverAfter: Metrics?
        if after > 0 {
            _ = try await train(never, steps: after)
            metricNeverAfter = never[0].trainer!.evaluate()
        }
        await neverRing.shutdown()

        let best = metricA.isBetter(than: metricB) ? metricA : metricB
        var figures: [(key: String, value: Double)] = [
            ("side_a", metricA.value), ("side_b", metricB.value), ("side_a_on_b", metricAOnB.value),
            ("merged", metricMerged.value), ("merged_on_b", metricMergedOnB.value),
            ("never_split", metricNever.value),
        ]
        if let metricMergedAfter, let metricNeverAfter {
            figures += [("merged_after_\(after)", metricMergedAfter.value), ("never_split_after_\(after)", metricNeverAfter.value)]
        }
        figures += [("merged_minus_never_split", metricMerged.value - metricNever.value),
                    ("merged_minus_best_side", metricMerged.value - best.value),
                    ("loss_side_a", metricA.loss), ("loss_side_b", metricB.loss), ("loss_merged", metricMerged.loss), ("loss_merged_on_b", metricMergedOnB.loss),
                    ("loss_never_split", metricNever.loss)]
        if let metricMergedAfter, let metricNeverAfter {
            figures += [("loss_merged_after_\(after)", metricMergedAfter.loss), ("loss_never_split_after_\(after)", metricNeverAfter.loss)]
        }
        let metric = metricMerged.name.replacingOccurrences(of: " ", with: "_")
        let line = "line_merge model=\(model.rawValue) data=\(dataset) seed=\(seed) peers=\(peers) split=\(sideA.count)+\(sideB.count) "
            + "T1=\(stepsBefore) T2=\(stepsApart) H=\(innerSteps) metric=\(metric) "
            + figures.map { "\($0.key)=\(fmt4($0.value))" }.joined(separator: " ")
            + " merge_base=\(base) weights=\(weights.map(String.init).joined(separator: ":")) fork_state=\(forkStateEqual ? "equal" : "DIFFERENT") run_s=\(fmt(Date().timeIntervalSince(start)))"
        return Result(line: line, metric: metric, higherIsBetter: metricMerged.higherIsBetter, figures: figures)
    }

    /// A trainer per peer on `ring`, in `line`, from a copy of `state` (nil: the task's initial
    /// parameters, the same on every peer from the seed).
    private func attach(_ group: [Peer], to ring: LoopbackRing, line: UInt64, state: SharedState?, logger: Logger) throws {
        for (peer, communicator) in zip(group, ring.communicators) {
            var copy: SharedState?
            if let state {
                copy = try SharedState(specs: state.specs)
                try copy!.copy(from: state)
            }
            peer.trainer = try DiLoCoTrainer(task: peer.task, state: copy,
                                             session: FixedRingSession(communicator: communicator, size: group.count, line: line),
                                             options: options, logger: logger)
        }
    }

    /// `steps` outer steps on every peer of a ring at once; returns the digest they all end with.
    private func train(_ group: [Peer], steps: Int) async throws -> String {
        let digests = try await withThrowingTaskGroup(of: String.self) { tasks in
            for peer in group {
                tasks.addTask {
                    var digest = ""
                    for _ in 0..<steps { digest = try await peer.trainer!.outerStep().digest.description }
                    return digest
                }
            }
            var all: [String] = []
            for try await digest in tasks { all.append(digest) }
            return all
        }
        guard Set(digests).count == 1, let digest = digests.first else { throw BenchError("the peers of a ring ended with different states: \(digests)") }
        return digest
    }

    /// The task's metric at θ of `state`.
    private static func evaluate(_ task: TrainingTask, _ state: SharedState) -> Metrics {
        task.parameters.load(UnsafeBufferPointer(state.floats("theta")!))
        return task.evaluate()
    }

    private func fmt4(_ x: Double) -> String { String(format: "%.4f", x) }
}
