import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Models

extension PeerNodeCommand {
    /// `peernode demo`: what a newcomer runs first.
    ///
    /// Starts a local cluster of real peernode processes on loopback; each trains the shipped
    /// default model on its own shard of the data, and every H inner steps they run a DiLoCo
    /// outer step over the ring (int8 all-reduce of the pseudo-gradient, outer Nesterov). The demo
    /// shows progress and ends with the accuracy, the bytes saved against per-step data-parallel
    /// training, and the peers' state digests, which must all be equal.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "demo",
            abstract: "Train the default model on a local peernode cluster (loopback) and show what it does.")

        @Option(help: "Number of peer processes.") var peers = 3
        @Option(help: "Model: moe (digits, default), gin (molecules), gcn (needs --data-dir with Cora).") var model = "moe"
        @Option(help: "Dataset (default: the model's shipped default).") var data: String?
        @Option(name: .customLong("outer-steps"), help: "DiLoCo outer steps.") var outerSteps = 25
        @Option(name: .customLong("inner-steps"), help: "Inner AdamW steps per outer step (H).") var innerSteps = 40
        @Option(help: "Pseudo-gradient encoding: int8, int8-zp or none.") var quant = "int8"
        @Option(help: "Seed shared by all peers.") var seed: UInt64 = 1
        @Option(help: "DiLoCo mode: sync, or async (one-step-delayed: the all-reduce overlaps the next inner steps).")
        var mode: DiLoCoOptions.Mode = .sync

        func validate() throws {
            guard (1...16).contains(peers) else { throw ValidationError("--peers must be 1...16") }
            guard let kind = ModelKind(rawValue: model), kind != .gcn else {
                throw ValidationError("--model must be moe or gin (gcn needs Cora, which is not shipped)")
            }
            if let data, !kind.datasets.contains(data) {
                throw ValidationError("model \(model) trains on \(kind.datasets.joined(separator: ", ")), not '\(data)'")
            }
            guard outerSteps >= 1, innerSteps >= 1 else { throw ValidationError("--outer-steps and --inner-steps must be positive") }
            guard WorkerSettings.quantization(quant) != nil else { throw ValidationError("--quant must be int8, int8-zp or none") }
        }

        func run() async throws {
            let kind = ModelKind(rawValue: model)!
            let dataset = data ?? kind.defaultDataset
            let deadline = Date().addingTimeInterval(900)
            print("peernode demo: \(peers) peers on 127.0.0.1 train \(model) on \(dataset) with DiLoCo "
                  + "(H=\(innerSteps) inner steps, \(outerSteps) outer steps, \(quant) all-reduce, \(mode.rawValue) mode)")
            let cluster = try LocalCluster(peers: peers, deadline: deadline) { rank in
                ["demo-worker", "--rank", "\(rank)", "--peers", "\(peers)", "--model", model, "--data", dataset,
                 "--outer-steps", "\(outerSteps)", "--inner-steps", "\(innerSteps)", "--quant", quant, "--seed", "\(seed)",
                 "--mode", mode.rawValue]
            }
            defer { cluster.terminate() }
            var parameterCount = 0
            for w in cluster.workers {
                guard let ready = w.readFields("ready", until: deadline) else {
                    throw BenchError("peer \(w.rank) failed to start: \(w.stderrTail())")
                }
                parameterCount = Int(ready["parameters"] ?? "") ?? 0
            }
            print("each peer holds \(parameterCount) parameters and its own shard; θ and the outer momentum are shared\n")
            var bytesSent = 0
            var inner = 0.0
            var comm = 0.0
            var last: [String: String] = [:]
            var digests: [String] = []
            var metricName = "metric"
            for step in 1...outerSteps {
                var rows: [[String: String]] = []
                for w in cluster.workers {
                    guard let fields = w.readFields("step", until: deadline) else {
                        throw BenchError("peer \(w.rank) failed at outer step \(step): \(w.stderrTail())")
                    }
                    rows.append(fields)
                }
                digests = rows.map { $0["digest"] ?? "?" }
                let loss = rows.compactMap { Double($0["loss"] ?? "") }.reduce(0, +) / Double(rows.count)
                bytesSent += rows.compactMap { Int($0["bytes"] ?? "") }.reduce(0, +)
                inner += rows.compactMap { Double($0["inner_s"] ?? "") }.max() ?? 0
                comm += rows.compactMap { Double($0["comm_s"] ?? "") }.max() ?? 0
                last = rows[0]
                metricName = (last["metric"] ?? "metric").replacingOccurrences(of: "_", with: " ")
                let parity = Set(digests).count == 1 ? "all equal" : "DIFFER"
                let value = Double(last["value"] ?? "") ?? .nan
                print(String(format: "outer %3d/%d  loss %.4f  %@ %.4f  sent %8.2f MB  peers %@  digest %@ (%@)",
                             step, outerSteps, loss, metricName, value, Double(bytesSent) / 1e6, last["peers"] ?? "?",
                             String(digests[0].prefix(12)), parity))
                fflush(nil)
            }
            cluster.wait()
            let totalInner = outerSteps * innerSteps
            // Per-step data parallelism would all-reduce every gradient in fp32: 2(n−1)/n of the
            // model per peer per inner step.
            let dataParallelBytes = peers > 1 ? Double(totalInner) * Double(parameterCount * 4) * 2 * Double(peers - 1) / Double(peers) * Double(peers) : 0
            print("\nsummary")
            print(String(format: "  final %@: %.4f after %d outer steps × %d inner steps", metricName,
                         Double(last["value"] ?? "") ?? .nan, outerSteps, innerSteps))
            if bytesSent > 0 {
                print(String(format: "  bytes sent by all peers: %.2f MB; per-step data-parallel fp32 would send %.1f MB (%.0f× more)",
                             Double(bytesSent) / 1e6, dataParallelBytes / 1e6, dataParallelBytes / Double(bytesSent)))
            }
            print(String(format: "  wall time outside inner steps (sync, all-reduce, outer update): %.1f%%", 100 * comm / max(inner + comm, 1e-9)))
            print("  state digests: " + digests.map { String($0.prefix(12)) }.joined(separator: " ")
                  + (Set(digests).count == 1 ? "  (all equal: bit-identical θ on every peer)" : "  (DIFFERENT)"))
            if Set(digests).count != 1 { throw ExitCode(2) }
        }
    }
}
