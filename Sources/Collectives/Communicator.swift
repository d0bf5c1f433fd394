import Foundation
import Logging
import NIOCore
import Transport

/// Collectives over an ordered ring of peers.
///
/// Bulk data moves over blocking sockets on the data port, one receiver and one sender thread
/// per ring, straight between the callers' buffers and the kernel (docs/protocol.md says why).
public final class Communicator: @unchecked Sendable {
    public let localId: UInt64
    let key: ClusterKey
    let logger: Logger
    private let options: CommunicatorOptions

    private let state = NSCondition()
    private var listener: DataListener?
    private var engine: RingEngine?
    private var inbound: [InboundKey: any SocketLink] = [:]
    /// Whether a thread watches `inbound` for links their dialers closed (``reapClosedLinks()``).
    private var reaping = false
    /// Parked ring links: at most this many in all, and two rings' worth per dialer (a newer
    /// epoch's push out the oldest); links beyond are closed at once.
    static let maxParkedLinks = 256
    private var pool: [UnsafeMutableRawBufferPointer] = []
    private var stopped = false
    /// Rings of an epoch below this were aborted by ``abortRing(reason:beforeEpoch:)``: one being
    /// formed gives up at once (its view lost a member) instead of waiting the formation timeout
    /// for a peer that left. An epoch, not a count: the abort for the view that dropped a member
    /// may run after this peer already started forming that very view's ring, which must go on.
    private var abortedBefore: UInt64 = 0
    /// Counts ``leaveRings(reason:)`` calls: a ring formation that began before the latest one
    /// is abandoned, whatever its epoch (the node left that membership).
    private var departures: UInt64 = 0
    private var stateServer: StateServer?
    /// Bytes this peer's rings sent and received (frames, headers included), for status pages.
    public let traffic = TrafficCounter()

    private struct InboundKey: Hashable { var id: UInt64; var epoch: UInt64; var stream: Int }

    public init(localId: UInt64, key: ClusterKey, options: CommunicatorOptions = CommunicatorOptions(), logger: Logger) {
        self.localId = localId
        self.key = key
        self.options = options
        var logger = logger
        logger[metadataKey: "node.id"] = "\(hex(localId))"
        self.logger = logger
    }

    deinit {
        for buffer in pool { buffer.deallocate() }
    }

    /// Binds the data port (0: the OS picks one) and returns it.
    public func listen(host: String, port: Int) async throws -> Int {
        try checkRunning()
        let listener = try DataListener(
            host: host, port: port, localId: localId, key: key,
            handshakeTimeout: Double(options.transport.handshakeTimeout.nanoseconds) / 1e9,
            maxPending: options.transport.maxPendingHandshakes,
            maxPendingPerAddress: options.transport.maxPendingHandshakesPerAddress, logger: logger
        ) { [weak self] socket, result in
            self?.acceptInbound(socket, result)
        }
        state.withLock { self.listener = listener }
        return listener.port
    }

    /// Serves `server`'s state to joiners that connect to the data port (nil: refuse them).
    public func serveState(_ server: StateServer?) {
        state.withLock { stateServer = server }
    }

    private func acceptInbound(_ socket: any SocketLink, _ result: HandshakeResult) {
        if result.purpose == .linkProbe {
            serveLinkProbe(socket, from: result.remoteId)  // LinkProbe.swift; on a thread of its own
            return
        }
        if result.purpose == .stateTransfer {
            guard let server = state.withLock({ stopped ? nil : stateServer }) else {
                try? socket.sendFrame(.stateError, bytes: Array("this peer does not serve its state".utf8))
                socket.close()
                return
            }
            server.serve(socket, peer: result.remoteId)  // already on a thread of its own
            return
        }
        guard result.purpose == .ring, let link = RingLinkInfo(result.info) else {
            logger.warning("refusing a data connection for \(result.purpose) from \(hex(result.remoteId))")
            socket.close()
            return
        }
        guard link.streams == options.streams else {
            logger.error("refusing ring link from \(hex(result.remoteId)): it uses \(link.streams) stream(s) per neighbour, this peer \(options.streams); every member must use the same --streams")
            socket.close()
            return
        }
        state.withLock {
            guard !stopped, link.epoch >= (engine?.epoch ?? 0) else {
                socket.close()
                return
            }
            let key = InboundKey(id: result.remoteId, epoch: link.epoch, stream: link.stream)
            inbound[key]?.close()
            inbound[key] = socket
            let fromPeer = inbound.keys.filter { $0.id == key.id }.sorted { ($0.epoch, $0.stream) < ($1.epoch, $1.stream) }
            for old in fromPeer.dropLast(2 * options.streams) { inbound.removeValue(forKey: old)?.close() }
            if inbound.count > Self.maxParkedLinks { inbound.removeValue(forKey: key)?.close() }
            state.broadcast()
            if !reaping, !inbound.isEmpty {
                reaping = true
                let thread = Thread { [self] in reapClosedLinks() }
                thread.name = "peernode-ring-reaper"
                thread.start()
            }
        }
    }

