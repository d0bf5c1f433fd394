/// What a collective is, the same on every member that runs it: what it is for, which step of
/// the shared state it belongs to, and after which update point it runs.
///
/// It travels in every data frame (docs/protocol.md, "Collective identity") and keys the outcome
/// round, so that two members can only ever combine frames of the same collective. Per-tag call
/// counters, which it replaces, shift silently on every member after them as soon as one code
/// path runs one collective more; an identity built from what the collective is cannot.
public struct CollectiveID: Hashable, Sendable, CustomStringConvertible {
    public var purpose: CollectivePurpose
    /// Which instance of the purpose: for DiLoCo's pseudo-gradient, the revision of the shared
    /// state the step starts from; for other users, any number they agree on. 56 bits on the wire.
    public var sequence: UInt64
    /// The update point after which it runs, counted by the coordinator within the ring's epoch
    /// (0 where there is no membership layer). A retry after an abort passes a new update point,
    /// so it is a new collective, with its own outcome round.
    public var point: UInt64

    /// The largest sequence number the wire carries.
    public static let maxSequence: UInt64 = (1 << 56) - 1

    public init(purpose: CollectivePurpose, sequence: UInt64 = 0, point: UInt64 = 0) {
        precondition(sequence <= Self.maxSequence, "a collective's sequence number has 56 bits")
        self.purpose = purpose
        self.sequence = sequence
        self.point = point
    }

    /// The data frames' `tag`: the purpose in the top byte, the sequence below it.
    public var wireTag: UInt64 { UInt64(purpose.rawValue) << 56 | sequence }
    /// The data frames' `flags`: the update point's low 16 bits. Frames need only tell apart the
    /// collectives that can meet on the links of one ring, and a ring is formed anew (new links)
    /// long before 65536 update points pass.
    public var wireFlags: UInt16 { UInt16(truncatingIfNeeded: point) }

    /// The identity as the frames of one ring carry it: the point cut to 16 bits.
    var onRing: CollectiveID {
        CollectiveID(purpose: purpose, sequence: sequence, point: UInt64(wireFlags))
    }

    /// The identity a data frame names.
    init(wireTag: UInt64, wireFlags: UInt16) {
        purpose = CollectivePurpose(rawValue: UInt8(wireTag >> 56))
        sequence = wireTag & Self.maxSequence
        point = UInt64(wireFlags)
    }

    public var description: String { "\(purpose) #\(sequence) at point \(point)" }
}

/// What a collective is for. Numbers are part of the wire protocol (docs/protocol.md); never reuse one.
public struct CollectivePurpose: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Numbered by whoever calls the communicator (tests, benchmarks, library users).
    public static let application = CollectivePurpose(rawValue: 0)
    /// DiLoCo's pseudo-gradient average; the sequence is the revision the step starts from.
    public static let pseudoGradient = CollectivePurpose(rawValue: 1)
    /// The all-gather of the members' sync records at an update point (sequence 0: members
    /// may hold different revisions until it is done).
    public static let syncRecords = CollectivePurpose(rawValue: 2)
    /// A fixed ring's parity check of the shared state: the min and the max of its digest.
    public static let parityLow = CollectivePurpose(rawValue: 3)
    public static let parityHigh = CollectivePurpose(rawValue: 4)
    /// A benchmark's barrier between timed runs.
    public static let barrier = CollectivePurpose(rawValue: 5)

    public var description: String {
        switch self {
        case .application: "application"
        case .pseudoGradient: "pseudo-gradient"
        case .syncRecords: "sync-records"
        case .parityLow: "parity-low"
        case .parityHigh: "parity-high"
        case .barrier: "barrier"
        default: "purpose(\(rawValue))"
        }
    }
}
