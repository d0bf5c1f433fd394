import Testing
@testable import Collectives
import PeerTestSupport

/// Independent scalar reference for one element; floats per the documented NaN rule.
private func refFloat(_ op: ReduceOp, _ a: Double, _ b: Double) -> Double {
    switch op {
    case .sum, .avg: return a + b
    case .prod: return a * b
    case .min:
        if a.isNaN || b.isNaN { return .nan }
        return b < a ? b : a
    case .max:
        if a.isNaN || b.isNaN { return .nan }
        return b > a ? b : a
    }
}

private func refInt<T: FixedWidthInteger>(_ op: ReduceOp, _ a: T, _ b: T) -> T {
    switch op {
    case .sum, .avg: return a &+ b
    case .prod: return a &* b
    case .min: return Swift.min(a, b)
    case .max: return Swift.max(a, b)
    }
}

/// bf16 rounding written differently from the kernel: pick the nearer of the two neighbours.
private func refBF16(_ f: Float) -> UInt16 {
    if f.isNaN { return 0x7FC0 }
    let down = f.bitPattern & 0xFFFF_0000
    let lowBits = f.bitPattern & 0xFFFF
    let truncated = UInt16(down >> 16)
    if lowBits < 0x8000 { return truncated }
    if lowBits > 0x8000 { return truncated &+ 1 }
    return truncated & 1 == 0 ? truncated : truncated &+ 1
}

private let counts = [0, 1, 15, 16, 17, 1000]

private func floatInputs(_ n: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    let edges: [Float] = [0, -0.0, 1, -1, .nan, .infinity, -.infinity, 1e-30, -3.5, 65504, 1e38, -1e38]
    return (0..<n).map { i in
        let r = rng.next()
        if r % 7 == 0 { return edges[Int(r >> 8) % edges.count] }
        return rng.nextFloat()
    }
}

private func randomInts<T: FixedWidthInteger>(_ n: Int, seed: UInt64, as: T.Type) -> [T] {
    var rng = SplitMix64(seed: seed)
    let edges: [T] = [0, 1, T.max, T.min, T.max &- 1, T.min &+ 1, 2]
    return (0..<n).map { _ in
        let r = rng.next()
        if r % 5 == 0 { return edges[Int(r >> 8) % edges.count] }
        return T(truncatingIfNeeded: rng.next())
    }
}

private func sameFloat(_ x: Float, _ y: Float) -> Bool { x.isNaN ? y.isNaN : x.bitPattern == y.bitPattern }
private func sameDouble(_ x: Double, _ y: Double) -> Bool { x.isNaN ? y.isNaN : x.bitPattern == y.bitPattern }

/// Runs combine into a fresh dst and in place (dst == a), returns both.
private func run<T>(_ op: ReduceOp, _ type: DType, _ a: [T], _ b: [T]) -> ([T], [T]) {
    var out = a
    var inPlace = a
    a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in
            out.withUnsafeMutableBytes { po in
                ReduceKernels.combine(op, type, into: po.baseAddress!, pa.baseAddress!, pb.baseAddress!, count: a.count)
            }
            inPlace.withUnsafeMutableBytes { pi in
                ReduceKernels.combine(op, type, into: pi.baseAddress!, UnsafeRawPointer(pi.baseAddress!), pb.baseAddress!, count: a.count)
            }
        }
    }
    return (out, inPlace)
}

@Test(arguments: ReduceOp.allCases)
func combineF32(op: ReduceOp) {
    for n in counts {
        let a = floatInputs(n, seed: 1), b = floatInputs(n, seed: 2)
        let (out, inPlace) = run(op, .f32, a, b)
        for i in 0..<n {
            let want = Float(refFloat(op, Double(a[i]), Double(b[i])))
            #expect(sameFloat(out[i], want), "\(op) f32 n=\(n) i=\(i): \(a[i]) \(b[i]) -> \(out[i]), want \(want)")
            #expect(out[i].bitPattern == inPlace[i].bitPattern)
        }
    }
}

