@testable import Kern
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Throughput in GB/s of f32 input (bytes of the float buffer / time), min / median / max over
// `runs` runs after one warm-up. `--cpu` times with the thread's CPU clock instead of wall time
// (less sensitive to other processes on a shared machine; memory contention still shows).
let args = CommandLine.arguments.dropFirst()
let useCPU = args.contains("--cpu")
let which = args.first { !$0.hasPrefix("--") } ?? "all"
let runs = 11

func now() -> Double {
    var ts = timespec()
    clock_gettime(useCPU ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func fmt(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    return String(r)
}

func report(_ name: String, _ bytes: Int, _ times: [Double]) {
    let t = times.sorted()
    let gb = Double(bytes) / 1e9
    let label = name.count < 40 ? name + String(repeating: " ", count: 40 - name.count) : name
    print("\(label) GB/s: min \(fmt(gb / t.last!))  median \(fmt(gb / t[t.count / 2]))  max \(fmt(gb / t.first!))")
}

/// `reps` calls per timed run (for small, cache-resident buffers).
func bench(_ name: String, bytes: Int, reps: Int = 1, _ body: () -> Void) {
    body()
    var times: [Double] = []
    for _ in 0..<runs {
        let start = now()
        for _ in 0..<reps { body() }
        times.append(now() - start)
    }
    report(name, bytes * reps, times)
}

func splitmixFill(_ p: UnsafeMutablePointer<Float>, _ n: Int, seed: UInt64) {
    var s = seed
    for i in 0..<n {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        p[i] = Float(Int64(bitPattern: z) >> 40) * 0x1p-20
    }
}

func run(count: Int, reps: Int, tag: String) {
    let bytes = count * 4
    let x = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let y = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let z = UnsafeMutablePointer<Float>.allocate(capacity: count)
    splitmixFill(x, count, seed: 1)
    splitmixFill(y, count, seed: 2)
    splitmixFill(z, count, seed: 3)
    let q = UnsafeMutableRawPointer.allocate(byteCount: QuantKernels.encodedSize(count: count, mode: .int8MinMax), alignment: 64)
    defer { x.deallocate(); y.deallocate(); z.deallocate(); q.deallocate() }

    if which == "all" || which == "cached" {
        bench("memcpy (reference) \(tag)", bytes: bytes, reps: reps) { _ = memcpy(z, x, bytes) }
    }
    if which == "all" || which == "quant" || which == "cached" {
        for mode in [Quantization.int8MinMax, .int8ZeroPoint] {
            bench("quantize \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.quantize(mode, x, count: count, into: q)
            }
            bench("dequantize \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.dequantize(mode, q, count: count, into: z)
            }
            bench("dequantize streaming \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.dequantize(mode, q, count: count, into: z, streaming: true)
            }
            bench("dequantizeAdd \(mode), dst=addend \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.dequantizeAdd(mode, q, count: count, adding: z, into: z)
            }
        }
    }
    if which == "parts" {
        // The two halves of quantize (int8 min-max), block by block, to see which one costs.
        let bs = QuantKernels.blockSize
        let params = QuantKernels.minMaxParams(lo: -1, hi: 1, allFinite: true)!
        var sink: Float = 0
        bench("range pass only \(tag)", bytes: bytes, reps: reps) {
            var i = 0
            while i < count { sink += QuantKernels.blockRange(UnsafeRawPointer(x + i), bs).hi; i += bs }
        }
        bench("encode only \(tag)", bytes: bytes, reps: reps) {
            var i = 0
            while i < count { QuantKernels.encodeMinMax(UnsafeRawPointer(x + i), bs, params, q + i); i += bs }
        }
        bench("quantize int8-minmax \(tag)", bytes: bytes, reps: reps) {
            QuantKernels.quantize(.int8MinMax, x, count: count, into: q)
        }
        if sink == 42 { print(sink) }
    }
    if which == "all" || which == "fused" || which == "cached" {
        // The all-reduce's combine step, unfused as RingAllReduceOp runs it today (pieces of
        // 4096 elements through a scratch buffer) against the fused kernels. `q` is the wire
        // frame (encoding of x), `y` the local addend, `q2` the outgoing frame, `z` the result.
        let piece = 4096
        let s = UnsafeMutablePointer<Float>.allocate(capacity: piece)
        let q2 = UnsafeMutableRawPointer.allocate(byteCount: QuantKernels.encodedSize(count: count, mode: .int8MinMax), alignment: 64)
        defer { s.deallocate(); q2.deallocate() }
        for mode in [Quantization.int8MinMax, .int8ZeroPoint] {
            QuantKernels.quantize(mode, x, count: count, into: q)
            let wire = { (done: Int) in QuantKernels.encodedSize(count: done, mode: mode) }
            bench("hop unfused (dqAdd+quantize) \(mode) \(tag)", bytes: bytes, reps: reps) {
                var done = 0
                while done < count {
                    let n = min(piece, count - done)
                    QuantKernels.dequantizeAdd(mode, q + wire(done), count: n, adding: y + done, into: s)
                    QuantKernels.quantize(mode, s, count: n, into: q2 + wire(done))
                    done += n
                }
            }
            bench("hop fused reduceQuantize \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.reduceQuantize(mode, q, count: count, adding: y, into: q2)
            }
            bench("owner unfused (+avg/2, +decode) \(mode) \(tag)", bytes: bytes, reps: reps) {
                var done = 0
                while done < count {
                    let n = min(piece, count - done)
                    QuantKernels.dequantizeAdd(mode, q + wire(done), count: n, adding: y + done, into: s)
                    ReduceKernels.divide(.f32, UnsafeMutableRawPointer(s), count: n, by: 2)
                    QuantKernels.quantize(mode, s, count: n, into: q2 + wire(done))
                    QuantKernels.dequantize(mode, q2 + wire(done), count: n, into: z + done)
                    done += n
                }
            }
            bench("owner fused reduceQuantizeDecode /2 \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.reduceQuantizeDecode(mode, q, count: count, adding: y, divisor: 2, into: q2, decoded: z)
            }
            bench("owner fused reduceQuantizeDecode /2 streaming \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.reduceQuantizeDecode(mode, q, count: count, adding: y, divisor: 2, into: q2, decoded: z,
                                                  streaming: true)
            }
            bench("owner fused reduceQuantizeDecode /3 \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.reduceQuantizeDecode(mode, q, count: count, adding: y, divisor: 3, into: q2, decoded: z)
            }
            bench("owner fused reduceQuantizeDecode /1 \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.reduceQuantizeDecode(mode, q, count: count, adding: y, divisor: 1, into: q2, decoded: z)
            }
            bench("quantize+dequantize unfused \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.quantize(mode, x, count: count, into: q2)
                QuantKernels.dequantize(mode, q2, count: count, into: z)
            }
            bench("quantizeDecode fused \(mode) \(tag)", bytes: bytes, reps: reps) {
                QuantKernels.quantizeDecode(mode, x, count: count, into: q2, decoded: z)
            }
        }
    }
    if which == "all" || which == "sum" || which == "cached" {
        bench("combine sum f32, dst=a \(tag)", bytes: bytes, reps: reps) {
            ReduceKernels.combine(.sum, .f32, into: z, z, y, count: count)
        }
        bench("combine max f32, dst=a \(tag)", bytes: bytes, reps: reps) {
            ReduceKernels.combine(.max, .f32, into: z, z, y, count: count)
        }
    }
}

if which == "cached" || which == "parts" || args.contains("--l2") {
    run(count: 65_536, reps: 256, tag: "[256 KiB, L2]")   // compute-bound view
} else {
    run(count: 16 * 1024 * 1024, reps: 1, tag: "[64 MiB]")
}
