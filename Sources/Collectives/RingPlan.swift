/// Where every byte of a ring all-reduce goes: chunks, segments and the step schedule.
///
/// Vocabulary (as in gloo): the buffer is cut into one *chunk* per rank and every chunk into
/// *segments* of at most `segmentElements`. In reduce-scatter step s (0 ..< n−1) rank r sends
/// chunk (r − s) mod n to its right neighbour and receives chunk (r − s − 1) mod n from its left,
/// combining it with its own input; after the last step rank r holds the final value of chunk
/// (r + 1) mod n, which it *owns*. In all-gather step s rank r sends chunk (r + 1 − s) mod n
/// and receives chunk (r − s) mod n. Segments pipeline the steps: a segment is forwarded as
/// soon as it is reduced, while later segments of the same chunk are still on the wire.
/// Every rank derives the same plan from (count, n, segment size, quantization), so the
/// segment boundaries, and with them the quantization blocks, agree everywhere.
struct RingPlan: Sendable {
    let count: Int
    let n: Int
    let rank: Int
    let type: DType
    let quantization: Quantization
    let segmentElements: Int

    init(count: Int, n: Int, rank: Int, type: DType, quantization: Quantization, segmentBytes: Int) {
        precondition(n >= 1 && rank >= 0 && rank < n && count >= 0)
        self.count = count
        self.n = n
        self.rank = rank
        self.type = type
        self.quantization = type.isFloat ? quantization : .none
        if self.quantization == .none {
            segmentElements = max(1, segmentBytes / type.size)
        } else {
            // Whole quantization blocks per segment, so blocks never straddle two frames.
            let block = QuantKernels.blockSize
            segmentElements = max(block, (segmentBytes / 4) / block * block)
        }
    }

    /// Reduce-scatter has n − 1 steps, then all-gather n − 1 more.
    var totalSteps: Int { 2 * (n - 1) }

    func chunkRange(_ c: Int) -> Range<Int> {
        let base = count / n
        let extra = count % n
        let start = c * base + Swift.min(c, extra)
        return start..<(start + base + (c < extra ? 1 : 0))
    }

    func segmentCount(chunk c: Int) -> Int {
        let length = chunkRange(c).count
        return (length + segmentElements - 1) / segmentElements
    }

    func segmentRange(chunk c: Int, segment k: Int) -> Range<Int> {
        let chunk = chunkRange(c)
        let start = chunk.lowerBound + k * segmentElements
        return start..<Swift.min(chunk.upperBound, start + segmentElements)
    }

    private func mod(_ x: Int) -> Int { ((x % n) + n) % n }

    /// The chunk rank sends at global step g (reduce-scatter for g < n − 1, then all-gather).
    func sendChunk(step g: Int) -> Int {
        g < n - 1 ? mod(rank - g) : mod(rank + 1 - (g - (n - 1)))
    }

    func receiveChunk(step g: Int) -> Int {
        g < n - 1 ? mod(rank - g - 1) : mod(rank - (g - (n - 1)))
    }

    var ownedChunk: Int { mod(rank + 1) }

    /// Bytes on the wire for `elements` elements.
    func wireBytes(_ elements: Int) -> Int {
        quantization == .none ? elements * type.size : QuantKernels.encodedSize(count: elements, mode: quantization)
    }

    /// Frames carry (step, segment) in the header's aux field.
    static func aux(step: Int, segment: Int) -> UInt64 { UInt64(step) << 32 | UInt64(segment) }
    static func split(aux: UInt64) -> (step: Int, segment: Int) { (Int(aux >> 32), Int(aux & 0xFFFF_FFFF)) }
}
