import Testing
@testable import Collectives
import PeerTestSupport

private let quantModes: [Quantization] = [.int8MinMax, .int8ZeroPoint]

private func encode(_ mode: Quantization, _ x: [Float]) -> [UInt8] {
    var out = [UInt8](repeating: 0xAA, count: QuantKernels.encodedSize(count: x.count, mode: mode))
    x.withUnsafeBufferPointer { s in
        out.withUnsafeMutableBytes { QuantKernels.quantize(mode, s.baseAddress!, count: x.count, into: $0.baseAddress!) }
    }
    return out
}

private func decode(_ mode: Quantization, _ q: [UInt8], count: Int) -> [Float] {
    var out = [Float](repeating: -1, count: count)
    q.withUnsafeBytes { s in
        out.withUnsafeMutableBufferPointer { QuantKernels.dequantize(mode, s.baseAddress!, count: count, into: $0.baseAddress!) }
    }
    return out
}

private func randomData(_ n: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<n).map { _ in rng.nextFloat() * scale + offset }
}

/// Checks every element against the documented bound of its block.
private func checkBound(_ mode: Quantization, _ x: [Float], _ y: [Float], sourceLocation: SourceLocation = #_sourceLocation) {
    var start = 0
    while start < x.count {
        let block = x[start..<min(start + QuantKernels.blockSize, x.count)]
        let lo = block.min()!, hi = block.max()!
        let bound = QuantKernels.maxError(forBlockMin: lo, max: hi, mode: mode)
        var worst: Float = 0
        for i in block.indices { worst = max(worst, abs(y[i] - x[i])) }
        #expect(worst <= bound, "\(mode) block at \(start): error \(worst) > bound \(bound) (lo \(lo), hi \(hi))",
                sourceLocation: sourceLocation)
        // The bound is not vacuous: the error reaches a good part of half a step on random data.
        if block.count > 100, hi > lo {
            #expect(worst > bound * 0.3, "\(mode) suspiciously small error \(worst) vs bound \(bound)",
                    sourceLocation: sourceLocation)
        }
        start += QuantKernels.blockSize
    }
}

@Test func encodedSizes() {
    #expect(QuantKernels.blockSize == 256)
    #expect(QuantKernels.encodedSize(count: 0, mode: .int8MinMax) == 0)
    #expect(QuantKernels.encodedSize(count: 1, mode: .int8MinMax) == 9)
    #expect(QuantKernels.encodedSize(count: 256, mode: .int8ZeroPoint) == 264)
    #expect(QuantKernels.encodedSize(count: 257, mode: .int8MinMax) == 273)
    #expect(QuantKernels.encodedSize(count: 1000, mode: .none) == 4000)
}

@Test(arguments: quantModes)
func roundTripRandom(mode: Quantization) {
    for (n, seed) in [(1, 1), (17, 2), (255, 3), (256, 4), (257, 5), (300, 6), (1000, 7), (4099, 8)] as [(Int, UInt64)] {
        for (scale, offset) in [(Float(1), Float(0)), (0.001, 5), (1000, -3000), (1e-20, 0)] {
            let x = randomData(n, seed: seed, scale: scale, offset: offset)
            let q = encode(mode, x)
            let y = decode(mode, q, count: n)
            checkBound(mode, x, y)
        }
    }
}

@Test(arguments: quantModes)
func noneModeIsACopy(mode: Quantization) {
    let x = randomData(100, seed: 9) + [.nan, .infinity, -0.0]
    let q = encode(.none, x)
    let y = decode(.none, q, count: x.count)
    #expect(y.map(\.bitPattern) == x.map(\.bitPattern))
}

