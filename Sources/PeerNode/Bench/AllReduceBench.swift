import ArgumentParser
import Foundation

/// Starts N real `peernode` processes on 127.0.0.1 and times all-reduces among them.
///
/// Output follows ../shared/bench's line format (`impl=... N=... size_mib=...`), so the reference
/// sweep (`run_all.sh` with `CMD_peernode`) can run it between OpenMPI and Gloo: each op is
/// preceded by a barrier, its time is the maximum over ranks, and median/min/max are over REPS.
struct AllReduceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time ring all-reduces among N local peernode processes.")

    @Option(help: "Number of peer processes.") var peers = 2
    @Option(name: .customLong("size-mib"), parsing: .upToNextOption, help: "Buffer sizes in MiB of f32 per peer.")
    var sizes: [Double] = [1, 16, 64, 256]
    @Option(help: "Timed operations per size (after one warm-up).") var reps = 10
    @Option(help: "Wire encoding: none, int8 (min-max) or int8-zp (zero-point/scale).") var quant = "none"
    @Option(name: .customLong("segment-kib"), help: "Pipelining segment size in KiB.") var segmentKiB = 1024
    @Option(help: "Name printed as impl= (for side-by-side sweeps).") var impl = "peernode"
    @Option(help: "Give up after this many seconds.") var timeout = 600

    func validate() throws {
        guard (1...64).contains(peers) else { throw ValidationError("--peers must be 1...64") }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 && $0 <= 4096 }) else {
            throw ValidationError("--size-mib takes sizes in (0, 4096]")
        }
        guard reps >= 1 else { throw ValidationError("--reps must be at least 1") }
        guard WorkerSettings.quantization(quant) != nil else { throw ValidationError("--quant must be none, int8 or int8-zp") }
        guard segmentKiB >= 1 else { throw ValidationError("--segment-kib must be positive") }
    }

    func run() async throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var key = [UInt8](repeating: 0, count: 24)
        var rng = SystemRandomNumberGenerator()
        for i in key.indices { key[i] = UInt8.random(in: 0...255, using: &rng) }
        var environment = ProcessInfo.processInfo.environment
        environment["PEERNODE_CLUSTER_KEY"] = key.map { String(format: "%02x", $0) }.joined()

        let settings = WorkerSettings(sizes: sizes, reps: reps, quant: quant, segmentKiB: segmentKiB)
        var workers: [WorkerProcess] = []
        defer { for w in workers { w.terminate() } }
        for rank in 0..<peers {
            workers.append(try WorkerProcess(executable: executable, rank: rank, peers: peers,
                                             settings: settings, environment: environment))
        }
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        var ports: [Int] = []
        for w in workers {
            guard let line = w.readLine(until: deadline), line.hasPrefix("port "), let port = Int(line.dropFirst(5)) else {
                throw BenchError("worker \(w.rank) did not report its port: \(w.stderrTail())")
            }
            ports.append(port)
        }
        let view = "view " + ports.map(String.init).joined(separator: " ")
        for w in workers { w.writeLine(view) }

        print("# peernode bench allreduce: peers=\(peers) quant=\(quant) segment_kib=\(segmentKiB) reps=\(reps) host=\(ProcessInfo.processInfo.hostName)")
        for size in sizes {
            var times: [[Double]] = []
            var digests: [String] = []
            var checks: [Bool] = []
            for w in workers {
                guard let line = w.readLine(until: deadline), line.hasPrefix("result ") else {
                    throw BenchError("worker \(w.rank) failed at \(size) MiB: \(w.stderrTail())")
                }
                let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").dropFirst().compactMap { kv -> (String, String)? in
                    let parts = kv.split(separator: "=", maxSplits: 1)
                    return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
                })
                times.append((fields["times_ms"] ?? "").split(separator: ",").compactMap { Double($0) })
                digests.append(fields["digest"] ?? "?")
                checks.append(fields["check"] == "ok")
            }
            // Each op's time is the slowest rank's, as in the MPI and Gloo references.
            let perOp = (0..<reps).map { i in times.map { $0.indices.contains(i) ? $0[i] : .infinity }.max()! }.sorted()
            let median = perOp.count % 2 == 1 ? perOp[perOp.count / 2] : (perOp[perOp.count / 2 - 1] + perOp[perOp.count / 2]) / 2
            let bytes = size * 1_048_576
            let algbw = bytes / (median / 1000) / 1e9
            let busbw = algbw * 2 * Double(peers - 1) / Double(peers)
            let parity = Set(digests).count == 1
            var line = "impl=\(impl) N=\(peers) size_mib=\(size == size.rounded() ? String(Int(size)) : fmt(size)) reps=\(reps) median_ms=\(fmt(median)) "
                + "min_ms=\(fmt(perOp.first!)) max_ms=\(fmt(perOp.last!)) algbw_GBps=\(fmt(algbw)) busbw_GBps=\(fmt(busbw)) "
                + "quant=\(quant) digest=\(digests[0].prefix(16)) parity=\(parity ? "equal" : "DIFFERENT")"
            if !parity || checks.contains(false) { line += " CHECK=FAIL" }
            print(line)
            fflush(nil)
        }
        for w in workers { w.wait() }
    }
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
    var quant: String
    var segmentKiB: Int

    var arguments: [String] {
        ["--size-mib"] + sizes.map { "\($0)" } + ["--reps", "\(reps)", "--quant", quant, "--segment-kib", "\(segmentKiB)"]
    }
}

/// One child `peernode bench allreduce-worker`, talked to over its stdin and stdout.
final class WorkerProcess {
    let rank: Int
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()
    private var pending = Data()
    private let errorLog = ErrorLog()

    init(executable: String, rank: Int, peers: Int, settings: WorkerSettings, environment: [String: String]) throws {
        self.rank = rank
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["bench", "allreduce-worker", "--rank", "\(rank)", "--peers", "\(peers)"] + settings.arguments
        process.environment = environment
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        let log = errorLog
        errors.fileHandleForReading.readabilityHandler = { handle in log.append(handle.availableData) }
        try process.run()
    }

    func readLine(until deadline: Date) -> String? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                return line
            }
            guard Date() < deadline else { return nil }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
        }
    }

    func writeLine(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    func stderrTail() -> String { errorLog.tail() }

    func wait() { process.waitUntilExit() }

    func terminate() {
        if process.isRunning { process.terminate() }
    }
}

final class ErrorLog: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func append(_ d: Data) { lock.lock(); data.append(d); if data.count > 65536 { data.removeFirst(data.count - 65536) }; lock.unlock() }
    func tail() -> String { lock.lock(); defer { lock.unlock() }; return String(decoding: data.suffix(2000), as: UTF8.self) }
}
