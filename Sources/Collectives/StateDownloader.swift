import CZstd
import Foundation
import Logging
import Transport

/// Downloads a shared state from one or more donors at once (docs/protocol.md, section 4).
///
/// The canonical encoding is cut into chunks. With several donors the joiner first asks each for
/// the SHA-256 of every chunk and keeps the list most donors agree on; then every donor serves
/// chunks from a common queue, on a connection and thread of its own. A chunk that fails its
/// digest, or a donor that errs, hangs up or stops sending (``chunkDeadline``), puts the donor out
/// of use for this download and its chunks back in the queue for the others. The whole state is
/// verified against the expected digest before the call returns; on failure the target holds
/// unspecified bytes.
public struct StateDownloader: Sendable {
    public var chunkSize = 4 << 20
    public var allowZstd = true
    public var connectTimeout: Double = 10
    /// Seconds within which each frame a donor owes (a chunk, or its list of chunk digests) must
    /// have arrived whole, counted from when the joiner starts waiting for it; a donor that misses
    /// it is dropped like a dead one. A stopped process (SIGSTOP, a hung host) keeps its TCP
    /// connection open and sends nothing, and only a bound on the whole frame catches one that
    /// trickles; 30 s is a 4 MiB chunk at about 1 Mbit/s, or hashing tens of GiB for the digests.
    public var chunkDeadline: Double = 30
    let localId: UInt64
    let key: ClusterKey
    let logger: Logger

    public init(localId: UInt64, key: ClusterKey, logger: Logger) {
        self.localId = localId
        self.key = key
        self.logger = logger
    }

    public struct Report: Sendable {
        public var bytes: Int
        public var seconds: Double
        /// Chunks served by each donor (by id), and the donors that were dropped.
        public var chunksByDonor: [UInt64: Int]
        public var rejectedDonors: [UInt64]
    }

    /// Fills `target` with the state of `revision` whose digest is `digest`, from `donors` (their
    /// data ports).
    public func download(into target: SharedState, revision: UInt64, digest: Digest,
                         donors: [PeerEndpoint]) async throws -> Report {
        guard !donors.isEmpty else { throw StateTransferError("no donor to download the state from") }
        let settings = self
        return try await runBlocking { try settings.downloadBlocking(target, revision, digest, donors) }
    }

    private final class Shared: @unchecked Sendable {
        let lock = NSCondition()
        var queue: [Int]
        var done = 0
        var served: [UInt64: Int] = [:]
        var rejected: [UInt64] = []
        var active: Int
        init(chunks: Int, donors: Int) {
            queue = Array(0..<chunks)
            active = donors
        }
    }

