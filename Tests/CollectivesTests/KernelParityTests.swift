#if canImport(KernelsAVX2)
import Foundation
import Testing
@testable import Collectives
import KernelsAVX2
import PeerTestSupport

/// The AVX2 copy of the kernels (module `KernelsAVX2`, same source compiled for `haswell`)
/// against the baseline copy, byte for byte: peers of one cluster may run either, and a result
/// should not depend on the CPU that computed it. The one documented exception is the payload of a
/// NaN computed from two NaNs (see `dispatchedReduceKernelsMatchBaseline`, docs/kernels.md §6).

// Both modules declare these; the baseline ones are meant unless qualified.
private typealias QuantKernels = Collectives.QuantKernels
private typealias ReduceKernels = Collectives.ReduceKernels
private typealias Quantization = Collectives.Quantization
private typealias DType = Collectives.DType
private typealias ReduceOp = Collectives.ReduceOp
private typealias AVX2Quant = KernelsAVX2.QuantKernels

private let hasAVX2 = Kernels.cpuHasHaswellFeatures()
private let counts = [0, 1, 7, 8, 15, 16, 17, 255, 256, 257, 1000, 4099, 10000]

private func avx2(_ mode: Quantization) -> KernelsAVX2.Quantization { .init(rawValue: mode.rawValue)! }

/// f32 data of several kinds, by `kind`: smooth random values; ties of ±0 and small integers;
/// alternating ±2.2e37 runs; a narrow range of tiny values (the division path); and random data
/// with a NaN, an infinity and a subnormal planted in some blocks.
private func data(_ n: Int, kind: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    var x: [Float] = (0..<n).map { i in
        switch kind {
        case 0: return rng.nextFloat() * 3 - 1
        case 1: return [0, -0.0, 1, -1, 2][Int(rng.next() % 5)]
        case 2: return (i / 8) % 2 == 0 ? 2.2e37 : -2.2e37
        case 3: return 1e-37 + rng.nextFloat() * 1e-39
        default: return rng.nextFloat() * 1000
        }
    }
    if kind == 4 {
        for i in stride(from: 3, to: n, by: 700) { x[i] = .nan }
        for i in stride(from: 300, to: n, by: 900) { x[i] = -.infinity }
        for i in stride(from: 520, to: n, by: 600) { x[i] = 1e-42 }
    }
    return x
}

private func bytes(_ p: UnsafeRawPointer, _ count: Int) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: p, count: count))
}

