import CKernelSupport

#if _endian(big)
#error("QuantKernels assumes a little-endian host")
#endif

/// Block quantization of f32 data to 8-bit codes, for the wire. Byte-exact layouts, rounding
/// rules and error bounds are in docs/kernels.md; in short, per block of ``blockSize`` elements
/// (the last block may be shorter):
///
/// - `int8MinMax`: f32 `lo`, f32 `step` (little-endian bit patterns), then one `UInt8` code per
///   element; `x' = lo + Float(code) * step`.
/// - `int8ZeroPoint`: f32 `scale`, f32 `zeroPoint` (an integer 0...255), then one code per
///   element; `x' = (Float(code) - zeroPoint) * scale`. Zero decodes to exactly `+0`.
///
/// Encoding (exact, so that every peer produces the same bytes):
/// - `int8MinMax`: `lo`/`hi` = block min/max; `step = (hi - lo) / 255`; `inv = 1 / step`
///   (`inv = 0` when `step == 0`); `code = clamp(RNE((x - lo) * inv), 0, 255)`.
/// - `int8ZeroPoint`: `lo' = min(lo, 0)`, `hi' = max(hi, 0)`, `scale = (hi' - lo') / 255`,
///   `zeroPoint = clamp(RNE(-lo' / scale), 0, 255)` (0 when `scale == 0`), `inv = 1 / scale`
///   (0 when `scale == 0`); `code = clamp(RNE((x * inv) + zeroPoint), 0, 255)`.
/// - When `1 / step` (or `1 / scale`) overflows (a range below about 7.5e-37), the code is
///   computed with a division, `(x - lo) / step` (or `x / scale`), instead of the product.
/// - Every operation is a single IEEE f32 operation rounded to nearest-even; no fused
///   multiply-add. The rounding `RNE` is done by adding 1.5·2²³ and keeping the low byte.
///
/// Non-finite input: a block that contains a NaN or an infinity, or whose range `hi − lo`
/// (`hi' − lo'` for zero-point) is 2¹²⁷ or more, is encoded as a *poisoned* block: header
/// `NaN, NaN` (min-max) or `NaN, 0` (zero-point), with NaN = `0x7FC00000`, and all codes 0.
/// Every element of a poisoned block decodes to NaN, so a NaN or infinity is never silently
/// turned into a finite value, and damage stays within its block.
///
/// Decoding is bit-identical on every IEEE platform: plain `+`, `-`, `*` only.
public enum QuantKernels {
    /// Elements per block. Part of the wire format.
    public static let blockSize = 256
    /// Bytes of header per block (two f32).
    public static let headerSize = 8

    /// 1.5 · 2²³: adding it to a value in [0, 255] rounds to an integer in the low mantissa bits.
    @usableFromInline static let magic: Float = 12_582_912.0
    /// The canonical quiet NaN written into poisoned block headers.
    public static let poisonNaN = Float(bitPattern: 0x7FC0_0000)
    /// Ranges at or beyond this are treated like non-finite input (poisoned block).
    public static let maxRange: Float = 0x1p127

    // MARK: - Sizes

    /// Number of blocks for `count` elements.
    public static func blockCount(_ count: Int) -> Int { (count &+ blockSize &- 1) / blockSize }

    /// Bytes of the encoding of `count` f32 elements.
    public static func encodedSize(count: Int, mode: Quantization) -> Int {
        precondition(count >= 0, "negative count")
        switch mode {
        case .none: return count &* 4
        case .int8MinMax, .int8ZeroPoint: return blockCount(count) &* headerSize &+ count
        }
    }

    // MARK: - Public entry points

    /// Encodes `count` floats from `src` into `dst`, which must hold `encodedSize(count:mode:)` bytes.
    public static func quantize(
        _ mode: Quantization, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch mode {
        case .none: dst.copyMemory(from: UnsafeRawPointer(src), byteCount: count &* 4)
        case .int8MinMax: quantizeMinMax(src, count, dst)
        case .int8ZeroPoint: quantizeZeroPoint(src, count, dst)
        }
    }

