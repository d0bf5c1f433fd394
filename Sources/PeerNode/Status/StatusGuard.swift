import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// Bounds on what one client may cost the status port (docs/operations.md, "The status port").
struct StatusLimits: Sendable {
    /// Connections open at once; more are closed at accept.
    var maxConnections = 32
    /// Bytes a client may send for one request (head and any body), counted from the end of the
    /// previous answer; more closes the connection (a GET has nothing to upload).
    var maxRequestBytes = 64 << 10
    /// A whole request must arrive within this time of the connection opening or of the
    /// previous answer (an idle keep-alive connection is closed after it, too): a client that
    /// trickles a byte now and then is cut off all the same.
    var requestTimeout: TimeAmount = .seconds(10)
    /// Header lines per request, and their bytes.
    var maxHeaderCount = 64
    var maxHeaderBytes = 16 << 10
}

/// Hummingbird's HTTP/1 channel with ``StatusConnectionGuard`` in front of its decoder.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let limits: StatusLimits
    let open: StatusConnectionCount

    /// The server builder for `Application(server:)`.
    static func builder(limits: StatusLimits) -> HTTPServerBuilder {
        let open = StatusConnectionCount()
        let configuration = HTTP1Channel.Configuration(
            // The guard's request timeout bounds idle connections more tightly.
            idleTimeout: limits.requestTimeout * 3,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                                            maxHeaderFieldCount: limits.maxHeaderCount))
        return HTTPServerBuilder { responder in
            GuardedHTTP1Channel(inner: HTTP1Channel(responder: responder, configuration: configuration), limits: limits, open: open)
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(StatusConnectionGuard(limits: limits, open: open))
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Connections open on one status port.
final class StatusConnectionCount: Sendable {
    private let count = Mutex(0)
    /// Takes a place, or false if all `limit` are taken.
    func take(limit: Int) -> Bool {
        count.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }
    func give() { count.withLock { $0 -= 1 } }
}

/// The status port's first handler, on raw bytes, before HTTP parsing:
/// - closes a connection at once when ``StatusLimits/maxConnections`` are open;
/// - answers any method other than GET with 405 and `Allow: GET` before reading more of the
///   request (also a method the HTTP parser does not know, which it would answer with 400);
/// - closes a connection whose request outgrows ``StatusLimits/maxRequestBytes`` (a body sent
///   with a GET is not read whole) or does not arrive whole within
///   ``StatusLimits/requestTimeout``.
/// A request is taken as complete when an answer is written; the counts restart then.
final class StatusConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let limits: StatusLimits
    private let open: StatusConnectionCount
    private var counted = false
    private var received = 0
    /// The first bytes of a request, held until its method is known.
    private var methodBytes: ByteBuffer?
    private var checkedMethod = false
    private var refused = false
    /// Set once the channel is inactive: no clock is started after that (a scheduled task holds
    /// the channel until it fires; found by fuzzing, where it never fires).
    private var inactive = false
    private var deadline: Scheduled<Void>?

    init(limits: StatusLimits, open: StatusConnectionCount) {
        self.limits = limits
        self.open = open
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        guard open.take(limit: limits.maxConnections) else {
            refused = true
            context.close(promise: nil)
            return
        }
        counted = true
        startClock(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        deadline?.cancel()
        deadline = nil
        if counted {
            counted = false
            open.give()
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        inactive = true
        deadline?.cancel()
        deadline = nil
        if counted {
            counted = false
            open.give()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        var bytes = unwrapInboundIn(data)
        received += bytes.readableBytes
        guard received <= limits.maxRequestBytes else {
            refuse(context: context)
            return
        }
        guard !checkedMethod else {
            context.fireChannelRead(wrapInboundOut(bytes))
            return
        }
        if methodBytes == nil { methodBytes = bytes } else { methodBytes!.writeBuffer(&bytes) }
        let held = methodBytes!
        let view = held.readableBytesView
        // Leading empty lines before a request are allowed (RFC 9112 §2.2).
        let start = view.firstIndex { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") } ?? view.endIndex
        guard let space = view[start...].firstIndex(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) else {
            // No end of the method yet: wait for more (a method longer than this is not one).
            if view.endIndex - start > 32 { refuse(context: context) }
            return
        }
        checkedMethod = true
        methodBytes = nil
        let method = Array(view[start..<space])
        if method != Array("GET".utf8), !method.isEmpty,
           method.allSatisfy({ (0x21...0x7E).contains($0) && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) }) {
            methodNotAllowed(context: context)
            return
        }
        context.fireChannelRead(wrapInboundOut(held))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // An answer is being written: the request it answers is complete.
        received = 0
        checkedMethod = false
        methodBytes = nil
        startClock(context: context)
        context.write(data, promise: promise)
    }

    private func startClock(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        guard !inactive, !refused, context.channel.isActive else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: limits.requestTimeout) {
            let (handler, context) = loopBound.value
            handler.deadline = nil
            handler.refuse(context: context)
        }
    }

    private func refuse(context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        deadline?.cancel()
        deadline = nil
        context.close(promise: nil)
    }

    private func methodNotAllowed(context: ChannelHandlerContext) {
        refused = true
        deadline?.cancel()
        deadline = nil
        let body = "the status port is read-only: use GET\n"
        let head = "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Cache-Control: no-store\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        let buffer = context.channel.allocator.buffer(string: head + body)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: written)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
    }
}

@available(*, unavailable)
extension StatusConnectionGuard: Sendable {}
