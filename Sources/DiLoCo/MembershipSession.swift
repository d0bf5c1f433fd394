import Collectives
import Foundation
import Logging

/// The cluster as DiLoCo sees it when members come and go: membership (``MembershipNode``), the
/// ring (``Communicator``), and shared-state transfer (``StateServer``, ``StateDownloader``).
///
/// - updateTopology: the membership update point, then the ring of the committed view.
/// - syncSharedState: every member contributes a record (revision, digest, lineage) to an
///   all-gather named by the update point; all pick the
///   same canonical state (highest revision, then the digest most members hold, then the
///   smallest digest); members that differ download it from those that hold it. In the
///   one-step-delayed mode the record also says whether the member holds a pseudo-gradient.
/// - allReduce: the collective, then the outcome round: a result is kept only if every member
///   of the epoch finished it (otherwise the call fails as aborted and DiLoCo retries).
public final class MembershipSession: ClusterSession, @unchecked Sendable {
    public let node: MembershipNode
    public let communicator: Communicator
    public let server: StateServer
    private let downloader: StateDownloader
    private let logger: Logger
    private let lock = NSLock()
    private var ring: RingView?
    private var downloadCount = 0
    private var lineMerges = 0
    /// The number of the last update point passed, in its view's epoch: collectives until the
    /// next one carry it in their identity (``CollectiveID/point``).
    private var point: UInt64 = 0

    public init(node: MembershipNode, communicator: Communicator, server: StateServer, downloader: StateDownloader,
                logger: Logger) {
        self.node = node
        self.communicator = communicator
        self.server = server
        self.downloader = downloader
        self.logger = logger
        node.attach(communicator)
        communicator.serveState(server)
    }

    public var currentRing: RingView? { lock.withLock { ring } }

    /// Shared-state downloads this peer completed (a joiner: one, at its first sync).
    public var downloads: Int { lock.withLock { downloadCount } }

    /// Merges of the states of lines that met, computed by this peer.
    public var merges: Int { lock.withLock { lineMerges } }

    public var line: UInt64 { lock.withLock { ring?.line ?? 0 } }

    public func updateTopology() async throws -> Int {
        var attempts = 0
        while true {
            let passed = try await node.passUpdatePoint()
            let view = passed.ring
            // The update point passed just before this node learned it is out of that view (a
            // paused peer reads the point and its removal together): meet at the next one.
            if node.view == nil { continue }
            lock.withLock { point = passed.point }
            guard lock.withLock({ ring?.epoch }) != view.epoch || communicator.isRingBroken else { return view.count }
            do {
                try await communicator.connect(view: view)
                lock.withLock { ring = view }
                return view.count
            } catch let error as CollectiveError where attempts < 3 && (node.view?.epoch ?? 0) > view.epoch {
                // A member of that ring left or died while it was being formed; the membership
                // has moved on. Meet the others at the next update point and form that ring.
                attempts += 1
                logger.warning("ring of epoch \(view.epoch) not formed (\(error.message)); forming the next view's")
            }
        }
    }

    public func recover() async throws -> Int { try await updateTopology() }

    public func syncSharedState(_ state: SharedState) async throws {
        _ = try await sync(state, contributing: false)
    }

    public func syncSharedState(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        try await sync(state, contributing: contributing)
    }

    /// One record per member, 208 bytes, gathered in rank order: version (1), revision (u64
    /// LE), digest (32), holds a pseudo-gradient (0/1), 6 zeros, the state's lineage (160).
    static let recordSize = 48 + Lineage.byteCount

    private struct Entry {
        var rank: Int
        var revision: UInt64
        var digest: [UInt8]
        var lineage: Lineage
    }

    private func sync(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        guard let (ring, point) = lock.withLock({ ring.map { ($0, point) } }), ring.rank(of: communicator.localId) != nil else {
            throw CollectiveError(code: .notConnected, message: "no ring: update the topology first")
        }
        var mine: [UInt8] = [1]
        withUnsafeBytes(of: state.revision.littleEndian) { mine += $0 }
        let (digest, lineage) = server.lock.withLock { (state.digest(), state.lineage) }
        mine += digest.bytes
        mine.append(contributing ? 1 : 0)
        mine += [UInt8](repeating: 0, count: 48 - mine.count)
        mine += lineage.bytes
        let rows = try await communicator.allGather(mine, id: CollectiveID(purpose: .syncRecords, point: point))

        var entries: [Entry] = []
        var contributors = 0
        for (r, row) in rows.enumerated() {
            guard row.count == Self.recordSize, row[0] == 1 else {
                throw CollectiveError(code: .protocolViolation, message: "member at rank \(r) sent a sync record of an unknown version \(row.first ?? 0)")
            }
            let revision = row[1..<9].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            entries.append(Entry(rank: r, revision: revision, digest: Array(row[9..<41]), lineage: Lineage(bytes: row[48...])))
            if row[41] == 1 { contributors += 1 }
        }
        let counts = Contributors(members: ring.count, contributing: contributors)
        // States another present state already contains are merely behind (a fresh joiner, a
        // member that was away); what is left is one line's history, or several to merge.
        let live = entries.filter { e in !entries.contains { $0.lineage.line != e.lineage.line && e.lineage.isContained(in: $0.lineage) } }
        let lines = Set(live.map(\.lineage.line))
        if lines.count > 1 {
            try await mergeLines(live, lines: lines, ring: ring, into: state, digest: digest)
            return counts
        }
        guard let top = (live.isEmpty ? entries : live).map(\.revision).max() else { return counts }
        let candidates = (live.isEmpty ? entries : live).filter { $0.revision == top }
        let canonical = Self.majority(candidates)
        if state.revision == top, digest.bytes == canonical { return counts }
        let donors = candidates.filter { $0.digest == canonical }.map { ring.members[$0.rank] }
        logger.info("shared state behind the cluster: downloading", metadata: [
            "revision.local": "\(state.revision)", "revision.cluster": "\(top)", "donors": "\(donors.count)"])
        let scratch = try await download(like: state, revision: top, digest: canonical, donors: donors)
        try server.lock.withLock { try state.copy(from: scratch) }
        return counts
    }

