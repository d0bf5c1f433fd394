import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Logging
import Models
import Transport

/// Everything `peernode run` and `peernode coordinator` need, resolved in this order: built-in
/// defaults, then the config file (`--config`), then the command line.
///
/// The config file is a JSON object whose keys are the long option names (`"inner-steps": 50`).
/// JSON because Foundation reads it strictly and every tool writes it; unknown keys are errors,
/// not silently ignored, so a misspelt setting never runs a peer with a default the operator
/// meant to change. See docs/operations.md ("Config file").
struct RunSettings: Sendable {
    var seed: String?
    var listen = "127.0.0.1:0"
    var dataListen = "127.0.0.1:0"
    /// The host other nodes dial to reach this one (control and data); the listen host when nil.
    var advertise: String?
    var model = "moe"
    var data: String?
    var dataDir: String?
    var shardIndex = 0
    var shardCount = 1
    var innerSteps = 50
    var outerSteps = 0
    var quant = "int8"
    /// sync, or async: the all-reduce of step t overlaps the inner steps of t+1 (docs/diloco.md).
    var mode = "sync"
    /// The outer Nesterov step (DiLoCo paper defaults).
    var outerLr = 0.7
    var outerMomentum = 0.9
    var seedValue: UInt64 = 1
    var clusterKeyFile: String?
    var checkpoint: String?
    var checkpointEvery = 10
    var minPeers = 1
    var heartbeatMs = 500
    /// TCP streams to each ring neighbour (the same on every member).
    var streams = 1
    /// Send-rate cap per ring stream in Mbit/s (0: none).
    var streamRateMbps = 0.0
    var heartbeatTimeoutMs = 3000
    /// Give up joining through --seed at start after this many seconds (0: keep trying).
    var joinTimeoutS = 0.0
    /// Heartbeat timeouts without a quorum before the reachable part forks a new line (0: never).
    var forkAfterTimeouts = 3
    var logLevel = "info"
    /// How long SIGTERM waits for the current step to end before the step is aborted.
    var shutdownGraceS = 60.0
    /// Whether to serve the status port at all (`--no-status`: no HTTP listener).
    var status = true
    /// The read-only HTTP status port (0: any free port, reported on the `ready` line).
    var statusPort = 0
    /// Loopback unless the operator says otherwise: the page is unauthenticated.
    var statusBind = "127.0.0.1"
    /// A safetensors file to take θ₀ from instead of the seed's initial parameters.
    var initFrom: String?
    /// The layout of a user's own data in `dataDir` where its files cannot tell (docs/datasets.md).
    var dataFormat: String?
    /// `measured`: the coordinator orders the ring from probed links; `joined`: view order.
    var ringOrder = "measured"
    /// How often each member probes its links again (the links to new members at once).
    var probeIntervalS = 60.0

    /// The keys a config file may hold, in the order docs/operations.md lists them.
    static let keys = ["seed", "listen", "data-listen", "advertise", "model", "data", "data-dir", "shard-index",
                       "shard-count", "inner-steps", "outer-steps", "quant", "mode", "outer-lr", "outer-momentum", "seed-value", "cluster-key-file",
                       "checkpoint", "checkpoint-every", "min-peers", "heartbeat-ms", "heartbeat-timeout-ms",
                       "join-timeout-s", "fork-after-timeouts", "streams", "stream-rate-mbps", "log-level", "shutdown-grace-s",
                       "status", "status-port", "status-bind", "init-from", "data-format", "ring-order", "probe-interval-s"]

    /// Config files are small; a bigger one is a wrong path, not a config.
    static let maxConfigBytes = 1 << 20

