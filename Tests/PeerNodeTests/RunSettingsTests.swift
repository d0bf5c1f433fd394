import Foundation
import Testing
@testable import PeerNode

/// The one settings type: every key from the config file and from the command line, the order
/// of precedence, the errors, and the key list against the help and docs/operations.md.
@Suite struct RunSettingsTests {
    /// Every key with a value unlike its default, as JSON and as command-line words.
    static let everyKey: [(key: String, json: String, arguments: [String])] = [
        ("seed", #"["10.0.0.1:7700", "10.0.0.2:7700"]"#, ["--seed", "10.0.0.1:7700", "--seed", "10.0.0.2:7700"]),
        ("listen", #""127.0.0.2:7700""#, ["--listen", "127.0.0.2:7700"]),
        ("data-listen", #""127.0.0.2:7701""#, ["--data-listen", "127.0.0.2:7701"]),
        ("advertise", #""peer-1.example""#, ["--advertise", "peer-1.example"]),
        ("model", #""gin""#, ["--model", "gin"]),
        ("data", #""freesolv""#, ["--data", "freesolv"]),
        ("data-dir", #""/srv/data""#, ["--data-dir", "/srv/data"]),
        ("data-format", #""graph-regression""#, ["--data-format", "graph-regression"]),
        ("shard-index", "2", ["--shard-index", "2"]),
        ("shard-count", "3", ["--shard-count", "3"]),
        ("inner-steps", "7", ["--inner-steps", "7"]),
        ("outer-steps", "9", ["--outer-steps", "9"]),
        ("quant", #""int8-zp""#, ["--quant", "int8-zp"]),
        ("mode", #""async""#, ["--mode", "async"]),
        ("outer-lr", "0.5", ["--outer-lr", "0.5"]),
        ("outer-momentum", "0.8", ["--outer-momentum", "0.8"]),
        ("seed-value", "42", ["--seed-value", "42"]),
        ("cluster-key-file", #""/etc/peernode/key""#, ["--cluster-key-file", "/etc/peernode/key"]),
        ("plaintext", "true", ["--plaintext"]),
        ("tls-cert", #""/etc/peernode/node.pem""#, ["--tls-cert", "/etc/peernode/node.pem"]),
        ("tls-key", #""/etc/peernode/node.key""#, ["--tls-key", "/etc/peernode/node.key"]),
        ("tls-ca", #""/etc/peernode/ca.pem""#, ["--tls-ca", "/etc/peernode/ca.pem"]),
        ("checkpoint", #""/var/lib/peernode/c.ckpt""#, ["--checkpoint", "/var/lib/peernode/c.ckpt"]),
        ("checkpoint-every", "4", ["--checkpoint-every", "4"]),
        ("min-peers", "3", ["--min-peers", "3"]),
        ("heartbeat-ms", "250", ["--heartbeat-ms", "250"]),
        ("heartbeat-timeout-ms", "4000", ["--heartbeat-timeout-ms", "4000"]),
        ("join-timeout-s", "30", ["--join-timeout-s", "30"]),
        ("found-after-join-timeout", "true", ["--found-after-join-timeout"]),
        ("fork-after-timeouts", "5", ["--fork-after-timeouts", "5"]),
        ("streams", "2", ["--streams", "2"]),
        ("stream-rate-mbps", "100", ["--stream-rate-mbps", "100"]),
        ("log-level", #""debug""#, ["--log-level", "debug"]),
        ("shutdown-grace-s", "20", ["--shutdown-grace-s", "20"]),
        ("status", "false", ["--no-status"]),
        ("status-port", "9100", ["--status-port", "9100"]),
        ("status-bind", #""0.0.0.0""#, ["--status-bind", "0.0.0.0"]),
        ("init-from", #""/srv/w.safetensors""#, ["--init-from", "/srv/w.safetensors"]),
        ("ring-order", #""joined""#, ["--ring-order", "joined"]),
        ("probe-interval-s", "12.5", ["--probe-interval-s", "12.5"]),
    ]

    /// The stored properties by name, printed: to compare two settings field by field.
    static func fields(_ s: RunSettings) -> [String: String] {
        Dictionary(uniqueKeysWithValues: Mirror(reflecting: s).children.map { ($0.label!, String(describing: $0.value)) })
    }

    static func withConfig<T>(_ json: String, _ body: (String) throws -> T) throws -> T {
        let path = NSTemporaryDirectory() + "peernode-settings-\(UUID().uuidString).json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    static func settings(_ arguments: [String]) throws -> RunSettings {
        var command = try RunCommand.parse(arguments)
        try command.validate()
        return try command.settings()
    }

    @Test func theTableCoversEveryKey() {
        #expect(Self.everyKey.map(\.key) == RunSettings.CodingKeys.allCases.map(\.rawValue))
    }

    /// Each key, alone in a file and alone on a command line, changes its field (and only it) to
    /// the same value; all of them together change every field.
    @Test func everyKeyFromTheFileAndFromTheCommandLine() throws {
        let defaults = Self.fields(RunSettings())
        var changedFromFile = Set<String>()
        for entry in Self.everyKey {
            // Keys that only validate together with another (a data set of gin, a shard below the count).
            let companion: [String: (json: String, arguments: [String])] = [
                "data": (#", "model": "gin""#, ["--model", "gin"]),
                "shard-index": (#", "shard-count": 3"#, ["--shard-count", "3"]),
                "found-after-join-timeout": (#", "seed": "10.0.0.1:7700", "join-timeout-s": 5"#,
                                             ["--seed", "10.0.0.1:7700", "--join-timeout-s", "5"]),
                // The certificate settings go together.
                "tls-cert": (#", "tls-key": "/k", "tls-ca": "/c""#, ["--tls-key", "/k", "--tls-ca", "/c"]),
                "tls-key": (#", "tls-cert": "/c", "tls-ca": "/a""#, ["--tls-cert", "/c", "--tls-ca", "/a"]),
                "tls-ca": (#", "tls-cert": "/c", "tls-key": "/k""#, ["--tls-cert", "/c", "--tls-key", "/k"]),
            ]
            let extra = companion[entry.key] ?? ("", [])
            let fromFile = try Self.withConfig("{\"\(entry.key)\": \(entry.json)\(extra.json)}") { path in
                try Self.settings(["--config", path])
            }
            let fromCommandLine = try Self.settings(entry.arguments + extra.arguments)
            #expect(Self.fields(fromFile) == Self.fields(fromCommandLine), "\(entry.key)")
            let changed = Self.fields(fromFile).filter { defaults[$0.key] != $0.value }.map(\.key)
            #expect(!changed.isEmpty, "\(entry.key) changed nothing")
            changedFromFile.formUnion(changed)
        }
        #expect(changedFromFile == Set(defaults.keys), "fields no key reaches: \(Set(defaults.keys).subtracting(changedFromFile))")

        // All together, but for --plaintext, which contradicts the certificates.
        let together = Self.everyKey.filter { $0.key != "plaintext" }
        let all = "{" + together.map { "\"\($0.key)\": \($0.json)" }.joined(separator: ", ") + "}"
        let fromFile = try Self.withConfig(all) { try RunSettings.load(configFile: $0) }
        let fromCommandLine = try Self.settings(together.flatMap(\.arguments))
        #expect(Self.fields(fromFile) == Self.fields(fromCommandLine))
        #expect(Self.fields(fromFile).filter { $0.key != "plaintext" }.allSatisfy { defaults[$0.key] != $0.value })
    }

    @Test func theCommandLineWinsOverTheFileAndTheFileOverTheDefaults() throws {
        let s = try Self.withConfig(#"{"inner-steps": 3, "outer-steps": 5, "quant": "none", "seed": "10.0.0.9:1"}"#) { path in
            try Self.settings(["--config", path, "--outer-steps", "2", "--seed", "10.0.0.8:1,10.0.0.7:1"])
        }
        #expect(s.innerSteps == 3)
        #expect(s.outerSteps == 2)
        #expect(s.quant == .none)
        #expect(s.seeds.map(\.description) == ["10.0.0.8:1", "10.0.0.7:1"])
        #expect(s.checkpointEvery == RunSettings().checkpointEvery)
    }

    /// Parsing (which validates) reads the file; `run()` uses what it read, not the file again.
    @Test func theConfigFileIsReadOnceWhenTheCommandIsParsed() throws {
        for name in ["run", "coordinator"] {
            let parsed = try Self.withConfig(#"{"heartbeat-ms": 300}"#) { path in
                try PeerNodeCommand.parseAsRoot([name, "--config", path])
            }
            // The file is gone now.
            let resolved = (parsed as? RunCommand)?.resolved ?? (parsed as? CoordinatorCommand)?.resolved
            #expect(resolved?.heartbeatMs == 300, "\(name)")
        }
    }

    @Test(arguments: [
        (#"{"inner-step": 3}"#, #"unknown setting "inner-step""#),
        (#"{"inner-steps": "3"}"#, #""inner-steps" must be a whole number"#),
        (#"{"inner-steps": 2.5}"#, #""inner-steps" must be a whole number"#),
        (#"{"seed": ["10.0.0.1:1", 7]}"#, #""seed" must be a string or a list of strings"#),
        (#"{"outer-lr": "fast"}"#, #""outer-lr" must be a number"#),
        (#"{"status": "yes"}"#, #""status" must be true or false"#),
        (#"{"listen": 7700}"#, #""listen" must be a string"#),
        (#"{"seed": 7}"#, #""seed" must be a string or a list of strings"#),
        (#"{"seed": "10.0.0.1:1,nowhere"}"#, #""seed": must be HOST:PORT, got 'nowhere'"#),
        (#"{"listen": "nowhere"}"#, #""listen": must be HOST:PORT, got 'nowhere'"#),
        (#"{"model": "bert"}"#, #""model": must be one of gcn, gin, moe, got 'bert'"#),
        (#"{"log-level": "loud"}"#, #""log-level": must be one of"#),
        (#"{"advertise": null}"#, #""advertise" must be a string, not null"#),
        (#"[1, 2]"#, "one JSON object"),
        (#"{"inner-steps": 3"#, "one JSON object"),
    ])
    func badFilesAreRefusedInOneLineNamingTheKey(json: String, message: String) throws {
        let error = try Self.withConfig(json) { path in
            #expect(throws: RunError.self) { try RunSettings.load(configFile: path) }
            do {
                _ = try RunSettings.load(configFile: path)
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(error.contains(message), "\(error)")
        #expect(!error.contains("\n"), "\(error)")
    }

    @Test func aValidatedCommandLineIsRefusedAsAUsageError() throws {
        for arguments in [["--model", "bert"], ["--quant", "int4"], ["--seed", "nowhere"], ["--listen", "0.0.0.0:1"]] {
            #expect(throws: (any Error).self, "\(arguments)") { try Self.settings(arguments) }
        }
    }

    @Test func theClusterFingerprintKeepsItsForm() throws {
        #expect(RunSettings().clusterFingerprint(parameters: 12)
                == "model=moe parameters=12 quant=int8 mode=sync streams=1 outer_lr=0.7 outer_momentum=0.9")
        let s = try Self.settings(["--model", "gin", "--quant", "int8-zp", "--mode", "async", "--streams", "2", "--outer-lr", "0.5"])
        #expect(s.clusterFingerprint(parameters: 3)
                == "model=gin parameters=3 quant=int8-zp mode=async streams=2 outer_lr=0.5 outer_momentum=0.9")
    }

    /// The keys are listed in three places people read: CodingKeys (the file), `run --help`
    /// (the options) and docs/operations.md (the table). They must be the same set.
    @Test func theKeysAreTheOptionsOfRunAndTheRowsOfTheDocs() throws {
        let keys = Set(RunSettings.CodingKeys.allCases.map(\.rawValue))
        let help = RunCommand.helpMessage(columns: 400)
        let options = Set(help.matches(of: /(?:^|[\s,])--(?:\[no-\])?([a-z][a-z0-9-]*)/.anchorsMatchLineEndings())
            .map { String($0.output.1) })
            .subtracting(["config", "help", "version", "no-status"])
        #expect(options == keys, "only in help: \(options.subtracting(keys)); only keys: \(keys.subtracting(options))")

        let docsURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../docs/operations.md").standardized
        let docs = try String(contentsOf: docsURL, encoding: .utf8)
        // The key table of "Config file": rows `| `key` | type | default | meaning |`.
        let section = try #require(docs.firstRange(of: "## Config file").map { docs[$0.upperBound...] })
        let table = section[..<(section.firstRange(of: "\n## ")?.lowerBound ?? section.endIndex)]
        let rows = Set(table.matches(of: /^\| `([a-z][a-z0-9-]*)` \|/.anchorsMatchLineEndings()).map { String($0.output.1) })
        #expect(rows == keys, "only in docs: \(rows.subtracting(keys)); not in docs: \(keys.subtracting(rows))")
    }
}
