import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The status port's HTTP server, started and stopped around the daemon's life.
///
/// Hummingbird's `Application` is a `Service`; it runs here in a `ServiceGroup` of its own that
/// listens to no signal, because the daemon owns SIGTERM and SIGINT (they mean "leave the cluster
/// gracefully", which the server must outlive so `/healthz` can say so). ``shutdown()`` asks the
/// group to stop; a browser holding a keep-alive connection cannot stall it past the group's
/// grace period, after which the server task is cancelled.
final class StatusServer: Sendable {
    /// The bound port (the one the OS chose when 0 was asked for).
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, Never>

    private init(port: Int, group: ServiceGroup, task: Task<Void, Never>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Binds `host:port` and serves until ``shutdown()``; throws if the address cannot be bound.
    static func start(recorder: StatusRecorder, host: String, port: Int, limits: StatusLimits = StatusLimits(),
                      logger: Logger) async throws -> StatusServer {
        var logger = logger
        logger[metadataKey: "status.bind"] = "\(host):\(port)"
        let bound = BoundPort()
        let app = Application(
            responder: StatusResponder(recorder: recorder, metrics: StatusMetrics(identity: recorder.identity)),
            // Bounded connections, request size, header count and time per request: an open status
            // port must not collect sockets until the daemon runs out of descriptors (its ring and
            // control links share the table), nor buffer what a client uploads.
            server: GuardedHTTP1Channel.builder(limits: limits),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port),
                                                    serverName: "peernode/\(StatusReport.version)"),
            onServerRunning: { channel in bound.resolve(.success(channel.localAddress?.port ?? port)) },
            logger: logger)
        var configuration = ServiceGroupConfiguration(services: [app], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(2)
        configuration.maximumCancellationDuration = .seconds(2)
        let group = ServiceGroup(configuration: configuration)
        let task = Task {
            do {
                try await group.run()
                bound.resolve(.failure(StatusServerError("the status server stopped before it was listening")))
            } catch {
                bound.resolve(.failure(error))
                logger.error("status server stopped: \(error)")
            }
        }
        do {
            return StatusServer(port: try await bound.value, group: group, task: task)
        } catch {
            await task.value
            throw error
        }
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and returns once the server is down.
    func shutdown() async {
        await group.triggerGracefulShutdown()
        await task.value
    }
}

struct StatusServerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The port, once the listener is up; or why it never came up. The first answer wins.
private final class BoundPort: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<Int, any Error>?
    private var waiter: CheckedContinuation<Int, any Error>?

    func resolve(_ outcome: Result<Int, any Error>) {
        let waiter: CheckedContinuation<Int, any Error>? = lock.withLock {
            guard result == nil else { return nil }
            result = outcome
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume(with: outcome)
    }

    var value: Int {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let ready: Result<Int, any Error>? = lock.withLock {
                    if let result { return result }
                    waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        }
    }
}
