import NIOCore
import Transport

public struct CommunicatorOptions: Sendable {
    public var transport = TransportOptions()
    /// Bytes of a neighbour's collective data held while this peer has not yet called the
    /// collective with that tag; beyond it the link stops reading.
    public var maxEarlyBytes = 64 << 20
    /// How long `connect(view:)` keeps trying to reach the right neighbour and waits for the left.
    public var ringFormationTimeout: TimeAmount = .seconds(15)

    public init() {}
}
