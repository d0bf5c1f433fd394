import NIOCore

/// Sent up the pipeline once the TLS handshake is done: the peernode handshake binds to it.
struct TLSEstablished {
    var binding: [UInt8]
    /// With certificates: the four bytes the peer's node id must begin with; nil otherwise.
    var peerPrefix: UInt32?
}

/// TLS 1.3 for the control connections (SwiftNIO): the same OpenSSL engine as the data links
/// (``TLSSession``), between the socket and the frame decoder.
///
/// Until the TLS handshake is done, writes from above wait here; then ``TLSEstablished`` goes
/// up, the waiting writes are sealed, and every read is opened before it is passed on. A
/// failure closes the channel after the alert, or, when a plaintext peer knocked on a TLS
/// port, after a plaintext `reject` frame naming the cause, so both logs say why.
final class TLSChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: TLSSession
    private var waiting: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var failed = false
    private var scratch: [UInt8] = []
    /// Largest plaintext passed up at once.
    static let readChunk = 64 << 10

    init(context: TLSContext, role: TLSSession.Role) throws {
        session = try TLSSession(context: context, role: role)
    }

    func channelActive(context: ChannelHandlerContext) {
        if session.role == .client { advance(context: context) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let bytes = unwrapInboundIn(data)
        do {
            try bytes.withUnsafeReadableBytes { try session.feed($0) }
        } catch {
            fail(context: context, error)
            return
        }
        if !session.established {
            advance(context: context)
            guard session.established, !failed else { return }
        }
        openAll(context: context)
    }

    /// Writes still waiting for the TLS handshake fail with the channel, so no promise is left
    /// unfulfilled.
    func channelInactive(context: ChannelHandlerContext) {
        let queued = waiting
        waiting = []
        for (_, promise) in queued { promise?.fail(ChannelError.ioOnClosedChannel) }
        context.fireChannelInactive()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    /// Runs the handshake one step; on its completion, releases the waiting writes.
    private func advance(context: ChannelHandlerContext) {
        do {
            try session.handshake()
            sendOutput(context: context)
            guard session.established else { return }
            let established = TLSEstablished(binding: try session.channelBinding(), peerPrefix: session.peerIdentityPrefix())
            context.fireUserInboundEventTriggered(established)
            let queued = waiting
            waiting = []
            for (buffer, promise) in queued { write(context: context, data: wrapOutboundOut(buffer), promise: promise) }
            if !queued.isEmpty { context.flush() }
        } catch {
            fail(context: context, error)
        }
    }

    /// Passes up every whole record received so far.
    private func openAll(context: ChannelHandlerContext) {
        do {
            while true {
                var out = context.channel.allocator.buffer(capacity: Self.readChunk)
                let n = try out.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readChunk) { raw in
                    try session.open(into: raw.baseAddress!, count: raw.count)
                }
                guard n > 0 else { break }
                context.fireChannelRead(wrapInboundOut(out))
            }
        } catch {
            fail(context: context, error)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plaintext = unwrapOutboundIn(data)
        guard !failed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard session.established else {
            waiting.append((plaintext, promise))
            return
        }
        scratch.removeAll(keepingCapacity: true)
        do {
            try plaintext.withUnsafeReadableBytes { try session.seal($0, into: &scratch) }
        } catch {
            promise?.fail(error)
            fail(context: context, error)
            return
        }
        var sealed = context.channel.allocator.buffer(capacity: scratch.count)
        sealed.writeBytes(scratch)
        context.write(wrapOutboundOut(sealed), promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        if session.established { context.flush() }
    }

    private func sendOutput(context: ChannelHandlerContext) {
        scratch.removeAll(keepingCapacity: true)
        session.drainOutput(into: &scratch)
        guard !scratch.isEmpty else { return }
        var buffer = context.channel.allocator.buffer(capacity: scratch.count)
        buffer.writeBytes(scratch)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        guard !failed else { return }
        failed = true
        if let tls = error as? TLSError, tls.code == .plaintextPeer, session.role == .server, !session.established {
            // A plaintext peer: answer in its language, so its log says why.
            let reason = Array("this node requires TLS (\(session.context.mode)); it does not accept plaintext peers (give both ends --plaintext, or neither)".utf8)
            var buffer = context.channel.allocator.buffer(capacity: FrameHeader.size + 1 + reason.count)
            FrameHeader(type: .reject, length: UInt32(1 + reason.count)).write(to: &buffer)
            buffer.writeInteger(HandshakeError.Code.security.rawValue)
            buffer.writeBytes(reason)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            sendOutput(context: context)  // the alert
        }
        for (_, promise) in waiting { promise?.fail(error) }
        waiting = []
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension TLSChannelHandler: Sendable {}
