import Collectives
import Foundation
import Logging
import Models
import PeerTestSupport
import Testing
import Transport
@testable import DiLoCo

/// One DiLoCo peer with real membership, ring and state transfer on loopback.
private final class Peer: @unchecked Sendable {
    let index: Int
    let node: MembershipNode
    let communicator: Communicator
    let trainer: DiLoCoTrainer
    var controlPort = 0

    init(index: Int) throws {
        self.index = index
        var logger = Logger(label: "test")
        logger.logLevel = ProcessInfo.processInfo.environment["PEERNODE_TEST_LOG"] == nil ? .critical : .info
        logger[metadataKey: "peer"] = "\(index)"
        var membership = MembershipOptions()
        membership.heartbeatInterval = .milliseconds(100)
        membership.heartbeatTimeout = .seconds(2)
        let id = UInt64(0xD000 + index)
        node = MembershipNode(localId: id, key: testKey, options: membership, logger: logger)
        var options = CommunicatorOptions()
        options.ringFormationTimeout = .seconds(10)
        communicator = Communicator(localId: id, key: testKey, options: options, logger: logger)
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", shard: Shard(index: index % 4, count: 4), seed: 3))
        let state = try DiLoCoTrainer.sharedState(for: task)
        let server = StateServer(state: state, logger: logger)
        var downloader = StateDownloader(localId: id, key: testKey, logger: logger)
        downloader.chunkSize = 64 << 10
        let session = MembershipSession(node: node, communicator: communicator, server: server, downloader: downloader,
                                        logger: logger)
        var diloco = DiLoCoOptions()
        diloco.innerSteps = 5
        diloco.allReduceTimeout = .seconds(20)
        trainer = try DiLoCoTrainer(task: task, state: state, session: session, options: diloco, logger: logger)
    }

    func start(seed: Int?) async throws {
        let dataPort = try await communicator.listen(host: "127.0.0.1", port: 0)
        controlPort = try await node.start(dataPort: dataPort, seed: seed.map { ("127.0.0.1", $0) })
    }

    /// Outer steps until the shared revision reaches `target`; the digest at each revision.
    func train(until target: UInt64) async throws -> [UInt64: String] {
        var digests: [UInt64: String] = [:]
        while trainer.revision < target {
            let report = try await trainer.outerStep()
            digests[report.revision] = report.digest.description
            lock.withLock { reached = report.revision }
        }
        return digests
    }

    /// The last revision this peer completed (readable from other tasks).
    var revision: UInt64 { lock.withLock { reached } }
    private let lock = NSLock()
    private var reached: UInt64 = 0

    /// Like ``train(until:)`` but a failure (this peer was killed) ends it with what it had.
    func trainUntilStopped(until target: UInt64) async -> [UInt64: String] {
        var digests: [UInt64: String] = [:]
        while trainer.revision < target {
            guard let report = try? await trainer.outerStep() else { break }
            digests[report.revision] = report.digest.description
            lock.withLock { reached = report.revision }
        }
        return digests
    }

    func stop() async {
        await node.shutdown()
        await communicator.shutdown()
    }
}

private func withTimeout<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw CollectiveError(code: .timedOut, message: "test step took longer than \(seconds) s")
        }
        group.cancelAll()
        return value
    }
}