    /// Reads `path` over the current values. On any error nothing is changed.
    mutating func apply(configFile path: String) throws {
        let url = URL(fileURLWithPath: path)
        let bytes: Data
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            if let size = attributes[.size] as? Int, size > Self.maxConfigBytes {
                throw RunError("config file \(path) is \(size) bytes; a config is at most \(Self.maxConfigBytes)")
            }
            bytes = try Data(contentsOf: url)
        } catch let error as RunError {
            throw error
        } catch {
            throw RunError("cannot read config file \(path): \((error as NSError).localizedDescription)")
        }
        let entries: [String: ConfigValue]
        do {
            entries = try JSONDecoder().decode([String: ConfigValue].self, from: bytes)
        } catch {
            throw RunError("config file \(path) must hold one JSON object of settings: \(Self.describe(error))")
        }
        var updated = self
        for key in entries.keys.sorted() {
            try updated.set(key, entries[key]!, in: path)
        }
        self = updated
    }

    /// A setting's value as JSON typed it; a quoted number stays a string and is refused where a
    /// number is expected, so the file means what it says.
    enum ConfigValue: Decodable {
        case bool(Bool), integer(Int), number(Double), string(String), other

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let v = try? c.decode(Bool.self) { self = .bool(v) }
            else if let v = try? c.decode(Int.self) { self = .integer(v) }
            else if let v = try? c.decode(Double.self) { self = .number(v) }
            else if let v = try? c.decode(String.self) { self = .string(v) }
            else { self = .other }
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context): return context.debugDescription
        case DecodingError.typeMismatch(_, let context): return context.debugDescription
        default: return "\(error)"
        }
    }

    private mutating func set(_ key: String, _ value: ConfigValue, in path: String) throws {
        func string() throws -> String {
            guard case .string(let s) = value else { throw RunError("config file \(path): \"\(key)\" must be a string") }
            return s
        }
        func int() throws -> Int {
            guard case .integer(let i) = value else { throw RunError("config file \(path): \"\(key)\" must be a whole number") }
            return i
        }
        func double() throws -> Double {
            switch value {
            case .integer(let i): return Double(i)
            case .number(let d): return d
            default: throw RunError("config file \(path): \"\(key)\" must be a number")
            }
        }
        switch key {
        case "seed": seed = try string()
        case "listen": listen = try string()
        case "data-listen": dataListen = try string()
        case "advertise": advertise = try string()
        case "model": model = try string()
        case "data": data = try string()
        case "data-dir": dataDir = try string()
        case "shard-index": shardIndex = try int()
        case "shard-count": shardCount = try int()
        case "inner-steps": innerSteps = try int()
        case "outer-steps": outerSteps = try int()
        case "quant": quant = try string()
        case "mode": mode = try string()
        case "outer-lr": outerLr = try double()
        case "outer-momentum": outerMomentum = try double()
        case "seed-value":
            guard let v = UInt64(exactly: try int()) else { throw RunError("config file \(path): \"seed-value\" must be ≥ 0") }
            seedValue = v
        case "cluster-key-file": clusterKeyFile = try string()
        case "checkpoint": checkpoint = try string()
        case "checkpoint-every": checkpointEvery = try int()
        case "min-peers": minPeers = try int()
        case "heartbeat-ms": heartbeatMs = try int()
        case "heartbeat-timeout-ms": heartbeatTimeoutMs = try int()
        case "join-timeout-s": joinTimeoutS = try double()
        case "fork-after-timeouts": forkAfterTimeouts = try int()
        case "streams": streams = try int()
        case "stream-rate-mbps": streamRateMbps = try double()
        case "log-level": logLevel = try string()
        case "shutdown-grace-s": shutdownGraceS = try double()
        case "status":
            guard case .bool(let on) = value else { throw RunError("config file \(path): \"status\" must be true or false") }
            status = on
        case "status-port": statusPort = try int()
        case "status-bind": statusBind = try string()
        case "init-from": initFrom = try string()
        case "data-format": dataFormat = try string()
        case "ring-order": ringOrder = try string()
        case "probe-interval-s": probeIntervalS = try double()
        default:
            throw RunError("config file \(path): unknown setting \"\(key)\" (known: \(Self.keys.joined(separator: ", ")))")
        }
    }

    /// Checks every value; messages name the option as the user wrote it.
    func validate() throws {
        for (name, value) in [("listen", listen), ("data-listen", dataListen)] + (seed.map { [("seed", $0)] } ?? []) {
            guard HostPort(value) != nil else { throw RunError("--\(name) must be HOST:PORT, got '\(value)'") }
        }
        if let advertise, advertise.isEmpty || advertise.contains(" ") || HostPort.isWildcard(advertise) {
            throw RunError("--advertise must be a host name or address other nodes can dial, got '\(advertise)'")
        }
        for (name, value) in [("listen", listen), ("data-listen", dataListen)] where advertise == nil {
            if HostPort.isWildcard(HostPort(value)!.host) {
                throw RunError("--\(name) \(value) listens on every interface: say with --advertise which address other nodes dial")
            }
        }
        guard RingOrderMode(rawValue: ringOrder) != nil else { throw RunError("--ring-order must be measured or joined, got '\(ringOrder)'") }
        guard probeIntervalS >= 0.1 && probeIntervalS <= 86400 else { throw RunError("--probe-interval-s must be in 0.1...86400") }
        guard let kind = ModelKind(rawValue: model) else { throw RunError("--model must be moe, gin or gcn, got '\(model)'") }
        if let data, !kind.datasets.contains(data) {
            throw RunError("model \(model) trains on \(kind.datasets.joined(separator: ", ")), not '\(data)'")
        }
        if let dataFormat, DataFormat(rawValue: dataFormat) == nil {
            throw RunError("--data-format must be one of \(DataFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(dataFormat)'")
        }
        guard shardCount >= 1, (0..<shardCount).contains(shardIndex) else { throw RunError("--shard-index must be in 0..<--shard-count") }
        guard innerSteps >= 1, outerSteps >= 0 else { throw RunError("--inner-steps ≥ 1 and --outer-steps ≥ 0") }
        guard checkpointEvery <= 1_000_000_000, minPeers <= 4096 else { throw RunError("--checkpoint-every or --min-peers is out of range") }
        guard DiLoCoOptions.Mode(rawValue: mode) != nil else { throw RunError("--mode must be sync or async, got '\(mode)'") }
        guard outerLr.isFinite, outerLr > 0 else { throw RunError("--outer-lr must be positive") }
        guard outerMomentum.isFinite, (0..<1).contains(outerMomentum) else { throw RunError("--outer-momentum must be in [0, 1)") }
        guard WorkerSettings.quantization(quant) != nil else { throw RunError("--quant must be int8, int8-zp or none, got '\(quant)'") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw RunError("unknown --log-level '\(logLevel)'") }
        guard heartbeatMs > 0, heartbeatTimeoutMs > heartbeatMs else { throw RunError("need 0 < --heartbeat-ms < --heartbeat-timeout-ms") }
        // Bounds that keep the nanosecond conversions far from overflow; an hour is already absurd.
        guard heartbeatTimeoutMs <= 3_600_000 else { throw RunError("--heartbeat-timeout-ms must be at most 3600000 (an hour)") }
        guard joinTimeoutS.isFinite, (0...86_400).contains(joinTimeoutS) else { throw RunError("--join-timeout-s must be in 0...86400 (0: keep trying)") }
        guard (0...1000).contains(forkAfterTimeouts) else { throw RunError("--fork-after-timeouts must be in 0...1000 (0: never fork)") }
        guard checkpointEvery >= 1 else { throw RunError("--checkpoint-every must be positive") }
        guard minPeers >= 1 else { throw RunError("--min-peers must be positive") }
        if let problem = Self.streamProblem(streams: streams, rateMbps: streamRateMbps) { throw RunError(problem) }
        guard shutdownGraceS.isFinite, (0...86_400).contains(shutdownGraceS) else { throw RunError("--shutdown-grace-s must be in 0...86400") }
        guard (0...65535).contains(statusPort) else { throw RunError("--status-port must be in 0...65535") }
        guard !statusBind.isEmpty, !statusBind.contains(" ") else { throw RunError("--status-bind must be an address, got '\(statusBind)'") }
    }

    /// The cluster key from `cluster-key-file`, else `$PEERNODE_CLUSTER_KEY`; its error is one line.
    func clusterKey() throws -> ClusterKey {
        do {
            return try ClusterKey.load(file: clusterKeyFile)
        } catch {
            throw RunError("\(error)")
        }
    }

    var communicatorOptions: CommunicatorOptions {
        var options = CommunicatorOptions()
        options.streams = streams
        options.maxStreamRate = Self.bytesPerSecond(mbps: streamRateMbps)
        return options
    }

    /// What is wrong with `--streams`/`--stream-rate-mbps` (run and bench share them), if anything.
    static func streamProblem(streams: Int, rateMbps: Double) -> String? {
        guard (1...CommunicatorOptions.maxStreams).contains(streams) else {
            return "--streams must be in 1...\(CommunicatorOptions.maxStreams)"
        }
        guard rateMbps.isFinite, rateMbps == 0 || (0.01...1_000_000).contains(rateMbps) else {
            return "--stream-rate-mbps must be 0 (no cap) or in 0.01...1000000"
        }
        return nil
    }

    /// Mbit/s to the byte rate of a pacing cap (0: no cap).
    static func bytesPerSecond(mbps: Double) -> UInt64 { UInt64(mbps * 1e6 / 8) }

    var membershipOptions: MembershipOptions {
        var options = MembershipOptions()
        options.heartbeatInterval = .milliseconds(Int64(heartbeatMs))
        options.heartbeatTimeout = .milliseconds(Int64(heartbeatTimeoutMs))
        options.joinTimeout = joinTimeoutS > 0 ? .milliseconds(Int64(joinTimeoutS * 1000)) : nil
        options.forkAfterTimeouts = forkAfterTimeouts > 0 ? forkAfterTimeouts : nil
        options.ringOrder = RingOrderMode(rawValue: ringOrder) ?? .measured
        return options
    }

    /// An argument-parser `validate()`: settings errors as usage errors.
    static func validate(_ settings: () throws -> RunSettings) throws {
        do {
            _ = try settings()
        } catch let error as RunError {
            throw ValidationError(error.description)
        }
    }

    /// Logs go to stderr at `--log-level` (stdout is for the `ready` and `outer` lines).
    func bootstrapLogging() {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// What every ring member must share, checked when this node joins: the model and its size
    /// (the shared state's layout), the pseudo-gradient encoding and the DiLoCo mode (the
    /// collectives' layout), the ring's stream count, and the outer optimizer (bit-parity).
    func clusterFingerprint(parameters: Int, model: ModelKind) -> String {
        "model=\(model.rawValue) parameters=\(parameters) quant=\(quant) mode=\(mode) streams=\(streams) "
            + "outer_lr=\(outerLr) outer_momentum=\(outerMomentum)"
    }

    /// The host announced to the cluster for an address this node listens on.
    func announced(_ listenAddress: String) -> String {
        advertise ?? HostPort(listenAddress)!.host
    }
}
