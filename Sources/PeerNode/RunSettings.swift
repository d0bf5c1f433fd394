import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Logging
import Models
import Transport

/// Everything `peernode run` and `peernode coordinator` need, resolved in this order: built-in
/// defaults (the initial values below), then the config file (`--config`), then the command line.
///
/// The config file is a JSON object whose keys are the long option names (`"inner-steps": 50`):
/// ``CodingKeys`` is the one list of them, which docs/operations.md and `peernode run --help`
/// are checked against (Tests/PeerNodeTests/RunSettingsTests.swift). JSON because Foundation
/// reads it strictly and every tool writes it; unknown keys and values of the wrong type are
/// errors naming the key, not silently ignored, so a misspelt setting never runs a peer with a
/// default the operator meant to change. See docs/operations.md ("Config file").
struct RunSettings: Decodable, Sendable {
    /// Members to join through, tried in order, then again with backoff (empty: found a cluster).
    var seeds: [HostPort] = []
    var listen = HostPort(host: "127.0.0.1", port: 0)
    var dataListen = HostPort(host: "127.0.0.1", port: 0)
    /// The host other nodes dial to reach this one (control and data); the listen host when nil.
    var advertise: String?
    var model = ModelKind.moe
    var data: String?
    var dataDir: String?
    /// The layout of a user's own data in `dataDir` where its files cannot tell (docs/datasets.md).
    var dataFormat: DataFormat?
    var shardIndex = 0
    var shardCount = 1
    var innerSteps = 50
    /// Stop after this shared revision (0: run until stopped).
    var outerSteps = 0
    var quant = PseudoGradientEncoding.int8
    /// sync, or async: the all-reduce of step t overlaps the inner steps of t+1 (docs/diloco.md).
    var mode = DiLoCoOptions.Mode.sync
    /// The outer Nesterov step (DiLoCo paper defaults).
    var outerLr = 0.7
    var outerMomentum = 0.9
    var seedValue: UInt64 = 1
    var clusterKeyFile: String?
    /// Links in plaintext: only for trusted networks, and on every node or none.
    var plaintext = false
    /// Mutual TLS with certificates instead of the key-derived pre-shared key: all three or none.
    var tlsCert: String?
    var tlsKey: String?
    var tlsCa: String?
    var checkpoint: String?
    var checkpointEvery = 10
    var minPeers = 1
    var heartbeatMs = 500
    var heartbeatTimeoutMs = 3000
    /// Give up joining through the seeds at start after this many seconds (0: keep trying).
    var joinTimeoutS = 0.0
    /// With seeds and a join timeout: found the cluster when no seed answered in time, instead
    /// of failing (the first pod of a StatefulSet: founds a new cluster, rejoins a running one).
    var foundAfterJoinTimeout = false
    /// Heartbeat timeouts without a quorum before the reachable part forks a new line (0: never).
    var forkAfterTimeouts = 3
    /// TCP streams to each ring neighbour (the same on every member).
    var streams = 1
    /// Send-rate cap per ring stream in Mbit/s (0: none).
    var streamRateMbps = 0.0
    var logLevel = LogLevel.info
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
    /// `measured`: the coordinator orders the ring from the links members probe; `joined`: view order.
    var ringOrder = RingOrderMode.measured
    /// How often each member probes its links again (the links to new members at once).
    var probeIntervalS = 60.0

