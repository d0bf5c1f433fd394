import NIOCore
import Transport

/// Raw memory handed to the event loop; the caller keeps it alive and untouched until the
/// collective's future completes.
struct UnsafeSendableMemory: @unchecked Sendable {
    let input: UnsafeRawPointer
    let output: UnsafeMutableRawPointer
}

/// One ring all-reduce in flight on this peer (see ``RingPlan`` for the schedule).
///
/// Confined to the communicator's ring event loop: every method runs there, so it needs no
/// locks. It never writes to the caller's input; results go to `output`, which the
/// communicator copies into place only after success (the abort rule of DESIGN.md).
///
/// Bit-parity: each chunk's final value is computed once, by its owner, in ``finishOwned``;
/// with quantization the owner replaces its own copy by the dequantized value and the
/// all-gather forwards the owner's exact bytes, which every peer decodes with the same code.
final class RingAllReduceOp: @unchecked Sendable {
    let plan: RingPlan
    let options: AllReduceOptions
    private let memory: UnsafeSendableMemory
    private let right: Connection
    private let loop: any EventLoop
    let promise: EventLoopPromise<Void>
    var onFinish: (() -> Void)?

    // Receive side: the frame being received and the bytes of a unit split across reads.
    private var nextSegment: [Int]
    private var receivedFrames = 0
    private let expectedFrames: Int
    private var frame: Frame?
    private let unitBytes: Int
    private let elementsPerUnit: Int
    private var carry: UnsafeMutableRawBufferPointer
    private var carryCount = 0
    private var carryStart = 0
    /// f32 working space for quantized and converted data, one segment long each.
    private var scratchA: UnsafeMutablePointer<Float>?
    private var scratchB: UnsafeMutablePointer<Float>?

    // Send side.
    private var nextInitialSegment = 0
    private let initialSegments: Int
    private var outstandingWrites = 0
    private(set) var finished = false
    private var timeoutTask: Scheduled<Void>?

    private struct Frame {
        let step: Int
        let segment: Int
        let elements: Range<Int>
        let length: Int
        var out: ByteBuffer?
        var forward: [ByteBuffer]
    }

    init(plan: RingPlan, options: AllReduceOptions, memory: UnsafeSendableMemory, right: Connection,
         loop: any EventLoop) {
        self.plan = plan
        self.options = options
        self.memory = memory
        self.right = right
        self.loop = loop
        self.promise = loop.makePromise()
        nextSegment = Array(repeating: 0, count: plan.totalSteps)
        expectedFrames = (0..<plan.totalSteps).reduce(0) { $0 + plan.segmentCount(chunk: plan.receiveChunk(step: $1)) }
        initialSegments = plan.segmentCount(chunk: plan.sendChunk(step: 0))
        if plan.quantization == .none {
            unitBytes = plan.type.size
            elementsPerUnit = 1
        } else {
            unitBytes = QuantKernels.encodedSize(count: QuantKernels.blockSize, mode: plan.quantization)
            elementsPerUnit = QuantKernels.blockSize
        }
        carry = .allocate(byteCount: max(unitBytes, 16), alignment: 16)
        if plan.quantization != .none || plan.type != .f32 {
            scratchA = .allocate(capacity: plan.segmentElements)
            scratchB = .allocate(capacity: plan.segmentElements)
        }
    }

    deinit {
        carry.deallocate()
        scratchA?.deallocate()
        scratchB?.deallocate()
    }

    /// Starts sending; the receive side is driven by ``receive(_:offset:bytes:)``.
    func start() {
        loop.preconditionInEventLoop()
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        timeoutTask = loop.scheduleTask(in: options.timeout) {
            loopBound.value.fail(CollectiveError(code: .timedOut, message: "all-reduce tag \(self.options.tag) timed out after \(self.options.timeout)"))
        }
        pump()
        checkDone()
    }

    /// Sends the initial chunk while the right link accepts more; resumed on writability.
    func pump() {
        guard !finished else { return }
        let chunk = plan.sendChunk(step: 0)
        while nextInitialSegment < initialSegments, right.isWritable {
            let range = plan.segmentRange(chunk: chunk, segment: nextInitialSegment)
            var out = right.channel.allocator.buffer(capacity: plan.wireBytes(range.count))
            encode(from: memory.input + range.lowerBound * plan.type.size, count: range.count, into: &out)
            send(step: 0, segment: nextInitialSegment, [out])
            nextInitialSegment += 1
        }
    }

    func receive(_ header: FrameHeader, offset: Int, bytes: ByteBuffer) {
        guard !finished else { return }
        if offset == 0 {
            guard beginFrame(header) else { return }
        }
        guard var current = frame else { return }
        bytes.withUnsafeReadableBytes { raw in
            consume(raw, at: offset, frame: &current)
        }
        if current.step >= plan.n - 1, current.step + 1 < plan.totalSteps {
            current.forward.append(bytes)
        }
        if offset + bytes.readableBytes == current.length {
            frame = nil
            endFrame(current)
        } else {
            frame = current
        }
    }

