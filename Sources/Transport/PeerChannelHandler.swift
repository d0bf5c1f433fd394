import Logging
import NIOCore

/// Runs the handshake, then hands every frame event to the connection's delegate.
///
/// Thin on purpose: the protocol decisions live in ``HandshakeStateMachine``.
final class PeerChannelHandler: ChannelInboundHandler {
    typealias InboundIn = FrameEvent

    enum Side {
        case dialer(ConnectionDelegate)
        /// Picks the delegate for an authenticated connection, or refuses it (nil).
        case acceptor(@Sendable (Connection) -> ConnectionDelegate?)
    }

    private enum State {
        case handshaking(HandshakeStateMachine)
        case established(Connection, ConnectionDelegate)
        case closed
    }

    private var state: State
    private let side: Side
    private let established: EventLoopPromise<Connection>
    private let handshakeTimeout: TimeAmount
    private var timeoutTask: Scheduled<Void>?
    private let logger: Logger
    /// Called once, when the handshake ends whichever way (the listener's admission slot).
    private var onHandshakeEnded: (() -> Void)?
    /// Bounds the lines about failed handshakes (an acceptor's are strangers' doing); nil: all.
    private let failureLog: LogRateLimiter?
    /// A TLS handler below: the handshake starts on ``TLSEstablished``, bound to its channel.
    private let awaitsTLS: Bool

    init(machine: HandshakeStateMachine, side: Side, established: EventLoopPromise<Connection>,
         handshakeTimeout: TimeAmount, logger: Logger, failureLog: LogRateLimiter? = nil,
         onHandshakeEnded: (() -> Void)? = nil, awaitsTLS: Bool = false) {
        self.awaitsTLS = awaitsTLS
        self.state = .handshaking(machine)
        self.side = side
        self.established = established
        self.handshakeTimeout = handshakeTimeout
        self.logger = logger
        self.failureLog = failureLog
        self.onHandshakeEnded = onHandshakeEnded
    }

    private func handshakeEnded() {
        let callback = onHandshakeEnded
        onHandshakeEnded = nil
        callback?()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeEnded()
    }

    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeoutTask = context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let (handler, context) = loopBound.value
            handler.failHandshake(context: context,
                                  HandshakeError(code: .timeout, message: "handshake timed out after \(handler.handshakeTimeout)"),
                                  reject: true)
        }
        if !awaitsTLS, case .handshaking(var machine) = state {
            let step = machine.start()
            state = .handshaking(machine)
            apply(step, context: context)
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard awaitsTLS, let tls = event as? TLSEstablished, case .handshaking(var machine) = state else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        machine.binding = tls.binding
        machine.peerPrefix = tls.peerPrefix
        let step = machine.start()
        state = .handshaking(machine)
        apply(step, context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let event = unwrapInboundIn(data)
        switch state {
        case .handshaking(var machine):
            guard case .frame(let header, let payload) = event else {
                failHandshake(context: context, HandshakeError(code: .protocolViolation, message: "data frame before the handshake finished"), reject: true)
                return
            }
            let step = machine.receive(header.type, payload)
            state = .handshaking(machine)
            apply(step, context: context)
        case .established(let connection, let delegate):
            delegate.connection(connection, received: event)
        case .closed:
            break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .established(let connection, let delegate) = state {
            delegate.connectionWritabilityChanged(connection)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .handshaking:
            if let decoding = error as? FrameDecodingError {
                failHandshake(context: context, HandshakeError(decoding), reject: true)
            } else if let tls = error as? TLSError {
                // The TLS layer already told the peer (an alert, or a plaintext reject).
                failHandshake(context: context, HandshakeError(tls), reject: false)
            } else {
                failHandshake(context: context, HandshakeError(code: .refused, message: "\(error)"), reject: false)
            }
        case .established(let connection, let delegate):
            logger.warning("closing connection after error", metadata: ["peer.id": "\(hex(connection.remoteId))", "error": "\(error)"])
            state = .closed
            delegate.connectionClosed(connection, error: error)
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        handshakeEnded()
        switch state {
        case .handshaking:
            state = .closed
            established.fail(HandshakeError(code: .refused, message: "connection closed during the handshake"))
        case .established(let connection, let delegate):
            state = .closed
            delegate.connectionClosed(connection, error: nil)
        case .closed:
            break
        }
        context.fireChannelInactive()
    }

    private func apply(_ step: HandshakeStateMachine.Step, context: ChannelHandlerContext) {
        if let (type, bytes) = step.send {
            var buffer = context.channel.allocator.buffer(capacity: FrameHeader.size + bytes.count)
            FrameHeader(type: type, length: UInt32(bytes.count)).write(to: &buffer)
            buffer.writeBytes(bytes)
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }
        switch step.outcome {
        case nil:
            break
        case .failed(let error):
            failHandshake(context: context, error, reject: false)
        case .authenticated(let result):
            timeoutTask?.cancel()
            handshakeEnded()
            let connection = Connection(channel: context.channel, result: result)
            let delegate: ConnectionDelegate?
            switch side {
            case .dialer(let d): delegate = d
            case .acceptor(let choose): delegate = choose(connection)
            }
            guard let delegate else {
                logger.info("authenticated connection not wanted; closing", metadata: ["peer.id": "\(hex(result.remoteId))", "purpose": "\(result.purpose)"])
                state = .closed
                established.fail(HandshakeError(code: .refused, message: "connection not wanted"))
                context.close(promise: nil)
                return
            }
            state = .established(connection, delegate)
            established.succeed(connection)
        }
    }

    /// Logs once, tells the peer why (when it makes sense) and closes.
    private func failHandshake(context: ChannelHandlerContext, _ error: HandshakeError, reject: Bool) {
        guard case .handshaking = state else { return }
        state = .closed
        timeoutTask?.cancel()
        handshakeEnded()
        let remote = context.channel.remoteAddress.map { "\($0)" } ?? "?"
        if let suppressed = failureLog.map({ $0.admit() }) ?? 0 {
            logger.error("\(LogRateLimiter.annotate("handshake failed with \(remote): \(escapedForLog(error.message))", suppressed: suppressed))",
                         metadata: ["remote.address": "\(remote)"])
        }
        if reject {
            var buffer = context.channel.allocator.buffer(capacity: 64)
            let reason = Array(error.message.utf8.prefix(512))
            FrameHeader(type: .reject, length: UInt32(1 + reason.count)).write(to: &buffer)
            buffer.writeInteger(error.code.rawValue)
            buffer.writeBytes(reason)
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }
        context.close(promise: nil)
        established.fail(error)
    }
}

@available(*, unavailable)
extension PeerChannelHandler: Sendable {}