    /// The keys a config file may hold: the long option names, in the order docs/operations.md
    /// lists them. The only list of them.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case seeds = "seed", listen, dataListen = "data-listen", advertise, model, data, dataDir = "data-dir",
             dataFormat = "data-format", shardIndex = "shard-index", shardCount = "shard-count", innerSteps = "inner-steps",
             outerSteps = "outer-steps", quant, mode, outerLr = "outer-lr", outerMomentum = "outer-momentum",
             seedValue = "seed-value", clusterKeyFile = "cluster-key-file", plaintext, tlsCert = "tls-cert", tlsKey = "tls-key",
             tlsCa = "tls-ca", checkpoint, checkpointEvery = "checkpoint-every",
             minPeers = "min-peers", heartbeatMs = "heartbeat-ms", heartbeatTimeoutMs = "heartbeat-timeout-ms",
             joinTimeoutS = "join-timeout-s", foundAfterJoinTimeout = "found-after-join-timeout", forkAfterTimeouts = "fork-after-timeouts", streams,
             streamRateMbps = "stream-rate-mbps", logLevel = "log-level", shutdownGraceS = "shutdown-grace-s", status,
             statusPort = "status-port", statusBind = "status-bind", initFrom = "init-from", ringOrder = "ring-order",
             probeIntervalS = "probe-interval-s"
    }

    init() {}

    /// The defaults with what the file holds over them. A key the file lacks keeps its default;
    /// `null` is a wrong type like any other (it is not a way to say "default").
    init(from decoder: any Decoder) throws {
        let all = try decoder.container(keyedBy: AnyKey.self)
        if let unknown = all.allKeys.map(\.stringValue).sorted().first(where: { CodingKeys(stringValue: $0) == nil }) {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(unknown)], debugDescription: "unknown setting"))
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var s = RunSettings()
        func value<T: Decodable>(_ key: CodingKeys, _: T.Type) throws -> T {
            do {
                return try c.decode(T.self, forKey: key)
            } catch DecodingError.typeMismatch(_, let context) {
                // Named by the setting's type, not by the JSON value Foundation met (SeedList).
                throw DecodingError.typeMismatch(T.self, .init(codingPath: [key], debugDescription: context.debugDescription))
            } catch let error as DecodingError {
                throw error
            } catch {
                // Foundation on Linux throws its internal JSON error for 2.5 as an Int, which
                // only becomes a DecodingError (without the key) at the top.
                throw DecodingError.typeMismatch(T.self, .init(codingPath: [key], debugDescription: "\(error)"))
            }
        }
        func take<T: Decodable>(_ key: CodingKeys, _ field: WritableKeyPath<RunSettings, T>) throws {
            if c.contains(key) { s[keyPath: field] = try value(key, T.self) }
        }
        func take<T: Decodable>(_ key: CodingKeys, _ field: WritableKeyPath<RunSettings, T?>) throws {
            if c.contains(key) { s[keyPath: field] = try value(key, T.self) }
        }
        // Exhaustive: a key added to CodingKeys without being read here does not compile.
        for key in CodingKeys.allCases {
            switch key {
            case .seeds: if c.contains(key) { s.seeds = try value(key, SeedList.self).addresses }
            case .listen: try take(key, \.listen)
            case .dataListen: try take(key, \.dataListen)
            case .advertise: try take(key, \.advertise)
            case .model: try take(key, \.model)
            case .data: try take(key, \.data)
            case .dataDir: try take(key, \.dataDir)
            case .dataFormat: try take(key, \.dataFormat)
            case .shardIndex: try take(key, \.shardIndex)
            case .shardCount: try take(key, \.shardCount)
            case .innerSteps: try take(key, \.innerSteps)
            case .outerSteps: try take(key, \.outerSteps)
            case .quant: try take(key, \.quant)
            case .mode: try take(key, \.mode)
            case .outerLr: try take(key, \.outerLr)
            case .outerMomentum: try take(key, \.outerMomentum)
            case .seedValue: try take(key, \.seedValue)
            case .clusterKeyFile: try take(key, \.clusterKeyFile)
            case .plaintext: try take(key, \.plaintext)
            case .tlsCert: try take(key, \.tlsCert)
            case .tlsKey: try take(key, \.tlsKey)
            case .tlsCa: try take(key, \.tlsCa)
            case .checkpoint: try take(key, \.checkpoint)
            case .checkpointEvery: try take(key, \.checkpointEvery)
            case .minPeers: try take(key, \.minPeers)
            case .heartbeatMs: try take(key, \.heartbeatMs)
            case .heartbeatTimeoutMs: try take(key, \.heartbeatTimeoutMs)
            case .joinTimeoutS: try take(key, \.joinTimeoutS)
            case .foundAfterJoinTimeout: try take(key, \.foundAfterJoinTimeout)
            case .forkAfterTimeouts: try take(key, \.forkAfterTimeouts)
            case .streams: try take(key, \.streams)
            case .streamRateMbps: try take(key, \.streamRateMbps)
            case .logLevel: try take(key, \.logLevel)
            case .shutdownGraceS: try take(key, \.shutdownGraceS)
            case .status: try take(key, \.status)
            case .statusPort: try take(key, \.statusPort)
            case .statusBind: try take(key, \.statusBind)
            case .initFrom: try take(key, \.initFrom)
            case .ringOrder: try take(key, \.ringOrder)
            case .probeIntervalS: try take(key, \.probeIntervalS)
            }
        }
        self = s
    }

    /// Config files are small; a bigger one is a wrong path, not a config.
    static let maxConfigBytes = 1 << 20

    /// The defaults with the config file at `path` over them. Read once, by the command's
    /// `validate()`; every error is one line that names the file and, where there is one, the key.
    static func load(configFile path: String) throws -> RunSettings {
        let bytes: Data
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            if let size = attributes[.size] as? Int, size > Self.maxConfigBytes {
                throw RunError("config file \(path) is \(size) bytes; a config is at most \(Self.maxConfigBytes)")
            }
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch let error as RunError {
            throw error
        } catch {
            throw RunError("cannot read config file \(path): \((error as NSError).localizedDescription)")
        }
        do {
            return try JSONDecoder().decode(RunSettings.self, from: bytes)
        } catch let error as DecodingError {
            throw RunError("config file \(path): \(Self.describe(error))")
        }
    }

    /// A decoding error as one line: the key and what is wrong with its value.
    static func describe(_ error: DecodingError) -> String {
        func key(_ context: DecodingError.Context) -> String? { context.codingPath.first.map { "\"\($0.stringValue)\"" } }
        switch error {
        case .typeMismatch(let type, let context):
            guard let name = key(context) else { return "must hold one JSON object of settings" }
            return "\(name) must be \(Self.expectation(type))"
        case .valueNotFound(let type, let context):
            return "\(key(context) ?? "a value") must be \(Self.expectation(type)), not null"
        case .dataCorrupted(let context):
            guard let name = key(context) else {
                return "must hold one JSON object of settings (\(context.debugDescription))"
            }
            if context.debugDescription == "unknown setting" {
                return "unknown setting \(name) (known: \(CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")))"
            }
            // Foundation's words for a number that does not fit, or ours for a bad choice.
            return "\(name): \(context.debugDescription)"
        case .keyNotFound(let key, _):
            return "\"\(key.stringValue)\" is missing"
        @unknown default:
            return "\(error)"
        }
    }

    private static func expectation(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: "true or false"
        case is Int.Type, is UInt64.Type: "a whole number"
        case is Double.Type: "a number"
        case is String.Type: "a string"
        case is HostPort.Type: "a string, HOST:PORT"
        case is SeedList.Type: "a string or a list of strings (HOST:PORT)"
        default: "a value of type \(type)"
        }
    }

    /// Checks every value; messages name the option as the user wrote it.
    func validate() throws {
        if let advertise, advertise.isEmpty || advertise.contains(" ") || HostPort.isWildcard(advertise) {
            throw RunError("--advertise must be a host name or address other nodes can dial, got '\(advertise)'")
        }
        for (name, value) in [("listen", listen), ("data-listen", dataListen)] where advertise == nil {
            if HostPort.isWildcard(value.host) {
                throw RunError("--\(name) \(value) listens on every interface: say with --advertise which address other nodes dial")
            }
        }
        if let data, !model.datasets.contains(data) {
            throw RunError("model \(model.rawValue) trains on \(model.datasets.joined(separator: ", ")), not '\(data)'")
        }
        guard shardCount >= 1, (0..<shardCount).contains(shardIndex) else { throw RunError("--shard-index must be in 0..<--shard-count") }
        guard innerSteps >= 1, outerSteps >= 0 else { throw RunError("--inner-steps ≥ 1 and --outer-steps ≥ 0") }
        guard checkpointEvery <= 1_000_000_000, minPeers <= 4096 else { throw RunError("--checkpoint-every or --min-peers is out of range") }
        guard outerLr.isFinite, outerLr > 0 else { throw RunError("--outer-lr must be positive") }
        guard outerMomentum.isFinite, (0..<1).contains(outerMomentum) else { throw RunError("--outer-momentum must be in [0, 1)") }
        guard heartbeatMs > 0, heartbeatTimeoutMs > heartbeatMs else { throw RunError("need 0 < --heartbeat-ms < --heartbeat-timeout-ms") }
        // Bounds that keep the nanosecond conversions far from overflow; an hour is already absurd.
        guard heartbeatTimeoutMs <= 3_600_000 else { throw RunError("--heartbeat-timeout-ms must be at most 3600000 (an hour)") }
        guard joinTimeoutS.isFinite, (0...86_400).contains(joinTimeoutS) else { throw RunError("--join-timeout-s must be in 0...86400 (0: keep trying)") }
        if foundAfterJoinTimeout, seeds.isEmpty || joinTimeoutS == 0 {
            throw RunError("--found-after-join-timeout needs --seed and a --join-timeout-s above 0")
        }
        guard (0...1000).contains(forkAfterTimeouts) else { throw RunError("--fork-after-timeouts must be in 0...1000 (0: never fork)") }
        guard probeIntervalS >= 0.1 && probeIntervalS <= 86400 else { throw RunError("--probe-interval-s must be in 0.1...86400") }
        guard checkpointEvery >= 1 else { throw RunError("--checkpoint-every must be positive") }
        guard minPeers >= 1 else { throw RunError("--min-peers must be positive") }
        if let problem = Self.streamProblem(streams: streams, rateMbps: streamRateMbps) { throw RunError(problem) }
        guard shutdownGraceS.isFinite, (0...86_400).contains(shutdownGraceS) else { throw RunError("--shutdown-grace-s must be in 0...86400") }
        guard (0...65535).contains(statusPort) else { throw RunError("--status-port must be in 0...65535") }
        guard !statusBind.isEmpty, !statusBind.contains(" ") else { throw RunError("--status-bind must be an address, got '\(statusBind)'") }
        let certificates = [tlsCert, tlsKey, tlsCa].compactMap { $0 }.count
        guard certificates == 0 || certificates == 3 else { throw RunError("--tls-cert, --tls-key and --tls-ca go together: give all three or none") }
        guard !(plaintext && certificates > 0) else { throw RunError("--plaintext and --tls-cert contradict each other: choose one") }
    }

    /// The cluster key from `cluster-key-file`, else `$PEERNODE_CLUSTER_KEY`, with the link
    /// security asked for (TLS keyed by it unless `--plaintext` or certificates); one-line errors.
    func clusterKey() throws -> ClusterKey {
        do {
            let key = try ClusterKey.load(file: clusterKeyFile)
            if plaintext { return key.with(security: .plaintext) }
            if let tlsCert, let tlsKey, let tlsCa {
                return key.with(security: .tls(try TLSContext(certificate: tlsCert, privateKey: tlsKey, authority: tlsCa)))
            }
            return key
        } catch {
            throw RunError("\(error)")
        }
    }

    /// The seeds as the membership layer takes them.
    var seedAddresses: [(host: String, port: Int)] { seeds.map { ($0.host, $0.port) } }

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
        options.ringOrder = ringOrder
        return options
    }

    /// Logs go to stderr at `--log-level` (stdout is for the `ready` and `outer` lines).
    func bootstrapLogging() {
        let level = logLevel.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// What every ring member must share, checked when this node joins: the model and its size
    /// (the shared state's layout), the pseudo-gradient encoding and the DiLoCo mode (the
    /// collectives' layout), the ring's stream count, and the outer optimizer (bit-parity).
    /// The text is compared between versions too: keep its form.
    func clusterFingerprint(parameters: Int) -> String {
        "model=\(model.rawValue) parameters=\(parameters) quant=\(quant.rawValue) mode=\(mode.rawValue) streams=\(streams) "
            + "outer_lr=\(outerLr) outer_momentum=\(outerMomentum)"
    }

    /// The host announced to the cluster for an address this node listens on.
    func announced(_ listenAddress: HostPort) -> String {
        advertise ?? listenAddress.host
    }
}

