import ArgumentParser
import Collectives
import Foundation
import Logging
import Transport

/// One rank of `peernode bench allreduce` (started by it; not for direct use).
struct AllReduceWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce-worker", abstract: "One rank of `bench allreduce`.", shouldDisplay: false)

    @Option var rank: Int
    @Option var peers: Int
    @Option(name: .customLong("size-mib"), parsing: .upToNextOption) var sizes: [Double]
    @Option var reps: Int
    @Option var quant: PseudoGradientEncoding
    @Option(name: .customLong("segment-kib")) var segmentKiB: Int
    @Option var streams: Int
    @Option(name: .customLong("stream-rate")) var streamRate: UInt64 = 0
    @Flag var plaintext = false

    func run() async throws {
        var logger = Logger(label: "peernode.bench")
        logger.logLevel = .warning
        let (communicator, _) = try await joinLocalCluster(rank: rank, streams: streams, streamRate: streamRate, plaintext: plaintext,
                                                             logger: logger)
        let quantization = quant.quantization
        var barriers: UInt64 = 0
        func barrier() async throws {
            var one: [Float] = [0]
            barriers += 1
            try await communicator.allReduce(&one, options: AllReduceOptions(id: CollectiveID(purpose: .barrier, sequence: barriers)))
        }
        // Each timed run is a collective of its own: an identity runs once per ring.
        var runs: UInt64 = 0

        for size in sizes {
            let count = Int(size * 1_048_576) / 4
            let input = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            let output = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            defer { input.deallocate(); output.deallocate() }
            let (me, quantized) = (rank, quantization != .none)
            for i in 0..<count { input[i] = Self.value(rank: me, index: i, quantized: quantized) }
            output.initialize(repeating: 0)
            var options = AllReduceOptions(tag: 0, op: .sum, quantization: quantization, timeout: .seconds(300),
                                           segmentBytes: segmentKiB << 10)
            let inBytes = UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(input)[0..<(count * 4)]))
            let outBytes = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(output)[0..<(count * 4)])
            var times: [Double] = [], cpuTimes: [Double] = []
            for rep in 0...reps {
                try await barrier()
                let cpuStart = Self.processCPUMilliseconds()
                runs += 1
                options.id = CollectiveID(purpose: .application, sequence: runs)
                let start = DispatchTime.now().uptimeNanoseconds
                try await communicator.allReduce(input: inBytes, output: outBytes, type: .f32, options: options)
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                let cpu = Self.processCPUMilliseconds() - cpuStart
                if rep > 0 { times.append(elapsed); cpuTimes.append(cpu) }
            }
            let digest = Digest.of(UnsafeRawBufferPointer(outBytes))
            let ok = check(output, count: count, quantized: quantization != .none)
            let list = { (values: [Double]) in values.map { String(format: "%.4f", $0) }.joined(separator: ",") }
            print("result size_mib=\(size) times_ms=\(list(times)) cpu_ms=\(list(cpuTimes)) digest=\(digest) check=\(ok ? "ok" : "fail")")
            fflush(nil)
        }
        try await barrier()
        await communicator.shutdown()
    }

    /// CPU time of this process (all its threads), to tell a CPU-bound all-reduce from one that waits.
    private static func processCPUMilliseconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
    }

    /// Exact data for the unquantized run (rank + 1, as the MPI reference); pseudo-random data
    /// in [−1, 1] for the quantized one, computable per index so that any rank can check.
    private static func value(rank: Int, index: Int, quantized: Bool) -> Float {
        guard quantized else { return Float(rank + 1) }
        var z = UInt64(rank) << 40 ^ UInt64(index) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 23) - 1
    }

    private func check(_ output: UnsafeMutableBufferPointer<Float>, count: Int, quantized: Bool) -> Bool {
        let peers = self.peers
        if !quantized {
            let want = Float(peers * (peers + 1) / 2)
            for i in 0..<count where output[i] != want { return false }
            return true
        }
        // n quantizations on each value's path, each within half a step of a range ≤ 2k.
        let bound = (1...peers).reduce(Float(0)) { $0 + Float($1) / 255 } * 1.01 + 1e-5
        for i in stride(from: 0, to: count, by: 61) {
            let exact = (0..<peers).reduce(Float(0)) { $0 + Self.value(rank: $1, index: i, quantized: true) }
            if abs(exact - output[i]) > bound { return false }
        }
        return true
    }
}