@Test(.enabled(if: hasAVX2, "the CPU has no AVX2"), arguments: [Quantization.none, .int8MinMax, .int8ZeroPoint])
func avx2QuantKernelsMatchBaseline(mode: Collectives.Quantization) {
    for n in counts {
        for kind in 0..<5 {
            let x = data(n, kind: kind, seed: UInt64(n * 10 + kind))
            let addend = data(n, kind: 0, seed: UInt64(n * 10 + kind) &+ 99)
            let size = QuantKernels.encodedSize(count: n, mode: mode)
            let what = "\(mode) n=\(n) kind=\(kind)"
            x.withUnsafeBufferPointer { xs in
                addend.withUnsafeBufferPointer { ad in
                    let src = xs.baseAddress ?? UnsafePointer(bitPattern: 16)!
                    let add = ad.baseAddress ?? UnsafePointer(bitPattern: 16)!
                    let q1 = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 64)
                    let q2 = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 64)
                    let f1 = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
                    let f2 = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
                    defer { q1.deallocate(); q2.deallocate(); f1.deallocate(); f2.deallocate() }

                    QuantKernels.quantize(mode, src, count: n, into: q1)
                    AVX2Quant.quantize(avx2(mode), src, count: n, into: q2)
                    #expect(bytes(q1, size) == bytes(q2, size), "quantize \(what)")

                    QuantKernels.dequantize(mode, q1, count: n, into: f1)
                    AVX2Quant.dequantize(avx2(mode), q1, count: n, into: f2)
                    #expect(bytes(f1, n * 4) == bytes(f2, n * 4), "dequantize \(what)")

                    QuantKernels.dequantizeAdd(mode, q1, count: n, adding: add, into: f1)
                    AVX2Quant.dequantizeAdd(avx2(mode), q1, count: n, adding: add, into: f2)
                    #expect(bytes(f1, n * 4) == bytes(f2, n * 4), "dequantizeAdd \(what)")

                    QuantKernels.quantizeDecode(mode, src, count: n, into: q1, decoded: f1)
                    AVX2Quant.quantizeDecode(avx2(mode), src, count: n, into: q2, decoded: f2)
                    #expect(bytes(q1, size) == bytes(q2, size) && bytes(f1, n * 4) == bytes(f2, n * 4), "quantizeDecode \(what)")

                    // The wire frame the fused kernels read: the baseline encoding of x.
                    let wire = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 64)
                    defer { wire.deallocate() }
                    QuantKernels.quantize(mode, src, count: n, into: wire)
                    QuantKernels.reduceQuantize(mode, wire, count: n, adding: add, into: q1)
                    AVX2Quant.reduceQuantize(avx2(mode), wire, count: n, adding: add, into: q2)
                    #expect(bytes(q1, size) == bytes(q2, size), "reduceQuantize \(what)")

                    for divisor: Float in [1, 2, 3, 4] {
                        QuantKernels.reduceQuantizeDecode(mode, wire, count: n, adding: add, divisor: divisor, into: q1, decoded: f1)
                        AVX2Quant.reduceQuantizeDecode(avx2(mode), wire, count: n, adding: add, divisor: divisor, into: q2, decoded: f2)
                        #expect(bytes(q1, size) == bytes(q2, size) && bytes(f1, n * 4) == bytes(f2, n * 4),
                                "reduceQuantizeDecode /\(divisor) \(what)")
                        // The AVX2 copy's streamed stores (vmovntps) against baseline plain stores,
                        // into buffers first spoiled, so that a skipped store shows.
                        q2.initializeMemory(as: UInt8.self, repeating: 0xA5, count: max(size, 1))
                        f2.initialize(repeating: .nan, count: max(n, 1))
                        AVX2Quant.reduceQuantizeDecode(avx2(mode), wire, count: n, adding: add, divisor: divisor, into: q2,
                                                       decoded: f2, streaming: true)
                        #expect(bytes(q1, size) == bytes(q2, size) && bytes(f1, n * 4) == bytes(f2, n * 4),
                                "reduceQuantizeDecode /\(divisor) streaming \(what)")
                    }
                    QuantKernels.dequantize(mode, q1, count: n, into: f1)
                    f2.initialize(repeating: .nan, count: max(n, 1))
                    AVX2Quant.dequantize(avx2(mode), q1, count: n, into: f2, streaming: true)
                    #expect(bytes(f1, n * 4) == bytes(f2, n * 4), "dequantize streaming \(what)")
                }
            }
        }
    }
}

