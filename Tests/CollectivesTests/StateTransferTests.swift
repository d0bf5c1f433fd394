import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing

private func makeState(_ megabytes: Int, revision: UInt64, seed: UInt64) throws -> SharedState {
    let n = megabytes << 18
    let state = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [n]),
                                        TensorSpec(name: "momentum", dtype: .f32, shape: [n / 2])], revision: revision)
    var rng = SplitMix64(seed: seed)
    let theta = state.floats("theta")!
    for i in 0..<n { theta[i] = Float(rng.next() >> 40) }
    return state  // momentum stays zero: compressible
}

private func quiet() -> Logger {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}

/// Donors: communicators on loopback whose data ports serve `state` (one server per donor).
private func withDonors<T>(_ count: Int, serving state: SharedState, configure: (Int, StateServer) -> Void = { _, _ in },
                           _ body: ([PeerEndpoint]) async throws -> T) async throws -> T {
    var peers: [Communicator] = []
    var endpoints: [PeerEndpoint] = []
    for i in 0..<count {
        let peer = Communicator(localId: UInt64(100 + i), key: testKey, logger: quiet())
        let port = try await peer.listen(host: "127.0.0.1", port: 0)
        let server = StateServer(state: state, logger: quiet())
        configure(i, server)
        peer.serveState(server)
        peers.append(peer)
        endpoints.append(PeerEndpoint(id: UInt64(100 + i), host: "127.0.0.1", port: port))
    }
    do {
        let result = try await body(endpoints)
        for p in peers { await p.shutdown() }
        return result
    } catch {
        for p in peers { await p.shutdown() }
        throw error
    }
}

@Test(arguments: [1, 3])
func aJoinerDownloadsTheStateFromEveryDonor(donors: Int) async throws {
    let source = try makeState(6, revision: 12, seed: 1)
    try await withDonors(donors, serving: source) { endpoints in
        let target = try makeState(6, revision: 0, seed: 2)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkSize = 256 << 10
        let report = try await downloader.download(into: target, revision: 12, digest: source.digest(), donors: endpoints)
        #expect(target.digest() == source.digest())
        #expect(target.revision == 12)
        #expect(report.rejectedDonors.isEmpty)
        #expect(report.chunksByDonor.count == donors, "every donor served a share: \(report.chunksByDonor)")
    }
}

@Test func aDonorServingWrongBytesIsDroppedAndTheOthersFinish() async throws {
    let source = try makeState(4, revision: 3, seed: 5)
    try await withDonors(3, serving: source, configure: { i, server in server.corruptChunksForTesting = i == 1 }) { endpoints in
        let target = try makeState(4, revision: 0, seed: 6)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkSize = 128 << 10
        let report = try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        #expect(target.digest() == source.digest())
        #expect(report.rejectedDonors == [101])
    }
}

@Test func aDonorDyingMidTransferIsReplacedByAnother() async throws {
    let source = try makeState(4, revision: 3, seed: 7)
    try await withDonors(2, serving: source, configure: { i, server in if i == 0 { server.dieAfterChunksForTesting = 3 } }) { endpoints in
        let target = try makeState(4, revision: 0, seed: 8)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkSize = 64 << 10
        let report = try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        #expect(target.digest() == source.digest())
        #expect(report.rejectedDonors == [100])
        #expect(report.chunksByDonor[100, default: 0] <= 3)
    }
}

@Test func aSingleLyingDonorOrAStaleStateFailsCleanly() async throws {
    let source = try makeState(1, revision: 3, seed: 9)
    try await withDonors(1, serving: source, configure: { _, server in server.corruptChunksForTesting = true }) { endpoints in
        let target = try makeState(1, revision: 0, seed: 10)
        let downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        await #expect(throws: StateTransferError.self) {
            _ = try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        }
    }
    try await withDonors(1, serving: source) { endpoints in
        let target = try makeState(1, revision: 0, seed: 10)
        let downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        // Asking for a revision the donor does not hold: it says so instead of serving other bytes.
        await #expect(throws: StateTransferError.self) {
            _ = try await downloader.download(into: target, revision: 4, digest: source.digest(), donors: endpoints)
        }
    }
}
