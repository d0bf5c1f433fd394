import CZstd
import Foundation
import Logging
import Transport

/// Serves this peer's shared state to joiners on the data port (docs/protocol.md, section 4).
///
/// Requests name the revision and digest they want; a server whose state differs says so
/// instead of serving other bytes. Chunks are read under `lock`, which the owner of the state
/// also holds while it changes the state, so a chunk never mixes two revisions.
public final class StateServer: @unchecked Sendable {
    public let state: SharedState
    /// Held by whoever writes `state` (e.g. the outer update); chunks are copied out under it.
    public let lock = NSLock()
    private let logger: Logger
    /// Test hook: serve chunks with one byte flipped (a faulty or lying donor).
    public var corruptChunksForTesting = false
    /// Test hook: hang up after serving this many chunks (a donor that dies mid-transfer).
    public var dieAfterChunksForTesting: Int?
    /// Chunks sent so far, over every connection (counts for the test hooks).
    private var servedChunks = 0
    /// While set: a stopped process (SIGSTOP) from this many chunks on (see ``freezeForTesting(afterChunks:)``).
    private var frozenFromChunk: Int?
    private let frozenChanged = NSCondition()
    /// The digest of the state at a revision: a full SHA-256 pass costs ~0.15 s per 256 MiB, far
    /// too much per request. The state's owner changes it only together with its revision.
    private var cachedDigest: (revision: UInt64, digest: Digest)?
    /// Per-chunk digests at a revision and chunk size, shared by every joiner that asks.
    private var cachedChunkDigests: (revision: UInt64, chunkSize: Int, bytes: [UInt8])?

    /// How long one send to a joiner, or the wait for its next request, may block: a joiner that
    /// stops reading (frozen with SIGSTOP, or gone without a FIN) releases the serving thread and
    /// its descriptor after this, instead of holding them until the process ends.
    public let peerTimeout: Double
    private var active = 0

    /// Joiners being served now, each on a thread of its own.
    public var activeTransfers: Int { lock.withLock { active } }

    public init(state: SharedState, peerTimeout: Double = 30, logger: Logger) {
        self.state = state
        self.peerTimeout = peerTimeout
        self.logger = logger
    }

    /// Test hook: behave like a stopped process (SIGSTOP) once `afterChunks` more chunks have
    /// been sent: connections stay open, and nothing more is answered or sent until
    /// ``thawForTesting()``. With 0 even requests for chunk digests go unanswered.
    public func freezeForTesting(afterChunks: Int = 0) {
        frozenChanged.withLock { frozenFromChunk = lock.withLock { servedChunks } + afterChunks }
    }

    /// Test hook: the end of ``freezeForTesting(afterChunks:)`` (SIGCONT): serving goes on where it stopped.
    public func thawForTesting() {
        frozenChanged.withLock {
            frozenFromChunk = nil
            frozenChanged.broadcast()
        }
    }

    /// Blocks while frozen (test hook); never blocks otherwise.
    private func waitWhileFrozen() {
        frozenChanged.withLock {
            while let from = frozenFromChunk, lock.withLock({ servedChunks }) >= from { frozenChanged.wait() }
        }
    }

    /// Answers requests on `socket` until the peer hangs up (runs on a thread of its own).
    func serve(_ socket: any SocketLink, peer: UInt64) {
        lock.withLock { active += 1 }
        defer {
            socket.close()
            lock.withLock { active -= 1 }
        }
        socket.socket.setTimeouts(peerTimeout)
        var limits = FrameLimits()
        limits.maxControlPayload = 1024
        while true {
            let request: StateRequest
            do {
                let (header, payload) = try socket.receiveFrame(limits: limits)
                guard header.type == .stateRequest, let parsed = StateRequest(payload) else {
                    try? socket.sendFrame(.stateError, bytes: Array("malformed state request".utf8))
                    return
                }
                request = parsed
            } catch {
                return  // the joiner is done or gone
            }
            do {
                try answer(request, on: socket)
            } catch {
                logger.info("state transfer to \(hex(peer)) ended: \(error)")
                return
            }
        }
    }

