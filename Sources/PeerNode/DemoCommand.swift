import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Models
import Transport

extension PeerNodeCommand {
    /// `peernode demo`: what a newcomer runs first.
    ///
    /// Starts a local cluster of real `peernode run` processes on loopback, exactly as an operator
    /// would on several machines: the first founds the cluster, the others join through it. Each
    /// trains the shipped default model on its own shard; every H inner steps they run a DiLoCo
    /// outer step (int8 all-reduce of the pseudo-gradient, outer Nesterov). A third of the way in
    /// one peer is sent SIGTERM and leaves gracefully; half way a new peer joins, downloads the
    /// shared state and carries on from the same bits. The demo ends with the accuracy, the bytes
    /// saved against per-step data-parallel training, and the digests, which must all be equal.
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "demo",
            abstract: "Train the default model on a local peernode cluster (loopback): a peer leaves and one joins mid-run.")

        @Option(help: "Number of peer processes at the start.") var peers = 3
        @Option(help: "Model: moe (digits, default) or gin (molecules).") var model = ModelKind.moe
        @Option(help: "Dataset (default: the model's shipped default).") var data: String?
        @Option(name: .customLong("outer-steps"), help: "DiLoCo outer steps.") var outerSteps = 30
        @Option(name: .customLong("inner-steps"), help: "Inner AdamW steps per outer step (H).") var innerSteps = 40
        @Option(help: "Pseudo-gradient encoding.") var quant = PseudoGradientEncoding.int8
        @Option(help: "Seed shared by all peers.") var seed: UInt64 = 1
        @Option(name: .customLong("outer-lr"), help: "Outer Nesterov learning rate.") var outerLr = 0.7
        @Option(name: .customLong("outer-momentum"), help: "Outer Nesterov momentum.") var outerMomentum = 0.9
        @Option(help: "DiLoCo mode: sync, or async (one-step-delayed: the all-reduce overlaps the next inner steps).")
        var mode: DiLoCoOptions.Mode = .sync
        @Flag(name: .customLong("no-churn"), help: "Keep the same peers throughout (no leave, no join).") var noChurn = false

        func validate() throws {
            guard (1...16).contains(peers) else { throw ValidationError("--peers must be 1...16") }
            guard model != .gcn else {
                throw ValidationError("--model must be moe or gin (the demo's models; train gcn with `peernode run` or `peernode train`)")
            }
            if let data, !model.datasets.contains(data) {
                throw ValidationError("model \(model.rawValue) trains on \(model.datasets.joined(separator: ", ")), not '\(data)'")
            }
            guard outerSteps >= 1, innerSteps >= 1 else { throw ValidationError("--outer-steps and --inner-steps must be positive") }
            guard outerLr.isFinite, outerLr > 0, outerMomentum.isFinite, (0..<1).contains(outerMomentum) else {
                throw ValidationError("--outer-lr must be positive and --outer-momentum in [0, 1)")
            }
        }

        func run() async throws {
            let dataset = data ?? model.defaultDataset
            let deadline = Date().addingTimeInterval(900)
            // Churn needs a peer to spare and room for the join to show.
            let churn = !noChurn && peers >= 2 && outerSteps >= 6
            let leaveAt = outerSteps / 3
            let joinAt = outerSteps / 2
            print("peernode demo: \(peers) peers on 127.0.0.1 train \(model.rawValue) on \(dataset) with DiLoCo "
                  + "(H=\(innerSteps) inner steps, \(outerSteps) outer steps, \(quant.rawValue) all-reduce, \(mode.rawValue) mode)")
            if churn {
                print("peer \(peers - 1) leaves after outer step \(leaveAt); a new peer joins after step \(joinAt) and takes over its shard")
            }
            let cluster = try DemoCluster(deadline: deadline)
            defer { cluster.terminate() }
            func arguments(shard: Int, seedAddress: String?, minPeers: Int) -> [String] {
                ["run", "--model", model.rawValue, "--data", dataset, "--outer-steps", "\(outerSteps)", "--inner-steps", "\(innerSteps)",
                 "--quant", quant.rawValue, "--seed-value", "\(seed)", "--outer-lr", "\(outerLr)", "--outer-momentum", "\(outerMomentum)", "--mode", mode.rawValue, "--shard-count", "\(peers)", "--shard-index", "\(shard)",
                 "--min-peers", "\(minPeers)", "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "warning"]
                    + (seedAddress.map { ["--seed", $0] } ?? [])
            }
            let founder = try cluster.start(arguments(shard: 0, seedAddress: nil, minPeers: peers))
            let seedAddress = "127.0.0.1:\(founder.ready["control_port"] ?? "0")"
            for shard in 1..<peers {
                try cluster.start(arguments(shard: shard, seedAddress: seedAddress, minPeers: peers))
            }
            let parameterCount = Int(founder.ready["parameters"] ?? "") ?? 0
            print("each peer holds \(parameterCount) parameters and its own shard; θ and the outer momentum are shared")
            print("peer 0 founded the cluster at \(seedAddress); the others joined through it")
            print("live status: " + cluster.peers.map { "peer \($0.index) http://127.0.0.1:\($0.ready["status_port"] ?? "?")/" }
                .joined(separator: "  ") + "  (or `peernode status 127.0.0.1:PORT`)\n")

            var inner = 0.0
            var comm = 0.0
            var dataParallelBytes = 0.0
            var last: [String: String] = [:]
            var metricName = "metric"
            var mismatches = 0
            for revision in 1...outerSteps {
                // The founder never leaves; its line says how many peers took part in the step.
                guard let head = founder.line(revision: revision, until: deadline), let count = Int(head["peers"] ?? "") else {
                    throw BenchError("peer 0 failed at outer step \(revision): \(founder.stderrTail())")
                }
                let rows = cluster.lines(revision: revision, count: count, until: min(deadline, Date().addingTimeInterval(30)))
                let digests = Set(rows.map { $0["digest"] ?? "?" })
                if digests.count != 1 || rows.count != count { mismatches += 1 }
                let loss = rows.compactMap { Double($0["loss"] ?? "") }.reduce(0, +) / Double(max(rows.count, 1))
                inner += rows.compactMap { Double($0["inner_s"] ?? "") }.max() ?? 0
                comm += rows.compactMap { Double($0["comm_s"] ?? "") }.max() ?? 0
                // Per-step data parallelism would all-reduce every gradient in fp32: 2(n−1)/n of
                // the model per peer per inner step.
                dataParallelBytes += Double(innerSteps * parameterCount * 4) * 2 * Double(max(count - 1, 0))
                last = head
                metricName = head["metric"] ?? "metric"
                let parity = digests.count == 1 && rows.count == count ? "all \(count) equal" : "DIFFER (\(rows.count) of \(count) reported)"
                print(String(format: "outer %3d/%d  loss %.4f  %@ %.4f  sent %8.2f MB  peers %d  digest %@ (%@)",
                             revision, outerSteps, loss, metricName, Double(head[metricName] ?? "") ?? .nan,
                             Double(cluster.bytesSent) / 1e6, count, String((head["digest"] ?? "?").prefix(12)), parity))
                fflush(nil)
                if churn, revision == leaveAt {
                    let leaver = cluster.peers[peers - 1]
                    print("  → SIGTERM to peer \(peers - 1): it finishes its step and leaves gracefully (no timeout for the others)")
                    fflush(nil)
                    leaver.signal(SIGTERM)
                }
                if churn, revision == joinAt {
                    let joiner = try cluster.start(arguments(shard: peers - 1, seedAddress: seedAddress, minPeers: 1))
                    print("  → peer \(joiner.index) started (shard \(peers - 1)); it joins through \(seedAddress) at the next update point "
                          + "and downloads θ and the momentum from the members")
                    fflush(nil)
                }
            }
            let statuses = cluster.waitAll(until: Date().addingTimeInterval(60))
            let finals = cluster.peers.compactMap { $0.line(revision: outerSteps, until: Date()) }.map { $0["digest"] ?? "?" }
            print("\nsummary")
            print(String(format: "  final %@: %.4f after %d outer steps × %d inner steps", metricName,
                         Double(last[metricName] ?? "") ?? .nan, outerSteps, innerSteps))
            let bytesSent = cluster.bytesSent
            if bytesSent > 0 {
                print(String(format: "  bytes sent by all peers: %.2f MB; per-step data-parallel fp32 would send %.1f MB (%.0f× more)",
                             Double(bytesSent) / 1e6, dataParallelBytes / 1e6, dataParallelBytes / Double(bytesSent)))
            }
            print(String(format: "  wall time outside inner steps (sync, all-reduce, outer update): %.1f%%", 100 * comm / max(inner + comm, 1e-9)))
            for peer in cluster.peers {
                let first = peer.firstRevision.map { "\($0)" } ?? "-"
                let lastRevision = peer.lastRevision.map { "\($0)" } ?? "-"
                print("  peer \(peer.index): outer steps \(first)…\(lastRevision), exit status \(statuses[peer.index].map { "\($0)" } ?? "killed")")
                if let status = statuses[peer.index], status != 0 {
                    // Why it failed, in its own words (its last log lines).
                    for line in peer.stderrTail().split(separator: "\n").suffix(6) { print("    | \(line)") }
                }
            }
            print("  final state digests: " + finals.map { String($0.prefix(12)) }.joined(separator: " ")
                  + (Set(finals).count == 1 && mismatches == 0 ? "  (all equal at every step: bit-identical θ on every peer)" : "  (DIFFERENT)"))
            if Set(finals).count != 1 || mismatches > 0 { throw ExitCode(2) }
            if statuses.contains(where: { $0 != 0 }) { throw ExitCode(3) }
        }
    }
}