@Test func constantBlocks() {
    for v: Float in [3.5, -2, 0, 1e30] {
        let x = [Float](repeating: v, count: 300)
        let mm = decode(.int8MinMax, encode(.int8MinMax, x), count: 300)
        #expect(mm == x, "min-max constant \(v) must decode exactly")
        let zp = decode(.int8ZeroPoint, encode(.int8ZeroPoint, x), count: 300)
        checkBound(.int8ZeroPoint, x, zp)
        if v == 0 { #expect(zp.allSatisfy { $0.bitPattern == 0 }) }
    }
}

@Test func zeroIsExactInZeroPointMode() {
    for (scale, offset) in [(Float(1), Float(0)), (1, 6), (1, -6), (123.4, 0)] {
        var x = randomData(777, seed: 10, scale: scale, offset: offset)
        for i in stride(from: 0, to: x.count, by: 13) { x[i] = 0 }
        for i in stride(from: 5, to: x.count, by: 29) { x[i] = -0.0 }
        let y = decode(.int8ZeroPoint, encode(.int8ZeroPoint, x), count: x.count)
        for i in x.indices where x[i] == 0 {
            #expect(y[i].bitPattern == 0, "zero at \(i) decoded to \(y[i])")
        }
        checkBound(.int8ZeroPoint, x, y)
    }
}

@Test(arguments: quantModes)
func dequantizeAddMatchesBitForBit(mode: Quantization) {
    for n in [1, 16, 255, 300, 1000] {
        let x = randomData(n, seed: 11, scale: 3)
        let addend = randomData(n, seed: 12, scale: 100)
        let q = encode(mode, x)
        let y = decode(mode, q, count: n)
        let want = zip(addend, y).map { $0 + $1 }
        var out = [Float](repeating: 0, count: n)
        var inPlace = addend
        q.withUnsafeBytes { s in
            addend.withUnsafeBufferPointer { a in
                out.withUnsafeMutableBufferPointer {
                    QuantKernels.dequantizeAdd(mode, s.baseAddress!, count: n, adding: a.baseAddress!, into: $0.baseAddress!)
                }
            }
            inPlace.withUnsafeMutableBufferPointer {
                QuantKernels.dequantizeAdd(mode, s.baseAddress!, count: n, adding: UnsafePointer($0.baseAddress!), into: $0.baseAddress!)
            }
        }
        #expect(out.map(\.bitPattern) == want.map(\.bitPattern))
        #expect(inPlace.map(\.bitPattern) == want.map(\.bitPattern))
    }
}

@Test(arguments: quantModes)
func nonFiniteInputPoisonsOnlyItsBlock(mode: Quantization) {
    for bad: Float in [.nan, .infinity, -.infinity] {
        for position in [0, 17, 255] {
            var x = randomData(600, seed: 13)
            x[256 + position] = bad        // second block
            let q = encode(mode, x)
            #expect(q.count == QuantKernels.encodedSize(count: 600, mode: mode))
            let y = decode(mode, q, count: 600)
            #expect(y[256..<512].allSatisfy { $0.isNaN }, "\(mode): \(bad) must poison its block")
            #expect(!y[0..<256].contains { $0.isNaN } && !y[512...].contains { $0.isNaN })
            checkBound(mode, Array(x[0..<256]), Array(y[0..<256]))
            // Header of the poisoned block: canonical NaN.
            let h = 264
            #expect(Array(q[h..<h + 4]) == [0x00, 0x00, 0xC0, 0x7F])
        }
    }
    // All-NaN short tail block.
    let y = decode(mode, encode(mode, [Float](repeating: .nan, count: 5)), count: 5)
    #expect(y.allSatisfy { $0.isNaN })
}

@Test(arguments: quantModes)
func extremeRanges(mode: Quantization) {
    // A range of 2^127 or more is poisoned (documented).
    let huge = decode(mode, encode(mode, [3e38, -3e38, 1]), count: 3)
    #expect(huge.allSatisfy { $0.isNaN })
    #expect(QuantKernels.maxError(forBlockMin: -3e38, max: 3e38, mode: mode) == .infinity)
    // Just below: still finite and within bound.
    let big = randomData(300, seed: 14, scale: 1e37)
    checkBound(mode, big, decode(mode, encode(mode, big), count: 300))
    // Partial sums that overflow to +inf and -inf (the NaN detector sums lanes) must not poison
    // a finite block whose range is below 2^127.
    let overflow: [Float] = (0..<256).map { i in i % 8 == 0 ? 6e37 : (i % 8 == 1 ? -6e37 : Float(i)) }
    let yo = decode(mode, encode(mode, overflow), count: 256)
    #expect(!yo.contains { $0.isNaN })
    checkBound(mode, overflow, yo)
    // Tiny ranges whose 1/step overflows take the division path and stay within bound.
    let tiny = randomData(300, seed: 15, scale: 1e-38, offset: 1e-37)
    let y = decode(mode, encode(mode, tiny), count: 300)
    for i in tiny.indices {
        let bound = QuantKernels.maxError(forBlockMin: tiny.min()!, max: tiny.max()!, mode: mode)
        #expect(abs(y[i] - tiny[i]) <= bound)
    }
}

// MARK: - Golden vectors (pinned bytes: any change here is a wire-format change)

private let handpicked: [Float] = [
    0, -0.0, 1, -1, 0.1, 3.14159274, -2.5, 100, 0.001, 42,
    -7.25, 0.5, -99.9, 12.75, 1e-6, -1e-6, 63.5, -64.25, 7, -0.3,
]

private func seeded300() -> [Float] {
    var rng = SplitMix64(seed: 0x5EED)
    return (0..<300).map { _ in rng.nextFloat() }
}

private struct Golden {
    var handpickedEncoded: String
    var handpickedDecoded: [String]
    var seededEncoded: String
    var seededDecodedSHA256: String
}

private let golden: [Quantization: Golden] = [
    .int8MinMax: Golden(
        handpickedEncoded: "cdccc7c215af483f7f7f817e80837cff7fb5768000907f7fd02d887f",
        handpickedDecoded: ["beaf1600", "beaf1600", "3f9ce980", "bf901d00", "3ee24800", "4032cc40", "c02c6620", "42c7ffff", "beaf1600", "4227f58e", "c0ecb660", "3ee24800", "c2c7cccd", "414fc158", "beaf1600", "beaf1600", "427c9f6a", "c2813f40", "40d6d390", "beaf1600"],
        seededEncoded:
            "e297fec03b707d3d8bd7dff38de0aa935bc0dae7a4ae2d1d7693c93c43f76612921780a7d9a728620697b1e7d5bd90ce" +
            "e482b9a8cf958273a9dcadfbcb3d368efb6c7008993ef1a173131bf82d82bab10c719c3cf1d60eae06ea814f81588b0a" +
            "c264cb8fa0129bf9a03359ef1a5d69713a1df88961244378096ab5a4eea2a64c7b36aaa372008f440310dee0a47e978c" +
            "78c56607560e8091852ed4418e74a260f6fc3bf7aaf44a3da5ab1e78dc1c99aa01e0769657722a9b9c000ae08a86fcda" +
            "7cbf67a2cd3148f5f5a0ba62d097a5552209dc844b9dd12c864d5bbe0bf151b2a0d71bf8466f166cf736a44c78635e2a" +
            "d95603ff9a47646a0a527e4facc0a6a2dc3d81216f2879b4444efac0631b703dde702fac43757010ce157e97005d9678" +
            "458db11bffd5f77e70eb0a21ffd399ff64edbd9af7962bfcdf86eddc",
        seededDecodedSHA256: "d6e1371dda0f986659f7192c68737b7fd01d35bff9804cfadd8ff288844d6ec9"),
    .int8ZeroPoint: Golden(
        handpickedEncoded: "15af483f0000fe427f7f807e7f837cff7fb57680008f7f7fd02d887f",
        handpickedDecoded: ["00000000", "00000000", "3f48af15", "bf48af15", "00000000", "4048af15", "c0168350", "42c8af15", "00000000", "422953ba", "c0e1c4f8", "3f48af15", "c2c71db7", "4148af15", "00000000", "00000000", "427dfd97", "c2809029", "40e1c4f8", "00000000"],
        seededEncoded:
            "3b707d3d000001438bd7dff38de1ab945bc0dbe7a4af2d1d7794ca3c44f76612921781a7d9a829620698b1e7d5bd90cf" +
            "e482baa9d0968273a9dcaefccc3d368efb6c7009993ef2a174141cf82e82bab10d729d3cf1d70fae06eb824f82588c0b" +
            "c364cb90a1129bf9a1335af01b5e69723b1ef989612443790a6ab5a4eea2a64d7b36aba3730190440411dfe0a47f988c" +
            "78c66608560e8092862ed5428f74a260f7fc3bf7aaf44a3da5ab1f78dc1c9aab01e1769758732a9b9c000ae08a86fcdb" +
            "7cc067a2ce3249f6f5a0ba62d097a556220adc844c9dd22c874d5bbf0cf151b2a1d81cf8466f166df837a44d78635e2a" +
            "d95703ff9b47656b0a537f50acc1a7a2dd3e812170297ab4631b703d00000543de702fac42756f10cd157e97005d9678" +
            "458db11bfed4f67d6fea0920ffd299ff64ecbd99f7952afbdf85ecdc",
        seededDecodedSHA256: "b6576e580cffe258916d5221498d30a67497a3dff8839b6a5e9b4d7f8f0ea6a0"),
]

@Test(arguments: quantModes)
func goldenVectors(mode: Quantization) {
    let g = golden[mode]!
    let q1 = encode(mode, handpicked)
    let y1 = decode(mode, q1, count: handpicked.count)
    #expect(hex(q1) == g.handpickedEncoded)
    #expect(hexBits(y1) == g.handpickedDecoded)

    let x2 = seeded300()
    #expect(hexBits(Array(x2[0..<4])) == ["3f1f1fd0", "40aa64e8", "40bab794", "40e1a536"], "SplitMix64 drifted")
    let q2 = encode(mode, x2)
    let y2 = decode(mode, q2, count: 300)
    #expect(hex(q2) == g.seededEncoded)
    #expect(Digest.of(y2).description == g.seededDecodedSHA256)
}

// MARK: - Fused kernels: bit-identical to the unfused sequences

private let fusedCounts = [0, 1, 7, 8, 15, 16, 24, 255, 256, 257, 4096, 10000]
private let allModes: [Quantization] = [.none, .int8MinMax, .int8ZeroPoint]

/// The unfused reference: scratch = dequantizeAdd(src, addend); [divide]; out = quantize(scratch);
/// result = dequantize(out).
private func unfused(_ mode: Quantization, _ wire: [UInt8], _ addend: [Float], divisor: Float?) -> (out: [UInt8], result: [Float]) {
    let n = addend.count
    var scratch = [Float](repeating: 0, count: n)
    var out = [UInt8](repeating: 0x55, count: QuantKernels.encodedSize(count: n, mode: mode))
    var result = [Float](repeating: 0, count: n)
    wire.withUnsafeBytes { w in
        addend.withUnsafeBufferPointer { a in
            scratch.withUnsafeMutableBufferPointer {
                QuantKernels.dequantizeAdd(mode, w.baseAddress!, count: n, adding: a.baseAddress!, into: $0.baseAddress!)
            }
        }
    }
    if let divisor {
        scratch.withUnsafeMutableBytes {
            ReduceKernels.divide(.f32, $0.baseAddress!, count: n, by: Int(divisor))
        }
    }
    scratch.withUnsafeBufferPointer { s in
        out.withUnsafeMutableBytes { QuantKernels.quantize(mode, s.baseAddress!, count: n, into: $0.baseAddress!) }
    }
    out.withUnsafeBytes { o in
        result.withUnsafeMutableBufferPointer { QuantKernels.dequantize(mode, o.baseAddress!, count: n, into: $0.baseAddress!) }
    }
    return (out, result)
}

/// Wire bytes plus addends for a test case; `poison` puts NaN/inf/huge values into some blocks
/// of the data behind the wire and of the addend (sums that become non-finite or out of range).
private func fusedCase(_ mode: Quantization, _ n: Int, seed: UInt64, poison: Bool) -> (wire: [UInt8], addend: [Float]) {
    var x = randomData(n, seed: seed, scale: 3)
    var addend = randomData(n, seed: seed &+ 100, scale: 50, offset: 1)
    // Zeros of both signs (ties of -0/+0 in the range pass), a constant stretch.
    for i in stride(from: 3, to: n, by: 37) { addend[i] = -0.0 }
    if n > 300 { for i in 256..<300 { x[i] = 2; addend[i] = 1.5 } }
    if poison && n > 0 {
        let specials: [Float] = [.nan, .infinity, -.infinity, 3e38, -3e38, 1e38]
        var k = 0
        for i in stride(from: n / 3, to: n, by: 701) {
            if k % 2 == 0 { addend[i] = specials[k % specials.count] } else { x[i] = specials[k % specials.count] }
            k += 1
        }
        if n > 520 { addend[520] = .infinity; addend[521] = -.infinity }     // inf - inf = NaN in one block
        addend[n - 1] = .nan                                                  // the partial last block
    }
    return (encode(mode, x), addend)
}

@Test(arguments: allModes)
func reduceQuantizeMatchesUnfused(mode: Quantization) {
    for n in fusedCounts {
        for poison in [false, true] {
            let (wire, addend) = fusedCase(mode, n, seed: UInt64(n) &+ 21, poison: poison)
            let want = unfused(mode, wire, addend, divisor: nil)
            var out = [UInt8](repeating: 0xAA, count: want.out.count)
            wire.withUnsafeBytes { w in
                addend.withUnsafeBufferPointer { a in
                    out.withUnsafeMutableBytes {
                        QuantKernels.reduceQuantize(mode, w.baseAddress!, count: n, adding: a.baseAddress!, into: $0.baseAddress!)
                    }
                }
            }
            #expect(out == want.out, "\(mode) n=\(n) poison=\(poison)")
            // In place: dst is the wire buffer.
            var inPlace = wire
            addend.withUnsafeBufferPointer { a in
                inPlace.withUnsafeMutableBytes {
                    QuantKernels.reduceQuantize(mode, UnsafeRawPointer($0.baseAddress!), count: n, adding: a.baseAddress!, into: $0.baseAddress!)
                }
            }
            #expect(inPlace == want.out, "\(mode) n=\(n) poison=\(poison) in place")
        }
    }
}

@Test(arguments: allModes)
func reduceQuantizeDecodeMatchesUnfused(mode: Quantization) {
    for n in fusedCounts {
        for poison in [false, true] {
            for divisor: Float? in [nil, 2, 3, 4, 7, 8] {
                let (wire, addend) = fusedCase(mode, n, seed: UInt64(n) &+ 41, poison: poison)
                let want = unfused(mode, wire, addend, divisor: divisor)
                var out = [UInt8](repeating: 0xAA, count: want.out.count)
                var result = [Float](repeating: -1, count: n)
                wire.withUnsafeBytes { w in
                    addend.withUnsafeBufferPointer { a in
                        out.withUnsafeMutableBytes { o in
                            result.withUnsafeMutableBufferPointer {
                                QuantKernels.reduceQuantizeDecode(mode, w.baseAddress!, count: n, adding: a.baseAddress!,
                                                                  divisor: divisor ?? 1, into: o.baseAddress!, decoded: $0.baseAddress!)
                            }
                        }
                    }
                }
                let what = "\(mode) n=\(n) poison=\(poison) divisor=\(String(describing: divisor))"
                #expect(out == want.out, "\(what)")
                #expect(result.map(\.bitPattern) == want.result.map(\.bitPattern), "\(what)")
                // In place: dst is the wire buffer, result is the addend.
                var inPlaceOut = wire
                var inPlaceResult = addend
                inPlaceOut.withUnsafeMutableBytes { o in
                    inPlaceResult.withUnsafeMutableBufferPointer {
                        QuantKernels.reduceQuantizeDecode(mode, UnsafeRawPointer(o.baseAddress!), count: n,
                                                          adding: UnsafePointer($0.baseAddress!), divisor: divisor ?? 1,
                                                          into: o.baseAddress!, decoded: $0.baseAddress!)
                    }
                }
                #expect(inPlaceOut == want.out, "\(what) in place")
                #expect(inPlaceResult.map(\.bitPattern) == want.result.map(\.bitPattern), "\(what) in place")
            }
        }
    }
}

/// Results written past the caches (`streaming: true`) are the same bits as plain stores, at
/// every position relative to a cache line (the unaligned head and tail are stored normally;
/// a result not even 4-byte aligned is stored normally throughout), and nothing outside the
/// result is touched.
@Test(arguments: allModes)
func streamedResultsMatchPlainStores(mode: Quantization) {
    let guardByte: UInt8 = 0xA5
    for n in [1, 15, 16, 17, 255, 256, 257, 1000, 4099] {
        let (wire, addend) = fusedCase(mode, n, seed: UInt64(n) &+ 61, poison: n > 300)
        let plain = decode(mode, wire, count: n).flatMap { withUnsafeBytes(of: $0) { Array($0) } }
        let fused = unfused(mode, wire, addend, divisor: 3)
        let fusedResult = fused.result.flatMap { withUnsafeBytes(of: $0) { Array($0) } }
        let total = n * 4 + 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 64)
        defer { buffer.deallocate() }
        for shift in [0, 4, 20, 60, 64, 2] {
            let result = (buffer + shift).assumingMemoryBound(to: Float.self)
            let expectGuarded = { (want: [UInt8], what: String) in
                let got = Array(UnsafeRawBufferPointer(start: buffer, count: total))
                #expect(Array(got[shift..<(shift + n * 4)]) == want, "\(what) n=\(n) shift=\(shift)")
                #expect(got[..<shift].allSatisfy { $0 == guardByte } && got[(shift + n * 4)...].allSatisfy { $0 == guardByte },
                        "\(what) wrote outside its result, n=\(n) shift=\(shift)")
            }
            buffer.initializeMemory(as: UInt8.self, repeating: guardByte, count: total)
            wire.withUnsafeBytes {
                QuantKernels.dequantize(mode, $0.baseAddress!, count: n, into: result, streaming: true)
            }
            expectGuarded(plain, "dequantize")

            buffer.initializeMemory(as: UInt8.self, repeating: guardByte, count: total)
            var out = [UInt8](repeating: 0xAA, count: fused.out.count)
            wire.withUnsafeBytes { w in
                addend.withUnsafeBufferPointer { a in
                    out.withUnsafeMutableBytes {
                        QuantKernels.reduceQuantizeDecode(mode, w.baseAddress!, count: n, adding: a.baseAddress!, divisor: 3,
                                                          into: $0.baseAddress!, decoded: result, streaming: true)
                    }
                }
            }
            #expect(out == fused.out, "reduceQuantizeDecode codes n=\(n) shift=\(shift)")
            expectGuarded(fusedResult, "reduceQuantizeDecode")
        }
    }
}

