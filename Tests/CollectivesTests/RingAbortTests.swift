import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing

private func twoPeers() async throws -> ([Communicator], RingView) {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    var options = CommunicatorOptions()
    options.ringFormationTimeout = .seconds(20)
    let peers = (0..<2).map { Communicator(localId: UInt64(0xC000 + $0), key: testKey, options: options, logger: logger) }
    var members: [PeerEndpoint] = []
    for peer in peers {
        members.append(PeerEndpoint(id: peer.localId, host: "127.0.0.1", port: try await peer.listen(host: "127.0.0.1", port: 0)))
    }
    return (peers, RingView(epoch: 5, members: members))
}

/// The membership layer aborts rings older than the view that dropped a member. That abort may
/// run after this peer began forming the new view's ring (or formed it): that ring must go on.
/// An abort for a newer view gives up the formation at once, and breaks a formed ring.
@Test func anAbortForANewerViewOnlyStopsOlderRings() async throws {
    let (peers, view) = try await twoPeers()
    defer { Task { for p in peers { await p.shutdown() } } }
    // Peer 0 starts forming epoch 5 alone; the abort for epoch 5 arrives; then peer 1 joins in.
    async let first: Void = peers[0].connect(view: view)
    try await Task.sleep(for: .milliseconds(200))
    peers[0].abortRing(reason: "membership changed: epoch 5 dropped a ring member", beforeEpoch: 5)
    try await peers[1].connect(view: view)
    try await first
    #expect(!peers[0].isRingBroken && !peers[1].isRingBroken)
    // Formed: an abort for its own epoch leaves it; one for a newer epoch breaks it.
    peers[1].abortRing(reason: "late", beforeEpoch: 5)
    #expect(!peers[1].isRingBroken)
    let sums = try await onEveryPeer(peers) { _, peer in
        var v: [Float] = [1, 2, 3]
        try await peer.allReduce(&v, options: AllReduceOptions(tag: 1, op: .sum))
        return v
    }
    #expect(sums == [[2, 4, 6], [2, 4, 6]])
    peers[1].abortRing(reason: "membership changed: epoch 6 dropped a ring member", beforeEpoch: 6)
    #expect(peers[1].isRingBroken)
}

@Test func anAbortForANewerViewAbandonsAFormationAtOnce() async throws {
    let (peers, view) = try await twoPeers()
    defer { Task { for p in peers { await p.shutdown() } } }
    let started = Date()
    let first = Task { try await peers[0].connect(view: view) }
    try await Task.sleep(for: .milliseconds(200))
    peers[0].abortRing(reason: "membership changed: epoch 6 dropped a ring member", beforeEpoch: 6)
    await #expect(throws: CollectiveError.self) { try await first.value }
    // Well before the 20 s formation timeout.
    #expect(Date().timeIntervalSince(started) < 10)
}
