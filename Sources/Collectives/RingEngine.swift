import Foundation
import Logging
import Transport

/// One formed ring on this peer: the links from the left neighbour (each read by a receiver
/// thread) and the links to the right one (each written by a ``FrameSender``), and the
/// collectives running on them. With several streams per neighbour, segment `k` of every step
/// travels on stream `k mod streams`, so each stream carries its segments in order.
///
/// A neighbour may start a collective before this peer does: its frames are held (up to
/// `maxEarlyBytes`; past that the receiver stops reading and TCP pushes back) until the local
/// call with the same identity (``CollectiveID``) registers. Any I/O error, timeout or protocol violation breaks the ring:
/// every running collective fails, both links are shut down, and a new ring must be formed.
final class RingEngine: @unchecked Sendable {
    let rank: Int
    let size: Int
    let epoch: UInt64
    /// TCP streams per neighbour.
    let streams: Int
    private let senders: [FrameSender]
    private let left: [any Link]
    private let right: [any Link]
    private let limits = FrameLimits()
    private let logger: Logger
    private let maxEarlyBytes: Int

    private let lock = NSCondition()
    private var ops: [CollectiveID: any RingCollective] = [:]
    /// Collectives registered on this ring, newest last (at most ``rememberedIdentities``): an
    /// identity runs once per ring, and a frame of one that already ran is a protocol violation,
    /// never taken for a later collective.
    private var ran: Set<CollectiveID> = []
    private var ranOrder: [CollectiveID] = []
    static let rememberedIdentities = 4096
    private var early: [CollectiveID: [(FrameHeader, UnsafeMutableRawBufferPointer)]] = [:]
    private var earlyBytes = 0
    private(set) var brokenReason: String?

    let traffic: TrafficCounter

    /// The ring's threads (a receiver per left link, a sender per right link): the ring owns
    /// them, and ``waitForThreads(timeout:)`` joins them once the ring is broken.
    private let threads = DispatchGroup()

    /// `left` and `right`: one link per stream (the same count), or none for a ring of one.
    init(rank: Int, size: Int, epoch: UInt64, left: [any Link], right: [any Link], maxEarlyBytes: Int,
         traffic: TrafficCounter = TrafficCounter(), logger: Logger) {
        precondition(left.count == right.count, "one link per stream on each side")
        self.traffic = traffic
        self.rank = rank
        self.size = size
        self.epoch = epoch
        self.left = left
        self.right = right
        self.maxEarlyBytes = maxEarlyBytes
        self.logger = logger
        streams = max(left.count, 1)
        let group = threads
        senders = right.map { FrameSender(link: $0, traffic: traffic, name: "peernode-ring-send", threads: group) }
        for (stream, link) in left.enumerated() {
            group.enter()
            let thread = Thread { [self] in
                defer { group.leave() }
                receiveLoop(link, stream: stream)
            }
            thread.name = "peernode-ring-receive"
            thread.start()
        }
    }

    /// Waits until every thread of this ring has ended (they end once the ring is broken: the
    /// links are shut down and the senders stopped). False if some still run after `timeout`.
    func waitForThreads(timeout: Double) -> Bool {
        threads.wait(timeout: .now() + timeout) == .success
    }

    /// The sender of the stream that carries `segment`.
    func sender(forSegment segment: Int) -> FrameSender { senders[segment % streams] }

    var isBroken: Bool { lock.withLock { brokenReason != nil } }
    var breakReason: String? { lock.withLock { brokenReason } }

    /// Adds a collective and replays what its neighbour already sent, in order.
    func register(_ op: any RingCollective) throws {
        let id = op.id
        lock.lock()
        if let reason = brokenReason {
            lock.unlock()
            throw CollectiveError(code: .notConnected, message: "the ring is broken (\(reason)); form it again first")
        }
        guard !ran.contains(id) else {
            lock.unlock()
            throw CollectiveError(code: .invalidArgument, message: "collective \(id) already ran on this ring: every collective needs an identity of its own")
        }
        ops[id] = op
        ran.insert(id)
        ranOrder.append(id)
        if ranOrder.count > Self.rememberedIdentities { ran.remove(ranOrder.removeFirst()) }
        let waiting = early.removeValue(forKey: id) ?? []
        for (_, payload) in waiting { earlyBytes -= payload.count }
        // Set before the engine's lock is released, so that the receiver cannot deliver a newer
        // frame of this collective before the held ones are replayed.
        op.beginReplay()
        lock.broadcast()
        lock.unlock()
        op.start()
        defer { for (_, payload) in waiting { payload.deallocate() } }
        do {
            try op.replay(waiting)
        } catch let error as CollectiveError {
            breakRing(error.message, code: error.code)
        } catch {
            breakRing("\(error)")
        }
    }

