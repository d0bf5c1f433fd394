import ArgumentParser
import Collectives
import DiLoCo
import Dispatch
import Foundation
import Logging
import Models
import ServiceLifecycle
import Transport

/// `peernode run`: one member of a training cluster. Without `--seed` it founds the cluster (and
/// holds the coordinator role); with one it joins through any member.
///
/// Prints `ready ...` once listening, then one `outer ...` line per DiLoCo outer step on stdout
/// (for people and scripts); logs go to stderr. SIGTERM or Ctrl-C: finish the current step,
/// leave the cluster gracefully, exit 0.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a peer of a training cluster (found it, or join through --seed).",
        discussion: "Settings come from the built-in defaults, then --config FILE (a JSON object keyed by the long option names), then the command line.")

    @Option(help: "JSON file of settings keyed by long option name (see docs/operations.md).") var config: String?
    @Option(help: "A member to join through, HOST:PORT (its control port). Omit to found a cluster.")
    var seed: String?
    @Option(help: "Control address to listen on, HOST:PORT (port 0: any). Default 127.0.0.1:0.") var listen: String?
    @Option(name: .customLong("data-listen"), help: "Data (collectives) address to listen on, HOST:PORT. Default 127.0.0.1:0.")
    var dataListen: String?
    @Option(help: "Host other nodes dial to reach this one (needed when listening on 0.0.0.0 or ::). Default: the listen host.")
    var advertise: String?
    @Option(help: "Model: moe, gin or gcn. Default moe.") var model: String?
    @Option(help: "Dataset (default: the model's shipped default).") var data: String?
    @Option(name: .customLong("data-dir"), help: "Directory to read the dataset from, or your own data (docs/datasets.md).") var dataDir: String?
    @Option(name: .customLong("shard-index"), help: "This peer's shard of the training data. Default 0.") var shardIndex: Int?
    @Option(name: .customLong("shard-count"), help: "Number of shards. Default 1.") var shardCount: Int?
    @Option(name: .customLong("inner-steps"), help: "Inner steps per outer step (H). Default 50.") var innerSteps: Int?
    @Option(name: .customLong("outer-steps"), help: "Stop after this shared revision (0, the default: run until stopped).") var outerSteps: Int?
    @Option(help: "Pseudo-gradient encoding: int8 (default), int8-zp or none.") var quant: String?
    @Option(help: "DiLoCo mode: sync (default), or async (one-step-delayed: the all-reduce of step t overlaps the inner steps of t+1).")
    var mode: String?
    @Option(name: .customLong("outer-lr"), help: "Outer Nesterov learning rate. Default 0.7.") var outerLr: Double?
    @Option(name: .customLong("outer-momentum"), help: "Outer Nesterov momentum. Default 0.9.") var outerMomentum: Double?
    @Option(name: .customLong("seed-value"), help: "Seed of the model's initial parameters (equal on all peers). Default 1.") var seedValue: UInt64?
    @Option(name: .customLong("cluster-key-file"), help: "File holding the cluster key (else $PEERNODE_CLUSTER_KEY).")
    var clusterKeyFile: String?
    @Option(help: "Checkpoint file: resumed from at start when it exists, written every --checkpoint-every steps.")
    var checkpoint: String?
    @Option(name: .customLong("checkpoint-every"), help: "Outer steps between checkpoints. Default 10.") var checkpointEvery: Int?
    @Option(name: .customLong("min-peers"), help: "Wait until the ring has this many members before training. Default 1.")
    var minPeers: Int?
    @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval. Default 500.") var heartbeatMs: Int?
    @Option(name: .customLong("heartbeat-timeout-ms"), help: "A member silent this long is removed. Default 3000.") var heartbeatTimeoutMs: Int?
    @Option(name: .customLong("join-timeout-s"), help: "Give up joining through --seed at start after this many seconds (0, the default: keep trying; a member that must rejoin later always keeps trying).")
    var joinTimeoutS: Double?
    @Option(name: .customLong("fork-after-timeouts"), help: "Heartbeat timeouts a view change may lack its quorum before the members this node reaches go on as a new line, merged back when the lines meet (0: never; a minority then waits). Default 3.")
    var forkAfterTimeouts: Int?
    @Option(help: "TCP streams to each ring neighbour; every member must use the same number. Default 1.") var streams: Int?
    @Option(name: .customLong("stream-rate-mbps"), help: "Cap each ring stream's send rate, in Mbit/s (kernel TCP pacing). Default: no cap.")
    var streamRateMbps: Double?
    @Option(name: .customLong("log-level"), help: "trace, debug, info (default), notice, warning, error, critical.") var logLevel: String?
    @Option(name: .customLong("shutdown-grace-s"), help: "On SIGTERM, how long the current step may take before it is aborted. Default 60.")
    var shutdownGraceS: Double?
    @Flag(inversion: .prefixedNo, help: "Serve the status port (--no-status: no HTTP listener at all). Default: on.")
    var status: Bool?
    @Option(name: .customLong("status-port"), help: "Status HTTP port: /status, /metrics, /healthz, a live page at / (0, the default: any free port, on the ready line).")
    var statusPort: Int?
    @Option(name: .customLong("status-bind"), help: "Address the status port binds to. Default 127.0.0.1 (loopback only).")
    var statusBind: String?
    @Option(name: .customLong("data-format"), help: "Layout of your own data in --data-dir, where the files cannot tell: \(DataFormat.allCases.map(\.rawValue).joined(separator: "|")).")
    var dataFormat: String?
    @Option(name: .customLong("init-from"), help: "Found the cluster from the weights in this safetensors file (joiners take the cluster's; a resumed checkpoint wins).")
    var initFrom: String?
    @Option(name: .customLong("ring-order"), help: "measured (default): the coordinator orders the ring from the links members probe; joined: in the order members joined.")
    var ringOrder: String?
    @Option(name: .customLong("probe-interval-s"), help: "Seconds between a member's probes of all its links (new members are probed at once). Default 60.")
    var probeIntervalS: Double?

    /// Defaults, then the config file, then what the command line gave.
    func settings() throws -> RunSettings {
        var s = RunSettings()
        if let config { try s.apply(configFile: config) }
        if let seed { s.seed = seed }
        if let listen { s.listen = listen }
        if let dataListen { s.dataListen = dataListen }
        if let advertise { s.advertise = advertise }
        if let model { s.model = model }
        if let data { s.data = data }
        if let dataDir { s.dataDir = dataDir }
        if let shardIndex { s.shardIndex = shardIndex }
        if let shardCount { s.shardCount = shardCount }
        if let innerSteps { s.innerSteps = innerSteps }
        if let outerSteps { s.outerSteps = outerSteps }
        if let quant { s.quant = quant }
        if let mode { s.mode = mode }
        if let outerLr { s.outerLr = outerLr }
        if let outerMomentum { s.outerMomentum = outerMomentum }
        if let seedValue { s.seedValue = seedValue }
        if let clusterKeyFile { s.clusterKeyFile = clusterKeyFile }
        if let checkpoint { s.checkpoint = checkpoint }
        if let checkpointEvery { s.checkpointEvery = checkpointEvery }
        if let minPeers { s.minPeers = minPeers }
        if let heartbeatMs { s.heartbeatMs = heartbeatMs }
        if let heartbeatTimeoutMs { s.heartbeatTimeoutMs = heartbeatTimeoutMs }
        if let joinTimeoutS { s.joinTimeoutS = joinTimeoutS }
        if let forkAfterTimeouts { s.forkAfterTimeouts = forkAfterTimeouts }
        if let streams { s.streams = streams }
        if let streamRateMbps { s.streamRateMbps = streamRateMbps }
        if let logLevel { s.logLevel = logLevel }
        if let shutdownGraceS { s.shutdownGraceS = shutdownGraceS }
        if let status { s.status = status }
        if let statusPort { s.statusPort = statusPort }
        if let statusBind { s.statusBind = statusBind }
        if let initFrom { s.initFrom = initFrom }
        if let dataFormat { s.dataFormat = dataFormat }
        if let ringOrder { s.ringOrder = ringOrder }
        if let probeIntervalS { s.probeIntervalS = probeIntervalS }
        try s.validate()
        return s
    }

    func validate() throws { try RunSettings.validate(settings) }

    func run() async throws {
        let settings = try settings()
        settings.bootstrapLogging()
        let peer = try await PeerService.start(settings: settings)
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: peer, successTerminationBehavior: .gracefullyShutdownGroup,
                             failureTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: peer.logger)
        // Escalation: a step that outlives the grace period is cancelled (aborted, then the
        // peer leaves); if even that hangs, the group gives up and the process exits non-zero.
        configuration.maximumGracefulShutdownDuration = .milliseconds(Int64(settings.shutdownGraceS * 1000))
        configuration.maximumCancellationDuration = .seconds(15)
        let group = ServiceGroup(configuration: configuration)
        try await group.run()
        if peer.failed { throw ExitCode(1) }
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

    /// Addresses that mean "every interface": fine to listen on, useless to announce.
    static func isWildcard(_ host: String) -> Bool { ["0.0.0.0", "::", "[::]", "*"].contains(host) }

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        self.host = host
        self.port = port
    }
}

