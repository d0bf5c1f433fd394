import ArgumentParser
import Collectives
import Foundation
import Logging
import ServiceLifecycle
import Transport

/// `peernode coordinator`: a node that only coordinates. It is in the view and votes, may found
/// the cluster or join one, but holds no ring position and trains nothing, so the coordinator
/// role can live on a small machine that never slows the all-reduce. It is not special: if it
/// dies, the next node in view order takes over, as with any coordinator.
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator", abstract: "Run a coordinate-only node (founds the cluster, or joins through --seed).")

    @Option(help: "JSON file of settings keyed by long option name (the training settings are ignored).") var config: String?
    @Option(help: "A member to join through, HOST:PORT. Omit to found a cluster.") var seed: String?
    @Option(help: "Control address to listen on, HOST:PORT (port 0: any). Default 127.0.0.1:0.") var listen: String?
    @Option(help: "Host other nodes dial to reach this one (needed when listening on 0.0.0.0 or ::).") var advertise: String?
    @Option(name: .customLong("cluster-key-file"), help: "File holding the cluster key (else $PEERNODE_CLUSTER_KEY).")
    var clusterKeyFile: String?
    @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval. Default 500.") var heartbeatMs: Int?
    @Option(name: .customLong("heartbeat-timeout-ms"), help: "A member silent this long is removed. Default 3000.") var heartbeatTimeoutMs: Int?
    @Option(name: .customLong("log-level"), help: "trace, debug, info (default), notice, warning, error, critical.") var logLevel: String?

    func settings() throws -> RunSettings {
        var s = RunSettings()
        if let config { try s.apply(configFile: config) }
        if let seed { s.seed = seed }
        if let listen { s.listen = listen }
        if let advertise { s.advertise = advertise }
        if let clusterKeyFile { s.clusterKeyFile = clusterKeyFile }
        if let heartbeatMs { s.heartbeatMs = heartbeatMs }
        if let heartbeatTimeoutMs { s.heartbeatTimeoutMs = heartbeatTimeoutMs }
        if let logLevel { s.logLevel = logLevel }
        // The data address is never dialled for a coordinate-only node; only check what it uses.
        s.dataListen = "127.0.0.1:0"
        try s.validate()
        return s
    }

    func validate() throws { try RunSettings.validate(settings) }

    func run() async throws {
        let settings = try settings()
        settings.bootstrapLogging()
        let key = try settings.clusterKey()
        let id = UInt64.random(in: 1...UInt64.max)
        var logger = Logger(label: "peernode")
        logger[metadataKey: "node.id"] = "\(hex(id))"
        let node = MembershipNode(localId: id, key: key, options: settings.membershipOptions, logger: logger)
        let control = HostPort(settings.listen)!
        let port: Int
        do {
            port = try await node.start(controlHost: control.host, controlPort: control.port, advertiseHost: settings.advertise,
                                        dataPort: 0, seed: settings.seed.flatMap(HostPort.init).map { ($0.host, $0.port) },
                                        coordinatorOnly: true)
        } catch {
            await node.shutdown()
            throw RunError("cannot start: \(error)")
        }
        print("ready id=\(hex(id)) control_port=\(port) role=coordinate-only")
        fflush(nil)
        let service = CoordinatorService(node: node, logger: logger)
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup,
                             failureTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(10)
        try await ServiceGroup(configuration: configuration).run()
        // Removed from the view (say, on the minority side of a split) or stopped by a failure:
        // not a clean exit, so that a supervisor restarts it.
        if let reason = service.endedBy { throw RunError("the coordinator stopped: \(reason)") }
    }
}

/// Keeps a coordinate-only node up, printing each view it sees, until shutdown; then leaves so
/// that the next node in view order takes over without a timeout.
private final class CoordinatorService: Service, @unchecked Sendable {
    let node: MembershipNode
    let logger: Logger
    private let lock = NSLock()
    private var ended: String?
    /// Why the node stopped by itself (nil after a requested shutdown).
    var endedBy: String? { lock.withLock { ended } }

    init(node: MembershipNode, logger: Logger) {
        self.node = node
        self.logger = logger
    }

    func run() async throws {
        // Ends on graceful shutdown (the stream is cancelled) or when the node stops by itself.
        let events = node.events()
        await cancelWhenGracefulShutdown {
            var role = MembershipStatus.Role.idle
            for await event in events {
                switch event {
                case .roleChanged(let next, let reason):
                    role = next
                    if next == .left || next == .stopped {
                        self.lock.withLock { self.ended = "role \(next.rawValue)" }
                        return
                    }
                    if next == .rejoining { self.logger.warning("rejoining: \(reason ?? "out of the view")") }
                case .viewCommitted(let view):
                    print("view epoch=\(view.epoch) line=\(hex(view.line)) coordinator=\(hex(view.coordinator)) members=\(view.nodes.count) ring=\(view.ringIds.count) role=\(role)")
                    fflush(nil)
                }
            }
        }
        logger.info("leaving the cluster")
        await node.leave()
    }
}