    func finished(_ op: any RingCollective) {
        lock.withLock {
            if ops[op.id] === op { ops[op.id] = nil }
        }
    }

    private func receiveLoop(_ left: any Link, stream: Int) {
        while true {
            do {
                let frame = try left.receiveHeader(limits: limits)
                traffic.addReceived(FrameHeader.size + Int(frame.length))
                guard frame.type == .data else {
                    throw CollectiveError(code: .protocolViolation, message: "unexpected \(frame.type) frame on a ring link")
                }
                // Each stream's receive buffers belong to its thread: a segment on another
                // stream's link would share them with that thread.
                let segment = RingPlan.split(aux: frame.aux).segment
                guard segment % streams == stream else {
                    throw CollectiveError(code: .protocolViolation,
                                          message: "segment \(segment) arrived on stream \(stream) of \(streams) (it belongs on \(segment % streams))")
                }
                try deliver(frame, from: left)
            } catch let error as CollectiveError {
                breakRing(isBroken ? "" : "ring link from the left neighbour: \(error.message)", code: error.code)
                return
            } catch let error as FrameDecodingError {
                breakRing(isBroken ? "" : "ring link from the left neighbour: \(error)", code: .protocolViolation)
                return
            } catch {
                breakRing(isBroken ? "" : "ring link from the left neighbour: \(error)")
                return
            }
        }
    }

    private func deliver(_ frame: FrameHeader, from socket: any Link) throws {
        let id = CollectiveID(wireTag: frame.tag, wireFlags: frame.flags)
        lock.lock()
        func current() -> (any RingCollective)? { ops[id] }
        if current() == nil, ran.contains(id) {
            lock.unlock()
            throw CollectiveError(code: .protocolViolation, message: "a frame of collective \(id), which already ran on this ring")
        }
        var op = current()
        while op == nil, earlyBytes > maxEarlyBytes, brokenReason == nil {
            lock.wait()
            op = current()
        }
        if brokenReason != nil {
            lock.unlock()
            throw CollectiveError.aborted("ring broken")
        }
        lock.unlock()
        if let op {
            try op.receive(frame, from: socket)
            return
        }
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: max(Int(frame.length), 1), alignment: 64)
        do {
            try socket.receive(into: payload.baseAddress!, count: Int(frame.length))
        } catch {
            payload.deallocate()
            throw error
        }
        let held = UnsafeMutableRawBufferPointer(rebasing: payload[0..<Int(frame.length)])
        lock.lock()
        if let registered = current() {
            // Registered while the payload was being read: hand it over in order.
            lock.unlock()
            defer { payload.deallocate() }
            try registered.receive(frame, held: UnsafeRawBufferPointer(held), replay: false)
            return
        }
        if brokenReason != nil {
            // breakRing already freed what was held; this payload would never be freed.
            lock.unlock()
            payload.deallocate()
            throw CollectiveError.aborted("ring broken")
        }
        early[id, default: []].append((frame, held))
        earlyBytes += held.count
        lock.unlock()
    }

    /// Fails every running collective and shuts both links down.
    /// `expected`: an orderly close (shutdown, a new ring replacing this one), logged at debug level.
    func breakRing(_ reason: String, code: CollectiveError.Code = .membershipChanged, expected: Bool = false) {
        lock.lock()
        guard brokenReason == nil else {
            lock.unlock()
            return
        }
        brokenReason = reason
        let running = Array(ops.values)
        ops.removeAll()
        for (_, frames) in early { for (_, payload) in frames { payload.deallocate() } }
        early.removeAll()
        earlyBytes = 0
        lock.broadcast()
        lock.unlock()
        let error = CollectiveError(code: code, message: reason)
        for sender in senders { sender.stop(error) }
        for link in left + right { link.shutdown() }
        for op in running { op.fail(error) }
        if !reason.isEmpty {
            logger.log(level: expected ? .debug : .warning, "ring of epoch \(epoch) broken: \(reason)")
        }
    }
}

/// A collective in flight on a ``RingEngine``: the engine hands it the frames that name its
/// identity, in the order they arrived, and fails it when the ring breaks.
protocol RingCollective: AnyObject, Sendable {
    /// The identity its frames carry (``CollectiveID/onRing``).
    var id: CollectiveID { get }
    /// Queues what this peer sends first.
    func start()
    /// Holds back the receiver until ``replay(_:)`` has processed the frames that came early.
    func beginReplay()
    /// Processes frames that arrived before the collective was registered, in order.
    func replay(_ frames: [(FrameHeader, UnsafeMutableRawBufferPointer)]) throws
    /// Reads one frame's payload from the left link and processes it.
    func receive(_ header: FrameHeader, from link: any Link) throws
    /// Processes a frame whose payload was already read.
    func receive(_ header: FrameHeader, held payload: UnsafeRawBufferPointer, replay: Bool) throws
    func fail(_ error: CollectiveError)
}