@Test func aJoinerMidRunDownloadsTheStateAndEndsBitIdentical() async throws {
    let peers = try (0..<4).map { try Peer(index: $0) }
    try await peers[0].start(seed: nil)
    for p in peers[1..<3] { try await p.start(seed: peers[0].controlPort) }
    let results = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]).self) { group in
            for p in peers[0..<3] { group.addTask { (p.index, try await p.train(until: 6)) } }
            group.addTask {
                // Join through a member that is not the coordinator, once the run is under way.
                while peers[0].trainer.revision < 2 { try await Task.sleep(for: .milliseconds(20)) }
                try await peers[3].start(seed: peers[1].controlPort)
                return (3, try await peers[3].train(until: 6))
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { out[i] = d }
            return out
        }
    }
    for p in peers { await p.stop() }
    let final = results[0]![6]
    #expect(final != nil)
    for i in 0..<4 { #expect(results[i]![6] == final, "peer \(i) ends with another state") }
    // The joiner came in later: it has fewer steps of its own, all equal to the others'.
    #expect(results[3]!.count < results[0]!.count)
    for (revision, digest) in results[3]! { #expect(results[0]![revision] == digest) }
    #expect(peers[3].node.status.view?.ringView.count == 4)
}

@Test func survivorsOfAKilledPeerFinishTheRunBitIdentical() async throws {
    let peers = try (0..<3).map { try Peer(index: $0) }
    try await peers[0].start(seed: nil)
    for p in peers[1...] { try await p.start(seed: peers[0].controlPort) }
    let results = try await withTimeout(120) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]?).self) { group in
            for p in peers[0..<2] { group.addTask { (p.index, try await p.train(until: 6)) } }
            group.addTask {
                // Peer 2 trains a little, then vanishes without a goodbye (a crash).
                _ = try? await peers[2].train(until: 2)
                await peers[2].stop()
                return (2, nil)
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { if let d { out[i] = d } }
            return out
        }
    }
    for p in peers { await p.stop() }
    #expect(results[0]?[6] != nil)
    #expect(results[0] == results[1], "survivors must agree at every revision")
}

/// Churn: over 12 outer steps two peers join, one leaves gracefully, one is killed between steps
/// and one in the middle of a step. At every revision, every peer that completed it holds the
/// same state, and nobody hangs.
@Test func churnNeverBreaksParity() async throws {
    let peers = try (0..<6).map { try Peer(index: $0) }
    try await peers[0].start(seed: nil)
    for p in peers[1..<4] { try await p.start(seed: peers[0].controlPort) }
    let start = Date()
    let results = try await withTimeout(180) {
        try await withThrowingTaskGroup(of: (Int, [UInt64: String]).self) { group in
            group.addTask { (0, try await peers[0].train(until: 12)) }
            group.addTask { (1, try await peers[1].train(until: 12)) }
            group.addTask {
                // Leaves gracefully after revision 4.
                let d = try await peers[2].train(until: 4)
                await peers[2].node.leave()
                await peers[2].communicator.shutdown()
                return (2, d)
            }
            group.addTask {
                // Killed between steps after revision 6.
                let d = try await peers[3].train(until: 6)
                await peers[3].stop()
                return (3, d)
            }
            group.addTask {
                // Joins once revision 3 is done, through a member that is not the coordinator; killed
                // in the middle of a step after revision 8.
                while peers[1].revision < 3 { try await Task.sleep(for: .milliseconds(10)) }
                try await peers[4].start(seed: peers[1].controlPort)
                async let digests = peers[4].trainUntilStopped(until: 12)
                while peers[4].revision < 8 { try await Task.sleep(for: .milliseconds(10)) }
                try await Task.sleep(for: .milliseconds(30))
                await peers[4].stop()
                return (4, await digests)
            }
            group.addTask {
                // Joins late, once revision 7 is done, and stays to the end.
                while peers[0].revision < 7 { try await Task.sleep(for: .milliseconds(10)) }
                try await peers[5].start(seed: peers[0].controlPort)
                return (5, try await peers[5].train(until: 12))
            }
            var out: [Int: [UInt64: String]] = [:]
            for try await (i, d) in group { out[i] = d }
            return out
        }
    }
    for p in peers { await p.stop() }
    var mismatches = 0
    for revision in UInt64(1)...12 {
        let seen = Set(results.values.compactMap { $0[revision] })
        if seen.count > 1 { mismatches += 1 }
    }
    let steps = results.values.reduce(0) { $0 + $1.count }
    print("churn: 2 joins, 1 graceful leave, 2 kills; \(steps) peer-steps over 12 revisions; "
          + "\(mismatches) digest mismatches; \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    #expect(mismatches == 0)
    #expect(results[0]?[12] != nil && results[0]?[12] == results[1]?[12] && results[0]?[12] == results[5]?[12])
    #expect(results[5]!.count < 12, "the late joiner started from a downloaded state")
}