/// What `Kernels` runs on this CPU (the AVX2 copy) against the baseline copy, on random bit
/// patterns: for the float types every class of value (NaN with payloads, infinities,
/// subnormals, both zeros) turns up. Exact bytes everywhere except one documented case: where both
/// operands of a sum or product are NaN, the result must be a NaN but its payload may differ
/// (which operand's payload survives follows the operand order, the compiler's choice for a
/// commutative operation; docs/kernels.md §6).
@Test(.enabled(if: Kernels.instructionSet == .avx2, "this process does not run the AVX2 kernels"), arguments: DType.allCases)
func dispatchedReduceKernelsMatchBaseline(type: Collectives.DType) {
    var rng = SplitMix64(seed: UInt64(type.rawValue) &* 31)
    for n in [0, 1, 7, 33, 1000, 4099] {
        let byteCount = n * type.size
        var a = (0..<byteCount).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var b = (0..<byteCount).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // NaNs with different payloads (quiet and signalling) in both operands at every 5th
        // element: random bits alone make such pairs rare.
        if type.isFloat {
            let nanA: UInt64, nanB: UInt64
            switch type {
            case .f32: (nanA, nanB) = (0x7FC0_0123, 0xFF80_4567)
            case .f64: (nanA, nanB) = (0x7FF8_0000_0000_0123, 0xFFF0_0000_0004_5678)
            default: (nanA, nanB) = (0x7E01, 0xFD03)       // f16; for bf16 these are NaNs too
            }
            let nanABF16: UInt64 = 0x7FC1, nanBBF16: UInt64 = 0xFF83
            for i in stride(from: 0, to: n, by: 5) {
                for k in 0..<type.size {
                    let (x, y) = type == .bf16 ? (nanABF16, nanBBF16) : (nanA, nanB)
                    a[i * type.size + k] = UInt8(truncatingIfNeeded: x >> (8 * k))
                    b[i * type.size + k] = UInt8(truncatingIfNeeded: y >> (8 * k))
                }
            }
        }
        var d1 = [UInt8](repeating: 0, count: max(byteCount, 1)), d2 = d1
        for op in ReduceOp.allCases {
            a.withUnsafeBytes { pa in
                b.withUnsafeBytes { pb in
                    let ap = pa.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!
                    let bp = pb.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!
                    d1.withUnsafeMutableBytes { ReduceKernels.combine(op, type, into: $0.baseAddress!, ap, bp, count: n) }
                    d2.withUnsafeMutableBytes { Kernels.combine(op, type, into: $0.baseAddress!, ap, bp, count: n) }
                }
            }
            let mismatch = (0..<n).first { i in
                let (x, y) = (element(d1, i, type), element(d2, i, type))
                if x == y { return false }
                let bothNaN = isNaN(element(a, i, type), type) && isNaN(element(b, i, type), type)
                return !(bothNaN && (op == .sum || op == .avg || op == .prod) && isNaN(x, type) && isNaN(y, type))
            }
            #expect(mismatch == nil, "combine \(op) \(type) n=\(n) at \(mismatch ?? -1)")
        }
        for divisor in [1, 2, 3, 7] {
            d1 = a.isEmpty ? [0] : a
            d2 = d1
            d1.withUnsafeMutableBytes { ReduceKernels.divide(type, $0.baseAddress!, count: n, by: divisor) }
            d2.withUnsafeMutableBytes { Kernels.divide(type, $0.baseAddress!, count: n, by: divisor) }
            #expect(d1 == d2, "divide \(type) by \(divisor) n=\(n)")
        }
        guard type.isFloat else { continue }
        var w1 = [Float](repeating: 0, count: max(n, 1)), w2 = w1
        a.withUnsafeBytes { pa in
            let ap = pa.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!
            w1.withUnsafeMutableBufferPointer { ReduceKernels.toFloat(type, ap, count: n, into: $0.baseAddress!) }
            w2.withUnsafeMutableBufferPointer { Kernels.toFloat(type, ap, count: n, into: $0.baseAddress!) }
        }
        #expect(w1.map(\.bitPattern) == w2.map(\.bitPattern), "toFloat \(type) n=\(n)")
        // Back from f32: random f32 bit patterns, rounded to the type.
        let f = (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        d1 = [UInt8](repeating: 0, count: max(byteCount, 1))
        d2 = d1
        f.withUnsafeBufferPointer { fs in
            let fp = fs.baseAddress ?? UnsafePointer(bitPattern: 16)!
            d1.withUnsafeMutableBytes { ReduceKernels.fromFloat(type, fp, count: n, into: $0.baseAddress!) }
            d2.withUnsafeMutableBytes { Kernels.fromFloat(type, fp, count: n, into: $0.baseAddress!) }
        }
        #expect(d1 == d2, "fromFloat \(type) n=\(n)")
    }
}

/// Element `i` of a little-endian array of `type`, as its bits.
private func element(_ bytes: [UInt8], _ i: Int, _ type: DType) -> UInt64 {
    (0..<type.size).reduce(UInt64(0)) { $0 | UInt64(bytes[i * type.size + $1]) << (8 * $1) }
}

private func isNaN(_ bits: UInt64, _ type: DType) -> Bool {
    switch type {
    case .f32: Float(bitPattern: UInt32(truncatingIfNeeded: bits)).isNaN
    case .f64: Double(bitPattern: bits).isNaN
    case .f16: bits & 0x7C00 == 0x7C00 && bits & 0x03FF != 0
    case .bf16: bits & 0x7F80 == 0x7F80 && bits & 0x007F != 0
    default: false
    }
}

@Test func cpuFeatureCheckReadsTheFlagsLine() {
    let haswell = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 movbe popcnt avx f16c abm bmi1 avx2 bmi2\n"
    #expect(Kernels.cpuHasHaswellFeatures(cpuinfo: haswell))
    #expect(!Kernels.cpuHasHaswellFeatures(cpuinfo: haswell.replacingOccurrences(of: " avx2", with: "")))
    #expect(!Kernels.cpuHasHaswellFeatures(cpuinfo: "processor\t: 0\n"))
    #expect(!Kernels.cpuHasHaswellFeatures(cpuinfo: nil))
}
#endif
