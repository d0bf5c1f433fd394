import Foundation
import Transport

/// Raw memory of one collective call; the caller keeps it alive and untouched until it returns.
struct UnsafeSendableMemory: @unchecked Sendable {
    let input: UnsafeRawPointer
    let output: UnsafeMutableRawPointer
}

/// One ring all-reduce in flight on this peer (see ``RingPlan`` for the schedule).
///
/// The receiver thread of the ring reads each frame straight into its final place: unquantized
/// all-gather payloads into the result buffer, partial sums and the last all-gather step's codes
/// into its staging buffer, codes it must forward into a frame buffer it then sends. Sends go
/// out from the caller's input (first step), from the result buffer (owned chunks, forwarded
/// unquantized chunks) or from a frame buffer (quantized data, partial sums). The caller's input
/// is never written; results land in `output`, copied into place only on success.
///
/// Bit-parity: each chunk's final value is computed once, by its owner, in ``finishOwned``;
/// with quantization the owner replaces its own copy by the decoding of the bytes it sends,
/// and the all-gather forwards those bytes unchanged, which every peer decodes with the same code.
final class RingAllReduceOp: RingCollective, @unchecked Sendable {
    let plan: RingPlan
    let options: AllReduceOptions
    let id: CollectiveID
    private let memory: UnsafeSendableMemory
    // Strong: the sender may still report on this op after the communicator dropped its ring.
    private let engine: RingEngine
    let lock = NSCondition()

    // Guarded by `lock`.
    /// The next segment expected per (step, stream): index `step * streams + stream`.
    private var nextSegment: [Int]
    private var receivedFrames = 0
    private let expectedFrames: Int
    private var outstandingSends = 0
    /// Frames accepted but not yet processed: their payload is being written into our buffers.
    private var activeReceives = 0
    private var replaying = false
    private var outcome: Result<Void, CollectiveError>?
    private var continuation: CheckedContinuation<Void, any Error>?
    private var reported = false

    /// TCP streams of the ring; segment `k` arrives on stream `k mod streams`.
    private let streams: Int
    /// Per stream (each has its receiver thread): where partial sums land, and f32 working space.
    private let receivers: [ReceiveSpace]
    /// The caller's thread encodes the first step while the receiver may already be working.
    private let encodeScratch: UnsafeMutablePointer<Float>
    /// Quantized data is combined in pieces this long, so that the f32 intermediates stay in L1.
    private static let piece = 4096
    /// Whether this op writes its f32 results past the caches (``AllReduceOptions/streamResultsFromBytes``).
    private var streaming: Bool { plan.type == .f32 && plan.count &* 4 >= options.streamResultsFromBytes }

    /// One receiver thread's buffers.
    private struct ReceiveSpace {
        let staging: UnsafeMutableRawBufferPointer
        let scratchA: UnsafeMutablePointer<Float>
        let scratchB: UnsafeMutablePointer<Float>
    }

    private struct Arrival {
        let step: Int
        let segment: Int
        /// The buffers of the stream that carried it.
        let space: ReceiveSpace
        let elements: Range<Int>
        let length: Int
        let destination: UnsafeMutableRawPointer
        /// A frame buffer the payload was read into, owned by the op until sent or used.
        let frameBuffer: UnsafeMutableRawBufferPointer?
    }

    init(plan: RingPlan, options: AllReduceOptions, memory: UnsafeSendableMemory, engine: RingEngine) {
        self.plan = plan
        self.options = options
        id = options.id.onRing
        self.memory = memory
        self.engine = engine
        streams = engine.streams
        nextSegment = (0..<(plan.totalSteps * engine.streams)).map { $0 % engine.streams }
        expectedFrames = (0..<plan.totalSteps).reduce(0) { $0 + plan.segmentCount(chunk: plan.receiveChunk(step: $1)) }
        let stagingBytes = max(plan.wireBytes(plan.segmentElements), 64)
        receivers = (0..<engine.streams).map { _ in
            ReceiveSpace(staging: .allocate(byteCount: stagingBytes, alignment: 64),
                         scratchA: .allocate(capacity: Self.piece), scratchB: .allocate(capacity: Self.piece))
        }
        encodeScratch = .allocate(capacity: Self.piece)
    }

    deinit {
        for space in receivers {
            space.staging.deallocate()
            space.scratchA.deallocate()
            space.scratchB.deallocate()
        }
        encodeScratch.deallocate()
    }

