import Foundation
import Transport

/// One ring all-gather in flight on this peer: every member contributes one block of the same
/// size, and every member ends with all blocks in rank order.
///
/// In step `s` (0 ..< n−1) a member sends the block of rank `(rank − s) mod n` to its right
/// neighbour and receives the block of rank `(rank − s − 1) mod n` from its left one, which it
/// forwards in step `s + 1`. Each block is one frame (segment 0, so it travels on the first
/// stream); blocks are meant to be small (records, not tensors), at most one data frame.
final class RingAllGatherOp: RingCollective, @unchecked Sendable {
    let id: CollectiveID
    private let rank: Int
    private let size: Int
    private let blockBytes: Int
    private let timeout: Double
    /// All blocks in rank order; this peer's own is in place before ``start()``. Owned here,
    /// not by the caller: the sender may still read it after a failure was reported.
    private let blocks: UnsafeMutableRawBufferPointer
    private let engine: RingEngine
    private let lock = NSCondition()

    // Guarded by `lock`.
    /// Steps whose block arrived. The sender serves later steps first, so a neighbour's step
    /// s+1 may overtake its step s; each step's block has its own place, so order is free.
    private var arrived: [Bool]
    private var receivedSteps = 0
    private var outstandingSends = 0
    private var activeReceives = 0
    private var replaying = false
    private var outcome: Result<[[UInt8]], CollectiveError>?
    private var continuation: CheckedContinuation<[[UInt8]], any Error>?
    private var reported = false

    init(id: CollectiveID, block: [UInt8], rank: Int, size: Int, timeout: Double, engine: RingEngine) {
        precondition(!block.isEmpty && size > 1)
        self.id = id.onRing
        self.rank = rank
        self.size = size
        self.timeout = timeout
        self.engine = engine
        blockBytes = block.count
        arrived = [Bool](repeating: false, count: size - 1)
        blocks = .allocate(byteCount: block.count * size, alignment: 16)
        blocks.initializeMemory(as: UInt8.self, repeating: 0)
        block.withUnsafeBytes { blocks.baseAddress!.advanced(by: rank * blockBytes).copyMemory(from: $0.baseAddress!, byteCount: blockBytes) }
    }

    deinit { blocks.deallocate() }

    /// The rank whose block travels in `step` into this peer.
    private func arriving(step: Int) -> Int { ((rank - step - 1) % size + size) % size }

    func wait() async throws -> [[UInt8]] {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[[UInt8]], any Error>) in
            lock.withLock { continuation = c }
            flushCompletion()
        }
    }

    func start() {
        send(step: 0, block: rank)
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
            guard let self, !self.isFinished else { return }
            self.engine.breakRing("all-gather \(self.id) timed out after \(self.timeout) s", code: .timedOut)
        }
    }

    private var isFinished: Bool { lock.withLock { outcome != nil } }

    private func send(step: Int, block: Int) {
        lock.withLock { outstandingSends += 1 }
        let bytes = UnsafeRawBufferPointer(rebasing: blocks[(block * blockBytes)..<((block + 1) * blockBytes)])
        let header = FrameHeader(type: .data, flags: id.wireFlags, length: UInt32(blockBytes), tag: id.wireTag,
                                 aux: RingPlan.aux(step: step, segment: 0))
        engine.sender(forSegment: 0).enqueue(.init(priority: step, header: header, pieces: [bytes]) { [self] error in
            let failure = error.map {
                ($0 as? CollectiveError) ?? CollectiveError(code: .membershipChanged, message: "sending to the right neighbour failed: \($0)")
            }
            lock.withLock {
                if let failure, outcome == nil { outcome = .failure(failure) }
                outstandingSends -= 1
            }
            if let failure { engine.breakRing(failure.message, code: failure.code) }
            flushCompletion()
        })
    }

    func beginReplay() {
        lock.withLock { replaying = true }
    }

    func replay(_ frames: [(FrameHeader, UnsafeMutableRawBufferPointer)]) throws {
        defer { lock.withLock { replaying = false; lock.broadcast() } }
        for (header, payload) in frames {
            try receive(header, held: UnsafeRawBufferPointer(payload), replay: true)
        }
    }

    func receive(_ header: FrameHeader, from socket: any Link) throws {
        let step = try accept(header, replay: false)
        do {
            try socket.receive(into: blocks.baseAddress! + arriving(step: step) * blockBytes, count: blockBytes)
        } catch {
            lock.withLock { activeReceives -= 1 }
            flushCompletion()
            throw error
        }
        process(step)
    }

    func receive(_ header: FrameHeader, held payload: UnsafeRawBufferPointer, replay: Bool) throws {
        let step = try accept(header, replay: replay)
        (blocks.baseAddress! + arriving(step: step) * blockBytes).copyMemory(from: payload.baseAddress!, byteCount: blockBytes)
        process(step)
    }

    /// Checks a frame against the schedule: a step not seen yet, one block long.
    private func accept(_ header: FrameHeader, replay: Bool) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        while replaying, !replay { lock.wait() }
        if case .failure(let error) = outcome { throw error }
        let (step, segment) = RingPlan.split(aux: header.aux)
        guard segment == 0, step < size - 1, !arrived[step] else {
            throw CollectiveError(code: .protocolViolation, message: "unexpected step \(step) (segment \(segment)) of all-gather \(id)")
        }
        guard Int(header.length) == blockBytes else {
            throw CollectiveError(code: .protocolViolation,
                                  message: "all-gather block of \(header.length) bytes where \(blockBytes) were expected: do all peers gather the same records?")
        }
        arrived[step] = true
        activeReceives += 1
        return step
    }

    private func process(_ step: Int) {
        if step + 1 < size - 1 { send(step: step + 1, block: arriving(step: step)) }
        lock.withLock {
            receivedSteps += 1
            activeReceives -= 1
        }
        flushCompletion()
    }

    private func flushCompletion() {
        lock.lock()
        if outcome == nil, receivedSteps == size - 1, outstandingSends == 0 {
            outcome = .success((0..<size).map { r in Array(blocks[(r * blockBytes)..<((r + 1) * blockBytes)]) })
        }
        guard let outcome, let continuation, !reported, outstandingSends == 0, activeReceives == 0 else {
            lock.unlock()
            return
        }
        reported = true
        lock.unlock()
        engine.finished(self)
        continuation.resume(with: outcome.mapError { $0 as any Error })
    }

    func fail(_ error: CollectiveError) {
        lock.withLock {
            if outcome == nil { outcome = .failure(error) }
        }
        flushCompletion()
    }
}
