import Collectives
import Foundation
import Logging
import Models

/// The DiLoCo outer loop on one peer (DESIGN.md, "DiLoCo").
///
/// Per outer step: update the topology, sync the shared state (θ, outer momentum, revision), run
/// H inner AdamW steps from θ on the local shard, all-reduce the pseudo-gradient Δ = θ − θ_local
/// (average, int8 by default), and apply the outer Nesterov step. The outer step is plain scalar
/// Swift over identical inputs, so every peer ends it with bit-identical θ (checked by digest).
public final class DiLoCoTrainer {
    public let task: TrainingTask
    public let session: any ClusterSession
    public var options: DiLoCoOptions
    /// θ ("theta") and the outer momentum ("momentum"), f32, as long as the model's parameters.
    public let state: SharedState
    private let logger: Logger
    private let delta: UnsafeMutableBufferPointer<Float>
    private let averaged: UnsafeMutableBufferPointer<Float>

    /// The shared state for `task`: θ from the model's initial parameters (every peer initializes
    /// from the same seed, so θ₀ agrees; sync checks it), zero momentum, revision 0.
    public static func sharedState(for task: TrainingTask) throws -> SharedState {
        let count = task.parameters.count
        let state = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [count]),
                                            TensorSpec(name: "momentum", dtype: .f32, shape: [count])])
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
        averaged = .allocate(capacity: max(count, 1))
    }

    deinit {
        delta.deallocate()
        averaged.deallocate()
    }

    public var revision: UInt64 { state.revision }

    /// Runs one outer step and returns what happened.
    ///
    /// `topologyUpdated`: the caller has just passed the update point of this step (e.g. while
    /// waiting for enough peers) and got this many peers. Every member must pass exactly one update
    /// point per step, or a joiner and the members would wait for each other at different ones.
    public func outerStep(topologyUpdated: Int? = nil) async throws -> OuterStepReport {
        let count = task.parameters.count
        var peers: Int
        if let topologyUpdated { peers = topologyUpdated } else { peers = try await session.updateTopology() }
        var retries = 0
        try await sync(&peers, &retries)
        let theta = state.floats("theta")!
        let momentum = state.floats("momentum")!

        let innerStart = DispatchTime.now().uptimeNanoseconds
        task.parameters.load(UnsafeBufferPointer(theta))
        var lossSum: Float = 0
        for _ in 0..<options.innerSteps { lossSum += task.step() }
        let innerSeconds = Double(DispatchTime.now().uptimeNanoseconds - innerStart) / 1e9

        let communicationStart = DispatchTime.now().uptimeNanoseconds
        let local = task.parameters.values
        for i in 0..<count { delta[i] = theta[i] - local[i] }
        while true {
            do {
                try await session.allReduce(
                    input: UnsafeRawBufferPointer(delta), output: UnsafeMutableRawBufferPointer(averaged), type: .f32,
                    options: AllReduceOptions(tag: options.tag, op: .avg, quantization: options.quantization,
                                              timeout: options.allReduceTimeout))
                break
            } catch let error as CollectiveError where Self.isRetryable(error) {
                retries += 1
                guard retries <= options.maxRetries else { throw error }
                logger.warning("pseudo-gradient all-reduce aborted; retrying on the survivors",
                               metadata: ["revision": "\(state.revision)", "retry": "\(retries)", "reason": "\(error.message)"])
                peers = try await session.recover()
                // A joiner may have been admitted by that update point: it syncs before it trains,
                // so the survivors sync too (cheap when they already agree) to stay in step with it.
                try await sync(&peers, &retries)
            }
        }
        session.updatingState {
            SGDNesterov.apply(parameters: theta.baseAddress!, gradients: averaged.baseAddress!, momentum: momentum.baseAddress!,
                              count: count, learningRate: options.outerLearningRate, momentumFactor: options.outerMomentum)
            state.setRevision(state.revision + 1)
        }
        task.parameters.load(UnsafeBufferPointer(theta))
        let communicationSeconds = Double(DispatchTime.now().uptimeNanoseconds - communicationStart) / 1e9
        let wire = options.quantization == .none ? count * 4 : QuantKernels.encodedSize(count: count, mode: options.quantization)
        let report = OuterStepReport(
            revision: state.revision, peers: peers, meanInnerLoss: lossSum / Float(max(options.innerSteps, 1)),
            digest: state.digest(), bytesSent: peers > 1 ? wire * 2 * (peers - 1) / peers : 0, retries: retries,
            innerSeconds: innerSeconds, communicationSeconds: communicationSeconds)
        logger.info("outer step", metadata: ["revision": "\(report.revision)", "loss": "\(report.meanInnerLoss)",
                                             "digest": "\(report.digest.short)", "peers": "\(peers)"])
        return report
    }

    /// Phase 2 with retries on the survivors when a member goes away during it.
    private func sync(_ peers: inout Int, _ retries: inout Int) async throws {
        while true {
            do {
                try await session.syncSharedState(state)
                return
            } catch let error as CollectiveError where Self.isRetryable(error) {
                retries += 1
                guard retries <= options.maxRetries else { throw error }
                logger.warning("shared-state sync aborted; retrying on the survivors", metadata: ["reason": "\(error.message)"])
                peers = try await session.recover()
            }
        }
    }

    /// Failures a new ring can cure: a member died or left, or the ring timed out.
    static func isRetryable(_ error: CollectiveError) -> Bool {
        error.code == .membershipChanged || error.code == .notConnected || error.code == .timedOut
    }

    /// The model's metric at the current global θ.
    public func evaluate() -> Metrics {
        task.parameters.load(UnsafeBufferPointer(state.floats("theta")!))
        return task.evaluate()
    }
}
