import Collectives
import NIOCore

/// Settings of the outer loop; defaults from the DiLoCo paper (Douillard et al., 2023).
public struct DiLoCoOptions: Sendable {
    /// How an outer step's pseudo-gradient all-reduce is scheduled (docs/diloco.md).
    public enum Mode: String, Sendable, CaseIterable {
        /// Inner steps, then the all-reduce of their pseudo-gradient, then the outer update: the
        /// all-reduce is on the critical path of every step.
        case sync
        /// One-step-delayed: the all-reduce of step t's pseudo-gradient runs in the background
        /// while the inner steps of step t+1 run; the outer update of step t is applied once both
        /// are done. The shared state stays bit-identical on every peer; each update is one step
        /// late.
        case async
    }

    /// Where a peer's inner steps start in ``Mode/async`` (the shared θ is one step behind them).
    public enum AsyncStart: String, Sendable, CaseIterable {
        /// From θ plus this peer's own progress of the round whose all-reduce is in flight,
        /// θ − Δ_local: local progress is used at once and replaced by the average one step later.
        case rebase
        /// From θ alone, as in the "naive delayed" variant of Kale et al. (2025): the round's
        /// local progress is only seen once it arrives averaged.
        case restart
    }

    /// Inner AdamW steps per outer step (H).
    public var innerSteps = 50
    public var outerLearningRate: Float = 0.7
    public var outerMomentum: Float = 0.9
    /// Wire encoding of the pseudo-gradient all-reduce.
    public var quantization: Quantization = .int8MinMax
    public var allReduceTimeout: TimeAmount = .seconds(120)
    /// Retries of one outer step's all-reduce after members died or left.
    public var maxRetries = 5
    public var mode: Mode = .sync
    public var asyncStart: AsyncStart = .rebase

    public init() {}
}

/// What one outer step did, for logs and the status page.
public struct OuterStepReport: Sendable {
    public var revision: UInt64
    public var peers: Int
    /// Peers whose pseudo-gradient went into this step's average: all of them in sync mode; in
    /// async mode a peer admitted at this step's update point has none yet and is not counted.
    public var contributors: Int
    public var meanInnerLoss: Float
    public var digest: Digest
    /// Bytes this peer put on the wire for the pseudo-gradient (approximate: ring share).
    public var bytesSent: Int
    public var retries: Int
    /// Wall time of the inner steps of this call (two rounds in the first async call).
    public var innerSeconds: Double
    /// Wall time of the call outside the inner steps: update point, shared-state sync, waiting
    /// for the all-reduce (only the part not hidden behind inner steps in async mode), retries,
    /// the outer update and the digest. `communicationSeconds / (innerSeconds +
    /// communicationSeconds)` is the step's overhead fraction.
    public var communicationSeconds: Double
}