    /// While ring links wait in `inbound` for their ring to form, closes at once each one whose
    /// dialer closed it (its descriptor would otherwise stay until the next view change). Runs
    /// on a thread of its own until nothing is parked; wakes every 200 ms to see new links.
    private func reapClosedLinks() {
        let hangUp = Int16(0x2000 /* POLLRDHUP */) | Int16(POLLHUP) | Int16(POLLERR) | Int16(POLLNVAL)
        while true {
            let parked = state.withLock { () -> [(InboundKey, any SocketLink)] in
                guard !stopped, !inbound.isEmpty else {
                    reaping = false
                    state.broadcast()
                    return []
                }
                return inbound.map { ($0.key, $0.value) }
            }
            if parked.isEmpty { return }
            var entries = parked.map { pollfd(fd: $0.1.socket.fd, events: Int16(0x2000), revents: 0) }
            guard poll(&entries, nfds_t(entries.count), 200) > 0 else { continue }
            let gone = zip(parked, entries).filter { $0.1.revents & hangUp != 0 }.map(\.0)
            // Only links still parked: one taken by a ring meanwhile is the ring's to close.
            let closing = state.withLock {
                gone.compactMap { key, socket in inbound[key] === socket ? inbound.removeValue(forKey: key) : nil }
            }
            for socket in closing { socket.close() }
            if !closing.isEmpty {
                logger.debug("closed \(closing.count) parked ring link(s) their dialers had closed")
            }
        }
    }

    /// Forms the ring of `view` (this peer must be in it): dials the right neighbour and waits
    /// for the left one. Replaces any previous ring, whose collectives fail as aborted.
    public func connect(view: RingView) async throws {
        try checkRunning()
        guard (1...CommunicatorOptions.maxStreams).contains(options.streams) else {
            throw CollectiveError(code: .invalidArgument, message: "streams must be 1...\(CommunicatorOptions.maxStreams), not \(options.streams)")
        }
        guard let rank = view.rank(of: localId) else {
            throw CollectiveError(code: .invalidArgument, message: "this peer \(hex(localId)) is not in the view")
        }
        let (old, generation) = state.withLock { () -> (RingEngine?, UInt64) in
            let old = self.engine
            self.engine = nil
            for (key, socket) in inbound where key.epoch < view.epoch { socket.close() }
            inbound = inbound.filter { $0.key.epoch >= view.epoch }
            return (old, departures)
        }
        if let old { await close(old, "replaced by the ring of epoch \(view.epoch)") }
        guard view.count > 1 else {
            let single = RingEngine(rank: 0, size: 1, epoch: view.epoch, left: [], right: [],
                                    maxEarlyBytes: options.maxEarlyBytes, logger: logger)
            state.withLock { self.engine = single }
            return
        }
        let rightPeer = view.members[(rank + 1) % view.count]
        let leftPeer = view.members[(rank - 1 + view.count) % view.count]
        let timeout = Double(options.ringFormationTimeout.nanoseconds) / 1e9
        let streams = options.streams
        // One deadline for all streams: formation takes at most the timeout, whatever K is.
        let deadline = Date().addingTimeInterval(timeout)
        let right: [any SocketLink] = try await runBlocking { [self] in
            try openAll(streams) { stream in
                try dialWithRetry(rightPeer, link: RingLinkInfo(epoch: view.epoch, stream: stream, streams: streams), deadline: deadline,
                                  generation: generation)
            }
        }
        let left: [any SocketLink]
        do {
            left = try await runBlocking { [self] in
                try openAll(streams) { stream in
                    try waitForInbound(InboundKey(id: leftPeer.id, epoch: view.epoch, stream: stream), deadline: deadline, timeout: timeout,
                                       generation: generation)
                }
            }
        } catch {
            for socket in right { socket.close() }
            // An abandoned epoch is never formed again: its links that came in would otherwise wait
            // in `inbound` until shutdown. (After a timeout they stay: the same view may be retried,
            // and the next connect of a newer epoch drops them anyway.)
            state.withLock {
                guard abortedBefore > view.epoch else { return }
                for (key, socket) in inbound where key.epoch <= view.epoch { socket.close() }
                inbound = inbound.filter { $0.key.epoch > view.epoch }
            }
            throw error
        }
        if options.maxStreamRate > 0 {
            for link in right where !link.socket.setMaxSendRate(bytesPerSecond: options.maxStreamRate) {
                logger.warning("the kernel refused a send-rate cap on a ring stream; sending uncapped")
            }
        }
        let formed = RingEngine(rank: rank, size: view.count, epoch: view.epoch, left: left, right: right,
                                maxEarlyBytes: options.maxEarlyBytes, traffic: traffic, logger: logger)
        state.withLock { self.engine = formed }
        logger.info("ring formed", metadata: ["epoch": "\(view.epoch)", "rank": "\(rank)", "size": "\(view.count)", "streams": "\(streams)",
                                              "left": "\(hex(leftPeer.id))", "right": "\(hex(rightPeer.id))"])
    }