/// `"seed"` in a config file: one address, several separated by commas, or a list of them.
private struct SeedList: Decodable {
    var addresses: [HostPort]

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let texts = try (try? c.decode(String.self)).map { [$0] } ?? c.decode([String].self)
        addresses = try splitSeeds(texts).map { text in
            guard let address = HostPort(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                        debugDescription: "must be HOST:PORT, got '\(text)'"))
            }
            return address
        }
    }
}

/// `--seed a --seed b,c` → [a, b, c]: both forms, so a manifest can pass one argument.
func splitSeeds(_ values: [String]) -> [String] {
    values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// `--listen`, `--data-listen`, `"listen"`, ...: parsed once, where they are read.
extension HostPort: ExpressibleByArgument, Decodable {
    init?(argument: String) { self.init(argument) }

    init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = HostPort(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "must be HOST:PORT, got '\(text)'"))
        }
        self = value
    }
}

/// A JSON object key of any name: to find the ones ``RunSettings/CodingKeys`` lacks.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

// MARK: - Choices

/// A setting with a fixed set of values: parsed from the command line and decoded from the config
/// file by the same raw values, with one error that lists them.
protocol SettingChoice: CaseIterable, RawRepresentable, ExpressibleByArgument, Decodable, Sendable where RawValue == String {}

