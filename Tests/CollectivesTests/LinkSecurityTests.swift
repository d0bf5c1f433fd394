import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing
import Transport

// The data links on the wire: what a tap between two ring members sees, and what an altered
// byte does to a collective (docs/protocol.md §2 "Link security").

/// Two ring members; member 2's endpoint in the view is the relay, so member 1's ring link to
/// it (the bytes member 1 sends) crosses the relay.
private func pairThroughRelay(key: ClusterKey) async throws -> ([Communicator], RelayProxy, [PeerEndpoint]) {
    let quiet = Logger(label: "quiet")
    let peers = [Communicator(localId: 1, key: key, logger: quiet), Communicator(localId: 2, key: key, logger: quiet)]
    let first = try await peers[0].listen(host: "127.0.0.1", port: 0)
    let second = try await peers[1].listen(host: "127.0.0.1", port: 0)
    let relay = try RelayProxy(to: second)
    return (peers, relay, [PeerEndpoint(id: 1, host: "127.0.0.1", port: first), PeerEndpoint(id: 2, host: "127.0.0.1", port: relay.port)])
}

private func connectAll(_ peers: [Communicator], _ view: RingView) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for peer in peers { group.addTask { try await peer.connect(view: view) } }
        try await group.waitForAll()
    }
}

/// Rank r contributes r + 1 + i % 7 at index i: the sum is 3 + 2 (i % 7).
private func reduceAll(_ peers: [Communicator], tag: UInt64, count: Int) async -> [Result<[Float], any Error>] {
    await withTaskGroup(of: (Int, Result<[Float], any Error>).self) { group in
        for (rank, peer) in peers.enumerated() {
            group.addTask {
                var values = (0..<count).map { Float(rank + 1 + $0 % 7) }
                do {
                    try await peer.allReduce(&values, options: AllReduceOptions(tag: tag, timeout: .seconds(30)))
                    return (rank, .success(values))
                } catch {
                    return (rank, .failure(error))
                }
            }
        }
        var out = [Result<[Float], any Error>](repeating: .success([]), count: peers.count)
        for await (rank, result) in group { out[rank] = result }
        return out
    }
}

/// With TLS (the default) a tap sees no peernode frame; with `--plaintext` it sees them all.
@Test(arguments: [true, false]) func aTapOnTheRingLinkSeesFramesOnlyInPlaintext(tls: Bool) async throws {
    let (peers, relay, members) = try await pairThroughRelay(key: tls ? testKey : plaintextTestKey)
    defer { relay.stop() }
    try await connectAll(peers, RingView(epoch: 1, members: members))
    let results = await reduceAll(peers, tag: 1, count: 100_000)
    for result in results { #expect(try result.get() == (0..<100_000).map { Float(3 + 2 * ($0 % 7)) }) }
    let wire = relay.sent
    #expect(wire.count > 100_000 * 4 / 2)
    let magic: [UInt8] = [0x50, 0x4E, 0x4F, 0x44]
    #expect(contains(wire, magic) == !tls, "peernode frame magic \(tls ? "visible on a TLS link" : "missing on a plaintext link")")
    for peer in peers { await peer.shutdown() }
}

/// One byte altered mid-stream: the receiving link fails with the TLS integrity error, the
/// collective aborts on both members (nothing altered is summed), and the same all-reduce on
/// the ring formed again gives the exact sum.
@Test func anAlteredByteAbortsTheCollectiveAndTheRetrySumsExactly() async throws {
    let (peers, relay, members) = try await pairThroughRelay(key: testKey)
    defer { relay.stop() }
    try await connectAll(peers, RingView(epoch: 1, members: members))
    relay.flip(atOffset: 300_000)
    let count = 1 << 20
    let expected = (0..<count).map { Float(3 + 2 * ($0 % 7)) }
    let first = await reduceAll(peers, tag: 1, count: count)
    var errors: [String] = []
    for result in first {
        if case .failure(let error) = result { errors.append("\(error)") }
        if case .success(let values) = result { #expect(values != expected || false, "an altered stream summed without an error") }
    }
    #expect(errors.count == 2, "both members abort: \(errors)")
    #expect(errors.contains { $0.contains("integrity") }, "\(errors)")
    // Formed again (a new epoch, fresh TLS links): the retry is exact.
    try await connectAll(peers, RingView(epoch: 2, members: members))
    let second = await reduceAll(peers, tag: 2, count: count)
    for result in second { #expect(try result.get() == expected) }
    for peer in peers { await peer.shutdown() }
}