    private func beginFrame(_ header: FrameHeader) -> Bool {
        let (step, segment) = RingPlan.split(aux: header.aux)
        guard step < plan.totalSteps, segment == nextSegment[step],
              segment < plan.segmentCount(chunk: plan.receiveChunk(step: step)) else {
            fail(CollectiveError(code: .protocolViolation,
                                 message: "unexpected segment \(segment) of step \(step) for tag \(options.tag)"))
            return false
        }
        let elements = plan.segmentRange(chunk: plan.receiveChunk(step: step), segment: segment)
        let length = plan.wireBytes(elements.count)
        guard Int(header.length) == length else {
            fail(CollectiveError(code: .protocolViolation,
                                 message: "segment of \(header.length) bytes where \(length) were expected: do all peers use the same options?"))
            return false
        }
        var out: ByteBuffer?
        if step < plan.n - 1 {
            out = right.channel.allocator.buffer(capacity: plan.wireBytes(elements.count))
        }
        frame = Frame(step: step, segment: segment, elements: elements, length: length, out: out, forward: [])
        carryCount = 0
        return true
    }

    /// Splits a received piece into whole units (elements, or quantization blocks) and
    /// processes them in place; only a unit cut by the read boundary is copied, into `carry`.
    private func consume(_ raw: UnsafeRawBufferPointer, at offset: Int, frame: inout Frame) {
        guard let base = raw.baseAddress, raw.count > 0 else { return }
        var i = 0
        if carryCount > 0 {
            let target = min(unitBytes, frame.length - carryStart)
            let take = min(target - carryCount, raw.count)
            (carry.baseAddress! + carryCount).copyMemory(from: base, byteCount: take)
            carryCount += take
            i = take
            guard carryCount == target else { return }
            carryCount = 0
            process(UnsafeRawPointer(carry.baseAddress!), bytes: target, at: carryStart, frame: &frame)
        }
        let start = offset + i
        let remaining = raw.count - i
        let whole = remaining == frame.length - start ? remaining : remaining / unitBytes * unitBytes
        if whole > 0 {
            process(base + i, bytes: whole, at: start, frame: &frame)
        }
        let leftover = remaining - whole
        if leftover > 0 {
            carry.baseAddress!.copyMemory(from: base + i + whole, byteCount: leftover)
            carryCount = leftover
            carryStart = start + whole
        }
    }

    private func elements(inBytes bytes: Int) -> Int {
        if plan.quantization == .none { return bytes / unitBytes }
        let tail = bytes % unitBytes
        return bytes / unitBytes * elementsPerUnit + (tail > 0 ? tail - (unitBytes - elementsPerUnit) : 0)
    }

    /// Handles whole units of one frame: `bytes` wire bytes starting at byte `at` of the frame.
    private func process(_ wire: UnsafeRawPointer, bytes: Int, at: Int, frame: inout Frame) {
        let first = frame.elements.lowerBound + at / unitBytes * elementsPerUnit
        let m = elements(inBytes: bytes)
        let size = plan.type.size
        let local = memory.input + first * size
        let result = memory.output + first * size
        let lastReduceStep = plan.n - 2

        if frame.step < lastReduceStep {
            // A partial sum passing through: combine and re-encode straight into the outgoing frame.
            frame.out!.writeWithUnsafeMutableBytes(minimumWritableBytes: plan.wireBytes(m)) { out in
                if plan.quantization == .none {
                    ReduceKernels.combine(options.op, plan.type, into: out.baseAddress!, local, wire, count: m)
                } else {
                    combineQuantized(wire, local: local, count: m)
                    QuantKernels.quantize(plan.quantization, UnsafePointer(scratchA!), count: m, into: out.baseAddress!)
                }
                return plan.wireBytes(m)
            }
        } else if frame.step == lastReduceStep {
            finishOwned(wire, local: local, result: result, count: m, out: &frame.out!)
        } else {
            decode(wire, count: m, into: result)
        }
    }

