import Logging
import NIOConcurrencyHelpers
import NIOCore
import Transport

/// Collectives over an ordered ring of peers.
///
/// Ring traffic uses two event-loop threads: `loop` receives and reduces (every collective's
/// state is confined to it, so it needs no locks) and `sendLoop` writes to the right
/// neighbour, so a blocked send never stalls receiving (docs/protocol.md).
public final class Communicator: @unchecked Sendable {
    public let localId: UInt64
    public let transport: TransportNode
    public let loop: any EventLoop
    let sendLoop: any EventLoop
    private let group: any EventLoopGroup
    private let logger: Logger
    private let options: CommunicatorOptions

    // Loop-confined state.
    private var listener: TransportNode.Listener?
    private var router: RingRouter?
    private var inbound: [InboundKey: (Connection, InboundLink)] = [:]
    private var inboundWaiters: [InboundKey: EventLoopPromise<Connection>] = [:]
    private var pool: [UnsafeMutableRawBufferPointer] = []
    private var shutDown = false
    /// Set once, from any thread: after it the loop is gone and nothing may be submitted.
    private let stopped = NIOLockedValueBox(false)

    private struct InboundKey: Hashable { var id: UInt64; var epoch: UInt64 }

    public init(localId: UInt64, key: ClusterKey, options: CommunicatorOptions = CommunicatorOptions(), logger: Logger) {
        self.localId = localId
        self.options = options
        var logger = logger
        logger[metadataKey: "node.id"] = "\(hex(localId))"
        self.logger = logger
        group = TransportNode.makeEventLoopGroup(threads: 2)
        loop = group.next()
        sendLoop = group.next()
        transport = TransportNode(localId: localId, key: key, group: group, options: options.transport, logger: logger)
    }

    deinit {
        for buffer in pool { buffer.deallocate() }
    }

    /// Binds the data port (0: the OS picks one) and returns it.
    public func listen(host: String, port: Int) async throws -> Int {
        try checkRunning()
        let listener = try await transport.listen(host: host, port: port, on: loop) { [self] connection in
            acceptInbound(connection)
        }
        try await loop.submit { self.listener = listener }.get()
        return listener.port
    }

    /// Runs on the ring loop, where every accepted connection lives.
    private func acceptInbound(_ connection: Connection) -> ConnectionDelegate? {
        guard connection.purpose == .ring, connection.info.count == 8, !shutDown else { return nil }
        let epoch = connection.info.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
        let key = InboundKey(id: connection.remoteId, epoch: epoch)
        let link = InboundLink()
        if let old = inbound[key] { old.0.close() }
        inbound[key] = (connection, link)
        inboundWaiters.removeValue(forKey: key)?.succeed(connection)
        return link
    }

    private func waitForInbound(_ key: InboundKey) -> EventLoopFuture<Connection> {
        loop.flatSubmit {
            if let (connection, _) = self.inbound[key] { return self.loop.makeSucceededFuture(connection) }
            let promise = self.loop.makePromise(of: Connection.self)
            self.inboundWaiters[key]?.fail(CollectiveError.aborted("superseded"))
            self.inboundWaiters[key] = promise
            let loopBound = NIOLoopBound(self, eventLoop: self.loop)
            self.loop.scheduleTask(in: self.options.ringFormationTimeout) {
                loopBound.value.inboundWaiters.removeValue(forKey: key)?.fail(CollectiveError(
                    code: .timedOut, message: "left neighbour \(hex(key.id)) did not connect within \(self.options.ringFormationTimeout)"))
            }
            return promise.futureResult
        }
    }

