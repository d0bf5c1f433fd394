import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing
import Transport

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
    var servers: [StateServer] = []
    var endpoints: [PeerEndpoint] = []
    for i in 0..<count {
        let peer = Communicator(localId: UInt64(100 + i), key: testKey, logger: quiet())
        let port = try await peer.listen(host: "127.0.0.1", port: 0)
        let server = StateServer(state: state, logger: quiet())
        configure(i, server)
        peer.serveState(server)
        peers.append(peer)
        servers.append(server)
        endpoints.append(PeerEndpoint(id: UInt64(100 + i), host: "127.0.0.1", port: port))
    }
    // Frozen donors run on at the end, so that no serving thread outlives the test.
    do {
        let result = try await body(endpoints)
        for s in servers { s.thawForTesting() }
        for p in peers { await p.shutdown() }
        return result
    } catch {
        for s in servers { s.thawForTesting() }
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

/// The outcome of `work` if it ends within `seconds`, else nil. A download blocked on a socket
/// cannot be cancelled, so waiting for it without a bound would hang the test run instead of
/// failing the test.
private func outcome<T: Sendable>(within seconds: Double,
                                  _ work: @escaping @Sendable () async throws -> T) async -> Result<T, any Error>? {
    let box = OutcomeBox<T>()
    Task {
        do { box.set(.success(try await work())) } catch { box.set(.failure(error)) }
    }
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if let result = box.get() { return result }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return box.get()
}

private final class OutcomeBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, any Error>?
    func set(_ value: Result<T, any Error>) { lock.withLock { result = value } }
    func get() -> Result<T, any Error>? { lock.withLock { result } }
}

/// Far above the download deadline below plus the healthy donor's time, on a busy machine.
private let frozenDonorBound = 40.0

@Test func aFrozenDonorIsDroppedAfterTheChunkDeadlineAndAnotherFinishes() async throws {
    let source = try makeState(4, revision: 3, seed: 11)
    try await withDonors(2, serving: source, configure: { i, server in if i == 0 { server.freezeForTesting(afterChunks: 3) } }) { endpoints in
        let target = try makeState(4, revision: 0, seed: 12)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkSize = 64 << 10
        downloader.chunkDeadline = 2
        let started = ContinuousClock.now
        let result = await outcome(within: frozenDonorBound) { [downloader] in
            try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        }
        guard let result else {
            Issue.record("the download was still waiting on the frozen donor after \(frozenDonorBound) s")
            return
        }
        let report = try result.get()
        #expect(target.digest() == source.digest())
        #expect(report.rejectedDonors == [100])
        #expect(report.chunksByDonor[100, default: 0] <= 3)
        // Not before the deadline: the frozen donor held chunks the other could only take after it.
        #expect(ContinuousClock.now - started >= .seconds(2))
    }
}

@Test func onlyFrozenDonorsFailTheDownloadWithinTheBound() async throws {
    let source = try makeState(2, revision: 3, seed: 13)
    // One freezes before it even sends the chunk digests, the other mid-transfer.
    try await withDonors(2, serving: source, configure: { i, server in server.freezeForTesting(afterChunks: i == 0 ? 0 : 2) }) { endpoints in
        let target = try makeState(2, revision: 0, seed: 14)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkSize = 64 << 10
        downloader.chunkDeadline = 2
        let result = await outcome(within: frozenDonorBound) { [downloader] in
            try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        }
        guard let result else {
            Issue.record("the download was still waiting on frozen donors after \(frozenDonorBound) s")
            return
        }
        #expect(throws: StateTransferError.self) { try result.get() }
    }
    // A single donor (no digest round) frozen at once.
    try await withDonors(1, serving: source, configure: { _, server in server.freezeForTesting() }) { endpoints in
        let target = try makeState(2, revision: 0, seed: 14)
        var downloader = StateDownloader(localId: 1, key: testKey, logger: quiet())
        downloader.chunkDeadline = 2
        let result = await outcome(within: frozenDonorBound) { [downloader] in
            try await downloader.download(into: target, revision: 3, digest: source.digest(), donors: endpoints)
        }
        guard let result else {
            Issue.record("the download was still waiting on a frozen donor after \(frozenDonorBound) s")
            return
        }
        #expect(throws: StateTransferError.self) { try result.get() }
    }
}

/// A request with the right revision and digest but a chunk size of 0 (found by fuzzing: it
/// divided by zero and killed the donor) gets a state-error answer, and the donor serves on.
@Test func aStateRequestWithChunkSizeZeroIsRefusedWithoutHarmingTheDonor() async throws {
    let state = try makeState(1, revision: 3, seed: 9)
    try await withDonors(1, serving: state) { donors in
        func request(chunkSize: UInt32) throws -> (FrameHeader, [UInt8]) {
            let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: donors[0].port, localId: 7, key: testKey,
                                                      purpose: .stateTransfer, info: [], timeout: 10)
            defer { socket.close() }
            var payload: [UInt8] = []
            withUnsafeBytes(of: UInt64(3).littleEndian) { payload += $0 }
            payload += state.digest().bytes
            for v: UInt32 in [chunkSize, 0, 1] { withUnsafeBytes(of: v.littleEndian) { payload += $0 } }
            payload.append(0)
            try socket.sendFrame(.stateRequest, bytes: payload)
            var limits = FrameLimits()
            limits.maxControlPayload = 1 << 20
            return try socket.receiveFrame(limits: limits, deadline: .now + .seconds(10))
        }
        let (refused, reason) = try request(chunkSize: 0)
        #expect(refused.type == .stateError, "\(String(decoding: reason, as: UTF8.self))")
        #expect(String(decoding: reason, as: UTF8.self).contains("chunk size 0"))
        let (served, _) = try request(chunkSize: 4096)
        #expect(served.type == .stateChunk)
    }
}
