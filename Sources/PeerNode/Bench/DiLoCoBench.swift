import ArgumentParser
import DiLoCo
import Foundation
import Models

/// Runs the same local cluster (`peernode demo`'s workers: real processes on 127.0.0.1) once per
/// DiLoCo mode and reports, per mode, the overhead fraction of the outer steps (wall time outside
/// the inner steps over wall time), the step wall time and the final metric.
///
/// Per step and peer the workers report `inner_s` (inner steps) and `comm_s` (the rest of the
/// outer step: update point, sync, the part of the all-reduce not hidden behind inner steps, the
/// outer update). A step's overhead is Σ comm_s / Σ (inner_s + comm_s) over the peers; min, median
/// and max are over steps 2…T (step 1 includes warm-up, and in async mode a second inner round).
struct DiLoCoBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diloco",
        abstract: "Overhead of DiLoCo outer steps in sync and async mode on a local cluster.")

    @Option(help: "Number of peer processes.") var peers = 3
    @Option(help: "Model: moe or gin.") var model = ModelKind.moe
    @Option(help: "Dataset (default: the model's shipped default).") var data: String?
    @Option(name: .customLong("outer-steps"), help: "Outer steps per run.") var outerSteps = 20
    @Option(name: .customLong("inner-steps"), help: "Inner steps per outer step (H).") var innerSteps = 20
    @Option(help: "Pseudo-gradient encoding.") var quant = PseudoGradientEncoding.int8
    @Option(help: "Seed shared by all peers (the same in every mode).") var seed: UInt64 = 1
    @Option(parsing: .upToNextOption, help: "Modes to run, in this order: sync, async, async-restart.")
    var modes: [String] = ["sync", "async"]
    @Option(help: "Rounds over the modes (interleaved, so that load changes hit every mode alike).") var rounds = 1
    @Option(name: .customLong("emulate-allreduce-ms"),
            help: "Delay every pseudo-gradient all-reduce by this much (a slower link than loopback, emulated).")
    var emulateAllReduceMs = 0
    @Option(help: "Give up after this many seconds.") var timeout = 1800

    func validate() throws {
        guard (1...16).contains(peers) else { throw ValidationError("--peers must be 1...16") }
        guard model != .gcn else { throw ValidationError("--model must be moe or gin") }
        if let data, !model.datasets.contains(data) { throw ValidationError("model \(model.rawValue) does not train on '\(data)'") }
        guard outerSteps >= 2, innerSteps >= 1, rounds >= 1, emulateAllReduceMs >= 0 else {
            throw ValidationError("need --outer-steps ≥ 2, --inner-steps ≥ 1, --rounds ≥ 1, --emulate-allreduce-ms ≥ 0")
        }
        for m in modes where Self.arguments(for: m) == nil {
            throw ValidationError("unknown mode '\(m)' (sync, async, async-restart)")
        }
    }

    static func arguments(for mode: String) -> [String]? {
        switch mode {
        case "sync": ["--mode", "sync"]
        case "async": ["--mode", "async", "--async-start", "rebase"]
        case "async-restart": ["--mode", "async", "--async-start", "restart"]
        default: nil
        }
    }

    func run() async throws {
        let dataset = data ?? model.defaultDataset
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        print("# peernode bench diloco: peers=\(peers) model=\(model.rawValue) data=\(dataset) H=\(innerSteps) T=\(outerSteps) "
              + "quant=\(quant.rawValue) seed=\(seed) emulate_allreduce_ms=\(emulateAllReduceMs) host=\(ProcessInfo.processInfo.hostName)")
        var results: [String: [RunResult]] = [:]
        for _ in 0..<rounds {
            for mode in modes {
                let result = try runOnce(mode: mode, dataset: dataset, deadline: deadline)
                results[mode, default: []].append(result)
                print(result.line)
                fflush(nil)
            }
        }
        guard rounds > 1 else { return }
        // Every step of every round pooled; the final metric per round.
        for mode in modes {
            let runs = results[mode] ?? []
            let o = runs.flatMap(\.overheads).sorted()
            let walls = runs.flatMap(\.stepWalls).sorted()
            let finals = runs.map(\.finalMetric).sorted()
            print("summary mode=\(mode) runs=\(runs.count) steps=\(o.count) overhead_pct_min=\(pct(o.first!)) "
                  + "overhead_pct_median=\(pct(median(o))) overhead_pct_max=\(pct(o.last!)) "
                  + "step_ms_median=\(fmt(1000 * median(walls))) final_\(runs[0].metricName)_median=\(fmt(median(finals))) "
                  + "min=\(fmt(finals.first!)) max=\(fmt(finals.last!)) parity=\(runs.allSatisfy(\.parity) ? "equal" : "DIFFERENT")")
        }
    }

    private struct RunResult {
        var line: String
        var overheads: [Double]
        var stepWalls: [Double]
        var finalMetric: Double
        var metricName: String
        var parity: Bool
    }

    private func runOnce(mode: String, dataset: String, deadline: Date) throws -> RunResult {
        let cluster = try LocalCluster(peers: peers, deadline: deadline) { rank in
            ["demo-worker", "--rank", "\(rank)", "--peers", "\(peers)", "--model", model.rawValue, "--data", dataset,
             "--outer-steps", "\(outerSteps)", "--inner-steps", "\(innerSteps)", "--quant", quant.rawValue, "--seed", "\(seed)",
             "--emulate-allreduce-ms", "\(emulateAllReduceMs)"] + Self.arguments(for: mode)!
        }
        defer { cluster.terminate() }
        var parameters = "?"
        for w in cluster.workers {
            guard let ready = w.readFields("ready", until: deadline) else {
                throw BenchError("peer \(w.rank) failed to start: \(w.stderrTail())")
            }
            parameters = ready["parameters"] ?? "?"
        }
        let start = Date()
        var overheads: [Double] = []
        var stepWalls: [Double] = []
        var parity = true
        var last: [String: String] = [:]
        var losses: [Double] = []
        for step in 1...outerSteps {
            var rows: [[String: String]] = []
            for w in cluster.workers {
                guard let fields = w.readFields("step", until: deadline) else {
                    throw BenchError("peer \(w.rank) failed at outer step \(step) (\(mode)): \(w.stderrTail())")
                }
                rows.append(fields)
            }
            parity = parity && Set(rows.map { $0["digest"] ?? "?" }).count == 1
            let inner = rows.map { Double($0["inner_s"] ?? "") ?? .nan }
            let comm = rows.map { Double($0["comm_s"] ?? "") ?? .nan }
            losses.append(rows.compactMap { Double($0["loss"] ?? "") }.reduce(0, +) / Double(rows.count))
            if step > 1 {
                overheads.append(comm.reduce(0, +) / zip(inner, comm).map { $0 + $1 }.reduce(0, +))
                stepWalls.append(zip(inner, comm).map { $0 + $1 }.max() ?? .nan)
            }
            last = rows[0]
        }
        let runSeconds = Date().timeIntervalSince(start)
        cluster.wait()
        let o = overheads.sorted()
        let metric = last["metric"] ?? "metric"
        let line = "impl=peernode-diloco mode=\(mode) peers=\(peers) params=\(parameters) H=\(innerSteps) T=\(outerSteps) "
            + "overhead_pct_min=\(pct(o.first!)) overhead_pct_median=\(pct(median(o))) overhead_pct_max=\(pct(o.last!)) "
            + "step_ms_median=\(fmt(1000 * median(stepWalls.sorted()))) run_s=\(fmt(runSeconds)) "
            + "first_loss=\(fmt(losses.first!)) final_loss=\(fmt(losses.last!)) final_\(metric)=\(last["value"] ?? "?") "
            + "parity=\(parity ? "equal" : "DIFFERENT")"
        return RunResult(line: line, overheads: overheads, stepWalls: stepWalls, finalMetric: Double(last["value"] ?? "") ?? .nan,
                         metricName: metric, parity: parity)
    }

    private func pct(_ fraction: Double) -> String { String(format: "%.1f", 100 * fraction) }
}
