import NIOCore

/// Per-call settings of an all-reduce (gloo's `AllreduceOptions` shape).
public struct AllReduceOptions: Sendable {
    /// What this collective is: equal on every peer for one call, and run once per ring (a
    /// second call with the same identity on the same ring is refused).
    public var id: CollectiveID
    public var op: ReduceOp
    /// Ignored for integer types, which are always sent exactly.
    public var quantization: Quantization
    public var timeout: TimeAmount
    /// Bytes of input per pipelined segment; must be equal on every peer. Tests shrink it to
    /// reach multi-segment paths with small buffers.
    public var segmentBytes: Int
    /// Quantized f32 all-reduces of at least this many bytes write their results past the CPU
    /// caches (non-temporal stores): a buffer that size would not stay cached anyway, and this
    /// saves reading every cache line before overwriting it. Smaller results stay in cache for
    /// the caller. Local to this peer (the bytes are the same either way); 0 always, `Int.max` never.
    public var streamResultsFromBytes: Int

    public init(id: CollectiveID, op: ReduceOp = .sum, quantization: Quantization = .none,
                timeout: TimeAmount = .seconds(60), segmentBytes: Int = 1 << 20,
                streamResultsFromBytes: Int = 16 << 20) {
        self.id = id
        self.op = op
        self.quantization = quantization
        self.timeout = timeout
        self.segmentBytes = segmentBytes
        self.streamResultsFromBytes = streamResultsFromBytes
    }

    /// An application collective numbered `tag` by its caller (tests, benchmarks).
    public init(tag: UInt64 = 0, op: ReduceOp = .sum, quantization: Quantization = .none,
                timeout: TimeAmount = .seconds(60), segmentBytes: Int = 1 << 20,
                streamResultsFromBytes: Int = 16 << 20) {
        self.init(id: CollectiveID(purpose: .application, sequence: tag), op: op, quantization: quantization,
                  timeout: timeout, segmentBytes: segmentBytes, streamResultsFromBytes: streamResultsFromBytes)
    }
}

/// Why a collective did not complete. In every case the caller's buffer is as it was.
public struct CollectiveError: Error, Hashable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        /// A member died or left: retry after the next topology update.
        case membershipChanged
        case timedOut
        /// A neighbour sent something that does not fit the plan (different options?).
        case protocolViolation
        case invalidArgument
        /// The communicator has no ring (not connected, or shut down).
        case notConnected
    }
    public var code: Code
    public var message: String
    public var description: String { "collective aborted (\(code)): \(message)" }

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public static func aborted(_ message: String) -> CollectiveError { .init(code: .membershipChanged, message: message) }
}