    /// Waits for the outcome (success, or the error that broke the ring).
    func wait() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            lock.lock()
            continuation = c
            lock.unlock()
            flushCompletion()
        }
    }

    // MARK: Sending

    /// Queues the first step: every segment of this rank's own chunk, from the input.
    func start() {
        let chunk = plan.sendChunk(step: 0)
        for k in 0..<plan.segmentCount(chunk: chunk) {
            let range = plan.segmentRange(chunk: chunk, segment: k)
            let source = memory.input + range.lowerBound * plan.type.size
            if plan.quantization == .none {
                send(step: 0, segment: k, UnsafeRawBufferPointer(start: source, count: range.count * plan.type.size), owned: nil)
            } else {
                let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: plan.wireBytes(range.count), alignment: 64)
                encode(source, count: range.count, into: frame.baseAddress!)
                send(step: 0, segment: k, UnsafeRawBufferPointer(frame), owned: frame)
            }
        }
        let timeout = Double(options.timeout.nanoseconds) / 1e9
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
            guard let self, !self.isFinished else { return }
            self.engine.breakRing("all-reduce \(self.options.id) timed out after \(timeout) s", code: .timedOut)
        }
    }

    private var isFinished: Bool { lock.withLock { outcome != nil } }

    private func send(step: Int, segment: Int, _ bytes: UnsafeRawBufferPointer, owned: UnsafeMutableRawBufferPointer?) {
        lock.withLock { outstandingSends += 1 }
        let header = FrameHeader(type: .data, flags: id.wireFlags, length: UInt32(bytes.count), tag: id.wireTag,
                                 aux: RingPlan.aux(step: step, segment: segment))
        engine.sender(forSegment: segment).enqueue(.init(priority: step, header: header, pieces: [bytes]) { [self] error in
            owned?.deallocate()
            // A CollectiveError is the ring's own break reason (the sender was stopped): keep it.
            let failure = error.map {
                ($0 as? CollectiveError) ?? CollectiveError(code: .membershipChanged, message: "sending to the right neighbour failed: \($0)")
            }
            lock.withLock {
                // Failed before the count drops: otherwise a receiver finishing the last frame in
                // between could report success for a collective whose frame never left.
                if let failure, outcome == nil { outcome = .failure(failure) }
                outstandingSends -= 1
            }
            if let failure { engine.breakRing(failure.message, code: failure.code) }
            // Also after an error: the ring may have failed this op while this frame was being
            // written, and then this is the last event that can report its outcome.
            flushCompletion()
        })
    }

    // MARK: Receiving

    /// Reads one frame of this collective from the left link and processes it.
    func receive(_ header: FrameHeader, from socket: any Link) throws {
        let arrival = try accept(header)
        do {
            try socket.receive(into: arrival.destination, count: arrival.length)
        } catch {
            arrival.frameBuffer?.deallocate()
            lock.withLock { activeReceives -= 1 }
            flushCompletion()
            throw error
        }
        process(arrival)
        flushCompletion()
    }

    /// Holds back the receiver until ``replay(_:)`` has processed the frames that came early.
    func beginReplay() {
        lock.withLock { replaying = true }
    }

    /// Processes frames that arrived before this collective was registered, in order.
    func replay(_ frames: [(FrameHeader, UnsafeMutableRawBufferPointer)]) throws {
        defer {
            lock.withLock { replaying = false; lock.broadcast() }
        }
        for (header, payload) in frames {
            try receive(header, held: UnsafeRawBufferPointer(payload), replay: true)
        }
    }

    /// Processes a frame whose payload was already read elsewhere.
    func receive(_ header: FrameHeader, held payload: UnsafeRawBufferPointer, replay: Bool) throws {
        let arrival = try accept(header, replay: replay)
        arrival.destination.copyMemory(from: payload.baseAddress!, byteCount: arrival.length)
        process(arrival)
        flushCompletion()
    }

    /// Checks a frame against the plan and picks where its payload goes.
    private func accept(_ header: FrameHeader, replay: Bool = false) throws -> Arrival {
        lock.lock()
        while replaying, !replay { lock.wait() }
        // Once the outcome is set the caller may be told at any moment and free `output`:
        // a frame the receiver picked up just before the ring broke must not be written there.
        if case .failure(let error) = outcome {
            lock.unlock()
            throw error
        }
        let (step, segment) = RingPlan.split(aux: header.aux)
        let stream = segment % streams
        guard step < plan.totalSteps, segment == nextSegment[step * streams + stream],
              segment < plan.segmentCount(chunk: plan.receiveChunk(step: step)) else {
            lock.unlock()
            throw CollectiveError(code: .protocolViolation, message: "unexpected segment \(segment) of step \(step) for \(options.id)")
        }
        nextSegment[step * streams + stream] += streams
        let space = receivers[stream]
        let elements = plan.segmentRange(chunk: plan.receiveChunk(step: step), segment: segment)
        let length = plan.wireBytes(elements.count)
        guard Int(header.length) == length else {
            lock.unlock()
            throw CollectiveError(code: .protocolViolation,
                                  message: "segment of \(header.length) bytes where \(length) were expected: do all peers use the same options?")
        }
        activeReceives += 1
        lock.unlock()
        if step < plan.n - 1 {
            return Arrival(step: step, segment: segment, space: space, elements: elements, length: length,
                           destination: space.staging.baseAddress!, frameBuffer: nil)
        }
        if plan.quantization == .none {
            // All-gather data is final: straight into the result.
            return Arrival(step: step, segment: segment, space: space, elements: elements, length: length,
                           destination: memory.output + elements.lowerBound * plan.type.size, frameBuffer: nil)
        }
        if step == plan.totalSteps - 1 {
            // The last all-gather step is decoded and forwarded nowhere: the stream's staging
            // buffer (hot in cache, no allocation) holds it until its receiver is done with it.
            return Arrival(step: step, segment: segment, space: space, elements: elements, length: length,
                           destination: space.staging.baseAddress!, frameBuffer: nil)
        }
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 64)
        return Arrival(step: step, segment: segment, space: space, elements: elements, length: length,
                       destination: frame.baseAddress!, frameBuffer: frame)
    }

    private func process(_ a: Arrival) {
        let size = plan.type.size
        let first = a.elements.lowerBound
        let m = a.elements.count
        let local = memory.input + first * size
        let result = memory.output + first * size
        let wire = UnsafeRawPointer(a.destination)
        let last = plan.totalSteps - 1

        if a.step < plan.n - 2 {
            // A partial sum passing through: combine and encode straight into the next frame.
            let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: a.length, alignment: 64)
            if plan.quantization == .none {
                Kernels.combine(options.op, plan.type, into: frame.baseAddress!, local, wire, count: m)
            } else {
                combineQuantized(wire, local: local, count: m, into: frame.baseAddress!, result: nil, space: a.space)
            }
            send(step: a.step + 1, segment: a.segment, UnsafeRawBufferPointer(frame), owned: frame)
        } else if a.step == plan.n - 2 {
            finishOwned(a, wire: wire, local: local, result: result, count: m)
        } else if plan.quantization == .none {
            if a.step < last {
                send(step: a.step + 1, segment: a.segment, UnsafeRawBufferPointer(start: result, count: a.length), owned: nil)
            }
        } else {
            decode(wire, count: m, into: result, scratch: a.space.scratchA)
            if a.step < last {
                send(step: a.step + 1, segment: a.segment, UnsafeRawBufferPointer(a.frameBuffer!), owned: a.frameBuffer)
            }
        }
        lock.withLock {
            receivedFrames += 1
            activeReceives -= 1
        }
    }

    /// The owner's final value of a segment of its chunk: combine, average, and (quantized)
    /// round-trip through the wire encoding so that its own copy equals everyone else's.
    private func finishOwned(_ a: Arrival, wire: UnsafeRawPointer, local: UnsafeRawPointer,
                             result: UnsafeMutableRawPointer, count m: Int) {
        if plan.quantization == .none {
            Kernels.combine(options.op, plan.type, into: result, local, wire, count: m)
            if options.op == .avg { Kernels.divide(plan.type, result, count: m, by: plan.n) }
            send(step: a.step + 1, segment: a.segment, UnsafeRawBufferPointer(start: result, count: a.length), owned: nil)
        } else {
            let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: a.length, alignment: 64)
            combineQuantized(wire, local: local, count: m, into: frame.baseAddress!, result: result, space: a.space)
            send(step: a.step + 1, segment: a.segment, UnsafeRawBufferPointer(frame), owned: frame)
        }
    }

    /// out = encode(local ⊕ decode(wire)), a piece at a time; for the owner (`result` given) also
    /// averages and stores the decoding of `out` as its own result.
    private func combineQuantized(_ wire: UnsafeRawPointer, local: UnsafeRawPointer, count m: Int,
                                  into out: UnsafeMutableRawPointer, result: UnsafeMutableRawPointer?, space: ReceiveSpace) {
        let (scratchA, scratchB) = (space.scratchA, space.scratchB)
        let mode = plan.quantization
        let size = plan.type.size
        if plan.type == .f32, options.op == .sum || options.op == .avg {
            // One pass per block (bit-identical to the composed path below; docs/kernels.md).
            let addend = local.assumingMemoryBound(to: Float.self)
            if let result {
                Kernels.reduceQuantizeDecode(mode, wire, count: m, adding: addend,
                                                  divisor: options.op == .avg ? Float(plan.n) : 1, into: out,
                                                  decoded: result.assumingMemoryBound(to: Float.self),
                                                  streaming: streaming)
            } else {
                Kernels.reduceQuantize(mode, wire, count: m, adding: addend, into: out)
            }
            return
        }
        var done = 0
        while done < m {
            let n = min(Self.piece, m - done)
            let wireAt = wire + plan.wireBytes(done)
            let outAt = out + plan.wireBytes(done)
            let localF32: UnsafePointer<Float>
            if plan.type == .f32 {
                localF32 = (local + done * 4).assumingMemoryBound(to: Float.self)
            } else {
                Kernels.toFloat(plan.type, local + done * size, count: n, into: scratchB)
                localF32 = UnsafePointer(scratchB)
            }
            if options.op == .sum || options.op == .avg {
                Kernels.dequantizeAdd(mode, wireAt, count: n, adding: localF32, into: scratchA)
            } else {
                Kernels.dequantize(mode, wireAt, count: n, into: scratchA)
                Kernels.combine(options.op, .f32, into: UnsafeMutableRawPointer(scratchA),
                                      UnsafeRawPointer(localF32), UnsafeRawPointer(scratchA), count: n)
            }
            if let result {
                if options.op == .avg { Kernels.divide(.f32, UnsafeMutableRawPointer(scratchA), count: n, by: plan.n) }
                Kernels.quantize(mode, UnsafePointer(scratchA), count: n, into: outAt)
                decode(UnsafeRawPointer(outAt), count: n, into: result + done * size, scratch: scratchB)
            } else {
                Kernels.quantize(mode, UnsafePointer(scratchA), count: n, into: outAt)
            }
            done += n
        }
    }

    /// Wire bytes to the caller's type: the shared dequantization (and conversion).
    /// `scratch`: a piece of f32 space the caller does not need (non-f32 types only).
    private func decode(_ wire: UnsafeRawPointer, count m: Int, into result: UnsafeMutableRawPointer,
                        scratch scratchA: UnsafeMutablePointer<Float>) {
        if plan.type == .f32 {
            Kernels.dequantize(plan.quantization, wire, count: m, into: result.assumingMemoryBound(to: Float.self),
                               streaming: streaming)
            return
        }
        var done = 0
        while done < m {
            let n = min(Self.piece, m - done)
            Kernels.dequantize(plan.quantization, wire + plan.wireBytes(done), count: n, into: scratchA)
            Kernels.fromFloat(plan.type, UnsafePointer(scratchA), count: n, into: result + done * plan.type.size)
            done += n
        }
    }

    /// Input elements to wire bytes (the first step's send). Runs on the caller's thread, before
    /// any frame of this collective is processed, so the scratch space is free.
    private func encode(_ source: UnsafeRawPointer, count m: Int, into out: UnsafeMutableRawPointer) {
        var done = 0
        while done < m {
            let n = min(Self.piece, m - done)
            let values: UnsafePointer<Float>
            if plan.type == .f32 {
                values = (source + done * 4).assumingMemoryBound(to: Float.self)
            } else {
                Kernels.toFloat(plan.type, source + done * plan.type.size, count: n, into: encodeScratch)
                values = UnsafePointer(encodeScratch)
            }
            Kernels.quantize(plan.quantization, values, count: n, into: out + plan.wireBytes(done))
            done += n
        }
    }

    // MARK: Outcome

    /// Reports success once every frame arrived and every send was written.
    func flushCompletion() {
        lock.lock()
        if outcome == nil, receivedFrames == expectedFrames, outstandingSends == 0 {
            outcome = .success(())
        }
        // Nothing of ours may still be in use by the sender or receiver when the caller is told:
        // it may free its buffers right after.
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