    /// Decodes `count` floats from `src` (`encodedSize(count:mode:)` bytes) into `dst`.
    public static func dequantize(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>,
        streaming: Bool = false
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        defer { if streaming { pn_stream_fence() } }
        switch mode {
        case .none: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count &* 4)
        case .int8MinMax: dequantizeMinMax(src, count, dst, streaming: streaming)
        case .int8ZeroPoint: dequantizeZeroPoint(src, count, dst, streaming: streaming)
        }
    }

    /// `dst[i] = addend[i] + dequantized[i]` in one pass (exactly the bits of `dequantize`
    /// followed by an f32 add). `dst` may be `addend`.
    public static func dequantizeAdd(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch mode {
        case .none:
            ReduceKernels.sumF32(UnsafeMutableRawPointer(dst), UnsafeRawPointer(addend), src, count)
        case .int8MinMax: dequantizeAddMinMax(src, count, addend, dst)
        case .int8ZeroPoint: dequantizeAddZeroPoint(src, count, addend, dst)
        }
    }

    /// The largest `|x' − x|` for finite elements of a block whose minimum is `lo` and maximum is
    /// `hi` (both finite): half a quantization step, plus float rounding in encoding and decoding.
    /// Returns `.infinity` for blocks that would be poisoned, 0 for `.none`.
    ///
    /// Bound: `(0.5 + 2⁻¹⁰)·s + 2⁻²¹·M + 2⁻¹⁴¹`, where `s` is `step` (or `scale`) and `M` is the
    /// largest magnitude of the (zero-extended, for zero-point) range ends.
    public static func maxError(forBlockMin lo: Float, max hi: Float, mode: Quantization) -> Float {
        switch mode {
        case .none: return 0
        case .int8MinMax:
            guard let p = minMaxParams(lo: lo, hi: hi, allFinite: lo.isFinite && hi.isFinite) else {
                return .infinity
            }
            return bound(p.step, Swift.max(abs(lo), abs(hi)))
        case .int8ZeroPoint:
            guard let p = zeroPointParams(lo: lo, hi: hi, allFinite: lo.isFinite && hi.isFinite) else {
                return .infinity
            }
            let m = Swift.max(abs(Swift.min(lo, 0)), abs(Swift.max(hi, 0)))
            return bound(p.scale, m)
        }
    }

    static func bound(_ s: Float, _ m: Float) -> Float {
        (0.5 + 0x1p-10) * s + 0x1p-21 * m + 0x1p-141
    }

    // MARK: - Block parameters

    struct MinMaxParams {
        var lo: Float, step: Float, inv: Float, useDivision: Bool
    }

    struct ZeroPointParams {
        var scale: Float, zeroPoint: Float, inv: Float, useDivision: Bool
    }

    /// nil: poisoned block.
    @inline(__always)
    static func minMaxParams(lo: Float, hi: Float, allFinite: Bool) -> MinMaxParams? {
        let range = hi - lo
        guard allFinite, range < maxRange else { return nil }
        let step = range / 255
        if step == 0 { return MinMaxParams(lo: lo, step: 0, inv: 0, useDivision: false) }
        let inv = 1 / step
        return MinMaxParams(lo: lo, step: step, inv: inv, useDivision: !inv.isFinite)
    }

    /// nil: poisoned block.
    @inline(__always)
    static func zeroPointParams(lo: Float, hi: Float, allFinite: Bool) -> ZeroPointParams? {
        let lo0: Float = lo < 0 ? lo : 0
        let hi0: Float = hi > 0 ? hi : 0
        let range = hi0 - lo0
        guard allFinite, range < maxRange else { return nil }
        let scale = range / 255
        if scale == 0 { return ZeroPointParams(scale: 0, zeroPoint: 0, inv: 0, useDivision: false) }
        let r = (((0 - lo0) / scale) + magic) - magic       // RNE; the quotient is in [0, 256)
        let zp: Float = r > 0 ? (r < 255 ? r : 255) : 0   // also maps -0 to +0
        let inv = 1 / scale
        return ZeroPointParams(scale: scale, zeroPoint: zp, inv: inv, useDivision: !inv.isFinite)
    }

    /// Block minimum and maximum (NaN ignored) and whether every element is finite.
    /// `lo`/`hi` are found by compare-and-replace; the lane results are folded in lane order.
    @inline(never)
    static func blockRange(_ p: UnsafeRawPointer, _ n: Int) -> (lo: Float, hi: Float, allFinite: Bool) {
        let (vlo, vhi, nanLanes) = vectorRange(p, n)
        // Any NaN lane: OR-ing the halves of the mask keeps to integer ops, which the optimizer
        // turns into `packssdw` + `pmovmskb` (a float flag summed over the lanes took a dozen
        // blend instructions, measured).
        let m4 = nanLanes.lowHalf | nanLanes.highHalf
        let m2 = m4.lowHalf | m4.highHalf
        return foldLanes(vlo, vhi, (m2[0] | m2[1]) != 0, p, n)
    }

    /// The end of ``blockRange``: folds the lane minima and maxima over the first `n & ~7`
    /// elements and adds the scalar tail. Shared with the fused kernels, which accumulate the
    /// lanes themselves, so that both give the same `lo`/`hi` bits (`-0` vs `+0`). `sawNaNInLanes`:
    /// a NaN (or any non-finite element) among those first elements.
    @inline(__always)
    static func foldLanes(
        _ vlo: SIMD8<Float>, _ vhi: SIMD8<Float>, _ sawNaNInLanes: Bool, _ p: UnsafeRawPointer, _ n: Int
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        // Fold the lanes as a fixed tree (8 -> 4 -> 2 -> 1), keeping the first operand on ties.
        // The later levels run at full SIMD4 width on lanes swapped into place (only lane 0 is
        // used in the end): written on halves and single lanes, the optimizer split the compares
        // into blends of two-lane pieces instead of `minps`/`maxps` (about 20 more instructions
        // per block, a sixth of the range pass; measured).
        let la = vlo.lowHalf, lb = vlo.highHalf, ha = vhi.lowHalf, hb = vhi.highHalf
        var lo4 = la, hi4 = ha
        lo4.replace(with: lb, where: lb .< la)
        hi4.replace(with: hb, where: hb .> ha)
        let lo4s = SIMD4<Float>(lo4[2], lo4[3], lo4[0], lo4[1])
        let hi4s = SIMD4<Float>(hi4[2], hi4[3], hi4[0], hi4[1])
        var lo2 = lo4, hi2 = hi4
        lo2.replace(with: lo4s, where: lo4s .< lo4)
        hi2.replace(with: hi4s, where: hi4s .> hi4)
        let lo2s = SIMD4<Float>(lo2[1], lo2[0], lo2[3], lo2[2])
        let hi2s = SIMD4<Float>(hi2[1], hi2[0], hi2[3], hi2[2])
        var lo1 = lo2, hi1 = hi2
        lo1.replace(with: lo2s, where: lo2s .< lo2)
        hi1.replace(with: hi2s, where: hi2s .> hi2)
        var lo = lo1[0], hi = hi1[0]
        var sawNaN = sawNaNInLanes
        var i = n & ~7
        while i < n {
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            if x < lo { lo = x }
            if x > hi { hi = x }
            if x.isNaN { sawNaN = true }
            i &+= 1
        }
        // An infinite element makes lo or hi infinite; NaN elements never compare, the lane sums catch them.
        return (lo, hi, !sawNaN && lo.isFinite && hi.isFinite)
    }

    /// Lane-wise min, max and NaN-detecting sums over the first `n & ~7` elements. SIMD8, not
    /// SIMD16: three SIMD16 accumulators plus the loaded vector need more than the sixteen SSE
    /// registers, and the spills made this pass three times slower (measured).
    ///
    /// Two vectors per iteration: `minps`/`maxps` have a latency of several cycles, and one
    /// running min per lane made this pass latency-bound. The pair is reduced first, keeping the
    /// earlier vector on ties, then folded into the running value; for data without NaN this keeps,
    /// per lane, the earliest element among those equal to the minimum (or maximum), exactly as
    /// one element at a time does, so `-0`/`+0` ties give the same bits. A NaN can make the pair
    /// step drop an element the single step would have kept, but a block with a NaN is poisoned
    /// whatever `lo` and `hi` are (the sums below detect it).
    @inline(__always)
    static func vectorRange(_ p: UnsafeRawPointer, _ n: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Int32>) {
        var vlo = SIMD8<Float>(repeating: .infinity)
        var vhi = SIMD8<Float>(repeating: -.infinity)
        // Lane sums: NaN is sticky, so a NaN element leaves its lane NaN. Finite elements never
        // make a lane NaN: a sum that overflows to ±inf stays there, since only an infinite
        // element of the other sign could turn it into NaN (and that poisons anyway). Two sums,
        // one per vector of the pair, each over finite elements only when the block is finite.
        var accA = SIMD8<Float>.zero
        var accB = SIMD8<Float>.zero
        var i = 0
        while i &+ 16 <= n {
            let a = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
            let b = p.loadUnaligned(fromByteOffset: i &* 4 &+ 32, as: SIMD8<Float>.self)
            var pairLo = a
            pairLo.replace(with: b, where: b .< a)
            var pairHi = a
            pairHi.replace(with: b, where: b .> a)
            vlo.replace(with: pairLo, where: pairLo .< vlo)
            vhi.replace(with: pairHi, where: pairHi .> vhi)
            accA += a
            accB += b
            i &+= 16
        }
        if i &+ 8 <= n {
            let v = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
            vlo.replace(with: v, where: v .< vlo)
            vhi.replace(with: v, where: v .> vhi)
            accA += v
        }
        // Only the NaN-ness of the two sums is merged (as all-ones lane masks): finite elements
        // can overflow one sum to +inf and the other to -inf (alternating runs of ±2e37), and
        // adding the sums would flag a finite block. A lane is flagged exactly when one of its
        // sums saw a NaN or infinities of both signs.
        let nanA = unsafeBitCast(accA .!= accA, to: SIMD8<Int32>.self)
        let nanB = unsafeBitCast(accB .!= accB, to: SIMD8<Int32>.self)
        return (vlo, vhi, nanA | nanB)
    }

    @inline(__always)
    static func writeHeader(_ out: UnsafeMutableRawPointer, _ a: Float, _ b: Float) {
        out.storeBytes(of: a.bitPattern.littleEndian, toByteOffset: 0, as: UInt32.self)
        out.storeBytes(of: b.bitPattern.littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    @inline(__always)
    static func readHeader(_ p: UnsafeRawPointer) -> (Float, Float) {
        (Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self))),
         Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))))
    }

    @inline(__always)
    static func writePoison(_ out: UnsafeMutableRawPointer, _ n: Int, second: Float) {
        writeHeader(out, poisonNaN, second)
        (out + headerSize).initializeMemory(as: UInt8.self, repeating: 0, count: n)
    }

    /// The low byte of each lane. For SSE2 the optimizer lowers this to `pand` + `packuswb`, the
    /// same code as the lane shuffle used before; for AVX2 the shuffle became one `vpextrb` +
    /// `vpinsrb` pair per lane (the encode pass 3.5× slower), this `vpshufb` + `vpermq`.
    /// (With Swift 5.x `SIMD16<UInt8>(truncatingIfNeeded:)` was an out-of-line call that spilled
    /// every vector register; with 6.3 it is inlined.)
    @inline(__always)
    static func narrow(_ u: SIMD16<UInt32>) -> SIMD16<UInt8> {
        SIMD16<UInt8>(truncatingIfNeeded: u)
    }

    /// `Float(code)` for 16 codes, exactly. The bytes are zero-extended by lane shuffles
    /// (`punpck`), then converted lane by lane from Int32, which the optimizer turns into one
    /// `cvtdq2ps` per four lanes. (`SIMD16<Float>(SIMD16<Int32>)` is an out-of-line
    /// standard-library call here. The previous form, bits `0x4B000000 | code` minus 2²³, gives
    /// the same floats with two instructions per four lanes instead of one: dequantize in L2
    /// went from 24-25 to 26-27 GB/s at best, measured.)
    @inline(__always)
    static func widen(_ c: SIMD16<UInt8>) -> SIMD16<Float> {
        let w = SIMD16<UInt32>(
            UInt32(c[0]), UInt32(c[1]), UInt32(c[2]), UInt32(c[3]),
            UInt32(c[4]), UInt32(c[5]), UInt32(c[6]), UInt32(c[7]),
            UInt32(c[8]), UInt32(c[9]), UInt32(c[10]), UInt32(c[11]),
            UInt32(c[12]), UInt32(c[13]), UInt32(c[14]), UInt32(c[15]))
        return SIMD16<Float>(
            Float(Int32(bitPattern: w[0])), Float(Int32(bitPattern: w[1])), Float(Int32(bitPattern: w[2])), Float(Int32(bitPattern: w[3])),
            Float(Int32(bitPattern: w[4])), Float(Int32(bitPattern: w[5])), Float(Int32(bitPattern: w[6])), Float(Int32(bitPattern: w[7])),
            Float(Int32(bitPattern: w[8])), Float(Int32(bitPattern: w[9])), Float(Int32(bitPattern: w[10])), Float(Int32(bitPattern: w[11])),
            Float(Int32(bitPattern: w[12])), Float(Int32(bitPattern: w[13])), Float(Int32(bitPattern: w[14])), Float(Int32(bitPattern: w[15])))
    }

    /// ``widen(_:)`` for 8 codes.
    @inline(__always)
    static func widen8(_ c: SIMD8<UInt8>) -> SIMD8<Float> {
        let w = SIMD8<UInt32>(
            UInt32(c[0]), UInt32(c[1]), UInt32(c[2]), UInt32(c[3]),
            UInt32(c[4]), UInt32(c[5]), UInt32(c[6]), UInt32(c[7]))
        return SIMD8<Float>(
            Float(Int32(bitPattern: w[0])), Float(Int32(bitPattern: w[1])), Float(Int32(bitPattern: w[2])), Float(Int32(bitPattern: w[3])),
            Float(Int32(bitPattern: w[4])), Float(Int32(bitPattern: w[5])), Float(Int32(bitPattern: w[6])), Float(Int32(bitPattern: w[7])))
    }

    /// The low byte of a float in [magic, magic + 255].
    @inline(__always)
    static func lowByte(_ u: Float) -> UInt8 { UInt8(truncatingIfNeeded: u.bitPattern) }

    /// How far ahead of the block being read the block loops prefetch f32 input. The hardware
    /// prefetcher alone left a large quantize at about half its in-cache speed here; 2 to 8 KiB
    /// ahead gained about a fifth at 64 MiB (docs/kernels.md §7).
    static let prefetchDistance = 2048

    /// Prefetches the 1 KiB of f32 input ``prefetchDistance`` bytes past `p` (one block's worth:
    /// the block loops call it once per block). Prefetches never fault, also past the end.
    @inline(__always)
    static func prefetchBlock(_ p: UnsafeRawPointer) {
        var k = prefetchDistance
        while k < prefetchDistance &+ blockSize &* 4 {
            pn_prefetch(p + k)
            k &+= 64
        }
    }

    /// Writes `n` floats to `out`: `vector(i)` gives elements `i ..< i + 16`, `scalar(i)`
    /// element `i` (the same value, element by element). Streaming sends the 64-byte aligned
    /// middle past the caches (``pn_stream_f32x16``); the ends, which share a cache line with
    /// neighbouring data, are written normally, and so is all of an `out` that is not 4-byte
    /// aligned (its middle could never be 64-byte aligned).
    @inline(__always)
    static func writeFloats(
        _ out: UnsafeMutableRawPointer, _ n: Int, streaming: Bool,
        vector: (Int) -> SIMD16<Float>, scalar: (Int) -> Float
    ) {
        var i = 0
        if streaming && Int(bitPattern: out) & 3 == 0 {
            let head = Swift.min(n, ((64 &- (Int(bitPattern: out) & 63)) & 63) &>> 2)
            while i < head {
                out.storeBytes(of: scalar(i), toByteOffset: i &* 4, as: Float.self)
                i &+= 1
            }
            while i &+ 16 <= n {
                pn_stream_f32x16(out + i &* 4, vector(i))
                i &+= 16
            }
        } else {
            while i &+ 16 <= n {
                out.storeBytes(of: vector(i), toByteOffset: i &* 4, as: SIMD16<Float>.self)
                i &+= 16
            }
        }
        while i < n {
            out.storeBytes(of: scalar(i), toByteOffset: i &* 4, as: Float.self)
            i &+= 1
        }
    }

    // MARK: - int8 min-max

    @inline(never)
    static func quantizeMinMax(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) {
        var start = 0
        var out = dst
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let p = UnsafeRawPointer(src + start)
            prefetchBlock(p)
            let r = blockRange(p, n)
            if let params = minMaxParams(lo: r.lo, hi: r.hi, allFinite: r.allFinite) {
                writeHeader(out, params.lo, params.step)
                if params.useDivision {
                    encodeMinMaxDividing(p, n, params, out + headerSize)
                } else {
                    encodeMinMax(p, n, params, out + headerSize)
                }
            } else {
                writePoison(out, n, second: poisonNaN)
            }
            out += headerSize &+ n
            start &+= n
        }
    }

    /// The clamp of the documented rule, `code <= 255`, never acts here, so the vector loop has
    /// none (it cost a quarter of this pass, measured). For every element `lo <= x <= hi`, and
    /// IEEE rounding is monotonic, so `0 <= t = (x - lo) * inv <= range * inv`. With
    /// `step = range / 255 · (1 + d1)` and `inv = 1 / step · (1 + d2)`, `range * inv` is
    /// `255 · (1 + d2) / (1 + d1)` rounded once more. Each `|d|` is at most 2⁻²⁴ for a normal
    /// `step`; for a subnormal one the absolute error 2⁻¹⁵⁰ over `step >= 2⁻¹²⁸` (else `inv`
    /// would overflow and the division path is taken) bounds `|d1|` by 2⁻²². So `t < 255.001`,
    /// and `t + magic` rounds to `magic + k` with `k` in 0...255. `minMaxCodesNeedNoClamp` in
    /// the tests checks the codes against the clamped rule on blocks at these limits.
    @inline(never)
    static func encodeMinMax(_ p: UnsafeRawPointer, _ n: Int, _ params: MinMaxParams, _ codes: UnsafeMutableRawPointer) {
        let lo = params.lo, inv = params.inv
        let vlo = SIMD16<Float>(repeating: lo), vinv = SIMD16<Float>(repeating: inv)
        let vmagic = SIMD16<Float>(repeating: magic)
        var i = 0
        while i &+ 16 <= n {
            let v = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            let u = (v - vlo) * vinv + vmagic
            codes.storeBytes(of: narrow(unsafeBitCast(u, to: SIMD16<UInt32>.self)), toByteOffset: i, as: SIMD16<UInt8>.self)
            i &+= 16
        }
        while i < n {
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            codes.storeBytes(of: lowByte((x - lo) * inv + magic), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
    }

    /// Only for blocks whose `1 / step` overflows (range below about 7.5e-37).
    @inline(never)
    static func encodeMinMaxDividing(_ p: UnsafeRawPointer, _ n: Int, _ params: MinMaxParams, _ codes: UnsafeMutableRawPointer) {
        let cap = magic + 255
        for i in 0..<n {
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            let t = (x - params.lo) / params.step
            var u = t + magic
            if u > cap { u = cap }
            codes.storeBytes(of: lowByte(u), toByteOffset: i, as: UInt8.self)
        }
    }

    @inline(__always)
    static func decodeMinMaxBlock(
        _ blk: UnsafeRawPointer, _ n: Int, _ out: UnsafeMutableRawPointer, _ addend: UnsafeRawPointer?,
        streaming: Bool = false
    ) {
        let (lo, step) = readHeader(blk)
        let codes = blk + headerSize
        let vlo = SIMD16<Float>(repeating: lo), vstep = SIMD16<Float>(repeating: step)
        writeFloats(out, n, streaming: streaming) { i in
            let c = codes.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
            let f = widen(c)
            var y = vlo + f * vstep
            if let addend { y = addend.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self) + y }
            return y
        } scalar: { i in
            let c = codes.load(fromByteOffset: i, as: UInt8.self)
            var y = lo + Float(c) * step
            if let addend { y = addend.loadUnaligned(fromByteOffset: i &* 4, as: Float.self) + y }
            return y
        }
    }

    @inline(never)
    static func dequantizeMinMax(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>, streaming: Bool) {
        var start = 0
        var blk = src
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            decodeMinMaxBlock(blk, n, UnsafeMutableRawPointer(dst + start), nil, streaming: streaming)
            blk += headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func dequantizeAddMinMax(
        _ src: UnsafeRawPointer, _ count: Int, _ addend: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>
    ) {
        var start = 0
        var blk = src
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            decodeMinMaxBlock(blk, n, UnsafeMutableRawPointer(dst + start), UnsafeRawPointer(addend + start))
            blk += headerSize &+ n
            start &+= n
        }
    }

    // MARK: - int8 zero-point

    @inline(never)
    static func quantizeZeroPoint(_ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer) {
        var start = 0
        var out = dst
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let p = UnsafeRawPointer(src + start)
            prefetchBlock(p)
            let r = blockRange(p, n)
            if let params = zeroPointParams(lo: r.lo, hi: r.hi, allFinite: r.allFinite) {
                writeHeader(out, params.scale, params.zeroPoint)
                if params.useDivision {
                    encodeZeroPointDividing(p, n, params, out + headerSize)
                } else {
                    encodeZeroPoint(p, n, params, out + headerSize)
                }
            } else {
                writePoison(out, n, second: 0)
            }
            out += headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func encodeZeroPoint(_ p: UnsafeRawPointer, _ n: Int, _ params: ZeroPointParams, _ codes: UnsafeMutableRawPointer) {
        let inv = params.inv, base = magic + params.zeroPoint, cap = magic + 255
        let vinv = SIMD16<Float>(repeating: inv), vbase = SIMD16<Float>(repeating: base)
        let vfloor = SIMD16<Float>(repeating: magic), vcap = SIMD16<Float>(repeating: cap)
        var i = 0
        while i &+ 16 <= n {
            let v = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            let t = v * vinv
            var u = t + vbase
            u.replace(with: vfloor, where: u .< vfloor)
            u.replace(with: vcap, where: u .> vcap)
            let bits = unsafeBitCast(u, to: SIMD16<UInt32>.self)
            codes.storeBytes(of: narrow(bits), toByteOffset: i, as: SIMD16<UInt8>.self)
            i &+= 16
        }
        while i < n {
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            let t = x * inv
            var u = t + base
            if u < magic { u = magic }
            if u > cap { u = cap }
            codes.storeBytes(of: lowByte(u), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
    }

    /// Only for blocks whose `1 / scale` overflows (range below about 7.5e-37).
    @inline(never)
    static func encodeZeroPointDividing(_ p: UnsafeRawPointer, _ n: Int, _ params: ZeroPointParams, _ codes: UnsafeMutableRawPointer) {
        let base = magic + params.zeroPoint, cap = magic + 255
        for i in 0..<n {
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            let t = x / params.scale
            var u = t + base
            if u < magic { u = magic }
            if u > cap { u = cap }
            codes.storeBytes(of: lowByte(u), toByteOffset: i, as: UInt8.self)
        }
    }

    @inline(__always)
    static func decodeZeroPointBlock(
        _ blk: UnsafeRawPointer, _ n: Int, _ out: UnsafeMutableRawPointer, _ addend: UnsafeRawPointer?,
        streaming: Bool = false
    ) {
        let (scale, zp) = readHeader(blk)
        let codes = blk + headerSize
        let vscale = SIMD16<Float>(repeating: scale), vzp = SIMD16<Float>(repeating: zp)
        writeFloats(out, n, streaming: streaming) { i in
            let c = codes.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
            let f = widen(c)
            var y = (f - vzp) * vscale
            if let addend { y = addend.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self) + y }
            return y
        } scalar: { i in
            let c = codes.load(fromByteOffset: i, as: UInt8.self)
            var y = (Float(c) - zp) * scale
            if let addend { y = addend.loadUnaligned(fromByteOffset: i &* 4, as: Float.self) + y }
            return y
        }
    }

    @inline(never)
    static func dequantizeZeroPoint(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>, streaming: Bool) {
        var start = 0
        var blk = src
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            decodeZeroPointBlock(blk, n, UnsafeMutableRawPointer(dst + start), nil, streaming: streaming)
            blk += headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func dequantizeAddZeroPoint(
        _ src: UnsafeRawPointer, _ count: Int, _ addend: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>
    ) {
        var start = 0
        var blk = src
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            decodeZeroPointBlock(blk, n, UnsafeMutableRawPointer(dst + start), UnsafeRawPointer(addend + start))
            blk += headerSize &+ n
            start &+= n
        }
    }
}

// MARK: - Fused kernels

/// One pass over memory for the all-reduce's combine step, block by block: each 256-element
/// block is decoded, added, (divided,) range-scanned, encoded and (optionally) decoded again
/// while it sits in a 1 KiB stack buffer, instead of four or five passes over a scratch piece.
/// Every result is bit-identical to the unfused sequence
/// `dequantizeAdd` → [`ReduceKernels.divide`] → `quantize` → `dequantize` (docs/kernels.md, §2).
extension QuantKernels {
    /// `dst = quantize(addend + dequantize(src))`: bit-identical to ``dequantizeAdd(_:_:count:adding:into:)``
    /// into a scratch buffer followed by ``quantize(_:_:count:into:)``. `src` and `dst` hold
    /// `encodedSize(count:mode:)` bytes and may be the same buffer (exactly, not partially overlapping).
    @inline(never)
    public static func reduceQuantize(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, into dst: UnsafeMutableRawPointer
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch mode {
        case .none:
            ReduceKernels.sumF32(dst, UnsafeRawPointer(addend), src, count)
        case .int8MinMax, .int8ZeroPoint:
            // One block of f32 (blockSize · 4 = 1 KiB) on the stack. A literal size and at most
            // 16-byte alignment: with `blockSize &* 4` and alignment 64 the release build called
            // swift_slowAlloc on every call (seen in the object code).
            withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 16) { tmp in
                let t = tmp.baseAddress!
                if mode == .int8MinMax {
                    fusedMinMax(src, count, UnsafeRawPointer(addend), 1, dst, nil, t, streaming: false)
                } else {
                    fusedZeroPoint(src, count, UnsafeRawPointer(addend), 1, dst, nil, t, streaming: false)
                }
            }
        }
    }

    /// For the owner of a chunk: per block `x = addend + dequantize(src)`, then `x = x / divisor`
    /// when `divisor != 1` (one IEEE division per element, as ``ReduceKernels/divide(_:_:count:by:)``),
    /// `dst = quantize(x)` and `result = dequantize(dst)`. Bit-identical to that unfused sequence.
    /// `dst` may be `src` and `result` may be `addend` (exactly, not partially overlapping).
    @inline(never)
    public static func reduceQuantizeDecode(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, divisor: Float,
        into dst: UnsafeMutableRawPointer, decoded result: UnsafeMutablePointer<Float>,
        streaming: Bool = false
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        defer { if streaming { pn_stream_fence() } }
        switch mode {
        case .none:
            let r = UnsafeMutableRawPointer(result)
            ReduceKernels.sumF32(r, UnsafeRawPointer(addend), src, count)
            if divisor != 1 { ReduceKernels.divideF32(r, count, divisor) }
            if UnsafeRawPointer(dst) != UnsafeRawPointer(result) {
                dst.copyMemory(from: UnsafeRawPointer(r), byteCount: count &* 4)
            }
        case .int8MinMax, .int8ZeroPoint:
            // One block of f32 (blockSize · 4 = 1 KiB) on the stack. A literal size and at most
            // 16-byte alignment: with `blockSize &* 4` and alignment 64 the release build called
            // swift_slowAlloc on every call (seen in the object code).
            withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 16) { tmp in
                let t = tmp.baseAddress!
                let r = UnsafeMutableRawPointer(result)
                if mode == .int8MinMax {
                    fusedMinMax(src, count, UnsafeRawPointer(addend), divisor, dst, r, t, streaming: streaming)
                } else {
                    fusedZeroPoint(src, count, UnsafeRawPointer(addend), divisor, dst, r, t, streaming: streaming)
                }
            }
        }
    }

    /// `dst = quantize(src)` and `result = dequantize(dst)` in one pass: bit-identical to
    /// ``quantize(_:_:count:into:)`` followed by ``dequantize(_:_:count:into:)``. `result` may be `src`.
    @inline(never)
    public static func quantizeDecode(
        _ mode: Quantization, _ src: UnsafePointer<Float>, count: Int,
        into dst: UnsafeMutableRawPointer, decoded result: UnsafeMutablePointer<Float>
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        let r = UnsafeMutableRawPointer(result)
        switch mode {
        case .none:
            dst.copyMemory(from: UnsafeRawPointer(src), byteCount: count &* 4)
            if UnsafeRawPointer(src) != UnsafeRawPointer(result) {
                r.copyMemory(from: UnsafeRawPointer(src), byteCount: count &* 4)
            }
        case .int8MinMax: quantizeDecodeMinMax(src, count, dst, r)
        case .int8ZeroPoint: quantizeDecodeZeroPoint(src, count, dst, r)
        }
    }

    // MARK: Pass 1: decode, add, divide, and the range of the sums

    /// How the averaging divisor is applied. `x / d` and `x * (1 / d)` are the same f32 for every
    /// `x` when `d` is a power of two whose reciprocal is a normal number: both are the exact
    /// real `x · 2⁻ᵏ` rounded once (also when it is subnormal; NaN and infinities alike). The
    /// division (a slow `divps`) is then replaced by the product; any other divisor divides.
    enum Scaling {
        case none, multiply, divide

        init(_ divisor: Float) {
            if divisor == 1 {
                self = .none
            } else if divisor.isNormal, divisor.significandBitPattern == 0, (1 / divisor).isNormal {
                self = .multiply
            } else {
                self = .divide
            }
        }
    }

    /// Decodes block `blk` (`n` elements, header `(a, b)` read by the caller), adds `addend`,
    /// divides by (or multiplies by, see ``Scaling``) `divisor`, stores the values into `tmp`, and returns their range
    /// exactly as ``blockRange`` computes it on `tmp`: the same SIMD8 lanes, updated in the same
    /// element order (the low half of each SIMD16 is elements i..<i+8, the high half the next 8).
    @inline(__always)
    static func decodeAddRange(
        zeroPoint: Bool, scaling: Scaling, _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer,
        _ divisor: Float, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        let (a, b) = readHeader(blk)
        let codes = blk + headerSize
        let va8 = SIMD8<Float>(repeating: a), vb8 = SIMD8<Float>(repeating: b)
        let vdiv8 = SIMD8<Float>(repeating: divisor)
        var vlo = SIMD8<Float>(repeating: .infinity)
        var vhi = SIMD8<Float>(repeating: -.infinity)
        // Non-finite detector: `y - y` is +0 for a finite `y` and NaN for NaN or ±inf; OR-ing
        // the bits keeps a short dependency chain (the lane sums of `vectorRange` are an add chain).
        var bad = SIMD8<UInt32>.zero
        var i = 0
        while i &+ 8 <= n {
            let f = widen8(codes.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt8>.self))
            let d = zeroPoint ? (f - vb8) * va8 : va8 + f * vb8
            var y = addend.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self) + d
            if scaling == .divide { y = y / vdiv8 }
            if scaling == .multiply { y = y * vdiv8 }
            tmp.storeBytes(of: y, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            vlo.replace(with: y, where: y .< vlo)
            vhi.replace(with: y, where: y .> vhi)
            bad |= unsafeBitCast(y - y, to: SIMD8<UInt32>.self)
            i &+= 8
        }
        while i < n {
            let f = Float(codes.load(fromByteOffset: i, as: UInt8.self))
            let d = zeroPoint ? (f - b) * a : a + f * b
            var y = addend.loadUnaligned(fromByteOffset: i &* 4, as: Float.self) + d
            if scaling == .divide { y = y / divisor }
            if scaling == .multiply { y = y * divisor }
            tmp.storeBytes(of: y, toByteOffset: i &* 4, as: Float.self)
            i &+= 1
        }
        let b4 = bad.lowHalf | bad.highHalf
        let b2 = b4.lowHalf | b4.highHalf
        return foldLanes(vlo, vhi, (b2[0] | b2[1]) != 0, UnsafeRawPointer(tmp), n)
    }

    // One specialization per mode and division: called with constant flags, `decodeAddRange`
    // is inlined and its branches folded (from two call sites it was not inlined, and tested
    // the flags inside the loop).
    @inline(never)
    static func decodeAddRangeMinMax(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: false, scaling: .none, blk, n, addend, 1, tmp)
    }

    @inline(never)
    static func decodeAddRangeMinMaxDividing(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ divisor: Float, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: false, scaling: .divide, blk, n, addend, divisor, tmp)
    }

    @inline(never)
    static func decodeAddRangeMinMaxMultiplying(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ factor: Float, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: false, scaling: .multiply, blk, n, addend, factor, tmp)
    }

    @inline(never)
    static func decodeAddRangeZeroPoint(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: true, scaling: .none, blk, n, addend, 1, tmp)
    }

    @inline(never)
    static func decodeAddRangeZeroPointDividing(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ divisor: Float, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: true, scaling: .divide, blk, n, addend, divisor, tmp)
    }

    @inline(never)
    static func decodeAddRangeZeroPointMultiplying(
        _ blk: UnsafeRawPointer, _ n: Int, _ addend: UnsafeRawPointer, _ factor: Float, _ tmp: UnsafeMutableRawPointer
    ) -> (lo: Float, hi: Float, allFinite: Bool) {
        decodeAddRange(zeroPoint: true, scaling: .multiply, blk, n, addend, factor, tmp)
    }

    // MARK: Pass 2: encode, and optionally decode the codes just made

    /// ``encodeMinMax`` that also writes the decoding `lo + Float(code) * step` into `result`.
    /// `Float(code)` is `u - magic`, exact, with `u` the rounded value whose low byte is the code.
    @inline(__always)
    static func encodeDecodeMinMax(
        _ p: UnsafeRawPointer, _ n: Int, _ params: MinMaxParams, _ codes: UnsafeMutableRawPointer,
        _ result: UnsafeMutableRawPointer, streaming: Bool
    ) {
        let lo = params.lo, inv = params.inv, step = params.step
        let vlo = SIMD16<Float>(repeating: lo), vinv = SIMD16<Float>(repeating: inv)
        let vstep = SIMD16<Float>(repeating: step)
        let vmagic = SIMD16<Float>(repeating: magic)
        writeFloats(result, n, streaming: streaming) { i in
            let v = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            let u = (v - vlo) * vinv + vmagic       // no clamp needed: see encodeMinMax
            codes.storeBytes(of: narrow(unsafeBitCast(u, to: SIMD16<UInt32>.self)), toByteOffset: i, as: SIMD16<UInt8>.self)
            return vlo + (u - vmagic) * vstep
        } scalar: { i in
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            let u = (x - lo) * inv + magic
            codes.storeBytes(of: lowByte(u), toByteOffset: i, as: UInt8.self)
            return lo + (u - magic) * step
        }
    }

    /// ``encodeZeroPoint`` that also writes the decoding `(Float(code) - zeroPoint) * scale`.
    /// `Float(code) - zeroPoint` is computed as `u - (magic + zeroPoint)`: both are the same
    /// small integer exactly (and `+0`, not `-0`, when equal).
    @inline(__always)
    static func encodeDecodeZeroPoint(
        _ p: UnsafeRawPointer, _ n: Int, _ params: ZeroPointParams, _ codes: UnsafeMutableRawPointer,
        _ result: UnsafeMutableRawPointer, streaming: Bool
    ) {
        let inv = params.inv, scale = params.scale, base = magic + params.zeroPoint, cap = magic + 255
        let vinv = SIMD16<Float>(repeating: inv), vbase = SIMD16<Float>(repeating: base)
        let vscale = SIMD16<Float>(repeating: scale)
        let vfloor = SIMD16<Float>(repeating: magic), vcap = SIMD16<Float>(repeating: cap)
        writeFloats(result, n, streaming: streaming) { i in
            let v = p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            let t = v * vinv
            var u = t + vbase
            u.replace(with: vfloor, where: u .< vfloor)
            u.replace(with: vcap, where: u .> vcap)
            codes.storeBytes(of: narrow(unsafeBitCast(u, to: SIMD16<UInt32>.self)), toByteOffset: i, as: SIMD16<UInt8>.self)
            return (u - vbase) * vscale
        } scalar: { i in
            let x = p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
            let t = x * inv
            var u = t + base
            if u < magic { u = magic }
            if u > cap { u = cap }
            codes.storeBytes(of: lowByte(u), toByteOffset: i, as: UInt8.self)
            return (u - base) * scale
        }
    }

    /// Encodes one block of values `p` (range `r`) into `out` (header + codes) and, if `result`
    /// is given, writes the decoding of `out` into it. Rare blocks (poisoned, or `1/step`
    /// overflowing) are decoded back from `out` with the ordinary decoder.
    @inline(__always)
    static func encodeBlockMinMax(
        _ p: UnsafeRawPointer, _ n: Int, _ r: (lo: Float, hi: Float, allFinite: Bool),
        _ out: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer?, streaming: Bool = false
    ) {
        if let params = minMaxParams(lo: r.lo, hi: r.hi, allFinite: r.allFinite) {
            writeHeader(out, params.lo, params.step)
            if params.useDivision {
                encodeMinMaxDividing(p, n, params, out + headerSize)
            } else if let result {
                encodeDecodeMinMax(p, n, params, out + headerSize, result, streaming: streaming)
                return
            } else {
                encodeMinMax(p, n, params, out + headerSize)
                return
            }
        } else {
            writePoison(out, n, second: poisonNaN)
        }
        if let result { decodeMinMaxBlock(UnsafeRawPointer(out), n, result, nil, streaming: streaming) }
    }

    @inline(__always)
    static func encodeBlockZeroPoint(
        _ p: UnsafeRawPointer, _ n: Int, _ r: (lo: Float, hi: Float, allFinite: Bool),
        _ out: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer?, streaming: Bool = false
    ) {
        if let params = zeroPointParams(lo: r.lo, hi: r.hi, allFinite: r.allFinite) {
            writeHeader(out, params.scale, params.zeroPoint)
            if params.useDivision {
                encodeZeroPointDividing(p, n, params, out + headerSize)
            } else if let result {
                encodeDecodeZeroPoint(p, n, params, out + headerSize, result, streaming: streaming)
                return
            } else {
                encodeZeroPoint(p, n, params, out + headerSize)
                return
            }
        } else {
            writePoison(out, n, second: 0)
        }
        if let result { decodeZeroPointBlock(UnsafeRawPointer(out), n, result, nil, streaming: streaming) }
    }

    // MARK: Block loops

    @inline(never)
    static func fusedMinMax(
        _ src: UnsafeRawPointer, _ count: Int, _ addend: UnsafeRawPointer, _ divisor: Float,
        _ dst: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer?, _ tmp: UnsafeMutableRawPointer,
        streaming: Bool
    ) {
        let scaling = Scaling(divisor)
        let factor = scaling == .multiply ? 1 / divisor : divisor
        var start = 0, offset = 0
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let blk = src + offset, add = addend + start &* 4
            prefetchBlock(add)
            let r: (lo: Float, hi: Float, allFinite: Bool)
            switch scaling {
            case .none: r = decodeAddRangeMinMax(blk, n, add, tmp)
            case .multiply: r = decodeAddRangeMinMaxMultiplying(blk, n, add, factor, tmp)
            case .divide: r = decodeAddRangeMinMaxDividing(blk, n, add, divisor, tmp)
            }
            encodeBlockMinMax(UnsafeRawPointer(tmp), n, r, dst + offset, result.map { $0 + start &* 4 },
                              streaming: streaming)
            offset &+= headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func fusedZeroPoint(
        _ src: UnsafeRawPointer, _ count: Int, _ addend: UnsafeRawPointer, _ divisor: Float,
        _ dst: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer?, _ tmp: UnsafeMutableRawPointer,
        streaming: Bool
    ) {
        let scaling = Scaling(divisor)
        let factor = scaling == .multiply ? 1 / divisor : divisor
        var start = 0, offset = 0
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let blk = src + offset, add = addend + start &* 4
            prefetchBlock(add)
            let r: (lo: Float, hi: Float, allFinite: Bool)
            switch scaling {
            case .none: r = decodeAddRangeZeroPoint(blk, n, add, tmp)
            case .multiply: r = decodeAddRangeZeroPointMultiplying(blk, n, add, factor, tmp)
            case .divide: r = decodeAddRangeZeroPointDividing(blk, n, add, divisor, tmp)
            }
            encodeBlockZeroPoint(UnsafeRawPointer(tmp), n, r, dst + offset, result.map { $0 + start &* 4 },
                              streaming: streaming)
            offset &+= headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func quantizeDecodeMinMax(
        _ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer
    ) {
        var start = 0, offset = 0
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let p = UnsafeRawPointer(src + start)
            prefetchBlock(p)
            encodeBlockMinMax(p, n, blockRange(p, n), dst + offset, result + start &* 4)
            offset &+= headerSize &+ n
            start &+= n
        }
    }

    @inline(never)
    static func quantizeDecodeZeroPoint(
        _ src: UnsafePointer<Float>, _ count: Int, _ dst: UnsafeMutableRawPointer, _ result: UnsafeMutableRawPointer
    ) {
        var start = 0, offset = 0
        while start < count {
            let n = Swift.min(blockSize, count &- start)
            let p = UnsafeRawPointer(src + start)
            prefetchBlock(p)
            encodeBlockZeroPoint(p, n, blockRange(p, n), dst + offset, result + start &* 4)
            offset &+= headerSize &+ n
            start &+= n
        }
    }
}
