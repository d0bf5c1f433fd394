import Collectives
import Foundation
import Logging
import PeerTestSupport
import Transport

/// Short timeouts so that failure detection takes about two seconds on loopback, with room for
/// a CI machine busy with the other test targets.
let fastOptions: MembershipOptions = {
    var o = MembershipOptions()
    o.heartbeatInterval = .milliseconds(100)
    o.heartbeatTimeout = .milliseconds(3000)
    o.leaveTimeout = .seconds(2)
    return o
}()

func testLogger() -> Logger {
    var logger = Logger(label: "membership-test")
    logger.logLevel = ProcessInfo.processInfo.environment["MEMBERSHIP_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .error
    return logger
}

struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out: \(what)" }
}

/// Runs `body`, failing after `seconds`: a test never hangs on a lost message.
func within<T: Sendable>(_ seconds: Double, _ what: String = "operation",
                         _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TimedOut(what: what) }
        return value
    }
}

/// Waits until `condition` holds: checked at once and after every membership event of `nodes`
/// (a view committed, a role changed, joiners waiting, a view without a quorum), never polled.
func waitUntil(_ seconds: Double, _ what: String, watching nodes: [MembershipNode],
               _ condition: @escaping @Sendable () -> Bool) async throws {
    try await within(seconds, what) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (changes, changed) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            for node in nodes {
                // Each subscription starts with the node's current role: the first check.
                let events = node.events()
                group.addTask { for await _ in events { changed.yield() } }
            }
            defer { group.cancelAll() }
            for await _ in changes where condition() { return }
        }
    }
}

/// Checks `condition` every 10 ms until it holds: only for what publishes no event (log lines);
/// membership state is awaited with ``waitUntil(_:_:watching:_:)``.
func pollUntil(_ seconds: Double, _ what: String, _ condition: @escaping @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// A membership node with a fake data port (tests without a communicator).
func makeNode(_ index: Int, options: MembershipOptions = fastOptions) -> MembershipNode {
    MembershipNode(localId: UInt64(0xB000 + index), key: testKey, options: options, logger: testLogger())
}

/// Starts `count` nodes: the first founds the cluster, the others join through `seedIndex`
/// (default: the founder), and all meet at one updateTopology. Returns nodes and control ports.
func makeCluster(_ count: Int, options: MembershipOptions = fastOptions) async throws -> ([MembershipNode], [Int]) {
    let nodes = (0..<count).map { makeNode($0, options: options) }
    var ports: [Int] = []
    ports.append(try await nodes[0].start(dataPort: 40000, seed: nil))
    for i in 1..<count {
        ports.append(try await nodes[i].start(dataPort: 40000 + i, seed: ("127.0.0.1", ports[0])))
    }
    _ = try await updateAll(nodes)
    return (nodes, ports)
}

/// Every node calls updateTopology at once; returns the ring views in node order.
func updateAll(_ nodes: [MembershipNode], seconds: Double = 30) async throws -> [RingView] {
    try await within(seconds, "updateTopology on \(nodes.count) nodes") {
        try await withThrowingTaskGroup(of: (Int, RingView).self) { group in
            for (i, node) in nodes.enumerated() { group.addTask { (i, try await node.updateTopology()) } }
            var out = [RingView?](repeating: nil, count: nodes.count)
            for try await (i, view) in group { out[i] = view }
            return out.map { $0! }
        }
    }
}

func shutdownAll(_ nodes: [MembershipNode]) async {
    for node in nodes { await node.shutdown() }
}

enum ClusterKeyForTests {
    static func other() throws -> ClusterKey { try ClusterKey(string: "a different cluster key 987654321") }
}

/// Runs `body`, then `cleanup`, also when `body` throws: nodes are shut down before the test ends.
func cleanUp<T>(_ cleanup: () async -> Void, _ body: () async throws -> T) async throws -> T {
    do {
        let result = try await body()
        await cleanup()
        return result
    } catch {
        await cleanup()
        throw error
    }
}

extension RoundKey {
    /// An application collective numbered `tag` in `epoch`, for tests that need any key.
    init(epoch: UInt64, tag: UInt64) {
        self.init(epoch: epoch, collective: CollectiveID(purpose: .application, sequence: tag))
    }
}

extension MembershipNode {
    /// The outcome round of the application collective numbered `tag`.
    func agree(epoch: UInt64, tag: UInt64, succeeded: Bool) async throws -> Bool {
        try await agree(epoch: epoch, collective: CollectiveID(purpose: .application, sequence: tag), succeeded: succeeded)
    }
}
