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

    @OptionGroup var node: NodeOptions

    /// Resolved once, by `validate()` (which reads the config file), for `run()`.
    private(set) var resolved: RunSettings?
    private enum CodingKeys: CodingKey { case node }

    /// The node settings of `run`, from the same sources; a config file's training settings are
    /// accepted (one file may serve both commands) and ignored.
    func settings() throws -> RunSettings {
        try node.resolve { s in
            // The data address is never dialled for a coordinate-only node; only check what it uses.
            s.dataListen = HostPort(host: "127.0.0.1", port: 0)
        }
    }

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
        let key = try settings.clusterKey()
        let control = settings.listen
        /// A node started with `seeds` (none: it founds the cluster).
        func start(seeds: [(host: String, port: Int)]) async throws -> (MembershipNode, UInt64, Logger, Int) {
            let id = key.newNodeId()
            var logger = Logger(label: "peernode")
            logger[metadataKey: "node.id"] = "\(hex(id))"
            let node = MembershipNode(localId: id, key: key, options: settings.membershipOptions, logger: logger)
            do {
                let port = try await node.start(controlHost: control.host, controlPort: control.port, advertiseHost: settings.advertise,
                                                dataPort: 0, seeds: seeds, coordinatorOnly: true)
                return (node, id, logger, port)
            } catch {
                await node.shutdown()
                throw error
            }
        }
        let (node, id, logger, port): (MembershipNode, UInt64, Logger, Int)
        do {
            do {
                (node, id, logger, port) = try await start(seeds: settings.seedAddresses)
            } catch let error as MembershipError where error.code == .joinTimedOut && settings.foundAfterJoinTimeout {
                Logger(label: "peernode").notice("no seed registered this node in time: founding the cluster",
                                                 metadata: ["reason": "\(error)"])
                (node, id, logger, port) = try await start(seeds: [])
            }
        } catch {
            throw RunError("cannot start: \(error)")
        }
        print("ready id=\(hex(id)) control_port=\(port) role=coordinate-only tls=\(key.security)")
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
                case .joinersWaiting, .noQuorum:
                    break
                }
            }
        }
        logger.info("leaving the cluster")
        await node.leave()
    }
}
