import Logging
import NIOCore
import NIOPosix

/// Tunables of the TCP transport. Defaults suit loopback and a LAN; docs/operations.md says how
/// to change them for a WAN.
public struct TransportOptions: Sendable {
    public var limits = FrameLimits()
    /// The whole handshake's deadline on both ends (not a per-read timeout: a peer that sends a
    /// byte now and then is closed at this deadline all the same).
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Connections of one listening port that have not finished the handshake: at most this
    /// many, and at most ``maxPendingHandshakesPerAddress`` from one source address; the excess
    /// is closed at accept (docs/protocol.md §2).
    public var maxPendingHandshakes = 64
    public var maxPendingHandshakesPerAddress = 32
    public var connectTimeout: TimeAmount = .seconds(5)
    /// Above this many queued outbound bytes a connection reports itself unwritable, which
    /// pauses collective senders (bounded memory per link).
    public var writeBufferHighWatermark = 8 << 20
    public var writeBufferLowWatermark = 2 << 20
    /// Largest single read from a socket; bigger reads mean fewer fragments per segment.
    public var maxReadSize = 1 << 20

    public init() {}
}

/// Listens for and dials authenticated peer connections.
public final class TransportNode: Sendable {
    public let localId: UInt64
    public let group: any EventLoopGroup
    let key: ClusterKey
    let options: TransportOptions
    let logger: Logger

    public init(localId: UInt64, key: ClusterKey, group: any EventLoopGroup, options: TransportOptions = TransportOptions(),
                logger: Logger) {
        self.localId = localId
        self.key = key
        self.group = group
        self.options = options
        var logger = logger
        logger[metadataKey: "node.id"] = "\(hex(localId))"
        self.logger = logger
    }

    /// Event loops for transports, so that layers above need not import NIOPosix.
    public static func makeEventLoopGroup(threads: Int) -> any EventLoopGroup {
        MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    /// A listening socket; `port` is the one the OS chose when 0 was asked for.
    public struct Listener: Sendable {
        public let channel: any Channel
        /// Connections that have not finished the handshake (for tests and logs).
        public let admission: HandshakeAdmission
        public var port: Int { channel.localAddress?.port ?? 0 }
        public func close() async { try? await channel.close() }
    }

    /// Accepts connections; `accept` runs on the event loop once a peer has proven the key and
    /// returns the delegate for it, or nil to refuse it.
    /// `loop` pins every accepted connection to one event loop (default: spread over the group).
    public func listen(host: String, port: Int, on loop: (any EventLoop)? = nil,
                       accept: @escaping @Sendable (Connection) -> ConnectionDelegate?) async throws -> Listener {
        let options = self.options
        let logger = self.logger
        let key = self.key
        let localId = self.localId
        let admission = HandshakeAdmission(total: options.maxPendingHandshakes, perAddress: options.maxPendingHandshakesPerAddress)
        let failureLog = LogRateLimiter()
        let channel = try await ServerBootstrap(group: group, childGroup: loop ?? group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark,
                                value: .init(low: options.writeBufferLowWatermark, high: options.writeBufferHighWatermark))
            .childChannelOption(.recvAllocator,
                                value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: options.maxReadSize))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Refused at once, before a handler or buffer is spent on it.
                    let remote = channel.remoteAddress?.ipAddress ?? "?"
                    if let refusal = admission.admit(remote) {
                        if let suppressed = failureLog.admit() {
                            logger.warning("\(LogRateLimiter.annotate("control port: refused a connection from \(remote) at accept: \(refusal)", suppressed: suppressed))")
                        }
                        channel.close(promise: nil)
                        return
                    }
                    let promise = channel.eventLoop.makePromise(of: Connection.self)
                    promise.futureResult.whenFailure { _ in }
                    let handler = PeerChannelHandler(
                        machine: HandshakeStateMachine(role: .acceptor, localId: localId, key: key),
                        side: .acceptor(accept), established: promise,
                        handshakeTimeout: options.handshakeTimeout, logger: logger, failureLog: failureLog,
                        onHandshakeEnded: { admission.release(remote) }, awaitsTLS: key.tlsContext != nil)
                    if let tls = key.tlsContext {
                        try channel.pipeline.syncOperations.addHandler(try TLSChannelHandler(context: tls, role: .server))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limits: options.limits)))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: host, port: port).get()
        return Listener(channel: channel, admission: admission)
    }

    /// Connects and authenticates; throws a ``HandshakeError`` (wrong key, wrong version,
    /// refused) or the connect error.
    public func dial(host: String, port: Int, purpose: ConnectionPurpose, info: [UInt8] = [],
                     on loop: (any EventLoop)? = nil, delegate: ConnectionDelegate) async throws -> Connection {
        let options = self.options
        let logger = self.logger
        let key = self.key
        let localId = self.localId
        let promise = (loop ?? group.next()).makePromise(of: Connection.self)
        let bootstrap = ClientBootstrap(group: promise.futureResult.eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark,
                           value: .init(low: options.writeBufferLowWatermark, high: options.writeBufferHighWatermark))
            .channelOption(.recvAllocator,
                           value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: options.maxReadSize))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = PeerChannelHandler(
                        machine: HandshakeStateMachine(role: .dialer(purpose, info: info), localId: localId, key: key),
                        side: .dialer(delegate), established: promise,
                        handshakeTimeout: options.handshakeTimeout, logger: logger, awaitsTLS: key.tlsContext != nil)
                    if let tls = key.tlsContext {
                        try channel.pipeline.syncOperations.addHandler(try TLSChannelHandler(context: tls, role: .client))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limits: options.limits)))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        do {
            _ = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        return try await promise.futureResult.get()
    }
}
