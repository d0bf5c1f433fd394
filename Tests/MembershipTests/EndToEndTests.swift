import Collectives
import Foundation
import NIOCore
import PeerTestSupport
import Testing
import Transport

/// One peer as an application sees it: membership for the view, a communicator for the data.
private struct Peer: Sendable {
    let membership: MembershipNode
    let communicator: Communicator

    func stop() async {
        await membership.shutdown()
        await communicator.shutdown()
    }
}

private func makePeers(_ count: Int) async throws -> [Peer] {
    var peers: [Peer] = []
    var seed: (host: String, port: Int)?
    for i in 0..<count {
        var options = CommunicatorOptions()
        options.ringFormationTimeout = .seconds(15)
        let communicator = Communicator(localId: UInt64(0xB000 + i), key: testKey, options: options, logger: testLogger())
        let membership = makeNode(i)
        membership.attach(communicator)
        let dataPort = try await communicator.listen(host: "127.0.0.1", port: 0)
        let port = try await membership.start(dataPort: dataPort, seed: seed)
        if seed == nil { seed = ("127.0.0.1", port) }
        peers.append(Peer(membership: membership, communicator: communicator))
    }
    return peers
}

/// The step model on every peer: update topology, form the ring, all-reduce, agree; on an
/// abort, update and retry. Returns each peer's result and how many attempts it took.
private func stepEverywhere(_ peers: [Peer], tag: UInt64, count: Int, collectiveTimeout: TimeAmount = .seconds(30),
                            during: (@Sendable (Int, Peer) async throws -> Bool)? = nil) async throws -> [(values: [Float], attempts: Int)?] {
    try await within(90, "a step with retries") {
        try await withThrowingTaskGroup(of: (Int, ([Float], Int)?).self) { group in
            for (rank, peer) in peers.enumerated() {
                group.addTask {
                    let original = (0..<count).map { Float(($0 + rank * 7) % 100) }
                    var attempts = 0
                    while true {
                        attempts += 1
                        let ring: RingView
                        do {
                            ring = try await peer.membership.updateTopology()
                        } catch {
                            return (rank, nil)   // this peer was stopped on purpose
                        }
                        try await peer.communicator.connect(view: ring)
                        var values = original
                        var succeeded = true
                        do {
                            if let during, try await during(rank, peer) == false { return (rank, nil) }
                            try await peer.communicator.allReduce(&values, options: AllReduceOptions(tag: tag, timeout: collectiveTimeout))
                        } catch let error as CollectiveError where error.code == .membershipChanged {
                            succeeded = false
                            #expect(values == original, "an aborted collective leaves the input as it was")
                        }
                        if try await peer.membership.agree(epoch: ring.epoch, tag: tag, succeeded: succeeded) {
                            return (rank, (values, attempts))
                        }
                    }
                }
            }
            var out = [([Float], Int)?](repeating: nil, count: peers.count)
            for try await (rank, result) in group { out[rank] = result }
            return out.map { $0.map { (values: $0.0, attempts: $0.1) } }
        }
    }
}

/// What the inputs of `ranks` sum to, computed apart from the ring.
private func expectedSum(ranks: [Int], count: Int) -> [Float] {
    var out = [Float](repeating: 0, count: count)
    for i in 0..<count {
        var total = 0
        for r in ranks { total += (i + r * 7) % 100 }
        out[i] = Float(total)
    }
    return out
}

private func expectedSum(ranks: Int, count: Int) -> [Float] { expectedSum(ranks: Array(0..<ranks), count: count) }

@Test func aPeerCrashingMidCollectiveMakesTheSurvivorsRetryOnTheNewRing() async throws {
    let peers = try await makePeers(3)
    try await cleanUp({ for p in peers { await p.stop() } }) {
        let count = 400_000
        // A clean step first.
        let first = try await stepEverywhere(peers, tag: 1, count: count)
        let sum3 = expectedSum(ranks: 3, count: count)
        #expect(first.allSatisfy { $0?.values == sum3 && $0?.attempts == 1 })

        // Peer 2 crashes (membership and data links) shortly after the collective started.
        let results = try await stepEverywhere(peers, tag: 2, count: count) { rank, peer in
            guard rank == 2 else { return true }
            try await Task.sleep(for: .milliseconds(30))
            await peer.stop()
            return false
        }
        #expect(results[2] == nil)
        let sum2 = expectedSum(ranks: 2, count: count)
        for rank in 0..<2 {
            #expect(results[rank]?.values == sum2, "rank \(rank): result of the two survivors")
            #expect(results[rank]?.attempts == 2, "rank \(rank): one abort, one retry")
        }
        let status = peers[0].membership.status
        #expect(status.deaths == 1 && status.aborts >= 1 && status.retries >= 1)
        #expect(peers[0].membership.view?.ids == [peers[0].membership.localId, peers[1].membership.localId])
    }
}

@Test func aFrozenPeerIsRemovedAndTheMembershipLayerAbortsTheRing() async throws {
    let peers = try await makePeers(3)
    try await cleanUp({ for p in peers { await p.stop() } }) {
        let count = 10_000
        // Peer 2 freezes (SIGSTOP-like: links open, no heartbeats, never calls the collective).
        // The other two block in the all-reduce until the coordinator removes peer 2 and the new
        // view makes their membership layer break the ring; then they retry without it.
        // The collective's own timeout is far away: only the membership layer can end the wait early.
        let started = ContinuousClock.now
        let results = try await stepEverywhere(peers, tag: 1, count: count, collectiveTimeout: .seconds(80)) { rank, peer in
            guard rank == 2 else { return true }
            peer.membership.freezeForTesting()
            return false
        }
        #expect(ContinuousClock.now - started < .seconds(30))
        let sum2 = expectedSum(ranks: 2, count: count)
        #expect(results[0]?.values == sum2 && results[1]?.values == sum2)
        #expect(results[0]?.attempts == 2 && results[1]?.attempts == 2)
    }
}

@Test func theCoordinatorCrashingMidCollectiveIsSurvivedToo() async throws {
    let peers = try await makePeers(3)
    try await cleanUp({ for p in peers { await p.stop() } }) {
        let count = 100_000
        // Rank 0 holds the coordinator role and a ring position; it crashes during the collective.
        // The survivors' agreement round waits for the failover, answers abort, and they retry.
        let results = try await stepEverywhere(peers, tag: 4, count: count) { rank, peer in
            guard rank == 0 else { return true }
            try await Task.sleep(for: .milliseconds(30))
            await peer.stop()
            return false
        }
        #expect(results[0] == nil)
        let want = expectedSum(ranks: [1, 2], count: count)
        #expect(results[1]?.values == want && results[2]?.values == want)
        #expect(results[1]?.attempts == 2 && results[2]?.attempts == 2)
        #expect(peers[2].membership.view?.coordinator == peers[1].membership.localId)
        #expect(peers[1].membership.status.role == .coordinator)
    }
}
