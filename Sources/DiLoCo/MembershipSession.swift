import Collectives
import Foundation
import Logging

/// The cluster as DiLoCo sees it when members come and go: membership (``MembershipNode``), the
/// ring (``Communicator``), and shared-state transfer (``StateServer``, ``StateDownloader``).
///
/// - updateTopology: the membership update point, then the ring of the committed view.
/// - syncSharedState: every member contributes (revision, digest) to an all-gather; all pick the
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
    private var syncs: UInt64 = 0
    private var downloadCount = 0
    /// Collectives run in the current epoch: outcome rounds are keyed by (epoch, round), and a
    /// tag alone repeats every outer step.
    private var rounds: (epoch: UInt64, count: UInt64) = (0, 0)

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

    public func updateTopology() async throws -> Int {
        var attempts = 0
        while true {
            let view = try await node.updateTopology()
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

    /// One record per rank, 48 bytes: present (1), revision (u64 LE), digest (32), holds a
    /// pseudo-gradient (0/1), zeros. A u8 sum all-reduce of the table is an all-gather.
    private func sync(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        guard let ring = lock.withLock({ ring }), let rank = ring.rank(of: communicator.localId) else {
            throw CollectiveError(code: .notConnected, message: "no ring: update the topology first")
        }
        let record = 48
        var table = [UInt8](repeating: 0, count: ring.count * record)
        var mine: [UInt8] = [1]
        withUnsafeBytes(of: state.revision.littleEndian) { mine += $0 }
        mine += server.lock.withLock { state.digest() }.bytes
        mine.append(contributing ? 1 : 0)
        mine += [UInt8](repeating: 0, count: record - mine.count)
        table.replaceSubrange((rank * record)..<((rank + 1) * record), with: mine)
        let tag = lock.withLock { () -> UInt64 in syncs += 1; return 0x5359_4E43_0000_0000 }
        try await communicator.allReduce(&table, options: AllReduceOptions(tag: tag, op: .sum))

        var entries: [(rank: Int, revision: UInt64, digest: [UInt8])] = []
        var contributors = 0
        for r in 0..<ring.count {
            let row = Array(table[(r * record)..<((r + 1) * record)])
            guard row[0] == 1 else { continue }
            let revision = row[1..<9].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            entries.append((r, revision, Array(row[9..<41])))
            if row[41] == 1 { contributors += 1 }
        }
        let counts = Contributors(members: ring.count, contributing: contributors)
        guard let top = entries.map(\.revision).max() else { return counts }
        var votes: [[UInt8]: Int] = [:]
        for e in entries where e.revision == top { votes[e.digest, default: 0] += 1 }
        let canonical = votes.max { a, b in a.value != b.value ? a.value < b.value : a.key.lexicographicallyPrecedes(b.key) == false }!.key
        let myDigest = mine[9..<41]
        if state.revision == top, Array(myDigest) == canonical { return counts }
        let donors = entries.filter { $0.revision == top && $0.digest == canonical }.map { ring.members[$0.rank] }
        logger.info("shared state behind the cluster: downloading", metadata: [
            "revision.local": "\(state.revision)", "revision.cluster": "\(top)", "donors": "\(donors.count)"])
        let scratch = try SharedState(specs: state.specs)
        let report: StateDownloader.Report
        do {
            report = try await downloader.download(into: scratch, revision: top, digest: Digest(bytes: canonical), donors: donors)
        } catch let error as StateTransferError {
            // The others are already past the sync: breaking the ring makes them notice now, not
            // at the all-reduce's timeout, and every member meets at the next update point.
            communicator.breakCurrentRing(reason: "state download failed: \(error)")
            throw CollectiveError(code: .membershipChanged, message: "state download failed: \(error)")
        }
        try server.lock.withLock { try state.copy(from: scratch) }
        lock.withLock { downloadCount += 1 }
        logger.info("shared state downloaded", metadata: [
            "bytes": "\(report.bytes)", "seconds": "\(report.seconds)", "donors.used": "\(report.chunksByDonor.count)"])
        return counts
    }

    public func updatingState<T>(_ body: () throws -> T) rethrows -> T {
        try server.lock.withLock { try body() }
    }

    public func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                          options: AllReduceOptions) async throws {
        guard let (epoch, round) = lock.withLock({ () -> (UInt64, UInt64)? in
            guard let epoch = ring?.epoch else { return nil }
            if rounds.epoch != epoch { rounds = (epoch, 0) }
            rounds.count += 1
            return (epoch, rounds.count)
        }) else {
            throw CollectiveError(code: .notConnected, message: "no ring: update the topology first")
        }
        var failure: CollectiveError?
        do {
            try await communicator.allReduce(input: input, output: output, type: type, options: options)
        } catch let error as CollectiveError {
            failure = error
        }
        let keep = try await node.agree(epoch: epoch, tag: options.tag &* 0x1_0000_0001 ^ round, succeeded: failure == nil)
        if let failure { throw failure }
        if !keep { throw CollectiveError.aborted("another member did not finish the collective; the cluster discards it") }
    }
}