    /// Forms a ring on links made elsewhere, `left[k]` and `right[k]` carrying stream k (for
    /// example ``MemoryLink`` pairs: collective tests without ports or handshakes). Replaces any
    /// previous ring, like ``connect(view:)``; the links must already be authenticated.
    public func connect(epoch: UInt64, rank: Int, size: Int, left: [any Link], right: [any Link]) async throws {
        try checkRunning()
        guard size >= 1, (0..<size).contains(rank), left.count == right.count, (size == 1) == left.isEmpty,
              left.count <= CommunicatorOptions.maxStreams else {
            throw CollectiveError(code: .invalidArgument, message: "a ring of \(size) needs rank 0..<\(size) and one left and one right link per stream")
        }
        let old = state.withLock { () -> RingEngine? in
            defer { engine = nil }
            return engine
        }
        if let old { await close(old, "replaced by the ring of epoch \(epoch)") }
        let formed = RingEngine(rank: rank, size: size, epoch: epoch, left: left, right: right,
                                maxEarlyBytes: options.maxEarlyBytes, traffic: traffic, logger: logger)
        state.withLock { engine = formed }
    }

    /// Breaks `engine` (an orderly close) and joins its threads.
    private func close(_ engine: RingEngine, _ reason: String) async {
        engine.breakRing(reason, expected: true)
        let joined = (try? await runBlocking { engine.waitForThreads(timeout: 30) }) ?? false
        if !joined { logger.warning("a thread of the ring of epoch \(engine.epoch) did not end within 30 s of its close") }
    }

    /// One socket per stream, in order; on a failure the ones already open are closed.
    private func openAll(_ streams: Int, _ open: (Int) throws -> any SocketLink) throws -> [any SocketLink] {
        var sockets: [any SocketLink] = []
        do {
            for stream in 0..<streams { sockets.append(try open(stream)) }
        } catch {
            for socket in sockets { socket.close() }
            throw error
        }
        return sockets
    }