@Test(arguments: allModes)
func quantizeDecodeMatchesUnfused(mode: Quantization) {
    for n in fusedCounts {
        for poison in [false, true] {
            var x = randomData(n, seed: UInt64(n) &+ 61, scale: 20, offset: -3)
            for i in stride(from: 5, to: n, by: 41) { x[i] = -0.0 }
            for i in stride(from: 9, to: n, by: 53) { x[i] = 0 }
            if poison && n > 0 {
                let specials: [Float] = [.nan, .infinity, -.infinity, 3e38, -3e38]
                for (k, i) in stride(from: n / 2, to: n, by: 613).enumerated() { x[i] = specials[k % specials.count] }
                x[n - 1] = .infinity
            }
            if n > 600 { for i in 512..<600 { x[i] = 1e-37 + Float(i % 3) * 1e-44 } }   // 1/step overflows
            let q = encode(mode, x)
            let y = decode(mode, q, count: n)
            var out = [UInt8](repeating: 0xAA, count: q.count)
            var result = [Float](repeating: -1, count: n)
            x.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBytes { o in
                    result.withUnsafeMutableBufferPointer {
                        QuantKernels.quantizeDecode(mode, s.baseAddress!, count: n, into: o.baseAddress!, decoded: $0.baseAddress!)
                    }
                }
            }
            #expect(out == q, "\(mode) n=\(n) poison=\(poison)")
            #expect(result.map(\.bitPattern) == y.map(\.bitPattern), "\(mode) n=\(n) poison=\(poison)")
            // result = src.
            var inPlace = x
            var out2 = [UInt8](repeating: 0xAA, count: q.count)
            inPlace.withUnsafeMutableBufferPointer { s in
                out2.withUnsafeMutableBytes {
                    QuantKernels.quantizeDecode(mode, UnsafePointer(s.baseAddress!), count: n, into: $0.baseAddress!, decoded: s.baseAddress!)
                }
            }
            #expect(out2 == q && inPlace.map(\.bitPattern) == y.map(\.bitPattern), "\(mode) n=\(n) poison=\(poison) in place")
        }
    }
}

