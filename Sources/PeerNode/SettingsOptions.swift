import ArgumentParser
import Collectives
import DiLoCo
import Models

// The command-line side of ``RunSettings``, as option groups the commands share (`@OptionGroup`).
// Each option is nil (or empty) unless given, so that the config file's value survives it; the
// defaults shown in the help come from `RunSettings()`, the one place they are set. Every option
// here has a key of the same name in `RunSettings.CodingKeys` (Tests/PeerNodeTests checks both ways).

private let defaults = RunSettings()

/// What every node needs, training or only coordinating: whom it joins, where it listens, the
/// cluster key, failure detection and logs; and `--config`, the file all of these may come from.
struct NodeOptions: ParsableArguments {
    @Option(help: "JSON file of settings keyed by the long option names (docs/operations.md); the command line wins over it.")
    var config: String?
    @Option(help: ArgumentHelp(
        "A member to join through, HOST:PORT (its control port). Omit to found a cluster.",
        discussion: "Give it more than once, or comma-separated: the seeds are tried in order, then again with backoff."))
    var seed: [String] = []
    @Option(help: ArgumentHelp("Control address to listen on, HOST:PORT (port 0: any). Default \(defaults.listen).",
                               valueName: "host:port"))
    var listen: HostPort?
    @Option(help: "Host other nodes dial to reach this one (needed when listening on 0.0.0.0 or ::). Default: the listen host.")
    var advertise: String?
    @Option(help: "File holding the cluster key (else $PEERNODE_CLUSTER_KEY).")
    var clusterKeyFile: String?
    @Flag(help: "Links in plaintext instead of TLS 1.3: for trusted networks only, and on every node of the cluster or none.")
    var plaintext = false
    @Option(help: "This node's certificate chain (PEM) for mutual TLS with certificates; with --tls-key and --tls-ca. Default: TLS keyed by the cluster key.")
    var tlsCert: String?
    @Option(help: "The private key (PEM) of --tls-cert.")
    var tlsKey: String?
    @Option(help: "The CA certificates (PEM) that sign the other nodes' certificates.")
    var tlsCa: String?
    @Option(help: "Heartbeat interval in ms. Default \(defaults.heartbeatMs).")
    var heartbeatMs: Int?
    @Option(help: "A member silent this many ms is removed. Default \(defaults.heartbeatTimeoutMs).")
    var heartbeatTimeoutMs: Int?
    @Option(help: "Give up joining through the seeds at start after this many seconds (0, the default: keep trying; a member that must rejoin later always keeps trying).")
    var joinTimeoutS: Double?
    @Flag(help: "When no seed registers this node within --join-timeout-s, found the cluster instead of failing (the first pod of a StatefulSet: it founds a new cluster, or rejoins a running one after a restart).")
    var foundAfterJoinTimeout = false
    @Option(help: "Heartbeat timeouts a view change may lack its quorum before the members this node reaches go on as a new line, merged back when the lines meet (0: never; a minority then waits). Default \(defaults.forkAfterTimeouts).")
    var forkAfterTimeouts: Int?
    @Option(help: "Log level. Default \(defaults.logLevel.rawValue).")
    var logLevel: LogLevel?
    @Option(help: "measured (default): the coordinator orders the ring from the links members probe; joined: in the order members joined.")
    var ringOrder: RingOrderMode?
    @Option(help: "Seconds between a member's probes of all its links (new members are probed at once). Default \(Int(defaults.probeIntervalS)).")
    var probeIntervalS: Double?

    func apply(to s: inout RunSettings) throws {
        if !seed.isEmpty {
            s.seeds = try splitSeeds(seed).map { text in
                guard let address = HostPort(text) else { throw RunError("--seed must be HOST:PORT, got '\(text)'") }
                return address
            }
        }
        if let listen { s.listen = listen }
        if let advertise { s.advertise = advertise }
        if let clusterKeyFile { s.clusterKeyFile = clusterKeyFile }
        if plaintext { s.plaintext = true }
        if let tlsCert { s.tlsCert = tlsCert }
        if let tlsKey { s.tlsKey = tlsKey }
        if let tlsCa { s.tlsCa = tlsCa }
        if let heartbeatMs { s.heartbeatMs = heartbeatMs }
        if let heartbeatTimeoutMs { s.heartbeatTimeoutMs = heartbeatTimeoutMs }
        if let joinTimeoutS { s.joinTimeoutS = joinTimeoutS }
        if foundAfterJoinTimeout { s.foundAfterJoinTimeout = true }
        if let ringOrder { s.ringOrder = ringOrder }
        if let probeIntervalS { s.probeIntervalS = probeIntervalS }
        if let forkAfterTimeouts { s.forkAfterTimeouts = forkAfterTimeouts }
        if let logLevel { s.logLevel = logLevel }
    }

    /// Defaults, then the config file (read here, once), then `commandLine`; validated.
    func resolve(_ commandLine: (inout RunSettings) -> Void) throws -> RunSettings {
        var s = try config.map(RunSettings.load(configFile:)) ?? RunSettings()
        try apply(to: &s)
        commandLine(&s)
        try s.validate()
        return s
    }
}