    private func downloadBlocking(_ target: SharedState, _ revision: UInt64, _ digest: Digest,
                                  _ donors: [PeerEndpoint]) throws -> Report {
        let start = DispatchTime.now().uptimeNanoseconds
        let size = target.encodedSize
        let chunks = (size + chunkSize - 1) / chunkSize
        var sockets = dialAll(donors)
        guard !sockets.isEmpty else { throw StateTransferError("no state donor could be reached") }
        var dropped: [UInt64] = []

        // Per-chunk digests by majority, when there is more than one donor to ask.
        var expected: [[UInt8]]?
        if sockets.count > 1 {
            var lists: [[UInt8]: Int] = [:]
            let request = StateRequest(revision: revision, digest: digest.bytes, chunkSize: UInt32(chunkSize), first: 0,
                                       count: UInt32(chunks), allowZstd: false, digestsOnly: true)
            // Ask every donor first, then read the answers: the donors hash in parallel.
            var asked: [(PeerEndpoint, any SocketLink)] = []
            for (donor, socket) in sockets {
                do {
                    try socket.sendFrame(.stateRequest, bytes: request.bytes)
                    asked.append((donor, socket))
                } catch {
                    logger.warning("state donor \(donor) did not take the digest request: \(error)")
                }
            }
            // One deadline for all: the donors work on the request at the same time.
            let deadline = ContinuousClock.now + .seconds(chunkDeadline)
            var answered: Set<UInt64> = []
            for (donor, socket) in asked {
                do {
                    let (header, payload) = try socket.receiveFrame(deadline: deadline)
                    if header.type == .stateChunk, payload.count == 32 * chunks { lists[payload, default: 0] += 1 }
                    answered.insert(donor.id)
                } catch {
                    logger.warning("state donor \(donor) dropped: no chunk digests: \(explain(error))")
                }
            }
            // A donor that did not answer may still send its list later, where a chunk is
            // expected: its connection is of no more use.
            for (donor, socket) in sockets where !answered.contains(donor.id) {
                socket.close()
                dropped.append(donor.id)
            }
            sockets.removeAll { !answered.contains($0.0.id) }
            guard !sockets.isEmpty else {
                throw StateTransferError("state download failed: no donor sent the chunk digests within \(chunkDeadline) s (dropped: \(dropped.map(hex)))")
            }
            if let (list, votes) = lists.max(by: { $0.value < $1.value }), votes * 2 > lists.values.reduce(0, +) {
                expected = (0..<chunks).map { Array(list[($0 * 32)..<($0 * 32 + 32)]) }
            }
        }

        let verified = expected
        let shared = Shared(chunks: chunks, donors: sockets.count)
        shared.rejected = dropped
        // Every donor's first batch is handed out before any thread starts: a thread the system
        // starts late still gets its share, instead of finding the queue drained by the others.
        var firstBatches: [[Int]] = []
        for _ in sockets {
            firstBatches.append(Array(shared.queue.prefix(Self.batchChunks)))
            shared.queue.removeFirst(firstBatches.last!.count)
        }
        let group = DispatchGroup()
        for ((donor, socket), first) in zip(sockets, firstBatches) {
            group.enter()
            let thread = Thread { [self] in
                defer { group.leave() }
                work(donor, socket, shared, first, target, revision, digest, verified, size)
            }
            thread.start()
        }
        group.wait()
        for (_, socket) in sockets { socket.close() }
        guard shared.done == chunks else {
            throw StateTransferError("state download failed: every donor was dropped (failed, hung up, or sent nothing for \(chunkDeadline) s) with \(shared.done) of \(chunks) chunks done; dropped: \(shared.rejected.map(hex))")
        }
        guard target.digest() == digest, target.revision == revision else {
            throw StateTransferError("the downloaded state does not match digest \(digest.short)")
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Report(bytes: size, seconds: seconds, chunksByDonor: shared.served, rejectedDonors: shared.rejected)
    }

    /// Dials every donor at once (each within ``connectTimeout``), so that stopped donors cost
    /// one timeout, not one each. Returns the donors reached, in the order given.
    private func dialAll(_ donors: [PeerEndpoint]) -> [(PeerEndpoint, any SocketLink)] {
        final class Dialed: @unchecked Sendable {
            let lock = NSLock()
            var sockets: [(any SocketLink)?]
            init(_ count: Int) { sockets = Array(repeating: nil, count: count) }
        }
        let dialed = Dialed(donors.count)
        let group = DispatchGroup()
        for (i, donor) in donors.enumerated() {
            group.enter()
            let thread = Thread { [self] in
                defer { group.leave() }
                do {
                    let (socket, _) = try BlockingSocket.dial(host: donor.host, port: donor.port, localId: localId, key: key,
                                                              purpose: .stateTransfer, info: [], timeout: connectTimeout)
                    // Sends are bounded too (requests are small; this only matters with full buffers).
                    socket.socket.setTimeouts(chunkDeadline)
                    dialed.lock.withLock { dialed.sockets[i] = socket }
                } catch {
                    logger.warning("state donor \(donor) unreachable: \(error)")
                }
            }
            thread.start()
        }
        group.wait()
        return zip(donors, dialed.sockets).compactMap { donor, socket in socket.map { (donor, $0) } }
    }

    /// A log line's reason: a missed deadline said as such, other errors as they are.
    private func explain(_ error: any Error) -> String {
        if let io = error as? BlockingSocket.IOError, io.errno == ETIMEDOUT {
            return "nothing whole within the chunk deadline of \(chunkDeadline) s (a stopped or stalled donor)"
        }
        return "\(error)"
    }

    /// Chunks a donor takes from the queue at a time.
    private static let batchChunks = 4

    /// One donor's loop: take a few chunks (`first`, then from the queue), fetch, verify, write;
    /// on any fault give them back.
    private func work(_ donor: PeerEndpoint, _ socket: any SocketLink, _ shared: Shared, _ first: [Int], _ target: SharedState,
                      _ revision: UInt64, _ digest: Digest, _ expected: [[UInt8]]?, _ size: Int) {
        var assigned = first
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer { plain.deallocate() }
        var limits = FrameLimits()
        limits.maxControlPayload = max(limits.maxControlPayload, ZSTD_compressBound(chunkSize))
        while true {
            shared.lock.lock()
            while assigned.isEmpty, shared.queue.isEmpty, shared.done < (size + chunkSize - 1) / chunkSize, shared.active > 1 {
                // Another donor still holds chunks: wait in case it fails and gives them back.
                shared.lock.wait()
            }
            if assigned.isEmpty, shared.queue.isEmpty {
                shared.active -= 1
                shared.lock.broadcast()
                shared.lock.unlock()
                return
            }
            let mine = assigned.isEmpty ? Array(shared.queue.prefix(Self.batchChunks)) : assigned
            if assigned.isEmpty { shared.queue.removeFirst(mine.count) }
            assigned = []
            shared.lock.unlock()
            var finished = 0
            do {
                // Consecutive chunks go in one request; a gap starts another.
                var runs: [(Int, Int)] = []
                for c in mine {
                    if let last = runs.last, last.0 + last.1 == c { runs[runs.count - 1].1 += 1 } else { runs.append((c, 1)) }
                }
                for (first, count) in runs {
                    let request = StateRequest(revision: revision, digest: digest.bytes, chunkSize: UInt32(chunkSize),
                                               first: UInt32(first), count: UInt32(count), allowZstd: allowZstd, digestsOnly: false)
                    try socket.sendFrame(.stateRequest, bytes: request.bytes)
                    for c in first..<(first + count) {
                        let deadline = ContinuousClock.now + .seconds(chunkDeadline)
                        let (header, payload) = try socket.receiveFrame(limits: limits, deadline: deadline)
                        guard header.type == .stateChunk, header.aux == UInt64(c) else {
                            throw StateTransferError(header.type == .stateError
                                ? escapedForLog(String(decoding: payload, as: UTF8.self)) : "unexpected \(header.type) frame")
                        }
                        let range = (c * chunkSize)..<min(size, (c + 1) * chunkSize)
                        try unpack(header, payload, into: plain, count: range.count)
                        let bytes = UnsafeRawBufferPointer(rebasing: plain[0..<range.count])
                        if let expected, Digest.of(bytes).bytes != expected[c] {
                            throw StateTransferError("chunk \(c) failed its digest")
                        }
                        try target.write(range, from: bytes.baseAddress!)
                        finished += 1
                        shared.lock.withLock {
                            shared.done += 1
                            shared.served[donor.id, default: 0] += 1
                        }
                    }
                }
            } catch {
                logger.warning("state donor \(donor) dropped: \(explain(error))")
                shared.lock.withLock {
                    shared.queue.append(contentsOf: mine.dropFirst(finished))
                    shared.rejected.append(donor.id)
                    shared.active -= 1
                    shared.lock.broadcast()
                }
                return
            }
        }
    }

    private func unpack(_ header: FrameHeader, _ payload: [UInt8], into plain: UnsafeMutableRawBufferPointer, count: Int) throws {
        if header.flags & 1 == 0 {
            guard payload.count == count else { throw StateTransferError("chunk of \(payload.count) bytes where \(count) were expected") }
            payload.withUnsafeBytes { plain.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
            return
        }
        let n = payload.withUnsafeBytes { src in
            ZSTD_decompress(plain.baseAddress!, count, src.baseAddress!, src.count)
        }
        guard ZSTD_isError(n) == 0, n == count else { throw StateTransferError("a compressed chunk did not decompress to \(count) bytes") }
    }
}