    private func dialWithRetry(_ peer: PeerEndpoint, link: RingLinkInfo, deadline: Date, generation: UInt64) throws -> any SocketLink {
        let epoch = link.epoch
        var delay = 0.02
        while true {
            do {
                let (socket, _) = try BlockingSocket.dial(
                    host: peer.host, port: peer.port, localId: localId, key: key, purpose: .ring,
                    info: link.bytes,
                    timeout: max(0.05, min(deadline.timeIntervalSinceNow, Double(options.transport.handshakeTimeout.nanoseconds) / 1e9)))
                return socket
            } catch let error as HandshakeError where error.code == .badKey || error.code == .versionMismatch {
                logger.error("right neighbour \(peer) refused: \(error)")
                throw error
            } catch {
                if state.withLock({ abortedBefore > epoch || departures != generation }) {
                    throw CollectiveError(code: .membershipChanged, message: "ring of epoch \(epoch) abandoned: the membership changed")
                }
                guard Date().addingTimeInterval(delay) < deadline, !isStopped else {
                    throw CollectiveError(code: .timedOut, message: "cannot reach right neighbour \(peer): \(error)")
                }
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 0.5)
            }
        }
    }

    /// `timeout`: only for the message; `deadline` decides.
    private func waitForInbound(_ key: InboundKey, deadline: Date, timeout: Double, generation: UInt64) throws -> any SocketLink {
        state.lock()
        defer { state.unlock() }
        while inbound[key] == nil, !stopped, abortedBefore <= key.epoch, departures == generation {
            guard state.wait(until: deadline) else { break }
        }
        if inbound[key] == nil, abortedBefore > key.epoch || departures != generation {
            throw CollectiveError(code: .membershipChanged, message: "ring of epoch \(key.epoch) abandoned: the membership changed")
        }
        guard let socket = inbound.removeValue(forKey: key) else {
            throw CollectiveError(code: .timedOut, message: "left neighbour \(hex(key.id)) did not connect within \(timeout) s")
        }
        return socket
    }

    /// Breaks the current ring as a lost link would, if its epoch is below `beforeEpoch`:
    /// collectives in flight fail with `membershipChanged`, and the ring must be formed again; a
    /// ring of such an epoch being formed gives up. For the membership layer, which learns of a
    /// frozen member (links still open) before the ring does: it passes the epoch of the view that
    /// dropped the member, so that the ring of that view, if already formed or being formed, stays.
    /// The default aborts whatever ring there is (shutdown).
    public func abortRing(reason: String, beforeEpoch: UInt64 = .max) {
        let engine = state.withLock { () -> RingEngine? in
            abortedBefore = max(abortedBefore, beforeEpoch)
            state.broadcast()
            guard let engine = self.engine, engine.epoch < beforeEpoch else { return nil }
            return engine
        }
        engine?.breakRing(reason)
    }

    /// Breaks the ring formed now, whatever its epoch, and leaves later rings alone: for a node
    /// that finds itself out of the view (its next ring comes after it is admitted again, maybe
    /// in a line whose epochs are lower), and for a member whose state download failed.
    public func breakCurrentRing(reason: String) {
        state.withLock { engine }?.breakRing(reason)
    }

    /// For a node that is out of the view and joins anew, maybe into another line whose epochs
    /// are lower than the ones it knew: breaks the current ring, drops ring links waiting to be
    /// used, and forgets which epochs were aborted, so that the next ring, whatever its epoch,
    /// can form.
    public func leaveRings(reason: String) {
        let (current, sockets) = state.withLock { () -> (RingEngine?, [any SocketLink]) in
            abortedBefore = 0
            departures &+= 1
            state.broadcast()
            defer { inbound.removeAll() }
            return (self.engine, Array(inbound.values))
        }
        current?.breakRing(reason)
        for socket in sockets { socket.close() }
    }

    /// Whether the current ring (if any) was broken by a failure and must be formed again.
    public var isRingBroken: Bool { state.withLock { engine?.isBroken ?? true } }

    /// Closes the ring and the data port. Collectives in flight fail.
    public func shutdown() async {
        let (engine, listener, sockets) = state.withLock { () -> (RingEngine?, DataListener?, [any SocketLink]) in
            stopped = true
            state.broadcast()
            defer { self.engine = nil; self.listener = nil; inbound.removeAll() }
            return (self.engine, self.listener, Array(inbound.values))
        }
        listener?.stop()
        if let engine { await close(engine, "communicator shut down") }
        for socket in sockets { socket.close() }
        // The reaper sees `stopped` within one 200 ms poll and ends: joined here, not left behind.
        _ = try? await runBlocking { [self] in
            state.withLock {
                let deadline = Date().addingTimeInterval(5)
                while reaping, state.wait(until: deadline) {}
            }
        }
    }

    // MARK: - All-reduce

    /// Reduces `input` across the ring into `output` (which must not overlap `input`).
    ///
    /// On any error `input` is untouched and `output` holds unspecified bytes.
    public func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                          options: AllReduceOptions) async throws {
        try checkRunning()
        guard input.count == output.count, input.count % type.size == 0 else {
            throw CollectiveError(code: .invalidArgument, message: "input and output must be the same whole number of \(type) elements")
        }
        guard options.segmentBytes > 0 else {
            throw CollectiveError(code: .invalidArgument, message: "segment size must be positive")
        }
        guard let engine = state.withLock({ self.engine }) else { throw notConnected() }
        if let reason = engine.breakReason {
            throw CollectiveError(code: .notConnected, message: "the ring is broken (\(reason)); form it again with connect(view:)")
        }
        let count = input.count / type.size
        guard count > 0 else { return }
        if engine.size == 1 {
            output.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: input.count)
            return
        }
        let plan = RingPlan(count: count, n: engine.size, rank: engine.rank, type: type,
                            quantization: options.quantization, segmentBytes: options.segmentBytes)
        let op = RingAllReduceOp(plan: plan, options: options,
                                 memory: UnsafeSendableMemory(input: input.baseAddress!, output: output.baseAddress!),
                                 engine: engine)
        try engine.register(op)
        try await op.wait()
    }

    /// In place: on success `buffer` holds the result; on any error it is as it was.
    public func allReduce(_ buffer: UnsafeMutableRawBufferPointer, type: DType, options: AllReduceOptions) async throws {
        let scratch = takeScratch(buffer.count)
        defer { state.withLock { pool.append(scratch) } }
        let output = UnsafeMutableRawBufferPointer(start: scratch.baseAddress, count: buffer.count)
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

    // MARK: - All-gather

    /// Gathers one block from every member of the ring, in rank order (this peer's own at its
    /// rank). Every member must pass a block of the same size, at most one data frame; meant for
    /// small records. On any error nothing is returned and the ring is broken, as for all-reduce.
    public static let maxGatherBlock = 1 << 20

    public func allGather(_ block: [UInt8], id: CollectiveID, timeout: TimeAmount = .seconds(60)) async throws -> [[UInt8]] {
        try checkRunning()
        guard !block.isEmpty, block.count <= Self.maxGatherBlock else {
            throw CollectiveError(code: .invalidArgument, message: "an all-gather block must be 1...\(Self.maxGatherBlock) bytes, not \(block.count)")
        }
        guard let engine = state.withLock({ self.engine }) else { throw notConnected() }
        if let reason = engine.breakReason {
            throw CollectiveError(code: .notConnected, message: "the ring is broken (\(reason)); form it again with connect(view:)")
        }
        if engine.size == 1 { return [block] }
        let op = RingAllGatherOp(id: id, block: block, rank: engine.rank, size: engine.size,
                                 timeout: Double(timeout.nanoseconds) / 1e9, engine: engine)
        try engine.register(op)
        return try await op.wait()
    }

    private var isStopped: Bool { state.withLock { stopped } }

    private func checkRunning() throws {
        if isStopped { throw CollectiveError(code: .notConnected, message: "the communicator has been shut down") }
    }

    private func notConnected() -> CollectiveError {
        CollectiveError(code: .notConnected, message: "no ring: call connect(view:) (again, after an abort)")
    }

    /// Reuses a buffer from earlier calls: fresh 256 MiB allocations cost page faults.
    private func takeScratch(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
        state.withLock {
            if let i = pool.firstIndex(where: { $0.count >= bytes }) { return pool.remove(at: i) }
            if !pool.isEmpty { pool.removeFirst().deallocate() }
            return .allocate(byteCount: max(bytes, 64), alignment: 64)
        }
    }
}

/// Runs blocking work (connect, accept waits) on a thread of its own, off the async pool.
func runBlocking<T>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.start()
    }
}



/// Swift types with a collective element type.
public protocol CollectiveElement: Sendable { static var dtype: DType { get } }
extension Float: CollectiveElement { public static var dtype: DType { .f32 } }
extension Double: CollectiveElement { public static var dtype: DType { .f64 } }
extension Float16: CollectiveElement { public static var dtype: DType { .f16 } }
extension Int32: CollectiveElement { public static var dtype: DType { .i32 } }
extension Int64: CollectiveElement { public static var dtype: DType { .i64 } }
extension UInt8: CollectiveElement { public static var dtype: DType { .u8 } }