    private func dialWithRetry(_ peer: PeerEndpoint, epoch: UInt64, delegate: ConnectionDelegate) async throws -> Connection {
        let deadline = NIODeadline.now() + options.ringFormationTimeout
        var delay = TimeAmount.milliseconds(20)
        while true {
            do {
                return try await transport.dial(host: peer.host, port: peer.port, purpose: .ring, info: be64(epoch),
                                                on: sendLoop, delegate: delegate)
            } catch let error as HandshakeError where error.code == .badKey || error.code == .versionMismatch {
                throw error
            } catch {
                guard NIODeadline.now() + delay < deadline else {
                    throw CollectiveError(code: .timedOut, message: "cannot reach right neighbour \(peer): \(error)")
                }
                try await Task.sleep(nanoseconds: UInt64(delay.nanoseconds))
                delay = min(delay * 2, .milliseconds(500))
            }
        }
    }

    /// Forms the ring of `view` (this peer must be in it): dials the right neighbour and waits
    /// for the left one. Replaces any previous ring, whose collectives fail as aborted.
    public func connect(view: RingView) async throws {
        try checkRunning()
        guard let rank = view.rank(of: localId) else {
            throw CollectiveError(code: .invalidArgument, message: "this peer \(hex(localId)) is not in the view")
        }
        let router = RingRouter(loop: loop, rank: rank, size: view.count, maxEarlyBytes: options.maxEarlyBytes, logger: logger)
        try await loop.submit {
            self.router?.breakRing("replaced by the ring of epoch \(view.epoch)")
            self.router = nil
            for (key, value) in self.inbound where key.epoch < view.epoch { value.0.close() }
            self.inbound = self.inbound.filter { $0.key.epoch >= view.epoch }
        }.get()
        guard view.count > 1 else {
            try await loop.submit { self.router = router }.get()
            return
        }
        let rightPeer = view.members[(rank + 1) % view.count]
        let leftPeer = view.members[(rank - 1 + view.count) % view.count]
        let leftFuture = waitForInbound(InboundKey(id: leftPeer.id, epoch: view.epoch))
        let right: Connection
        do {
            right = try await dialWithRetry(rightPeer, epoch: view.epoch, delegate: router)
        } catch {
            leftFuture.whenSuccess { $0.close() }
            throw error
        }
        let left: Connection
        do {
            left = try await leftFuture.get()
        } catch {
            right.close()
            throw error
        }
        try await loop.submit {
            router.attach(left: left, right: right)
            self.router = router
            let key = InboundKey(id: leftPeer.id, epoch: view.epoch)
            if let (_, link) = self.inbound.removeValue(forKey: key) { link.adopt(left, by: router) }
            if !right.isActive { router.breakRing("the link to \(hex(rightPeer.id)) closed while the ring formed") }
        }.get()
        logger.info("ring formed", metadata: ["epoch": "\(view.epoch)", "rank": "\(rank)", "size": "\(view.count)",
                                              "left": "\(hex(leftPeer.id))", "right": "\(hex(rightPeer.id))"])
    }

    /// Closes the ring and the data port.
    public func shutdown() async {
        guard stopped.withLockedValue({ old in defer { old = true }; return !old }) else { return }
        try? await loop.submit {
            self.shutDown = true
            self.router?.breakRing("communicator shut down")
            self.router = nil
            for (connection, _) in self.inbound.values { connection.close() }
            self.inbound.removeAll()
        }.get()
        await listener?.close()
        try? await group.shutdownGracefully()
    }

    // MARK: - All-reduce

