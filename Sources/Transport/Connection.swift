import NIOCore

/// Receives what arrives on an authenticated connection. Called on the connection's event
/// loop, in order; implementations must not block.
public protocol ConnectionDelegate: AnyObject, Sendable {
    func connection(_ connection: Connection, received event: FrameEvent)
    func connectionWritabilityChanged(_ connection: Connection)
    func connectionClosed(_ connection: Connection, error: (any Error)?)
}

/// An authenticated TCP connection to one peer.
///
/// Frames are written whole (header and every payload piece in one event-loop turn), so
/// frames of concurrent collectives sharing the connection never interleave.
public final class Connection: Sendable, CustomStringConvertible {
    public let channel: any Channel
    public let remoteId: UInt64
    public let purpose: ConnectionPurpose
    public let info: [UInt8]

    init(channel: any Channel, result: HandshakeResult) {
        self.channel = channel
        self.remoteId = result.remoteId
        self.purpose = result.purpose
        self.info = result.info
    }

    public var eventLoop: any EventLoop { channel.eventLoop }
    public var isWritable: Bool { channel.isWritable }
    public var isActive: Bool { channel.isActive }

    public var description: String {
        "\(purpose) connection with \(hex(remoteId)) (\(channel.remoteAddress.map { "\($0)" } ?? "closed"))"
    }

    /// Writes one frame; `payload` pieces are sent back to back after the header without copying.
    @discardableResult
    public func send(_ header: FrameHeader, _ payload: [ByteBuffer] = []) -> EventLoopFuture<Void> {
        let channel = self.channel
        if channel.eventLoop.inEventLoop {
            return Self.write(channel, header, payload)
        }
        return channel.eventLoop.flatSubmit { Self.write(channel, header, payload) }
    }

    @discardableResult
    public func send(_ type: MessageType, tag: UInt64 = 0, aux: UInt64 = 0, bytes: [UInt8]) -> EventLoopFuture<Void> {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return send(FrameHeader(type: type, length: UInt32(bytes.count), tag: tag, aux: aux), [buffer])
    }

    private static func write(_ channel: any Channel, _ header: FrameHeader, _ payload: [ByteBuffer]) -> EventLoopFuture<Void> {
        var head = channel.allocator.buffer(capacity: FrameHeader.size)
        header.write(to: &head)
        guard !payload.isEmpty else { return channel.writeAndFlush(head) }
        channel.write(head, promise: nil)
        for piece in payload.dropLast() { channel.write(piece, promise: nil) }
        return channel.writeAndFlush(payload.last!)
    }

    public func close() {
        channel.close(promise: nil)
    }
}
