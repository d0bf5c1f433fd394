import ArgumentParser
import Collectives
import DiLoCo
import Dispatch
import Foundation
import Logging
import Models
import Transport

/// `peernode run`: one member of a training cluster. Without `--seed` it founds the cluster (and
/// holds the coordinator role); with one it joins through any member.
///
/// Prints `ready ...` once listening, then one `outer ...` line per DiLoCo outer step on stdout
/// (for people and scripts); logs go to stderr. SIGTERM or Ctrl-C: finish the current step,
/// leave the cluster gracefully, exit 0.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a peer of a training cluster (found it, or join through --seed).")

    @Option(help: "A member to join through, HOST:PORT (its control port). Omit to found a cluster.")
    var seed: String?
    @Option(help: "Control address to listen on, HOST:PORT (port 0: any).") var listen = "127.0.0.1:0"
    @Option(name: .customLong("data-listen"), help: "Data (collectives) address to listen on, HOST:PORT.")
    var dataListen = "127.0.0.1:0"
    @Option(help: "Model: moe, gin or gcn.") var model = "moe"
    @Option(help: "Dataset (default: the model's shipped default).") var data: String?
    @Option(name: .customLong("data-dir"), help: "Directory to read the dataset from (gcn: Cora).") var dataDir: String?
    @Option(name: .customLong("shard-index"), help: "This peer's shard of the training data.") var shardIndex = 0
    @Option(name: .customLong("shard-count"), help: "Number of shards.") var shardCount = 1
    @Option(name: .customLong("inner-steps"), help: "Inner steps per outer step (H).") var innerSteps = 50
    @Option(name: .customLong("outer-steps"), help: "Stop after this shared revision (0: run until stopped).") var outerSteps = 0
    @Option(help: "DiLoCo mode: sync, or async (one-step-delayed: all-reduce of step t during the inner steps of t+1).") var mode: DiLoCoOptions.Mode = .sync
    @Option(help: "Pseudo-gradient encoding: int8, int8-zp or none.") var quant = "int8"
    @Option(name: .customLong("seed-value"), help: "Seed of the model's initial parameters (equal on all peers).") var seedValue: UInt64 = 1
    @Option(name: .customLong("cluster-key-file"), help: "File holding the cluster key (else $PEERNODE_CLUSTER_KEY).")
    var clusterKeyFile: String?
    @Option(help: "Checkpoint file: resumed from at start when it exists, written every --checkpoint-every steps.")
    var checkpoint: String?
    @Option(name: .customLong("checkpoint-every"), help: "Outer steps between checkpoints.") var checkpointEvery = 10
    @Option(name: .customLong("min-peers"), help: "Wait until the ring has this many members before training.")
    var minPeers = 1
    @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval.") var heartbeatMs = 500
    @Option(name: .customLong("heartbeat-timeout-ms"), help: "A member silent this long is removed.") var heartbeatTimeoutMs = 3000
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.") var logLevel = "info"

    func validate() throws {
        for (name, value) in [("--listen", listen), ("--data-listen", dataListen)] + (seed.map { [("--seed", $0)] } ?? []) {
            guard HostPort(value) != nil else { throw ValidationError("\(name) must be HOST:PORT, got '\(value)'") }
        }
        guard let kind = ModelKind(rawValue: model) else { throw ValidationError("--model must be moe, gin or gcn") }
        if let data, !kind.datasets.contains(data) {
            throw ValidationError("model \(model) trains on \(kind.datasets.joined(separator: ", ")), not '\(data)'")
        }
        guard shardCount >= 1, (0..<shardCount).contains(shardIndex) else { throw ValidationError("--shard-index must be in 0..<--shard-count") }
        guard innerSteps >= 1, outerSteps >= 0 else { throw ValidationError("--inner-steps ≥ 1 and --outer-steps ≥ 0") }
        guard WorkerSettings.quantization(quant) != nil else { throw ValidationError("--quant must be int8, int8-zp or none") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        guard heartbeatMs > 0, heartbeatTimeoutMs > heartbeatMs else { throw ValidationError("need 0 < --heartbeat-ms < --heartbeat-timeout-ms") }
        guard checkpointEvery >= 1 else { throw ValidationError("--checkpoint-every must be positive") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let key: ClusterKey
        do {
            key = try ClusterKey.load(file: clusterKeyFile)
        } catch {
            throw RunError("\(error)")
        }
        let control = HostPort(listen)!
        let dataAddress = HostPort(dataListen)!
        let id = UInt64.random(in: 1...UInt64.max)
        var logger = Logger(label: "peernode")
        logger[metadataKey: "node.id"] = "\(hex(id))"

        let kind = ModelKind(rawValue: model)!
        let task = try TrainingTask.make(TaskSpec(model: kind, dataset: data, dataDirectory: dataDir,
                                                  shard: Shard(index: shardIndex, count: shardCount), seed: seedValue))
        var membershipOptions = MembershipOptions()
        membershipOptions.heartbeatInterval = .milliseconds(Int64(heartbeatMs))
        membershipOptions.heartbeatTimeout = .milliseconds(Int64(heartbeatTimeoutMs))
        let node = MembershipNode(localId: id, key: key, options: membershipOptions, logger: logger)
        let communicator = Communicator(localId: id, key: key, logger: logger)
        let state = try DiLoCoTrainer.sharedState(for: task)
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint) {
            // Resume: load into a scratch state first, so that a bad file changes nothing.
            let loaded = try DiLoCoTrainer.sharedState(for: task)
            do {
                _ = try Checkpoint.read(checkpoint, into: loaded)
            } catch {
                throw RunError("cannot resume: \(error)")
            }
            try state.copy(from: loaded)
            logger.info("resumed from checkpoint", metadata: ["path": "\(checkpoint)", "revision": "\(state.revision)",
                                                             "digest": "\(state.digest().short)"])
        }
        let server = StateServer(state: state, logger: logger)
        let session = MembershipSession(node: node, communicator: communicator, server: server,
                                        downloader: StateDownloader(localId: id, key: key, logger: logger), logger: logger)
        var options = DiLoCoOptions()
        options.innerSteps = innerSteps
        options.quantization = WorkerSettings.quantization(quant)!
        options.mode = mode
        let trainer = try DiLoCoTrainer(task: task, state: state, session: session, options: options, logger: logger)

        let dataPort: Int
        let controlPort: Int
        do {
            dataPort = try await communicator.listen(host: dataAddress.host, port: dataAddress.port)
            controlPort = try await node.start(controlHost: control.host, controlPort: control.port,
                                               dataHost: dataAddress.host, dataPort: dataPort,
                                               seed: seed.flatMap(HostPort.init).map { ($0.host, $0.port) })
        } catch {
            await communicator.shutdown()
            throw RunError("cannot start: \(error)")
        }
        print("ready id=\(hex(id)) revision=\(state.revision) control_port=\(controlPort) data_port=\(dataPort) parameters=\(task.parameters.count)")
        fflush(nil)

        let stop = StopFlag()
        let signals = [SIGTERM, SIGINT].map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.set() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }

        var failure: (any Error)?
        // Update points until enough peers joined (each admits whoever registered meanwhile); the
        // last one is the first step's update point.
        var updated: Int?
        do {
            var peers = try await session.updateTopology()
            while !stop.isSet, peers < minPeers {
                try await Task.sleep(for: .milliseconds(200))
                peers = try await session.updateTopology()
            }
            updated = peers
        } catch {
            failure = error
        }
        while failure == nil, !stop.isSet, outerSteps == 0 || trainer.revision < UInt64(outerSteps) {
            do {
                let report = try await trainer.outerStep(topologyUpdated: updated)
                updated = nil
                let metrics = trainer.evaluate()
                let status = node.status
                if let checkpoint, report.revision % UInt64(checkpointEvery) == 0 {
                    do {
                        try server.lock.withLock { try Checkpoint.write(state, to: checkpoint) }
                    } catch {
                        // A full disk loses nothing: the previous checkpoint stays; training goes on.
                        logger.error("checkpoint not written: \(error)")
                    }
                }
                print("outer revision=\(report.revision) loss=\(report.meanInnerLoss) \(metrics.name.replacingOccurrences(of: " ", with: "_"))=\(metrics.value) "
                      + "digest=\(report.digest) peers=\(report.peers) epoch=\(status.view?.epoch ?? 0) role=\(status.role) "
                      + "retries=\(report.retries) bytes_sent=\(communicator.traffic.bytesSent) bytes_received=\(communicator.traffic.bytesReceived) "
                      + "joins=\(status.joins) leaves=\(status.leaves) deaths=\(status.deaths) aborts=\(status.aborts)")
                fflush(nil)
            } catch {
                failure = error
                break
            }
        }
        if let failure {
            logger.error("stopping: \(failure)")
            await node.shutdown()
            await communicator.shutdown()
            throw ExitCode(1)
        }
        if let checkpoint {
            do {
                try server.lock.withLock { try Checkpoint.write(state, to: checkpoint) }
            } catch {
                logger.error("final checkpoint not written: \(error)")
            }
        }
        logger.info("leaving the cluster")
        await node.leave()
        await communicator.shutdown()
    }
}

/// A runtime failure: reported as one line, without the usage text.
struct RunError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// HOST:PORT with a numeric port (IPv6 hosts in brackets).
struct HostPort {
    var host: String
    var port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        self.host = host
        self.port = port
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
