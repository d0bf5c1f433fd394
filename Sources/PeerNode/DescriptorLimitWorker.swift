#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import Logging
import Transport

/// A data port that runs out of file descriptors for a while (started by the tests; not for
/// direct use). The limit is a process-wide setting, so a test that lowers it must do so in a
/// process of its own, not in the test runner.
///
/// Prints `port N`, then lowers its soft `RLIMIT_NOFILE` to the lowest free descriptor number, so
/// that every `accept` fails with EMFILE; prints `squeezed`, restores the limit after
/// `--squeeze-seconds`, prints `released`, and prints `authenticated ID` for each connection that
/// completes the handshake. Runs until killed (or `--linger-seconds`).
struct DescriptorLimitWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "descriptor-limit-worker", abstract: "A data port out of descriptors (tests).", shouldDisplay: false)

    @Option(name: .customLong("squeeze-seconds")) var squeezeSeconds: Double = 3
    @Option(name: .customLong("linger-seconds")) var lingerSeconds: Double = 120

    func run() async throws {
        let logger = Logger(label: "peernode.data", factory: { StreamLogHandler.standardError(label: $0) })
        let key = try ClusterKey(string: ProcessInfo.processInfo.environment["PEERNODE_CLUSTER_KEY"] ?? "")
        let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 1, key: key, logger: logger) { socket, result in
            say("authenticated \(String(result.remoteId, radix: 16))")
            socket.close()
        }
        defer { listener.stop() }
        say("port \(listener.port)")
        // A first timer, before the squeeze: libdispatch opens the descriptors for its timers at
        // their first use, and without them the sleep below crashes (SIGILL) or never ends.
        try await Task.sleep(for: .milliseconds(300))
        let descriptors = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var normal = rlimit()
        guard getrlimit(descriptors, &normal) == 0 else { throw CallFailed(call: "getrlimit") }
        // The lowest free number: every number below it is taken, so no new descriptor fits.
        let lowest = dup(0)
        guard lowest >= 0 else { throw CallFailed(call: "dup") }
        Glibc.close(lowest)
        var squeezed = normal
        squeezed.rlim_cur = rlim_t(lowest)
        guard setrlimit(descriptors, &squeezed) == 0 else { throw CallFailed(call: "setrlimit") }
        say("squeezed \(lowest)")
        try await Task.sleep(for: .seconds(squeezeSeconds))
        guard setrlimit(descriptors, &normal) == 0 else { throw CallFailed(call: "setrlimit") }
        say("released")
        try await Task.sleep(for: .seconds(lingerSeconds))
    }
}

/// One line on stdout at once (the test reads them as they come; stdout is a pipe, so buffered).
private func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// A system call of the worker failed (with the errno of the moment it is made).
private struct CallFailed: Error, CustomStringConvertible {
    var call: String
    var code = errno
    var description: String { "\(call): \(String(cString: strerror(code)))" }
}
