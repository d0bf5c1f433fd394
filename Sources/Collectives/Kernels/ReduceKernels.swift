/// Element-wise reduction kernels over raw buffers: the arithmetic of an all-reduce hop.
///
/// Every kernel works on raw pointers and an element count, loads and stores unaligned, never
/// allocates, and uses plain IEEE `+ - * /` (no fused multiply-add), so results are bit-identical
/// on x86-64 and arm64.
///
/// Rules (see also docs/kernels.md):
/// - `avg` combines as `sum`; the caller divides once at the end with ``divide(_:_:count:by:)``.
/// - Integers wrap (`&+`, `&*`).
/// - f16 and bf16 are widened to `Float`, combined in `Float` and rounded back to nearest-even.
///   Because `Float` carries more than twice their precision, this is the correctly rounded result.
/// - min/max on floats propagate NaN: if either operand is NaN the result is NaN (the NaN of
///   `b` when `b` is NaN, otherwise that of `a`). On ties (including `-0` vs `+0`) the result is `a`.
/// - `dst` may be the same buffer as `a` or `b`; partial overlap is not allowed.
public enum ReduceKernels {

    // MARK: - Public entry points

    /// `dst[i] = a[i] op b[i]` for `i` in `0..<count`.
    public static func combine(
        _ op: ReduceOp, _ type: DType,
        into dst: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer,
        count: Int
    ) {
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch type {
        case .f32:
            switch op {
            case .sum, .avg: sumF32(dst, a, b, count)
            case .prod: prodF32(dst, a, b, count)
            case .min: minF32(dst, a, b, count)
            case .max: maxF32(dst, a, b, count)
            }
        case .f64:
            switch op {
            case .sum, .avg: sumF64(dst, a, b, count)
            case .prod: prodF64(dst, a, b, count)
            case .min: minF64(dst, a, b, count)
            case .max: maxF64(dst, a, b, count)
            }
        case .f16: combineF16(op, dst, a, b, count)
        case .bf16: combineBF16(op, dst, a, b, count)
        case .i32:
            switch op {
            case .sum, .avg: sumI32(dst, a, b, count)
            case .prod: prodI32(dst, a, b, count)
            case .min: minI32(dst, a, b, count)
            case .max: maxI32(dst, a, b, count)
            }
        case .i64:
            switch op {
            case .sum, .avg: sumI64(dst, a, b, count)
            case .prod: prodI64(dst, a, b, count)
            case .min: minI64(dst, a, b, count)
            case .max: maxI64(dst, a, b, count)
            }
        case .u8:
            switch op {
            case .sum, .avg: sumU8(dst, a, b, count)
            case .prod: prodU8(dst, a, b, count)
            case .min: minU8(dst, a, b, count)
            case .max: maxU8(dst, a, b, count)
            }
        }
    }

    /// Divides every element by `n` in place: the final step of `avg`.
    ///
    /// Floats: `x / n` by IEEE division (f32, f16 and bf16 in `Float`, rounded back; f64 in `Double`).
    /// Integers: division truncating toward zero, computed exactly (also when `n` exceeds the type's range).
    public static func divide(_ type: DType, _ buffer: UnsafeMutableRawPointer, count: Int, by n: Int) {
        precondition(count >= 0, "negative count")
        precondition(n > 0, "divisor must be positive")
        if count == 0 || n == 1 { return }
        switch type {
        case .f32: divideF32(buffer, count, Float(n))
        case .f64: divideF64(buffer, count, Double(n))
        case .f16: divideF16(buffer, count, Float(n))
        case .bf16: divideBF16(buffer, count, Float(n))
        case .i32: divideI32(buffer, count, Int64(n))
        case .i64: divideI64(buffer, count, Int64(n))
        case .u8: divideU8(buffer, count, n)
        }
    }