    /// The owner's final value of a piece of its chunk: combine, average, and (quantized)
    /// round-trip through the wire encoding so that its own copy equals everyone else's.
    private func finishOwned(_ wire: UnsafeRawPointer, local: UnsafeRawPointer, result: UnsafeMutableRawPointer,
                             count m: Int, out: inout ByteBuffer) {
        if plan.quantization == .none {
            ReduceKernels.combine(options.op, plan.type, into: result, local, wire, count: m)
            if options.op == .avg { ReduceKernels.divide(plan.type, result, count: m, by: plan.n) }
            out.writeBytes(UnsafeRawBufferPointer(start: result, count: m * plan.type.size))
        } else {
            combineQuantized(wire, local: local, count: m)
            if options.op == .avg { ReduceKernels.divide(.f32, UnsafeMutableRawPointer(scratchA!), count: m, by: plan.n) }
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: plan.wireBytes(m)) { buffer in
                QuantKernels.quantize(plan.quantization, UnsafePointer(scratchA!), count: m, into: buffer.baseAddress!)
                decode(UnsafeRawPointer(buffer.baseAddress!), count: m, into: result)
                return plan.wireBytes(m)
            }
        }
    }

    /// scratchA = local ⊕ dequantize(wire), in f32.
    private func combineQuantized(_ wire: UnsafeRawPointer, local: UnsafeRawPointer, count m: Int) {
        let a = scratchA!
        let localF32: UnsafePointer<Float>
        if plan.type == .f32 {
            localF32 = local.assumingMemoryBound(to: Float.self)
        } else {
            ReduceKernels.toFloat(plan.type, local, count: m, into: scratchB!)
            localF32 = UnsafePointer(scratchB!)
        }
        if options.op == .sum || options.op == .avg {
            QuantKernels.dequantizeAdd(plan.quantization, wire, count: m, adding: localF32, into: a)
        } else {
            let b = plan.type == .f32 ? scratchB! : a
            QuantKernels.dequantize(plan.quantization, wire, count: m, into: b)
            ReduceKernels.combine(options.op, .f32, into: UnsafeMutableRawPointer(a), UnsafeRawPointer(localF32),
                                  UnsafeRawPointer(b), count: m)
        }
    }

    /// Wire bytes to the caller's type: a copy, or the shared dequantization.
    private func decode(_ wire: UnsafeRawPointer, count m: Int, into result: UnsafeMutableRawPointer) {
        if plan.quantization == .none {
            result.copyMemory(from: wire, byteCount: m * plan.type.size)
        } else if plan.type == .f32 {
            QuantKernels.dequantize(plan.quantization, wire, count: m, into: result.assumingMemoryBound(to: Float.self))
        } else {
            QuantKernels.dequantize(plan.quantization, wire, count: m, into: scratchA!)
            ReduceKernels.fromFloat(plan.type, UnsafePointer(scratchA!), count: m, into: result)
        }
    }

    /// Input elements to wire bytes (the first step's send).
    private func encode(from source: UnsafeRawPointer, count m: Int, into out: inout ByteBuffer) {
        if plan.quantization == .none {
            out.writeBytes(UnsafeRawBufferPointer(start: source, count: m * plan.type.size))
            return
        }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: plan.wireBytes(m)) { buffer in
            var done = 0
            while done < m {
                let n = min(plan.segmentElements, m - done)
                let values: UnsafePointer<Float>
                if plan.type == .f32 {
                    values = (source + done * 4).assumingMemoryBound(to: Float.self)
                } else {
                    ReduceKernels.toFloat(plan.type, source + done * plan.type.size, count: n, into: scratchA!)
                    values = UnsafePointer(scratchA!)
                }
                QuantKernels.quantize(plan.quantization, values, count: n,
                                      into: buffer.baseAddress! + plan.wireBytes(done))
                done += n
            }
            return plan.wireBytes(m)
        }
    }

    private func endFrame(_ done: Frame) {
        nextSegment[done.step] += 1
        receivedFrames += 1
        if let out = done.out {
            send(step: done.step + 1, segment: done.segment, [out])
        } else if !done.forward.isEmpty {
            send(step: done.step + 1, segment: done.segment, done.forward)
        }
        checkDone()
    }

    private func send(step: Int, segment: Int, _ payload: [ByteBuffer]) {
        let length = payload.reduce(0) { $0 + $1.readableBytes }
        let header = FrameHeader(type: .data, length: UInt32(length), tag: options.tag,
                                 aux: RingPlan.aux(step: step, segment: segment))
        outstandingWrites += 1
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        right.send(header, payload).hop(to: loop).whenComplete { result in
            let op = loopBound.value
            op.outstandingWrites -= 1
            if case .failure(let error) = result {
                op.fail(CollectiveError.aborted("sending to \(hex(op.right.remoteId)) failed: \(error)"))
            } else {
                op.checkDone()
            }
        }
    }

    private func checkDone() {
        guard !finished, receivedFrames == expectedFrames, nextInitialSegment == initialSegments,
              outstandingWrites == 0 else { return }
        finished = true
        timeoutTask?.cancel()
        onFinish?()
        promise.succeed()
    }

    func fail(_ error: CollectiveError) {
        guard !finished else { return }
        finished = true
        timeoutTask?.cancel()
        onFinish?()
        promise.fail(error)
    }
}