@Test(arguments: ReduceOp.allCases)
func combineF64(op: ReduceOp) {
    for n in counts {
        let a = floatInputs(n, seed: 3).map { Double($0) * 1.000000119 }
        let b = floatInputs(n, seed: 4).map { Double($0) }
        let (out, inPlace) = run(op, .f64, a, b)
        for i in 0..<n {
            let want = refFloat(op, a[i], b[i])
            #expect(sameDouble(out[i], want), "\(op) f64 n=\(n) i=\(i)")
            #expect(out[i].bitPattern == inPlace[i].bitPattern)
        }
    }
}

@Test(arguments: ReduceOp.allCases)
func combineF16(op: ReduceOp) {
    for n in counts {
        let a = floatInputs(n, seed: 5).map { Float16($0) }, b = floatInputs(n, seed: 6).map { Float16($0) }
        let (out, inPlace) = run(op, .f16, a, b)
        for i in 0..<n {
            // Double is exact for f16 sums and products; one rounding to f16 then.
            let want = Float16(refFloat(op, Double(a[i]), Double(b[i])))
            #expect(want.isNaN ? out[i].isNaN : out[i].bitPattern == want.bitPattern,
                    "\(op) f16 n=\(n) i=\(i): \(a[i]) \(b[i]) -> \(out[i]), want \(want)")
            #expect(out[i].bitPattern == inPlace[i].bitPattern)
        }
    }
}

@Test(arguments: ReduceOp.allCases)
func combineBF16(op: ReduceOp) {
    for n in counts {
        let a = floatInputs(n, seed: 7).map(refBF16), b = floatInputs(n, seed: 8).map(refBF16)
        let (out, inPlace) = run(op, .bf16, a, b)
        for i in 0..<n {
            let x = Float(bitPattern: UInt32(a[i]) << 16), y = Float(bitPattern: UInt32(b[i]) << 16)
            // Double is exact for bf16 sums and products; the f32 step in between is exact too
            // except for sums of far-apart values, where rounding twice to nearest-even at
            // 24 then 8 bits equals rounding once (24 >= 2·8 + 2).
            let want = refBF16(Float(refFloat(op, Double(x), Double(y))))
            let got = out[i]
            if want == 0x7FC0 {
                #expect(got & 0x7F80 == 0x7F80 && got & 0x7F != 0 || got & 0x7FC0 == 0x7FC0, "\(op) bf16 NaN expected")
            } else {
                #expect(got == want, "\(op) bf16 n=\(n) i=\(i): \(x) \(y) -> \(got), want \(want)")
            }
            #expect(out[i] == inPlace[i])
        }
    }
}

@Test(arguments: ReduceOp.allCases)
func combineIntegers(op: ReduceOp) {
    for n in counts {
        do {
            let a = randomInts(n, seed: 9, as: Int32.self), b = randomInts(n, seed: 10, as: Int32.self)
            let (out, inPlace) = run(op, .i32, a, b)
            #expect(out == zip(a, b).map { refInt(op, $0, $1) }, "\(op) i32 n=\(n)")
            #expect(inPlace == out)
        }
        do {
            let a = randomInts(n, seed: 11, as: Int64.self), b = randomInts(n, seed: 12, as: Int64.self)
            let (out, inPlace) = run(op, .i64, a, b)
            #expect(out == zip(a, b).map { refInt(op, $0, $1) }, "\(op) i64 n=\(n)")
            #expect(inPlace == out)
        }
        do {
            let a = randomInts(n * 5, seed: 13, as: UInt8.self), b = randomInts(n * 5, seed: 14, as: UInt8.self)
            let (out, inPlace) = run(op, .u8, a, b)
            #expect(out == zip(a, b).map { refInt(op, $0, $1) }, "\(op) u8 n=\(n * 5)")
            #expect(inPlace == out)
        }
    }
}