    private func answer(_ request: StateRequest, on socket: any SocketLink) throws {
        waitWhileFrozen()
        let (revision, digest, size) = lock.withLock { () -> (UInt64, Digest, Int) in
            if cachedDigest?.revision != state.revision { cachedDigest = (state.revision, state.digest()) }
            return (state.revision, cachedDigest!.digest, state.encodedSize)
        }
        guard revision == request.revision, digest.bytes == request.digest else {
            try socket.sendFrame(.stateError, bytes: Array("this peer holds revision \(revision) (\(digest.short)), not the one asked for".utf8))
            return
        }
        let chunk = Int(request.chunkSize)
        // The chunk size first: a request of size 0 must not divide by it (found by fuzzing).
        guard chunk >= 4096, chunk <= StateRequest.maxChunkSize else {
            try socket.sendFrame(.stateError, bytes: Array("chunk size \(chunk) outside 4096...\(StateRequest.maxChunkSize)".utf8))
            return
        }
        let chunks = (size + chunk - 1) / chunk
        guard Int(request.first) + Int(request.count) <= chunks else {
            try socket.sendFrame(.stateError, bytes: Array("chunk range outside the state".utf8))
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        if request.digestsOnly {
            let cached = lock.withLock { () -> [UInt8]? in
                guard let c = cachedChunkDigests, c.revision == revision, c.chunkSize == chunk else { return nil }
                return c.bytes
            }
            var all = cached ?? []
            if cached == nil {
                for c in 0..<chunks {
                    let range = (c * chunk)..<min(size, (c + 1) * chunk)
                    guard copyChunk(range, into: buffer, at: revision) else {
                        throw StateTransferError("the state changed while serving")
                    }
                    all += Digest.of(UnsafeRawBufferPointer(rebasing: buffer[0..<range.count])).bytes
                }
                lock.withLock { cachedChunkDigests = (revision, chunk, all) }
            }
            try socket.sendFrame(.stateChunk, aux: UInt64.max,
                                 bytes: Array(all[(Int(request.first) * 32)..<(Int(request.first + request.count) * 32)]))
            return
        }
        let bound = ZSTD_compressBound(chunk)
        let packed = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 64)
        defer { packed.deallocate() }
        for c in Int(request.first)..<Int(request.first + request.count) {
            let range = (c * chunk)..<min(size, (c + 1) * chunk)
            guard copyChunk(range, into: buffer, at: revision) else {
                try socket.sendFrame(.stateError, bytes: Array("the state moved on while serving".utf8))
                return
            }
            if corruptChunksForTesting { buffer[range.count / 2] ^= 0x10 }
            waitWhileFrozen()
            let n = lock.withLock { () -> Int in servedChunks += 1; return servedChunks }
            if let limit = dieAfterChunksForTesting, n > limit { throw StateTransferError("test hook: donor dies") }
            var payload = UnsafeRawBufferPointer(rebasing: buffer[0..<range.count])
            var flags: UInt16 = 0
            if request.allowZstd {
                // Level 1: at loopback and LAN speeds only a fast compressor pays (PERFORMANCE.md).
                let n = ZSTD_compress(packed.baseAddress!, bound, buffer.baseAddress!, range.count, 1)
                if ZSTD_isError(n) == 0, n < range.count * 9 / 10 {
                    payload = UnsafeRawBufferPointer(rebasing: packed[0..<n])
                    flags = 1
                }
            }
            try socket.sendFrame(FrameHeader(type: .stateChunk, flags: flags, length: UInt32(payload.count), aux: UInt64(c)),
                                 [payload])
        }
    }
}

extension StateServer {
    /// Copies bytes `range` of the encoding under the state's lock; false if the state has moved
    /// past `revision` (the chunk would mix two revisions).
    fileprivate func copyChunk(_ range: Range<Int>, into buffer: UnsafeMutableRawBufferPointer, at revision: UInt64) -> Bool {
        lock.withLock {
            state.read(range, into: buffer.baseAddress!)
            return state.revision == revision
        }
    }
}

/// One request of the state-transfer protocol (payload of a `stateRequest` frame, little-endian):
/// revision u64, digest 32 bytes, chunk size u32, first chunk u32, chunk count u32, flags u8
/// (bit 0: zstd allowed, bit 1: chunk digests instead of chunks).
struct StateRequest {
    static let maxChunkSize = 8 << 20
    var revision: UInt64
    var digest: [UInt8]
    var chunkSize: UInt32
    var first: UInt32
    var count: UInt32
    var allowZstd: Bool
    var digestsOnly: Bool

    init(revision: UInt64, digest: [UInt8], chunkSize: UInt32, first: UInt32, count: UInt32, allowZstd: Bool, digestsOnly: Bool) {
        self.revision = revision
        self.digest = digest
        self.chunkSize = chunkSize
        self.first = first
        self.count = count
        self.allowZstd = allowZstd
        self.digestsOnly = digestsOnly
    }

    init?(_ payload: [UInt8]) {
        guard payload.count == 8 + 32 + 4 * 3 + 1 else { return nil }
        func u32(_ at: Int) -> UInt32 { payload[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        revision = payload[0..<8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        digest = Array(payload[8..<40])
        chunkSize = u32(40)
        first = u32(44)
        count = u32(48)
        allowZstd = payload[52] & 1 != 0
        digestsOnly = payload[52] & 2 != 0
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: revision.littleEndian) { out += $0 }
        out += digest
        for v in [chunkSize, first, count] { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        out.append((allowZstd ? 1 : 0) | (digestsOnly ? 2 : 0))
        return out
    }
}

public struct StateTransferError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
