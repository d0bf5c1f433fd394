import Foundation
import Transport

/// The `peernode run` processes of `peernode demo`, with what each printed so far.
///
/// A thread per child reads its stdout: the `ready` line and one `outer` line per revision, kept
/// by revision so the demo can line up the peers that took part in each step (a leaver stops
/// reporting, a joiner starts late). A fresh random cluster key reaches the children through their
/// environment, never their command line.
final class DemoCluster: @unchecked Sendable {
    private let executable: String
    private let environment: [String: String]
    private let deadline: Date
    private let lock = NSCondition()
    private(set) var peers: [Peer] = []

    init(deadline: Date) throws {
        executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var key = [UInt8](repeating: 0, count: 24)
        var rng = SystemRandomNumberGenerator()
        for i in key.indices { key[i] = UInt8.random(in: 0...255, using: &rng) }
        var environment = ProcessInfo.processInfo.environment
        environment[ClusterKey.environmentVariable] = key.map { String(format: "%02x", $0) }.joined()
        self.environment = environment
        self.deadline = deadline
    }

    /// Starts a peer and waits for its `ready` line.
    @discardableResult
    func start(_ arguments: [String]) throws -> Peer {
        let peer = try Peer(index: peers.count, executable: executable, arguments: arguments, environment: environment, cluster: lock)
        peers.append(peer)
        guard peer.waitReady(until: deadline) else {
            throw BenchError("peer \(peer.index) did not start: \(peer.stderrTail())")
        }
        return peer
    }

    /// The `outer` lines of `revision` once `count` peers reported it (fewer at the deadline).
    func lines(revision: Int, count: Int, until deadline: Date) -> [[String: String]] {
        lock.lock()
        defer { lock.unlock() }
        while true {
            let rows = peers.compactMap { $0.outer[revision] }
            if rows.count >= count { return rows }
            guard lock.wait(until: deadline) else { return rows }
        }
    }

    /// Bytes sent so far by every peer, the ones that left included.
    var bytesSent: Int { lock.withLock { peers.reduce(0) { $0 + $1.bytesSent } } }

    /// Exit statuses (nil: still running at the deadline, then killed).
    func waitAll(until deadline: Date) -> [Int32?] {
        peers.map { $0.finish(until: deadline) }
    }

    func terminate() {
        for peer in peers { peer.signal(SIGKILL) }
    }

    /// One child process.
    final class Peer: @unchecked Sendable {
        let index: Int
        private let process = Process()
        private let lock: NSCondition
        private let errorLog = ErrorLog()
        // Guarded by `lock` (the cluster's).
        private(set) var ready: [String: String] = [:]
        fileprivate var outer: [Int: [String: String]] = [:]
        fileprivate var bytesSent = 0
        private var partial = Data()
        private var closed = false

        init(index: Int, executable: String, arguments: [String], environment: [String: String], cluster lock: NSCondition) throws {
            self.index = index
            self.lock = lock
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = environment
            let output = Pipe()
            let errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            process.standardInput = FileHandle.nullDevice
            let log = errorLog
            errors.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            // End of file: stop watching, or the handler is called again and again (a busy core).
            if data.isEmpty { handle.readabilityHandler = nil }
            log.append(data)
        }
            output.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                // End of file: stop watching, or the handler is called again and again.
                if data.isEmpty { handle.readabilityHandler = nil }
                self?.consume(data)
            }
            try process.run()
        }

        private func consume(_ data: Data) {
            lock.withLock {
                if data.isEmpty { closed = true }
                partial.append(data)
                while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: partial[partial.startIndex..<newline], as: UTF8.self)
                    partial.removeSubrange(partial.startIndex...newline)
                    let words = line.split(separator: " ")
                    var fields: [String: String] = [:]
                    for kv in words.dropFirst() {
                        let parts = kv.split(separator: "=", maxSplits: 1)
                        if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
                    }
                    switch words.first {
                    case "ready": ready = fields
                    case "outer":
                        if let revision = fields["revision"].flatMap({ Int($0) }) { outer[revision] = fields }
                        bytesSent = Int(fields["bytes_sent"] ?? "") ?? bytesSent
                    default: break
                    }
                }
                lock.broadcast()
            }
        }

        func waitReady(until deadline: Date) -> Bool {
            lock.withLock {
                while ready.isEmpty {
                    if closed || !process.isRunning || !lock.wait(until: deadline) { return !ready.isEmpty }
                }
                return true
            }
        }

        func line(revision: Int, until deadline: Date) -> [String: String]? {
            lock.withLock {
                while outer[revision] == nil {
                    if closed || !lock.wait(until: deadline) { return outer[revision] }
                }
                return outer[revision]
            }
        }

        var firstRevision: Int? { lock.withLock { outer.keys.min() } }
        var lastRevision: Int? { lock.withLock { outer.keys.max() } }

        func stderrTail() -> String { errorLog.tail() }

        func signal(_ sig: Int32) {
            if process.isRunning { kill(process.processIdentifier, sig) }
        }

        func finish(until deadline: Date) -> Int32? {
            while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if process.isRunning {
                signal(SIGKILL)
                process.waitUntilExit()
                return nil
            }
            return process.terminationStatus
        }
    }
}
