import NIOCore
import Transport

public struct CommunicatorOptions: Sendable {
    public var transport = TransportOptions()
    /// Bytes of a neighbour's collective data held while this peer has not yet called the
    /// collective with that tag; beyond it the link stops reading.
    public var maxEarlyBytes = 64 << 20
    /// How long `connect(view:)` keeps trying to reach the right neighbour and waits for the left.
    public var ringFormationTimeout: TimeAmount = .seconds(15)
    /// TCP connections to each ring neighbour (1...``maxStreams``). Segments are spread over
    /// them round-robin, each with its own sender and receiver thread: on long, lossy or
    /// window-limited paths one TCP stream does not fill the link. Every member of a ring must
    /// use the same number (the data handshake carries it, and a mismatch is refused).
    public var streams = 1
    public static let maxStreams = 16
    /// Send-rate cap per ring stream in bytes per second (0: none), enforced by kernel TCP
    /// pacing. Keeps a run from taking a whole shared link; the benchmark also uses it to stand in
    /// for paths that limit each TCP flow (where more streams give more throughput).
    public var maxStreamRate: UInt64 = 0

    public init() {}
}
