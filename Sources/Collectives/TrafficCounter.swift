import Foundation

/// Running totals of ring traffic, shared by every ring a communicator forms.
public final class TrafficCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var sent: UInt64 = 0
    private var received: UInt64 = 0

    public init() {}

    func addSent(_ bytes: Int) { lock.withLock { sent &+= UInt64(bytes) } }
    func addReceived(_ bytes: Int) { lock.withLock { received &+= UInt64(bytes) } }

    public var bytesSent: UInt64 { lock.withLock { sent } }
    public var bytesReceived: UInt64 { lock.withLock { received } }
}
