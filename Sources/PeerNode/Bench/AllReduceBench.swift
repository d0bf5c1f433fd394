import ArgumentParser
import Collectives
import Foundation

/// Starts N real `peernode` processes on 127.0.0.1 and times all-reduces among them.
///
/// Output follows the line format of the project's reference benchmark kit (`impl=... N=...
/// size_mib=...`), so the kit's sweep (`run_all.sh` with `CMD_peernode`) can run it between OpenMPI and Gloo: each op is
/// preceded by a barrier, its time is the maximum over ranks, and median/min/max are over REPS.
struct AllReduceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time ring all-reduces among N local peernode processes.")

    @Option(help: "Number of peer processes.") var peers = 2
    @Option(name: .customLong("size-mib"), parsing: .upToNextOption, help: "Buffer sizes in MiB of f32 per peer.")
    var sizes: [Double] = [1, 16, 64, 256]
    @Option(help: "Timed operations per size (after one warm-up).") var reps = 10
    @Option(help: "Wire encoding: none, int8 (min-max) or int8-zp (zero-point/scale).") var quant = PseudoGradientEncoding.none
    @Option(name: .customLong("segment-kib"), help: "Pipelining segment size in KiB.") var segmentKiB = 1024
    @Option(help: "TCP streams between ring neighbours.") var streams = 1
    @Option(name: .customLong("stream-rate-mbps"),
            help: "Cap each stream's send rate (kernel TCP pacing), to stand in for a path that limits each flow. Default: no cap.")
    var streamRateMbps: Double = 0
    @Flag(help: "Ring links in plaintext instead of TLS 1.3 (the default), to measure what TLS costs.")
    var plaintext = false
    @Option(help: "Name printed as impl= (for side-by-side sweeps).") var impl = "peernode"
    @Option(help: "Give up after this many seconds.") var timeout = 600

    func validate() throws {
        guard (1...64).contains(peers) else { throw ValidationError("--peers must be 1...64") }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 && $0 <= 4096 }) else {
            throw ValidationError("--size-mib takes sizes in (0, 4096]")
        }
        guard reps >= 1 else { throw ValidationError("--reps must be at least 1") }
        guard segmentKiB >= 1 else { throw ValidationError("--segment-kib must be positive") }
        if let problem = RunSettings.streamProblem(streams: streams, rateMbps: streamRateMbps) { throw ValidationError(problem) }
    }

    func run() async throws {
        let settings = WorkerSettings(sizes: sizes, reps: reps, quant: quant, segmentKiB: segmentKiB, streams: streams,
                                      streamRate: RunSettings.bytesPerSecond(mbps: streamRateMbps), plaintext: plaintext)
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        let cluster = try LocalCluster(peers: peers, deadline: deadline) { rank in
            ["bench", "allreduce-worker", "--rank", "\(rank)", "--peers", "\(peers)"] + settings.arguments
        }
        defer { cluster.terminate() }
        let workers = cluster.workers

        let tls = plaintext ? "off" : "psk"
        print("# peernode bench allreduce: peers=\(peers) quant=\(quant.rawValue) segment_kib=\(segmentKiB) streams=\(streams) stream_rate_mbps=\(streamRateMbps) tls=\(tls) reps=\(reps) kernels=\(Kernels.instructionSet.rawValue) host=\(ProcessInfo.processInfo.hostName)")
        for size in sizes {
            var times: [[Double]] = [], cpuTimes: [[Double]] = []
            var digests: [String] = []
            var checks: [Bool] = []
            for w in workers {
                guard let fields = w.readFields("result", until: deadline) else {
                    throw BenchError("worker \(w.rank) failed at \(size) MiB: \(w.stderrTail())")
                }
                let numbers = { (key: String) in (fields[key] ?? "").split(separator: ",").compactMap { Double($0) } }
                times.append(numbers("times_ms"))
                cpuTimes.append(numbers("cpu_ms"))
                digests.append(fields["digest"] ?? "?")
                checks.append(fields["check"] == "ok")
            }
            // Each op's time is the slowest rank's, as in the MPI and Gloo references.
            let perOp = (0..<reps).map { i in times.map { $0.indices.contains(i) ? $0[i] : .infinity }.max()! }.sorted()
            let medianMs = median(perOp)
            // CPU per op summed over the ranks: against the wall time, how busy the cores were.
            let cpuPerOp = median((0..<reps).map { i in cpuTimes.reduce(0) { $0 + ($1.indices.contains(i) ? $1[i] : .nan) } })
            let bytes = size * 1_048_576
            let algbw = bytes / (medianMs / 1000) / 1e9
            let busbw = algbw * 2 * Double(peers - 1) / Double(peers)
            let parity = Set(digests).count == 1
            var line = "impl=\(impl) N=\(peers) size_mib=\(size == size.rounded() ? String(Int(size)) : fmt(size)) reps=\(reps) median_ms=\(fmt(medianMs)) "
                + "min_ms=\(fmt(perOp.first!)) max_ms=\(fmt(perOp.last!)) algbw_GBps=\(fmt(algbw)) busbw_GBps=\(fmt(busbw)) "
                + "cpu_ms=\(fmt(cpuPerOp)) quant=\(quant.rawValue) tls=\(tls) digest=\(digests[0].prefix(16)) parity=\(parity ? "equal" : "DIFFERENT")"
            if !parity || checks.contains(false) { line += " CHECK=FAIL" }
            print(line)
            fflush(nil)
        }
        for w in workers { w.wait() }
    }
}

/// The median (mean of the middle two for an even count); NaN for no values.
func median(_ values: [Double]) -> Double {
    let v = values.sorted()
    if v.isEmpty { return .nan }
    return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
}

func fmt(_ x: Double) -> String {
    x >= 100 ? String(format: "%.1f", x) : x >= 1 ? String(format: "%.3f", x) : String(format: "%.4f", x)
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The settings every worker must share, passed on its command line.
struct WorkerSettings {
    var sizes: [Double]
    var reps: Int
    var quant: PseudoGradientEncoding
    var segmentKiB: Int
    var streams: Int
    /// Bytes per second per stream; 0: no cap.
    var streamRate: UInt64 = 0
    var plaintext = false

    var arguments: [String] {
        ["--size-mib"] + sizes.map { "\($0)" }
            + ["--reps", "\(reps)", "--quant", quant.rawValue, "--segment-kib", "\(segmentKiB)", "--streams", "\(streams)", "--stream-rate", "\(streamRate)"]
            + (plaintext ? ["--plaintext"] : [])
    }
}

