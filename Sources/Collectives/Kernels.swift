import Foundation
#if canImport(KernelsAVX2)
import KernelsAVX2
#endif

/// The kernels the all-reduce runs: ``QuantKernels`` and ``ReduceKernels`` as compiled for
/// baseline x86-64 (SSE2) or arm64, or, on an x86-64 CPU with AVX2, the same source compiled
/// for it (module `KernelsAVX2`, Package.swift).
///
/// Why a second copy instead of one build for AVX2: a binary built for AVX2 throughout stops with
/// SIGILL on a CPU without it, and peers of a cluster need not be alike. Why the results agree
/// bit for bit: Swift's SIMD operations are defined lane by lane, the kernels use only single
/// IEEE operations (no fused multiply-add is emitted for either target), and the lane folds
/// have a fixed order; `KernelParityTests` compares both copies byte for byte.
public enum Kernels {
    /// Which copy runs.
    public enum InstructionSet: String, Sendable {
        case baseline, avx2
    }

    /// Chosen once per process: AVX2 when the CPU reports every feature the `haswell` target may
    /// use, unless `PEERNODE_KERNELS=baseline` asks for the baseline copy.
    public static let instructionSet: InstructionSet = {
        #if canImport(KernelsAVX2)
        if ProcessInfo.processInfo.environment["PEERNODE_KERNELS"] == "baseline" { return .baseline }
        return cpuHasHaswellFeatures() ? .avx2 : .baseline
        #else
        return .baseline
        #endif
    }()

    /// The `flags` of /proc/cpuinfo against the features LLVM's `haswell` target may emit.
    static func cpuHasHaswellFeatures(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> Bool {
        guard let cpuinfo,
              let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return false }
        let flags = Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        return ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe", "popcnt", "abm"].allSatisfy(flags.contains)
    }

    #if canImport(KernelsAVX2)
    @inline(__always) private static var avx2: Bool { instructionSet == .avx2 }
    private static func avx2Mode(_ mode: Quantization) -> KernelsAVX2.Quantization {
        KernelsAVX2.Quantization(rawValue: mode.rawValue)!
    }
    private static func avx2Type(_ type: DType) -> KernelsAVX2.DType {
        KernelsAVX2.DType(rawValue: type.rawValue)!
    }
    #endif

    // MARK: QuantKernels entry points

    public static func quantize(_ mode: Quantization, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.QuantKernels.quantize(avx2Mode(mode), src, count: count, into: dst) }
        #endif
        QuantKernels.quantize(mode, src, count: count, into: dst)
    }

    public static func dequantize(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>,
        streaming: Bool = false
    ) {
        #if canImport(KernelsAVX2)
        if avx2 {
            return KernelsAVX2.QuantKernels.dequantize(avx2Mode(mode), src, count: count, into: dst, streaming: streaming)
        }
        #endif
        QuantKernels.dequantize(mode, src, count: count, into: dst, streaming: streaming)
    }

    public static func dequantizeAdd(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>
    ) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.QuantKernels.dequantizeAdd(avx2Mode(mode), src, count: count, adding: addend, into: dst) }
        #endif
        QuantKernels.dequantizeAdd(mode, src, count: count, adding: addend, into: dst)
    }

    public static func reduceQuantize(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, into dst: UnsafeMutableRawPointer
    ) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.QuantKernels.reduceQuantize(avx2Mode(mode), src, count: count, adding: addend, into: dst) }
        #endif
        QuantKernels.reduceQuantize(mode, src, count: count, adding: addend, into: dst)
    }

    public static func reduceQuantizeDecode(
        _ mode: Quantization, _ src: UnsafeRawPointer, count: Int,
        adding addend: UnsafePointer<Float>, divisor: Float,
        into dst: UnsafeMutableRawPointer, decoded result: UnsafeMutablePointer<Float>, streaming: Bool = false
    ) {
        #if canImport(KernelsAVX2)
        if avx2 {
            return KernelsAVX2.QuantKernels.reduceQuantizeDecode(avx2Mode(mode), src, count: count, adding: addend,
                                                                 divisor: divisor, into: dst, decoded: result,
                                                                 streaming: streaming)
        }
        #endif
        QuantKernels.reduceQuantizeDecode(mode, src, count: count, adding: addend, divisor: divisor, into: dst,
                                          decoded: result, streaming: streaming)
    }

    // MARK: ReduceKernels entry points

    public static func combine(
        _ op: ReduceOp, _ type: DType, into dst: UnsafeMutableRawPointer,
        _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int
    ) {
        #if canImport(KernelsAVX2)
        if avx2 {
            return KernelsAVX2.ReduceKernels.combine(KernelsAVX2.ReduceOp(rawValue: op.rawValue)!, avx2Type(type),
                                                     into: dst, a, b, count: count)
        }
        #endif
        ReduceKernels.combine(op, type, into: dst, a, b, count: count)
    }

    public static func divide(_ type: DType, _ buffer: UnsafeMutableRawPointer, count: Int, by n: Int) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.ReduceKernels.divide(avx2Type(type), buffer, count: count, by: n) }
        #endif
        ReduceKernels.divide(type, buffer, count: count, by: n)
    }

    public static func toFloat(_ type: DType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.ReduceKernels.toFloat(avx2Type(type), src, count: count, into: dst) }
        #endif
        ReduceKernels.toFloat(type, src, count: count, into: dst)
    }

    public static func fromFloat(_ type: DType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        #if canImport(KernelsAVX2)
        if avx2 { return KernelsAVX2.ReduceKernels.fromFloat(avx2Type(type), src, count: count, into: dst) }
        #endif
        ReduceKernels.fromFloat(type, src, count: count, into: dst)
    }
}
