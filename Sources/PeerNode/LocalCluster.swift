import Collectives
import Foundation
import Logging
import Transport

/// A local cluster of child `peernode` processes on 127.0.0.1 (the demo and the benchmarks).
///
/// Each child runs a worker subcommand, binds its data port (port 0), and prints `port N`; once
/// all have, every child reads `view P0 P1 ...` on stdin and forms the ring. A fresh random cluster
/// key reaches the children through their environment, never their command line.
final class LocalCluster {
    let workers: [WorkerProcess]

    init(peers: Int, deadline: Date, arguments: (Int) -> [String]) throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var key = [UInt8](repeating: 0, count: 24)
        var rng = SystemRandomNumberGenerator()
        for i in key.indices { key[i] = UInt8.random(in: 0...255, using: &rng) }
        var environment = ProcessInfo.processInfo.environment
        environment[ClusterKey.environmentVariable] = key.map { String(format: "%02x", $0) }.joined()
        var started: [WorkerProcess] = []
        do {
            for rank in 0..<peers {
                started.append(try WorkerProcess(executable: executable, rank: rank, arguments: arguments(rank),
                                                 environment: environment))
            }
            var ports: [Int] = []
            for w in started {
                guard let line = w.readLine(until: deadline), line.hasPrefix("port "), let port = Int(line.dropFirst(5)) else {
                    throw BenchError("worker \(w.rank) did not report its port: \(w.stderrTail())")
                }
                ports.append(port)
            }
            let view = "view " + ports.map(String.init).joined(separator: " ")
            for w in started { w.writeLine(view) }
        } catch {
            for w in started { w.terminate() }
            throw error
        }
        workers = started
    }

    func terminate() {
        for w in workers { w.terminate() }
    }

    func wait() {
        for w in workers { w.wait() }
    }
}

/// The worker side of ``LocalCluster``: bind, report the port, read the view, form the ring.
func joinLocalCluster(rank: Int, streams: Int = 1, streamRate: UInt64 = 0, plaintext: Bool = false,
                      logger: Logger) async throws -> (Communicator, RingView) {
    let loaded = try ClusterKey.load(file: nil)
    let key = plaintext ? loaded.with(security: .plaintext) : loaded
    var options = CommunicatorOptions()
    options.streams = streams
    options.maxStreamRate = streamRate
    let communicator = Communicator(localId: UInt64(rank + 1), key: key, options: options, logger: logger)
    let port = try await communicator.listen(host: "127.0.0.1", port: 0)
    print("port \(port)")
    fflush(nil)
    guard let line = readLine(), line.hasPrefix("view ") else { throw BenchError("no view on stdin") }
    let ports = line.dropFirst(5).split(separator: " ").compactMap { Int($0) }
    let view = RingView(epoch: 1, members: ports.enumerated().map {
        PeerEndpoint(id: UInt64($0.offset + 1), host: "127.0.0.1", port: $0.element)
    })
    try await communicator.connect(view: view)
    return (communicator, view)
}

/// One child process, talked to over its stdin and stdout.
final class WorkerProcess {
    let rank: Int
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()
    private var pending = Data()
    private let errorLog = ErrorLog()

    init(executable: String, rank: Int, arguments: [String], environment: [String: String]) throws {
        self.rank = rank
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        let log = errorLog
        errors.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            // End of file: stop watching, or the handler is called again and again (a busy core).
            if data.isEmpty { handle.readabilityHandler = nil }
            log.append(data)
        }
        try process.run()
    }

    func readLine(until deadline: Date) -> String? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                return line
            }
            guard Date() < deadline else { return nil }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
        }
    }

    /// The `key=value` fields of the next line starting with `prefix`.
    func readFields(_ prefix: String, until deadline: Date) -> [String: String]? {
        guard let line = readLine(until: deadline), line.hasPrefix(prefix + " ") else { return nil }
        var fields: [String: String] = [:]
        for kv in line.split(separator: " ").dropFirst() {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    func writeLine(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    func stderrTail() -> String { errorLog.tail() }

    func wait() { process.waitUntilExit() }

    func terminate() {
        if process.isRunning { process.terminate() }
    }
}

final class ErrorLog: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func append(_ d: Data) { lock.withLock { data.append(d); if data.count > 65536 { data.removeFirst(data.count - 65536) } } }
    func tail() -> String { lock.withLock { String(decoding: data.suffix(2000), as: UTF8.self) } }
}
