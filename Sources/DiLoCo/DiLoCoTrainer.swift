import Collectives
import Foundation
import Logging
import Models

/// The DiLoCo outer loop on one peer (DESIGN.md, "DiLoCo"; docs/diloco.md).
///
/// Per outer step: update the topology, sync the shared state (θ, outer momentum, revision), run
/// H inner AdamW steps on the local shard, all-reduce a pseudo-gradient (average, int8 by
/// default), and apply the outer Nesterov step. The outer step is plain scalar Swift over
/// identical inputs, so every peer ends it with bit-identical θ (checked by digest).
///
/// - ``DiLoCoOptions/Mode/sync``: the inner steps start from θ and the step all-reduces their
///   own pseudo-gradient Δ = θ − θ_local.
/// - ``DiLoCoOptions/Mode/async`` (one-step-delayed): the step all-reduces the pseudo-gradient of
///   the previous round in the background while this round's inner steps run, then applies it.
///   Each call still advances the revision by one (the first call runs two inner rounds).
public final class DiLoCoTrainer {
    public let task: TrainingTask
    public let session: any ClusterSession
    public var options: DiLoCoOptions
    /// θ ("theta") and the outer momentum ("momentum"), f32, as long as the model's parameters.
    public let state: SharedState
    private let logger: Logger
    /// Sync: this step's Δ. Async: the pseudo-gradient in hand (the last round's), which the
    /// background all-reduce reads; nothing writes it while that runs.
    private var delta: UnsafeMutableBufferPointer<Float>
    /// Async: the pseudo-gradient of the round running now (written while `delta` is being sent).
    private var nextDelta: UnsafeMutableBufferPointer<Float>
    /// The all-reduce's output; read only once the all-reduce returned.
    private let averaged: UnsafeMutableBufferPointer<Float>
    /// Async: `delta` holds this peer's last round, not yet averaged into θ (false before the
    /// first round and on a peer admitted at the coming update point).
    private var holdsDelta = false