    /// The digest most of `entries` hold (ties: the smallest), as every member picks it.
    private static func majority(_ entries: [Entry]) -> [UInt8] {
        var votes: [[UInt8]: Int] = [:]
        for e in entries { votes[e.digest, default: 0] += 1 }
        return votes.max { a, b in a.value != b.value ? a.value < b.value : a.key.lexicographicallyPrecedes(b.key) == false }!.key
    }

    /// Downloads the state `digest` at `revision` from `donors` into a new state of this layout.
    private func download(like state: SharedState, revision: UInt64, digest: [UInt8], donors: [PeerEndpoint]) async throws -> SharedState {
        let scratch = try SharedState(specs: state.specs)
        let report: StateDownloader.Report
        do {
            report = try await downloader.download(into: scratch, revision: revision, digest: Digest(bytes: digest), donors: donors)
        } catch let error as StateTransferError {
            // The others are already past the sync: breaking the ring makes them notice now, not
            // at the all-reduce's timeout, and every member meets at the next update point.
            communicator.breakCurrentRing(reason: "state download failed: \(error)")
            throw CollectiveError(code: .membershipChanged, message: "state download failed: \(error)")
        }
        lock.withLock { downloadCount += 1 }
        logger.info("shared state downloaded", metadata: [
            "bytes": "\(report.bytes)", "seconds": "\(report.seconds)", "donors.used": "\(report.chunksByDonor.count)"])
        return scratch
    }

    /// Two or more lines of the cluster met in this ring (docs/diloco.md, "Merging two lines"):
    /// every member gets each line's state (its own, or downloaded from that line's members),
    /// and computes the same weighted merge from them.
    private func mergeLines(_ live: [Entry], lines: Set<UInt64>, ring: RingView, into state: SharedState,
                            digest: Digest) async throws {
        var parts: [LineMerge.Part] = []
        for line in lines.sorted() {
            let holders = live.filter { $0.lineage.line == line }
            let top = holders.map(\.revision).max()!
            let canonical = Self.majority(holders.filter { $0.revision == top })
            let lineage = holders.first { $0.revision == top && $0.digest == canonical }!.lineage
            if state.revision == top, digest.bytes == canonical {
                let copy = try SharedState(specs: state.specs)
                try server.lock.withLock { try copy.copy(from: state) }
                parts.append(LineMerge.Part(state: copy, lineage: lineage))
            } else {
                let donors = holders.filter { $0.revision == top && $0.digest == canonical }.map { ring.members[$0.rank] }
                parts.append(LineMerge.Part(state: try await download(like: state, revision: top, digest: canonical, donors: donors),
                                            lineage: lineage))
            }
        }
        let merged = try SharedState(specs: state.specs)
        try LineMerge.merge(parts, viewLine: ring.line, into: merged)
        try server.lock.withLock { try state.copy(from: merged) }
        lock.withLock { lineMerges += 1 }
        let (_, weights) = LineMerge.weights(parts.map(\.lineage), viewLine: ring.line)
        let names = parts.map { String(format: "%016llx", $0.lineage.line) }.joined(separator: ", ")
        logger.warning("merged the shared states of lines \(names) (weights by peer-steps since they parted: \(weights.map(String.init).joined(separator: ", "))) into revision \(state.revision)",
                       metadata: ["digest": "\(state.digest().short)"])
    }

    public func updatingState<T>(_ body: () throws -> T) rethrows -> T {
        try server.lock.withLock { try body() }
    }

    public func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                          options: AllReduceOptions) async throws {
        guard let (epoch, point) = lock.withLock({ ring.map { ($0.epoch, point) } }) else {
            throw CollectiveError(code: .notConnected, message: "no ring: update the topology first")
        }
        // A collective of this update point: a retry after an abort, past the next one, is
        // another collective with an outcome round of its own.
        var options = options
        options.id.point = point
        var failure: CollectiveError?
        do {
            try await communicator.allReduce(input: input, output: output, type: type, options: options)
        } catch let error as CollectiveError {
            failure = error
        }
        let keep = try await node.agree(epoch: epoch, collective: options.id, succeeded: failure == nil)
        if let failure { throw failure }
        if !keep { throw CollectiveError.aborted("another member did not finish the collective; the cluster discards it") }
    }
}
