import Collectives
import NIOCore

/// Settings of the outer loop; defaults from the DiLoCo paper (Douillard et al., 2023).
public struct DiLoCoOptions: Sendable {
    /// Inner AdamW steps per outer step (H).
    public var innerSteps = 50
    public var outerLearningRate: Float = 0.7
    public var outerMomentum: Float = 0.9
    /// Wire encoding of the pseudo-gradient all-reduce.
    public var quantization: Quantization = .int8MinMax
    public var allReduceTimeout: TimeAmount = .seconds(120)
    /// Retries of one outer step's all-reduce after members died or left.
    public var maxRetries = 5
    public var tag: UInt64 = 0x4449_4C4F  // "DILO"

    public init() {}
}

/// What one outer step did, for logs and the status page.
public struct OuterStepReport: Sendable {
    public var revision: UInt64
    public var peers: Int
    public var meanInnerLoss: Float
    public var digest: Digest
    /// Bytes this peer put on the wire for the pseudo-gradient (approximate: ring share).
    public var bytesSent: Int
    public var retries: Int
    public var innerSeconds: Double
    public var communicationSeconds: Double
}