    /// Reduces `input` across the ring into `output` (which must not overlap `input`).
    ///
    /// On any error `input` is untouched and `output` holds unspecified bytes.
    public func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                          options: AllReduceOptions) async throws {
        guard input.count == output.count, input.count % type.size == 0 else {
            throw CollectiveError(code: .invalidArgument, message: "input and output must be the same whole number of \(type) elements")
        }
        guard options.segmentBytes > 0 else {
            throw CollectiveError(code: .invalidArgument, message: "segment size must be positive")
        }
        try checkRunning()
        let count = input.count / type.size
        if count == 0 {
            try await loop.submit { if self.router == nil { throw self.notConnected() } }.get()
            return
        }
        let memory = UnsafeSendableMemory(input: input.baseAddress!, output: output.baseAddress!)
        let future: EventLoopFuture<Void> = loop.flatSubmit {
            guard let router = self.router, let view = self.currentView(router) else {
                return self.loop.makeFailedFuture(self.notConnected())
            }
            if view.n == 1 {
                memory.output.copyMemory(from: memory.input, byteCount: count * type.size)
                return self.loop.makeSucceededVoidFuture()
            }
            let plan = RingPlan(count: count, n: view.n, rank: view.rank, type: type,
                                quantization: options.quantization, segmentBytes: options.segmentBytes)
            let op = RingAllReduceOp(plan: plan, options: options, memory: memory, right: router.right!, loop: self.loop)
            do {
                try router.register(op)
            } catch {
                op.fail(error as? CollectiveError ?? CollectiveError(code: .invalidArgument, message: "\(error)"))
            }
            return op.promise.futureResult
        }
        try await future.get()
    }

    /// In place: on success `buffer` holds the result; on any error it is as it was.
    public func allReduce(_ buffer: UnsafeMutableRawBufferPointer, type: DType, options: AllReduceOptions) async throws {
        let bytes = buffer.count
        let scratch = try await loop.submit { ScratchBuffer(self.takeScratch(bytes)) }.get()
        defer { loop.execute { self.pool.append(scratch.memory) } }
        let output = UnsafeMutableRawBufferPointer(start: scratch.memory.baseAddress, count: buffer.count)
        try await allReduce(input: UnsafeRawBufferPointer(buffer), output: output, type: type, options: options)
        if buffer.count > 0 { buffer.baseAddress!.copyMemory(from: output.baseAddress!, byteCount: buffer.count) }
    }

    /// Typed convenience for arrays (copies; use the buffer forms on hot paths).
    public func allReduce<T: CollectiveElement>(_ values: inout [T], options: AllReduceOptions) async throws {
        let bytes = values.count * MemoryLayout<T>.stride
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        defer { buffer.deallocate() }
        values.withUnsafeBytes { buffer.copyMemory(from: $0) }
        let view = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes])
        try await allReduce(view, type: T.dtype, options: options)
        values = Array(UnsafeBufferPointer(start: buffer.baseAddress!.assumingMemoryBound(to: T.self), count: values.count))
    }

    private func checkRunning() throws {
        if stopped.withLockedValue({ $0 }) {
            throw CollectiveError(code: .notConnected, message: "the communicator has been shut down")
        }
    }

    private func notConnected() -> CollectiveError {
        CollectiveError(code: .notConnected, message: "no ring: call connect(view:) (again, after an abort)")
    }

    private func currentView(_ router: RingRouter) -> (n: Int, rank: Int)? {
        router.broken ? nil : (router.size, router.rank)
    }

    /// Reuses a buffer from earlier calls: fresh 256 MiB allocations cost page faults.
    private func takeScratch(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
        if let i = pool.firstIndex(where: { $0.count >= bytes }) { return pool.remove(at: i) }
        if !pool.isEmpty { pool.removeFirst().deallocate() }
        return .allocate(byteCount: max(bytes, 64), alignment: 64)
    }
}

/// A pooled buffer crossing to the event loop and back.
private struct ScratchBuffer: @unchecked Sendable {
    let memory: UnsafeMutableRawBufferPointer
    init(_ memory: UnsafeMutableRawBufferPointer) { self.memory = memory }
}

func be64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

/// Swift types with a collective element type.
public protocol CollectiveElement: Sendable { static var dtype: DType { get } }
extension Float: CollectiveElement { public static var dtype: DType { .f32 } }
extension Double: CollectiveElement { public static var dtype: DType { .f64 } }
extension Float16: CollectiveElement { public static var dtype: DType { .f16 } }
extension Int32: CollectiveElement { public static var dtype: DType { .i32 } }
extension Int64: CollectiveElement { public static var dtype: DType { .i64 } }
extension UInt8: CollectiveElement { public static var dtype: DType { .u8 } }