/// Blocks whose sums are all zeros of mixed sign, tiny ranges (division path) and ranges of
/// exactly 2^127 after the add: the range pass must give the same -0/+0 and poison decisions.
@Test(arguments: quantModes)
func fusedEdgeBlocks(mode: Quantization) {
    let n = 256 * 7 + 100
    var x = [Float](repeating: 0, count: n)
    var addend = [Float](repeating: 0, count: n)
    for i in 0..<256 { addend[i] = i % 3 == 0 ? -0.0 : 0 }                         // block 0: zeros
    for i in 256..<512 { x[i] = 1e-37; addend[i] = Float(i % 5) * 1e-44 }          // block 1: tiny range
    for i in 512..<768 { addend[i] = i == 600 ? 0x1p126 : (i == 601 ? -0x1p126 : 1) }  // block 2: range 2^127
    for i in 768..<1024 { addend[i] = -0.0 }                                        // block 3: -0 + 0
    for i in 1024..<1280 { x[i] = Float(i % 7) - 3; addend[i] = 0 }                 // block 4
    for i in 1280..<1536 {                                                          // block 5: subnormal sums
        addend[i] = Float(bitPattern: UInt32(i * 2_654_435_761 % 0x0080_0000)) * (i % 2 == 0 ? 1 : -1)
    }
    for i in 1536..<n { addend[i] = i % 2 == 0 ? .greatestFiniteMagnitude : 1 }    // overflow to +inf
    let wire = encode(mode, x)
    for divisor: Float? in [nil, 2, 3, 4, 16] {
        let want = unfused(mode, wire, addend, divisor: divisor)
        var out = [UInt8](repeating: 0xAA, count: wire.count)
        var result = [Float](repeating: -1, count: n)
        var out2 = [UInt8](repeating: 0xAA, count: wire.count)
        wire.withUnsafeBytes { w in
            addend.withUnsafeBufferPointer { a in
                out.withUnsafeMutableBytes { o in
                    result.withUnsafeMutableBufferPointer {
                        QuantKernels.reduceQuantizeDecode(mode, w.baseAddress!, count: n, adding: a.baseAddress!,
                                                          divisor: divisor ?? 1, into: o.baseAddress!, decoded: $0.baseAddress!)
                    }
                }
                if divisor == nil {
                    out2.withUnsafeMutableBytes {
                        QuantKernels.reduceQuantize(mode, w.baseAddress!, count: n, adding: a.baseAddress!, into: $0.baseAddress!)
                    }
                }
            }
        }
        #expect(out == want.out, "\(mode) divisor \(String(describing: divisor))")
        #expect(result.map(\.bitPattern) == want.result.map(\.bitPattern))
        if divisor == nil { #expect(out2 == want.out) }
    }
}

/// The range pass against the rule it must keep, written one element at a time: per lane `j`
/// (elements j, j+8, …) the running min/max keeps the earlier element on ties, then the lanes
/// fold 8 → 4 → 2 → 1 keeping the first operand, then the scalar tail. Zeros of both signs and
/// repeated values make ties everywhere, so a pass that kept a later `-0`/`+0` would differ in bits.
@Test(arguments: [256, 255, 248, 247, 16, 9, 8, 7, 1])
func rangePassKeepsTheEarliestOfTiedValues(n: Int) {
    var rng = SplitMix64(seed: UInt64(n) &* 77 &+ 5)
    for round in 0..<300 {
        // Zero is the minimum (round % 3 == 0), the maximum (1), or neither (2).
        let sign: Float = round % 3 == 0 ? 1 : round % 3 == 1 ? -1 : 0
        let x: [Float] = (0..<n).map { _ in
            switch rng.next() % 4 {
            case 0: return -0.0
            case 1: return 0.0
            default: return sign == 0 ? Float(Int(rng.next() % 7) - 3) : sign * Float(1 + rng.next() % 3)
            }
        }
        var lo = [Float](repeating: .infinity, count: 8), hi = [Float](repeating: -.infinity, count: 8)
        let vectorPart = n & ~7
        for i in 0..<vectorPart {
            if x[i] < lo[i % 8] { lo[i % 8] = x[i] }
            if x[i] > hi[i % 8] { hi[i % 8] = x[i] }
        }
        func fold(_ v: [Float], _ better: (Float, Float) -> Bool) -> Float {
            var w = v
            for width in [4, 2, 1] {
                for k in 0..<width where better(w[k + width], w[k]) { w[k] = w[k + width] }
            }
            return w[0]
        }
        var expectLo = fold(lo, <), expectHi = fold(hi, >)
        for i in vectorPart..<n {
            if x[i] < expectLo { expectLo = x[i] }
            if x[i] > expectHi { expectHi = x[i] }
        }
        let got = x.withUnsafeBytes { QuantKernels.blockRange($0.baseAddress!, n) }
        #expect(got.lo.bitPattern == expectLo.bitPattern && got.hi.bitPattern == expectHi.bitPattern,
                "n=\(n): lo \(got.lo) vs \(expectLo), hi \(got.hi) vs \(expectHi)")
        #expect(got.allFinite)
    }
}