    /// Widens `count` elements of float type `type` to `Float` (f64 is rounded to nearest-even).
    public static func toFloat(
        _ type: DType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>
    ) {
        precondition(type.isFloat, "toFloat needs a float type, got \(type)")
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch type {
        case .f32: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count &* 4)
        case .f64: f64ToFloat(src, count, dst)
        case .f16: f16ToFloat(src, count, dst)
        case .bf16: bf16ToFloat(src, count, dst)
        case .i32, .i64, .u8: preconditionFailure("unreachable")
        }
    }

    /// Narrows `count` floats to float type `type` (round to nearest-even; NaN stays NaN).
    public static func fromFloat(
        _ type: DType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer
    ) {
        precondition(type.isFloat, "fromFloat needs a float type, got \(type)")
        precondition(count >= 0, "negative count")
        if count == 0 { return }
        switch type {
        case .f32: dst.copyMemory(from: UnsafeRawPointer(src), byteCount: count &* 4)
        case .f64: floatToF64(src, count, dst)
        case .f16: floatToF16(src, count, dst)
        case .bf16: floatToBF16(src, count, dst)
        case .i32, .i64, .u8: preconditionFailure("unreachable")
        }
    }

    // MARK: - Scalar conversions (public for tests and for other kernels)

    /// bf16 bits to `Float` (exact).
    @inline(__always)
    public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) &<< 16)
    }

    /// `Float` to bf16 bits, rounding to nearest-even. NaN stays NaN (quiet bit set, sign and the
    /// top payload bits kept); values beyond the bf16 range round to ±infinity.
    @inline(__always)
    public static func floatToBF16(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: u &>> 16) | 0x0040 }
        let rounded = u &+ 0x7FFF &+ ((u &>> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded &>> 16)
    }

    // MARK: - f32

    @inline(never)
    static func sumF32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Float>.self, { $0 + $1 }, { $0 + $1 })
    }

    @inline(never)
    static func prodF32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Float>.self, { $0 * $1 }, { $0 * $1 })
    }

    @inline(never)
    static func minF32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        // Written out (not through map2): the closure form was not inlined into the loop.
        var i = 0
        while i &+ 16 <= n {
            let off = i &* 4
            var x = a.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
            x.replace(with: y, where: y .< x)
            x.replace(with: y, where: y .!= y)
            d.storeBytes(of: x, toByteOffset: off, as: SIMD16<Float>.self)
            i &+= 16
        }
        while i < n {
            let off = i &* 4
            let x = a.loadUnaligned(fromByteOffset: off, as: Float.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: Float.self)
            d.storeBytes(of: (y < x || y.isNaN) ? y : x, toByteOffset: off, as: Float.self)
            i &+= 1
        }
    }

    @inline(never)
    static func maxF32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        // Written out (not through map2): the closure form was not inlined into the loop.
        var i = 0
        while i &+ 16 <= n {
            let off = i &* 4
            var x = a.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
            x.replace(with: y, where: y .> x)
            x.replace(with: y, where: y .!= y)
            d.storeBytes(of: x, toByteOffset: off, as: SIMD16<Float>.self)
            i &+= 16
        }
        while i < n {
            let off = i &* 4
            let x = a.loadUnaligned(fromByteOffset: off, as: Float.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: Float.self)
            d.storeBytes(of: (y > x || y.isNaN) ? y : x, toByteOffset: off, as: Float.self)
            i &+= 1
        }
    }

    @inline(never)
    static func divideF32(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Float) {
        let dv = SIMD16<Float>(repeating: divisor)
        var i = 0
        while i &+ 16 <= n {
            let off = i &* 4
            let v = p.loadUnaligned(fromByteOffset: off, as: SIMD16<Float>.self)
            p.storeBytes(of: v / dv, toByteOffset: off, as: SIMD16<Float>.self)
            i &+= 16
        }
        while i < n {
            let off = i &* 4
            p.storeBytes(of: p.loadUnaligned(fromByteOffset: off, as: Float.self) / divisor,
                         toByteOffset: off, as: Float.self)
            i &+= 1
        }
    }

    // MARK: - f64

    @inline(never)
    static func sumF64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Double>.self, { $0 + $1 }, { $0 + $1 })
    }

    @inline(never)
    static func prodF64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Double>.self, { $0 * $1 }, { $0 * $1 })
    }

    @inline(never)
    static func minF64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        var i = 0
        while i &+ 8 <= n {
            let off = i &* 8
            var x = a.loadUnaligned(fromByteOffset: off, as: SIMD8<Double>.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: SIMD8<Double>.self)
            x.replace(with: y, where: y .< x)
            x.replace(with: y, where: y .!= y)
            d.storeBytes(of: x, toByteOffset: off, as: SIMD8<Double>.self)
            i &+= 8
        }
        while i < n {
            let off = i &* 8
            let x = a.loadUnaligned(fromByteOffset: off, as: Double.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: Double.self)
            d.storeBytes(of: (y < x || y.isNaN) ? y : x, toByteOffset: off, as: Double.self)
            i &+= 1
        }
    }

    @inline(never)
    static func maxF64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        var i = 0
        while i &+ 8 <= n {
            let off = i &* 8
            var x = a.loadUnaligned(fromByteOffset: off, as: SIMD8<Double>.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: SIMD8<Double>.self)
            x.replace(with: y, where: y .> x)
            x.replace(with: y, where: y .!= y)
            d.storeBytes(of: x, toByteOffset: off, as: SIMD8<Double>.self)
            i &+= 8
        }
        while i < n {
            let off = i &* 8
            let x = a.loadUnaligned(fromByteOffset: off, as: Double.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: Double.self)
            d.storeBytes(of: (y > x || y.isNaN) ? y : x, toByteOffset: off, as: Double.self)
            i &+= 1
        }
    }

    @inline(never)
    static func divideF64(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Double) {
        var i = 0
        while i < n {
            let off = i &* 8
            p.storeBytes(of: p.loadUnaligned(fromByteOffset: off, as: Double.self) / divisor,
                         toByteOffset: off, as: Double.self)
            i &+= 1
        }
    }

    // MARK: - f16 and bf16 (combined in Float)

    @inline(__always)
    static func floatOp(_ op: ReduceOp, _ x: Float, _ y: Float) -> Float {
        switch op {
        case .sum, .avg: x + y
        case .prod: x * y
        case .min: (y < x || y.isNaN) ? y : x
        case .max: (y > x || y.isNaN) ? y : x
        }
    }

    @inline(never)
    static func combineF16(_ op: ReduceOp, _ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        var i = 0
        while i < n {
            let off = i &* 2
            let x = Float(a.loadUnaligned(fromByteOffset: off, as: Float16.self))
            let y = Float(b.loadUnaligned(fromByteOffset: off, as: Float16.self))
            d.storeBytes(of: Float16(floatOp(op, x, y)), toByteOffset: off, as: Float16.self)
            i &+= 1
        }
    }

    @inline(never)
    static func combineBF16(_ op: ReduceOp, _ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        var i = 0
        while i &+ 16 <= n {
            let off = i &* 2
            let x = widenBF16(a.loadUnaligned(fromByteOffset: off, as: SIMD16<UInt16>.self))
            var y = widenBF16(b.loadUnaligned(fromByteOffset: off, as: SIMD16<UInt16>.self))
            switch op {
            case .sum, .avg: y = x + y
            case .prod: y = x * y
            case .min:
                var r = x
                r.replace(with: y, where: y .< x)
                r.replace(with: y, where: y .!= y)
                y = r
            case .max:
                var r = x
                r.replace(with: y, where: y .> x)
                r.replace(with: y, where: y .!= y)
                y = r
            }
            d.storeBytes(of: roundBF16(y), toByteOffset: off, as: SIMD16<UInt16>.self)
            i &+= 16
        }
        while i < n {
            let off = i &* 2
            let x = bf16ToFloat(a.loadUnaligned(fromByteOffset: off, as: UInt16.self))
            let y = bf16ToFloat(b.loadUnaligned(fromByteOffset: off, as: UInt16.self))
            d.storeBytes(of: floatToBF16(floatOp(op, x, y)), toByteOffset: off, as: UInt16.self)
            i &+= 1
        }
    }

    /// 16 bf16 values to `Float`, exactly (`bits << 16`), with the widening written as a lane
    /// shuffle (the standard-library conversion is an out-of-line call here).
    @inline(__always)
    static func widenBF16(_ h: SIMD16<UInt16>) -> SIMD16<Float> {
        let w = SIMD16<UInt32>(
            UInt32(h[0]), UInt32(h[1]), UInt32(h[2]), UInt32(h[3]),
            UInt32(h[4]), UInt32(h[5]), UInt32(h[6]), UInt32(h[7]),
            UInt32(h[8]), UInt32(h[9]), UInt32(h[10]), UInt32(h[11]),
            UInt32(h[12]), UInt32(h[13]), UInt32(h[14]), UInt32(h[15]))
        return unsafeBitCast(w &<< 16, to: SIMD16<Float>.self)
    }

    /// 16 floats to bf16 bits, the same rule as the scalar ``floatToBF16(_:)-(Float)``.
    @inline(__always)
    static func roundBF16(_ f: SIMD16<Float>) -> SIMD16<UInt16> {
        let u = unsafeBitCast(f, to: SIMD16<UInt32>.self)
        var r = (u &+ 0x7FFF &+ ((u &>> 16) & 1)) &>> 16
        r.replace(with: (u &>> 16) | 0x0040, where: f .!= f)
        let h = unsafeBitCast(r, to: SIMD32<UInt16>.self)
        return SIMD16<UInt16>(h[0], h[2], h[4], h[6], h[8], h[10], h[12], h[14],
                              h[16], h[18], h[20], h[22], h[24], h[26], h[28], h[30])
    }

    @inline(never)
    static func divideF16(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Float) {
        var i = 0
        while i < n {
            let off = i &* 2
            let x = Float(p.loadUnaligned(fromByteOffset: off, as: Float16.self))
            p.storeBytes(of: Float16(x / divisor), toByteOffset: off, as: Float16.self)
            i &+= 1
        }
    }

    @inline(never)
    static func divideBF16(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Float) {
        var i = 0
        while i < n {
            let off = i &* 2
            let x = bf16ToFloat(p.loadUnaligned(fromByteOffset: off, as: UInt16.self))
            p.storeBytes(of: floatToBF16(x / divisor), toByteOffset: off, as: UInt16.self)
            i &+= 1
        }
    }

    @inline(never)
    static func f64ToFloat(_ s: UnsafeRawPointer, _ n: Int, _ d: UnsafeMutablePointer<Float>) {
        var i = 0
        while i < n {
            d[i] = Float(s.loadUnaligned(fromByteOffset: i &* 8, as: Double.self))
            i &+= 1
        }
    }

    @inline(never)
    static func floatToF64(_ s: UnsafePointer<Float>, _ n: Int, _ d: UnsafeMutableRawPointer) {
        var i = 0
        while i < n {
            d.storeBytes(of: Double(s[i]), toByteOffset: i &* 8, as: Double.self)
            i &+= 1
        }
    }

    @inline(never)
    static func f16ToFloat(_ s: UnsafeRawPointer, _ n: Int, _ d: UnsafeMutablePointer<Float>) {
        var i = 0
        while i < n {
            d[i] = Float(s.loadUnaligned(fromByteOffset: i &* 2, as: Float16.self))
            i &+= 1
        }
    }

    @inline(never)
    static func floatToF16(_ s: UnsafePointer<Float>, _ n: Int, _ d: UnsafeMutableRawPointer) {
        var i = 0
        while i < n {
            d.storeBytes(of: Float16(s[i]), toByteOffset: i &* 2, as: Float16.self)
            i &+= 1
        }
    }

    @inline(never)
    static func bf16ToFloat(_ s: UnsafeRawPointer, _ n: Int, _ d: UnsafeMutablePointer<Float>) {
        let raw = UnsafeMutableRawPointer(d)
        var i = 0
        while i &+ 16 <= n {
            let h = s.loadUnaligned(fromByteOffset: i &* 2, as: SIMD16<UInt16>.self)
            let w = SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16
            raw.storeBytes(of: w, toByteOffset: i &* 4, as: SIMD16<UInt32>.self)
            i &+= 16
        }
        while i < n {
            d[i] = bf16ToFloat(s.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
            i &+= 1
        }
    }

    @inline(never)
    static func floatToBF16(_ s: UnsafePointer<Float>, _ n: Int, _ d: UnsafeMutableRawPointer) {
        let src = UnsafeRawPointer(s)
        var i = 0
        while i &+ 16 <= n {
            let f = src.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            d.storeBytes(of: roundBF16(f), toByteOffset: i &* 2, as: SIMD16<UInt16>.self)
            i &+= 16
        }
        while i < n {
            d.storeBytes(of: floatToBF16(s[i]), toByteOffset: i &* 2, as: UInt16.self)
            i &+= 1
        }
    }

    // MARK: - Integers

    @inline(never)
    static func sumI32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Int32>.self, { $0 &+ $1 }, { $0 &+ $1 })
    }

    @inline(never)
    static func prodI32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Int32>.self, { $0 &* $1 }, { $0 &* $1 })
    }

    @inline(never)
    static func sumI64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Int64>.self, { $0 &+ $1 }, { $0 &+ $1 })
    }

    @inline(never)
    static func prodI64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Int64>.self, { $0 &* $1 }, { $0 &* $1 })
    }

    @inline(never)
    static func sumU8(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD64<UInt8>.self, { $0 &+ $1 }, { $0 &+ $1 })
    }

    @inline(never)
    static func prodU8(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD64<UInt8>.self, { $0 &* $1 }, { $0 &* $1 })
    }

    @inline(never)
    static func minI32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Int32>.self, { x, y in
            var r = x; r.replace(with: y, where: y .< x); return r
        }, { x, y in y < x ? y : x })
    }

    @inline(never)
    static func maxI32(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD16<Int32>.self, { x, y in
            var r = x; r.replace(with: y, where: y .> x); return r
        }, { x, y in y > x ? y : x })
    }

    @inline(never)
    static func minI64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Int64>.self, { x, y in
            var r = x; r.replace(with: y, where: y .< x); return r
        }, { x, y in y < x ? y : x })
    }

    @inline(never)
    static func maxI64(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD8<Int64>.self, { x, y in
            var r = x; r.replace(with: y, where: y .> x); return r
        }, { x, y in y > x ? y : x })
    }

    @inline(never)
    static func minU8(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD64<UInt8>.self, { x, y in
            var r = x; r.replace(with: y, where: y .< x); return r
        }, { x, y in y < x ? y : x })
    }

    @inline(never)
    static func maxU8(_ d: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) {
        map2(d, a, b, n, SIMD64<UInt8>.self, { x, y in
            var r = x; r.replace(with: y, where: y .> x); return r
        }, { x, y in y > x ? y : x })
    }

    @inline(never)
    static func divideI32(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Int64) {
        var i = 0
        while i < n {
            let off = i &* 4
            let x = Int64(p.loadUnaligned(fromByteOffset: off, as: Int32.self))
            p.storeBytes(of: Int32(truncatingIfNeeded: x / divisor), toByteOffset: off, as: Int32.self)
            i &+= 1
        }
    }

    @inline(never)
    static func divideI64(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Int64) {
        var i = 0
        while i < n {
            let off = i &* 8
            let x = p.loadUnaligned(fromByteOffset: off, as: Int64.self)
            p.storeBytes(of: x / divisor, toByteOffset: off, as: Int64.self)
            i &+= 1
        }
    }

    @inline(never)
    static func divideU8(_ p: UnsafeMutableRawPointer, _ n: Int, _ divisor: Int) {
        var i = 0
        while i < n {
            let x = Int(p.load(fromByteOffset: i, as: UInt8.self))
            p.storeBytes(of: UInt8(truncatingIfNeeded: x / divisor), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
    }

    // MARK: - Element-wise template

    /// Vector loop over whole `V`s, then a scalar tail. Always inlined into a concrete caller, so
    /// the closures are specialized away. Each vector is loaded before the store at the same offset,
    /// which makes `dst == a` or `dst == b` safe.
    @inline(__always)
    static func map2<V: SIMD & BitwiseCopyable>(
        _ dst: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int,
        _: V.Type, _ vf: (V, V) -> V, _ sf: (V.Scalar, V.Scalar) -> V.Scalar
    ) where V.Scalar: BitwiseCopyable {
        let width = V.scalarCount
        let es = MemoryLayout<V.Scalar>.stride
        var i = 0
        while i &+ width <= count {
            let off = i &* es
            let x = a.loadUnaligned(fromByteOffset: off, as: V.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: V.self)
            dst.storeBytes(of: vf(x, y), toByteOffset: off, as: V.self)
            i &+= width
        }
        while i < count {
            let off = i &* es
            let x = a.loadUnaligned(fromByteOffset: off, as: V.Scalar.self)
            let y = b.loadUnaligned(fromByteOffset: off, as: V.Scalar.self)
            dst.storeBytes(of: sf(x, y), toByteOffset: off, as: V.Scalar.self)
            i &+= 1
        }
    }
}
