import Collectives
import Logging
import Transport

/// The cluster key every test peer shares.
public let testKey = try! ClusterKey(string: "peernode test cluster key 0123456789")
/// The same key on plaintext links: for tests that speak or read the peernode frames on the
/// wire themselves (a raw client, a hand-made reject).
public let plaintextTestKey = testKey.with(security: .plaintext)

/// Runs `body` with `size` communicators joined in one ring over in-memory links, then shuts
/// them down (gloo's `spawn`, in-process).
public func withCluster<T: Sendable>(
    size: Int, options: CommunicatorOptions = CommunicatorOptions(),
    _ body: @Sendable ([Communicator]) async throws -> T
) async throws -> T {
    try await withPeers(size: size, options: options, body) { peers in
        // One in-memory link per stream from each rank to the next: the same frames as on TCP,
        // without ports, handshakes or the kernel.
        var left = [[any Link]](repeating: [], count: size)
        var right = [[any Link]](repeating: [], count: size)
        if size > 1 {
            for rank in 0..<size {
                for _ in 0..<max(options.streams, 1) {
                    let (out, into) = MemoryLink.pair()
                    right[rank].append(out)
                    left[(rank + 1) % size].append(into)
                }
            }
        }
        for (rank, peer) in peers.enumerated() {
            try await peer.connect(epoch: 1, rank: rank, size: size, left: left[rank], right: right[rank])
        }
    }
}

/// ``withCluster(size:options:_:)`` over real TCP links on loopback: each peer listens on a data
/// port, dials its right neighbour and is authenticated, as in the daemon.
public func withSocketCluster<T: Sendable>(
    size: Int, options: CommunicatorOptions = CommunicatorOptions(),
    _ body: @Sendable ([Communicator]) async throws -> T
) async throws -> T {
    try await withPeers(size: size, options: options, body) { peers in
        var members: [PeerEndpoint] = []
        for peer in peers {
            let port = try await peer.listen(host: "127.0.0.1", port: 0)
            members.append(PeerEndpoint(id: peer.localId, host: "127.0.0.1", port: port))
        }
        let view = RingView(epoch: 1, members: members)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for peer in peers { group.addTask { try await peer.connect(view: view) } }
            try await group.waitForAll()
        }
    }
}

/// `size` communicators, joined into a ring by `form`, handed to `body`, and shut down after,
/// also when forming or the body fails.
private func withPeers<T: Sendable>(
    size: Int, options: CommunicatorOptions, _ body: @Sendable ([Communicator]) async throws -> T,
    form: ([Communicator]) async throws -> Void
) async throws -> T {
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let peers = (0..<size).map { i in
        Communicator(localId: UInt64(0xA000 + i), key: testKey, options: options, logger: logger)
    }
    do {
        try await form(peers)
        let result = try await body(peers)
        for peer in peers { await peer.shutdown() }
        return result
    } catch {
        for peer in peers { await peer.shutdown() }
        throw error
    }
}

/// Runs `body(rank, peer)` on every peer at once and returns the results in rank order.
public func onEveryPeer<T: Sendable>(
    _ peers: [Communicator], _ body: @escaping @Sendable (Int, Communicator) async throws -> T
) async throws -> [T] {
    try await withThrowingTaskGroup(of: (Int, T).self) { group in
        for (rank, peer) in peers.enumerated() { group.addTask { (rank, try await body(rank, peer)) } }
        var results = [T?](repeating: nil, count: peers.count)
        for try await (rank, value) in group { results[rank] = value }
        return results.map { $0! }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator for test data, the same on every
/// platform and Swift version (never the system RNG: tests must repeat).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