extension SettingChoice {
    static var choices: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// The `Decodable` conformance of every choice: a string, one of the raw values.
    init(settingFrom decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "must be one of \(Self.choices), got '\(text)'"))
        }
        self = value
    }
}

// The library types are public, so their conformance's initializer must be too.
extension ModelKind: SettingChoice {
    public init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }
}
extension DataFormat: SettingChoice {
    public init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }
}
extension DiLoCoOptions.Mode: SettingChoice {
    public init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }
}
extension DiLoCoOptions.AsyncStart: ExpressibleByArgument {}
extension RingOrderMode: SettingChoice {
    public init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }
}

/// `--quant`: how the pseudo-gradient is encoded on the wire.
enum PseudoGradientEncoding: String, SettingChoice {
    case int8
    case int8ZeroPoint = "int8-zp"
    case none

    init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }

    var quantization: Quantization {
        switch self {
        case .int8: .int8MinMax
        case .int8ZeroPoint: .int8ZeroPoint
        case .none: .none
        }
    }
}

/// `--log-level`: swift-log's levels by their names.
enum LogLevel: String, SettingChoice {
    case trace, debug, info, notice, warning, error, critical

    init(from decoder: any Decoder) throws { try self.init(settingFrom: decoder) }

    var level: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        case .critical: .critical
        }
    }
}