/// Finite blocks are never poisoned by the range pass's NaN check, also when its lane sums
/// overflow: runs of +2.2e37 and -2.2e37 (eight of each, in turn) overflow a sum over every other
/// vector to +inf and the other to -inf, while the block's range (4.4e37) is far below 2^127.
@Test func overflowingLaneSumsDoNotPoisonAFiniteBlock() {
    let x: [Float] = (0..<256).map { ($0 / 8) % 2 == 0 ? 2.2e37 : -2.2e37 }
    let r = x.withUnsafeBytes { QuantKernels.blockRange($0.baseAddress!, x.count) }
    #expect(r.allFinite && r.lo == -2.2e37 && r.hi == 2.2e37)
    for mode in quantModes {
        let decoded = decode(mode, encode(mode, x), count: x.count)
        #expect(decoded.allSatisfy { $0.isFinite }, "\(mode): the block was poisoned")
    }
}

/// The min-max encoders have no clamp to 255 (docs/kernels.md §2: it can never act). Against the
/// documented rule, clamp included, written one element at a time from the block's own header:
/// blocks whose range spans every scale from subnormal steps just above the division threshold
/// to ranges just below 2^127, with `lo`, `hi` and the floats next to them among the elements.
@Test func minMaxCodesNeedNoClamp() {
    var rng = SplitMix64(seed: 0xC1A4)
    func logUniform(_ lowExp: Int, _ highExp: Int) -> Float {
        let e = lowExp + Int(rng.next() % UInt64(highExp - lowExp + 1))
        return Float(sign: .plus, exponent: e, significand: 1 + Float(rng.next() >> 41) * 0x1p-23)
    }
    var checked = 0, subnormalSteps = 0
    for trial in 0..<3000 {
        // Every other block has a range near 255 · 2⁻¹²⁷: a subnormal step whose inverse is finite.
        let nearThreshold = trial % 2 == 1
        let lo = (rng.next() % 2 == 0 ? 1 : -1) * (nearThreshold ? logUniform(-149, -112) : logUniform(-149, 120))
        let hi = lo + (nearThreshold ? logUniform(-122, -116) : logUniform(-149, 126))
        guard hi.isFinite, hi > lo, hi - lo < QuantKernels.maxRange else { continue }
        let n = trial % 3 == 0 ? 256 : 1 + Int(rng.next() % 256)
        var x = (0..<n).map { _ in lo + (hi - lo) * (Float(rng.next() >> 40) * 0x1p-24) }
        for (k, v) in [lo, hi, hi.nextDown, lo.nextUp].enumerated() where k < n {
            x[Int(rng.next() % UInt64(n))] = min(max(v, lo), hi)
        }
        x[0] = lo
        x[n - 1] = hi
        let q = encode(.int8MinMax, x)
        let (qlo, step) = q.withUnsafeBytes { QuantKernels.readHeader($0.baseAddress!) }
        let inv = step == 0 ? 0 : 1 / step
        let expected: [UInt8] = x.map { v in
            let t = inv.isFinite ? (v - qlo) * inv : (v - qlo) / step
            let r = (t + QuantKernels.magic) - QuantKernels.magic
            return UInt8(max(0, min(255, r)))
        }
        #expect(Array(q[8...]) == expected, "lo \(lo) hi \(hi) step \(step) n \(n)")
        // The fused encode-and-decode kernel gives the same codes.
        var fused = [UInt8](repeating: 0, count: q.count)
        var decoded = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { s in
            fused.withUnsafeMutableBytes { f in
                decoded.withUnsafeMutableBufferPointer {
                    QuantKernels.quantizeDecode(.int8MinMax, s.baseAddress!, count: n, into: f.baseAddress!, decoded: $0.baseAddress!)
                }
            }
        }
        #expect(fused == q)
        checked += 1
        if step.isSubnormal, (1 / step).isFinite { subnormalSteps += 1 }
    }
    #expect(checked > 2000 && subnormalSteps > 300, "\(checked) blocks, \(subnormalSteps) with a subnormal step")
}