/// Which model trains on which data: `run`, `train` and `export` share these.
struct DataOptions: ParsableArguments {
    @Option(help: "The model. Default \(defaults.model.rawValue).")
    var model: ModelKind?
    @Option(help: "Dataset (gcn: cora|citeseer, gin: esol|freesolv|lipophilicity, moe: digits|mnist5k). Default: the model's.")
    var data: String?
    @Option(help: "Read the dataset from this directory instead of the shipped copy, or your own data there (docs/datasets.md).")
    var dataDir: String?
    @Option(help: "Layout of your own data in --data-dir, where the files cannot tell (docs/datasets.md).")
    var dataFormat: DataFormat?

    func apply(to s: inout RunSettings) {
        if let model { s.model = model }
        if let data { s.data = data }
        if let dataDir { s.dataDir = dataDir }
        if let dataFormat { s.dataFormat = dataFormat }
    }
}

/// The training member's own settings (`run` only): data port, shard, DiLoCo, checkpoints, the
/// ring's streams, shutdown and the status port.
struct TrainingOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Data (collectives) address to listen on, HOST:PORT. Default \(defaults.dataListen).",
                               valueName: "host:port"))
    var dataListen: HostPort?
    @Option(help: "This peer's shard of the training data. Default \(defaults.shardIndex).")
    var shardIndex: Int?
    @Option(help: "Number of shards. Default \(defaults.shardCount).")
    var shardCount: Int?
    @Option(help: "Inner steps per outer step (H). Default \(defaults.innerSteps).")
    var innerSteps: Int?
    @Option(help: "Stop after this shared revision (0, the default: keep training until stopped).")
    var outerSteps: Int?
    @Option(help: "Pseudo-gradient encoding. Default \(defaults.quant.rawValue).")
    var quant: PseudoGradientEncoding?
    @Option(help: "DiLoCo mode: sync, or async (one-step-delayed: the all-reduce of step t overlaps the inner steps of t+1). Default \(defaults.mode.rawValue).")
    var mode: DiLoCoOptions.Mode?
    @Option(help: "Outer Nesterov learning rate. Default \(defaults.outerLr).")
    var outerLr: Double?
    @Option(help: "Outer Nesterov momentum. Default \(defaults.outerMomentum).")
    var outerMomentum: Double?
    @Option(help: "Seed of the model's initial parameters (equal on all peers). Default \(defaults.seedValue).")
    var seedValue: UInt64?
    @Option(help: "Checkpoint file: resumed from at start when it exists, written every --checkpoint-every steps.")
    var checkpoint: String?
    @Option(help: "Outer steps between checkpoints. Default \(defaults.checkpointEvery).")
    var checkpointEvery: Int?
    @Option(help: "Wait until the ring has this many members before training. Default \(defaults.minPeers).")
    var minPeers: Int?
    @Option(help: "TCP streams to each ring neighbour; every member must use the same number. Default \(defaults.streams).")
    var streams: Int?
    @Option(help: "Cap each ring stream's send rate, in Mbit/s (kernel TCP pacing). Default: no cap.")
    var streamRateMbps: Double?
    @Option(help: "On SIGTERM, how long the current step may take before it is aborted, in seconds. Default \(defaults.shutdownGraceS).")
    var shutdownGraceS: Double?
    @Flag(inversion: .prefixedNo, help: "Serve the status port (--no-status: no HTTP listener at all). Default: on.")
    var status: Bool?
    @Option(help: "Status HTTP port: /status, /metrics, /healthz, a live page at / (0, the default: any free port, on the ready line).")
    var statusPort: Int?
    @Option(help: "Address the status port binds to. Default \(defaults.statusBind) (loopback only).")
    var statusBind: String?
    @Option(help: "Found the cluster from the weights in this safetensors file (joiners take the cluster's; a resumed checkpoint wins).")
    var initFrom: String?

    func apply(to s: inout RunSettings) {
        if let dataListen { s.dataListen = dataListen }
        if let shardIndex { s.shardIndex = shardIndex }
        if let shardCount { s.shardCount = shardCount }
        if let innerSteps { s.innerSteps = innerSteps }
        if let outerSteps { s.outerSteps = outerSteps }
        if let quant { s.quant = quant }
        if let mode { s.mode = mode }
        if let outerLr { s.outerLr = outerLr }
        if let outerMomentum { s.outerMomentum = outerMomentum }
        if let seedValue { s.seedValue = seedValue }
        if let checkpoint { s.checkpoint = checkpoint }
        if let checkpointEvery { s.checkpointEvery = checkpointEvery }
        if let minPeers { s.minPeers = minPeers }
        if let streams { s.streams = streams }
        if let streamRateMbps { s.streamRateMbps = streamRateMbps }
        if let shutdownGraceS { s.shutdownGraceS = shutdownGraceS }
        if let status { s.status = status }
        if let statusPort { s.statusPort = statusPort }
        if let statusBind { s.statusBind = statusBind }
        if let initFrom { s.initFrom = initFrom }
    }
}
