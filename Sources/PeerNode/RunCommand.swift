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
        discussion: "Settings come from the built-in defaults, then --config FILE (a JSON object keyed by the long option names: every option below except --config), then the command line. Without --outer-steps the peer keeps training until stopped (SIGTERM or Ctrl-C: a graceful leave).")

    @OptionGroup(title: "Node") var node: NodeOptions
    @OptionGroup(title: "Model and data") var data: DataOptions
    @OptionGroup(title: "Training") var training: TrainingOptions

    /// Resolved once, by `validate()` (which reads the config file), for `run()`.
    private(set) var resolved: RunSettings?
    private enum CodingKeys: CodingKey { case node, data, training }

    /// Defaults, then the config file, then what the command line gave.
    func settings() throws -> RunSettings {
        try node.resolve { s in
            data.apply(to: &s)
            training.apply(to: &s)
        }
    }

    /// Settings errors are usage errors: one line naming the option or key, then the usage.
    mutating func validate() throws {
        do {
            resolved = try settings()
        } catch let error as RunError {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        let settings = try resolved ?? settings()
        settings.bootstrapLogging()
        let peer: PeerService
        do {
            peer = try await PeerService.start(settings: settings)
        } catch let error as JoinTimedOut where settings.foundAfterJoinTimeout {
            // Everything the first attempt opened is closed again; found with a new node id.
            Logger(label: "peernode").notice("no seed registered this node in time: founding the cluster",
                                             metadata: ["reason": "\(error.reason)"])
            var founding = settings
            founding.seeds = []
            peer = try await PeerService.start(settings: founding)
        }
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

/// Start gave up joining through the seeds after `--join-timeout-s`.
struct JoinTimedOut: Error, CustomStringConvertible {
    var reason: String
    var description: String { "cannot start: \(reason)" }
}

/// A runtime failure: reported as one line, without the usage text.
struct RunError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// HOST:PORT with a numeric port (IPv6 hosts in brackets).
struct HostPort: Hashable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

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