@Test func wrapAroundAndNaNRules() {
    let (s, _) = run(.sum, .i32, [Int32.max, Int32.min], [1, -1])
    #expect(s == [Int32.min, Int32.max])
    let (p, _) = run(.prod, .u8, [UInt8(16), 255], [UInt8(16), 2])
    #expect(p == [0, 254])
    // NaN propagates from either side; ties (±0) return a.
    let (mn, _) = run(.min, .f32, [Float.nan, 1, 0.0, -0.0], [1, Float.nan, -0.0, 0.0])
    #expect(mn[0].isNaN && mn[1].isNaN)
    #expect(mn[2].bitPattern == Float(0.0).bitPattern && mn[3].bitPattern == Float(-0.0).bitPattern)
    let (mx, _) = run(.max, .f32, [Float.nan, 1, 2], [1, Float.nan, 3])
    #expect(mx[0].isNaN && mx[1].isNaN && mx[2] == 3)
}

@Test func divideAllTypes() {
    var f: [Float] = (0..<37).map { Float($0) - 5.5 }
    let fWant = f.map { $0 / 3 }
    f.withUnsafeMutableBytes { ReduceKernels.divide(.f32, $0.baseAddress!, count: 37, by: 3) }
    #expect(f == fWant)

    var d: [Double] = [1, -7, 0.3]
    d.withUnsafeMutableBytes { ReduceKernels.divide(.f64, $0.baseAddress!, count: 3, by: 3) }
    let dWant: [Double] = [1.0 / 3, -7.0 / 3, 0.3 / 3]
    #expect(d == dWant)

    var h: [Float16] = [3, -9, 1]
    h.withUnsafeMutableBytes { ReduceKernels.divide(.f16, $0.baseAddress!, count: 3, by: 3) }
    #expect(h == [1, -3, Float16(Float(1) / 3)])

    var bf: [UInt16] = [0x4040, 0xC110]  // 3, -9
    bf.withUnsafeMutableBytes { ReduceKernels.divide(.bf16, $0.baseAddress!, count: 2, by: 3) }
    #expect(bf == [0x3F80, 0xC040])      // 1, -3

    var i: [Int32] = [7, -7, Int32.min, Int32.max]
    i.withUnsafeMutableBytes { ReduceKernels.divide(.i32, $0.baseAddress!, count: 4, by: 2) }
    #expect(i == [3, -3, Int32.min / 2, Int32.max / 2])

    var big: [Int32] = [Int32.min, -5]
    big.withUnsafeMutableBytes { ReduceKernels.divide(.i32, $0.baseAddress!, count: 2, by: 1 << 40) }
    #expect(big == [0, 0])

    var l: [Int64] = [-9, Int64.max]
    l.withUnsafeMutableBytes { ReduceKernels.divide(.i64, $0.baseAddress!, count: 2, by: 4) }
    #expect(l == [-2, Int64.max / 4])

    var u: [UInt8] = [255, 3, 9]
    u.withUnsafeMutableBytes { ReduceKernels.divide(.u8, $0.baseAddress!, count: 3, by: 4) }
    #expect(u == [63, 0, 2])
}