    /// The shared state for `task`: θ from the model's initial parameters (every peer initializes
    /// from the same seed, so θ₀ agrees; sync checks it), zero momentum, a blank lineage,
    /// revision 0.
    public static func sharedState(for task: TrainingTask) throws -> SharedState {
        let count = task.parameters.count
        let state = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [count]),
                                            TensorSpec(name: "momentum", dtype: .f32, shape: [count]),
                                            Lineage.spec])
        _ = state.floats("theta")!.update(fromContentsOf: task.parameters.values)
        return state
    }

    /// `state`: from ``sharedState(for:)`` (made first when a ``StateServer`` must serve it).
    public init(task: TrainingTask, state: SharedState? = nil, session: any ClusterSession,
                options: DiLoCoOptions = DiLoCoOptions(), logger: Logger) throws {
        self.task = task
        self.session = session
        self.options = options
        self.logger = logger
        let count = task.parameters.count
        self.state = try state ?? Self.sharedState(for: task)
        guard self.state.floats("theta")?.count == count, self.state.floats("momentum")?.count == count else {
            throw SharedState.LayoutError(description: "the shared state does not fit the model (\(count) parameters)")
        }
        delta = .allocate(capacity: max(count, 1))
        nextDelta = .allocate(capacity: max(count, 1))
        averaged = .allocate(capacity: max(count, 1))
        delta.initialize(repeating: 0)
        nextDelta.initialize(repeating: 0)
        averaged.initialize(repeating: 0)
    }

    deinit {
        delta.deallocate()
        nextDelta.deallocate()
        averaged.deallocate()
    }

    public var revision: UInt64 { state.revision }

    /// Runs one outer step and returns what happened. In both modes the shared revision advances
    /// by exactly one, and no collective is left running when the call returns.
    ///
    /// `topologyUpdated`: the caller has just passed the update point of this step (e.g. while
    /// waiting for enough peers) and got this many peers. Every member must pass exactly one update
    /// point per step, or a joiner and the members would wait for each other at different ones.
    public func outerStep(topologyUpdated: Int? = nil) async throws -> OuterStepReport {
        switch options.mode {
        case .sync: try await synchronousStep(topologyUpdated: topologyUpdated)
        case .async: try await delayedStep(topologyUpdated: topologyUpdated)
        }
    }

    // MARK: - Sync mode

    private func synchronousStep(topologyUpdated: Int?) async throws -> OuterStepReport {
        let callStart = DispatchTime.now().uptimeNanoseconds
        holdsDelta = false
        var peers: Int
        if let topologyUpdated { peers = topologyUpdated } else { peers = try await session.updateTopology() }
        var retries = 0
        try await sync(&peers, &retries)
        let theta = state.floats("theta")!

        var roundRevision = state.revision
        var round = try innerRound(from: theta, minus: nil, into: delta)
        while true {
            do {
                try await session.allReduce(
                    input: UnsafeRawBufferPointer(delta), output: UnsafeMutableRawBufferPointer(averaged), type: .f32,
                    options: allReduceOptions)
                break
            } catch let error as CollectiveError where Self.isRetryable(error) {
                try await recoverForRetry(after: error, "pseudo-gradient all-reduce", &peers, &retries)
                // A joiner may have been admitted by that update point: it syncs before it trains,
                // so the survivors sync too (cheap when they already agree) to stay in step with it.
                try await sync(&peers, &retries)
                if state.revision != roundRevision {
                    // This peer was out of the cluster (removed while frozen, say) and has just
                    // downloaded a newer θ: a pseudo-gradient from the old one would pull the
                    // cluster back. The round is run again from the new θ.
                    logger.info("the shared state moved on while this peer was away: inner round again from the new θ",
                                metadata: ["revision.old": "\(roundRevision)", "revision": "\(state.revision)"])
                    roundRevision = state.revision
                    round = try innerRound(from: theta, minus: nil, into: delta)
                }
            }
        }
        applyOuterStep(scale: nil, contributors: peers)
        return report(callStart: callStart, peers: peers, contributors: peers, lossSum: round.lossSum,
                      innerSteps: options.innerSteps, innerSeconds: round.seconds, retries: retries)
    }

    // MARK: - Async (one-step-delayed) mode

    /// One delayed outer step (docs/diloco.md, "Async mode"):
    ///
    /// 1. Update point, then sync; the sync also counts the members holding a pseudo-gradient
    ///    (only peers admitted at this update point hold none). If nobody holds one (the run's
    ///    first step) every member first runs one inner round from θ to get one.
    /// 2. Start the all-reduce of the pseudo-gradient in hand (`delta`; zeros on a new peer) in
    ///    the background and run this step's inner round meanwhile, from θ − Δ_in-hand
    ///    (``DiLoCoOptions/AsyncStart/rebase``) or θ (``DiLoCoOptions/AsyncStart/restart``); its
    ///    own pseudo-gradient, relative to where it started, goes to `nextDelta`.
    /// 3. Await the all-reduce (after a failure: new ring of the survivors, sync, the same Δ
    ///    again), rescale the average to the contributing members, apply the outer step to θ,
    ///    revision + 1. `nextDelta` becomes the pseudo-gradient in hand.
    private func delayedStep(topologyUpdated: Int?) async throws -> OuterStepReport {
        let callStart = DispatchTime.now().uptimeNanoseconds
        var peers: Int
        if let topologyUpdated { peers = topologyUpdated } else { peers = try await session.updateTopology() }
        var retries = 0
        var counts = try await delayedSync(&peers, &retries)
        let theta = state.floats("theta")!
        var lossSum: Float = 0
        var innerSteps = 0
        var innerSeconds = 0.0

        if counts.contributing == 0 {
            // Every member sees the same counts, so all of them run this extra round together.
            let first = try innerRound(from: theta, minus: nil, into: delta)
            lossSum += first.lossSum
            innerSteps += options.innerSteps
            innerSeconds += first.seconds
            holdsDelta = true
            counts.contributing = counts.members
        }
        if !holdsDelta {
            // Admitted at this update point: nothing to give to this all-reduce. Zeros, and the
            // average is rescaled to the members that do contribute.
            delta.update(repeating: 0)
            logger.info("no pseudo-gradient yet: this step's all-reduce carries zeros from this peer",
                        metadata: ["revision": "\(state.revision)", "contributors": "\(counts.contributing)/\(counts.members)"])
        }

        // The background all-reduce reads `delta` and writes `averaged`; the inner round reads θ
        // and `delta` and writes the model and `nextDelta`. Nothing writes θ, the momentum or
        // `delta` until the all-reduce is awaited.
        let buffers = PseudoGradientBuffers(input: delta, output: averaged)
        let session = self.session
        let reduceOptions = allReduceOptions
        async let firstAttempt = buffers.allReduce(on: session, options: reduceOptions)
        let base = holdsDelta && options.asyncStart == .rebase ? UnsafeBufferPointer(delta) : nil
        let round = try innerRound(from: theta, minus: base, into: nextDelta)
        lossSum += round.lossSum
        innerSteps += options.innerSteps
        innerSeconds += round.seconds

        var failure = try await firstAttempt
        while let error = failure {
            try await recoverForRetry(after: error, "pseudo-gradient all-reduce", &peers, &retries)
            // The survivors' ring may include a peer admitted at that update point: sync so it
            // gets θ, and count the contributors again.
            counts = try await delayedSync(&peers, &retries)
            if counts.contributing == 0 { break }
            // Named by the revision every member holds after that sync.
            failure = try await buffers.allReduce(on: session, options: allReduceOptions)
        }
        if counts.contributing > 0 {
            applyOuterStep(scale: counts.contributing == counts.members ? nil : Float(counts.members) / Float(counts.contributing),
                           contributors: counts.contributing)
        } else {
            // Only peers admitted at the recovery point are left: nobody has anything to average.
            logger.warning("no member left holds a pseudo-gradient: no outer update this step",
                           metadata: ["revision": "\(state.revision)"])
        }
        swap(&delta, &nextDelta)
        holdsDelta = true
        return report(callStart: callStart, peers: peers, contributors: counts.contributing, lossSum: lossSum,
                      innerSteps: innerSteps, innerSeconds: innerSeconds, retries: retries)
    }

    /// Phase 2 of the delayed mode, with retries on the survivors when a member goes away during it.
    private func delayedSync(_ peers: inout Int, _ retries: inout Int) async throws -> Contributors {
        while true {
            do {
                let counts = try await session.syncSharedState(state, contributing: holdsDelta)
                peers = counts.members
                return counts
            } catch let error as CollectiveError where Self.isRetryable(error) {
                try await recoverForRetry(after: error, "shared-state sync", &peers, &retries)
            }
        }
    }

    // MARK: - Shared parts

    private var allReduceOptions: AllReduceOptions {
        AllReduceOptions(id: CollectiveID(purpose: .pseudoGradient, sequence: state.revision & CollectiveID.maxSequence),
                         op: .avg, quantization: options.quantization, timeout: options.allReduceTimeout)
    }

    /// H inner steps from `theta − minus` (or `theta`), then `output` = start − θ_local: the
    /// round's pseudo-gradient relative to where it started. The start is computed twice, with
    /// the same operations, rather than kept in a fourth buffer.
    private func innerRound(from theta: UnsafeMutableBufferPointer<Float>, minus: UnsafeBufferPointer<Float>?,
                            into output: UnsafeMutableBufferPointer<Float>) throws -> (lossSum: Float, seconds: Double) {
        let start = DispatchTime.now().uptimeNanoseconds
        let local = task.parameters.values
        let count = local.count
        if let minus {
            for i in 0..<count { local[i] = theta[i] - minus[i] }
        } else {
            task.parameters.load(UnsafeBufferPointer(theta))
        }
        var lossSum: Float = 0
        for _ in 0..<options.innerSteps {
            // A daemon shutting down past its grace period cancels the step: stop between inner
            // steps rather than finish a round nobody will use.
            try Task.checkCancellation()
            lossSum += task.step()
        }
        if let minus {
            for i in 0..<count { output[i] = (theta[i] - minus[i]) - local[i] }
        } else {
            for i in 0..<count { output[i] = theta[i] - local[i] }
        }
        return (lossSum, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// θ ← outer Nesterov step with the averaged pseudo-gradient (times `scale`, when only some
    /// members contributed), revision + 1, under the state lock (donors may be serving θ). Plain
    /// scalar Swift on inputs that are bit-identical on every member: the result is too.
    private func applyOuterStep(scale: Float?, contributors: Int) {
        let count = task.parameters.count
        let theta = state.floats("theta")!
        let momentum = state.floats("momentum")!
        if let scale {
            for i in 0..<count { averaged[i] = averaged[i] * scale }
        }
        session.updatingState {
            SGDNesterov.apply(parameters: theta.baseAddress!, gradients: averaged.baseAddress!, momentum: momentum.baseAddress!,
                              count: count, learningRate: options.outerLearningRate, momentumFactor: options.outerMomentum)
            state.lineage = state.lineage.advanced(line: session.line, contributors: contributors)
            state.setRevision(state.revision + 1)
        }
        task.parameters.load(UnsafeBufferPointer(theta))
    }

    private func report(callStart: UInt64, peers: Int, contributors: Int, lossSum: Float, innerSteps: Int,
                        innerSeconds: Double, retries: Int) -> OuterStepReport {
        let count = task.parameters.count
        let digest = state.digest()
        let wall = Double(DispatchTime.now().uptimeNanoseconds - callStart) / 1e9
        let wire = options.quantization == .none ? count * 4 : QuantKernels.encodedSize(count: count, mode: options.quantization)
        let report = OuterStepReport(
            revision: state.revision, peers: peers, contributors: contributors,
            meanInnerLoss: lossSum / Float(max(innerSteps, 1)), digest: digest,
            bytesSent: peers > 1 ? wire * 2 * (peers - 1) / peers : 0, retries: retries,
            innerSeconds: innerSeconds, communicationSeconds: max(wall - innerSeconds, 0))
        logger.info("outer step", metadata: ["revision": "\(report.revision)", "loss": "\(report.meanInnerLoss)",
                                             "digest": "\(report.digest.short)", "peers": "\(peers)",
                                             "mode": "\(options.mode.rawValue)"])
        return report
    }

    /// Phase 2 with retries on the survivors when a member goes away during it.
    private func sync(_ peers: inout Int, _ retries: inout Int) async throws {
        while true {
            do {
                try await session.syncSharedState(state)
                return
            } catch let error as CollectiveError where Self.isRetryable(error) {
                try await recoverForRetry(after: error, "shared-state sync", &peers, &retries)
            }
        }
    }

    /// Counts a retry of `what` (or gives up with `error` past `maxRetries`), logs it, and meets
    /// the survivors at an update point to form their ring. The retry repeats the same work with
    /// the same inputs, never a local fallback. A cancelled step (a daemon past its shutdown grace
    /// period) is not retried: no new ring is worth waiting for then.
    private func recoverForRetry(after error: CollectiveError, _ what: String,
                                 _ peers: inout Int, _ retries: inout Int) async throws {
        retries += 1
        guard retries <= options.maxRetries else { throw error }
        logger.warning("\(what) aborted; retrying on the survivors",
                       metadata: ["revision": "\(state.revision)", "retry": "\(retries)", "reason": "\(error.message)"])
        try Task.checkCancellation()
        peers = try await session.recover()
    }

    /// Failures a new ring can cure: a member died or left, or the ring timed out.
    public static func isRetryable(_ error: CollectiveError) -> Bool {
        error.code == .membershipChanged || error.code == .notConnected || error.code == .timedOut
    }

    /// The model's metric at the current global θ.
    public func evaluate() -> Metrics {
        task.parameters.load(UnsafeBufferPointer(state.floats("theta")!))
        return task.evaluate()
    }
}

/// The pseudo-gradient all-reduce's input and output, handed to the background task. Sendable
/// by contract: while that task runs the trainer neither writes `input` nor touches `output`.
struct PseudoGradientBuffers: @unchecked Sendable {
    let input: UnsafeMutableBufferPointer<Float>
    let output: UnsafeMutableBufferPointer<Float>

    /// The all-reduce of `input` into `output`: nil when it succeeded, the error when a new ring
    /// can cure it; other errors are thrown. On failure `input` is as it was.
    func allReduce(on session: any ClusterSession, options: AllReduceOptions) async throws -> CollectiveError? {
        do {
            try await session.allReduce(input: UnsafeRawBufferPointer(input), output: UnsafeMutableRawBufferPointer(output),
                                        type: .f32, options: options)
            return nil
        } catch let error as CollectiveError where DiLoCoTrainer.isRetryable(error) {
            return error
        }
    }
}