/// Pinned conversions: bf16 and f16 bit patterns of a few values.
@Test func pinnedHalfConversions() {
    let values: [Float] = [1, 3.14159274, -2.5, 65504, 65520, 1e-8, 1.00390625, 1.01171875, 3.0e38, .nan, -0.0]
    var bf = [UInt16](repeating: 0, count: values.count)
    var f16 = [UInt16](repeating: 0, count: values.count)
    values.withUnsafeBufferPointer { src in
        bf.withUnsafeMutableBytes { ReduceKernels.fromFloat(.bf16, src.baseAddress!, count: values.count, into: $0.baseAddress!) }
        f16.withUnsafeMutableBytes { ReduceKernels.fromFloat(.f16, src.baseAddress!, count: values.count, into: $0.baseAddress!) }
    }
    //            1       pi      -2.5    65504   65520   1e-8    1+2^-8  1+3·2^-8 3e38   NaN     -0
    #expect(bf == [0x3F80, 0x4049, 0xC020, 0x4780, 0x4780, 0x322C, 0x3F80, 0x3F82, 0x7F62, 0x7FC0, 0x8000])
    #expect(f16 == [0x3C00, 0x4248, 0xC100, 0x7BFF, 0x7C00, 0x0000, 0x3C04, 0x3C0C, 0x7C00, 0x7E00, 0x8000])

    // Back to Float: exact for bf16 and f16 (NaN stays NaN).
    var back = [Float](repeating: 0, count: values.count)
    bf.withUnsafeBytes { src in
        back.withUnsafeMutableBufferPointer { ReduceKernels.toFloat(.bf16, src.baseAddress!, count: values.count, into: $0.baseAddress!) }
    }
    #expect(back[0] == 1 && back[1] == 3.140625 && back[4] == 65536 && back[9].isNaN)
    f16.withUnsafeBytes { src in
        back.withUnsafeMutableBufferPointer { ReduceKernels.toFloat(.f16, src.baseAddress!, count: values.count, into: $0.baseAddress!) }
    }
    #expect(back[1] == 3.140625 && back[3] == 65504 && back[4] == .infinity && back[7] == 1.01171875)

    // Vectorized bf16 widening (more than 16 elements) agrees with the scalar rule.
    let many: [UInt16] = (0..<40).map { UInt16(0x3F00 + $0 * 3) }
    var wide = [Float](repeating: 0, count: 40)
    many.withUnsafeBytes { src in
        wide.withUnsafeMutableBufferPointer { ReduceKernels.toFloat(.bf16, src.baseAddress!, count: 40, into: $0.baseAddress!) }
    }
    #expect(wide == many.map { Float(bitPattern: UInt32($0) << 16) })

    // f64 round trip through Float.
    let dbl: [Double] = [0.1, -1e300, 2]
    var fl = [Float](repeating: 0, count: 3)
    dbl.withUnsafeBytes { s in fl.withUnsafeMutableBufferPointer { ReduceKernels.toFloat(.f64, s.baseAddress!, count: 3, into: $0.baseAddress!) } }
    #expect(fl == [Float(0.1), -.infinity, 2])
}

/// The vector bf16 rounding (16 at a time) agrees with the independent scalar rule, including
/// ties, overflow to infinity, subnormals and NaN.
@Test func bf16VectorRoundingMatchesScalar() {
    var bits: [UInt32] = [0x3F80_8000, 0x3F81_8000, 0xBF80_8000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x0000_8000,
                          0x0001_8000, 0x7FC0_0001, 0xFFA0_0000, 0x7F80_0000, 0x8000_0000, 0x3F80_7FFF]
    var rng = SplitMix64(seed: 99)
    while bits.count < 100 { bits.append(UInt32(truncatingIfNeeded: rng.next())) }
    let values = bits.map { Float(bitPattern: $0) }
    var out = [UInt16](repeating: 0, count: values.count)
    values.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBytes { ReduceKernels.fromFloat(.bf16, src.baseAddress!, count: values.count, into: $0.baseAddress!) }
    }
    for (i, v) in values.enumerated() {
        if v.isNaN {
            #expect(out[i] == UInt16(bits[i] >> 16) | 0x0040, "NaN keeps sign and top payload, quiet bit set")
        } else {
            #expect(out[i] == refBF16(v), "bf16(\(v)) = \(String(out[i], radix: 16)), want \(String(refBF16(v), radix: 16))")
        }
    }
    // Combine through the vector path (32 elements) equals the scalar path (one at a time).
    let a = Array(out[0..<32]), b = Array(out[32..<64])
    for op in ReduceOp.allCases {
        let (whole, _) = run(op, .bf16, a, b)
        for i in 0..<32 {
            let (one, _) = run(op, .bf16, [a[i]], [b[i]])
            #expect(whole[i] == one[0], "\(op) bf16 lane \(i)")
        }
    }
}
