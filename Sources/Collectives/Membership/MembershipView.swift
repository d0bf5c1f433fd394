import Transport

/// One node of the cluster as every member knows it: where its control port and (for ring
/// members) its data port listen.
public struct NodeInfo: Hashable, Sendable, Codable, CustomStringConvertible {
    public var id: UInt64
    public var controlHost: String
    public var controlPort: Int
    public var dataHost: String
    public var dataPort: Int
    /// False for a coordinate-only node: it votes and may coordinate, but holds no ring position.
    public var inRing: Bool

    public init(id: UInt64, controlHost: String, controlPort: Int, dataHost: String, dataPort: Int, inRing: Bool) {
        self.id = id
        self.controlHost = controlHost
        self.controlPort = controlPort
        self.dataHost = dataHost
        self.dataPort = dataPort
        self.inRing = inRing
    }

    public var description: String {
        "\(hex(id))@\(controlHost):\(controlPort)" + (inRing ? " data \(dataHost):\(dataPort)" : " (coordinate-only)")
    }
}

/// The committed membership of one epoch: the ordered nodes (every one a voter) and which of
/// them holds the coordinator role. Order matters: ring ranks and the failover order follow it.
///
/// `line` names the history the view belongs to: the founder's id at first, a new id when a
/// part of the cluster that could not reach a quorum for long went on by itself (a fork, see
/// docs/membership.md, "Lines"). Epochs count within a line; two lines merge when they meet.
public struct MembershipView: Hashable, Sendable, Codable, CustomStringConvertible {
    public var epoch: UInt64
    public var line: UInt64
    public var coordinator: UInt64
    public var nodes: [NodeInfo]
    /// The ring order the coordinator planned from measured links (docs/membership.md, "Ring
    /// order"): ring member ids, the rank-0 member first. Empty: the ring follows view order.
    /// Ids no longer in the view are skipped and ring members it does not name follow in view
    /// order (see ``ringIdsInOrder``), so every member derives the same ranks from any view.
    public var ringOrder: [UInt64]

    public init(epoch: UInt64, line: UInt64 = 0, coordinator: UInt64, nodes: [NodeInfo], ringOrder: [UInt64] = []) {
        self.epoch = epoch
        self.line = line
        self.coordinator = coordinator
        self.nodes = nodes
        self.ringOrder = ringOrder
    }

    public var ids: [UInt64] { nodes.map(\.id) }
    public var ringIds: [UInt64] { nodes.filter(\.inRing).map(\.id) }
    public func contains(_ id: UInt64) -> Bool { nodes.contains { $0.id == id } }
    public func node(_ id: UInt64) -> NodeInfo? { nodes.first { $0.id == id } }

    /// Ring member ids in ring order: those of ``ringOrder`` that are ring members, then the
    /// other ring members in view order.
    public var ringIdsInOrder: [UInt64] {
        let ring = ringIds
        guard !ringOrder.isEmpty else { return ring }
        let members = Set(ring)
        var seen = Set<UInt64>()
        let planned = ringOrder.filter { members.contains($0) && seen.insert($0).inserted }
        return planned + ring.filter { !seen.contains($0) }
    }

    /// The data-plane view for ``Communicator/connect(view:)``: ring members in ring order.
    public var ringView: RingView {
        RingView(epoch: epoch, members: ringIdsInOrder.compactMap { id in
            node(id).map { PeerEndpoint(id: $0.id, host: $0.dataHost, port: $0.dataPort) }
        }, line: line)
    }

    public var description: String {
        "epoch \(epoch) line \(hex(line)) coordinator \(hex(coordinator)) [\(ids.map { hex($0) }.joined(separator: ", "))]"
            + (ringOrder.isEmpty ? "" : " ring [\(ringIdsInOrder.map { hex($0) }.joined(separator: ", "))]")
    }
}

/// The quorum and failover rules (docs/membership.md, "Quorum").
public enum MembershipRules {
    /// True when `acks` may commit the successor of `view`: more than half of its nodes, or
    /// exactly half including its coordinator. Any two such sets intersect.
    public static func isQuorum(_ acks: Set<UInt64>, of view: MembershipView) -> Bool {
        let voters = Set(view.ids)
        let k = acks.intersection(voters).count
        return 2 * k > voters.count || (2 * k == voters.count && acks.contains(view.coordinator))
    }

    /// The node that takes over when the coordinator (and every node in `failed`) is gone:
    /// the first node of the view, in view order, not known to have failed.
    public static func successor(in view: MembershipView, excluding failed: Set<UInt64>) -> NodeInfo? {
        view.nodes.first { !failed.contains($0.id) }
    }

    /// Of two lines of one cluster that meet, the one the other merges into: the larger (more
    /// nodes: fewer nodes move), then the smaller line id. Every node decides alike.
    public static func wins(_ a: MembershipView, over b: MembershipView) -> Bool {
        a.nodes.count != b.nodes.count ? a.nodes.count > b.nodes.count : a.line < b.line
    }

    /// The id of a line forked by `coordinator` from `line` at `epoch`: a mix of the three, so
    /// that two sides forking at once never pick the same id.
    public static func forkedLine(from line: UInt64, coordinator: UInt64, epoch: UInt64) -> UInt64 {
        var z = line ^ coordinator &* 0x9E37_79B9_7F4A_7C15 ^ epoch &* 0xC2B2_AE3D_27D4_EB4F
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return max(z ^ (z >> 31), 1)
    }
}

/// One collective's outcome round: the ring epoch it ran on and the collective's identity.
public struct RoundKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var epoch: UInt64
    public var collective: CollectiveID
    public init(epoch: UInt64, collective: CollectiveID) {
        self.epoch = epoch
        self.collective = collective
    }

    public static func < (a: RoundKey, b: RoundKey) -> Bool {
        (a.epoch, a.collective.point, a.collective.purpose.rawValue, a.collective.sequence)
            < (b.epoch, b.collective.point, b.collective.purpose.rawValue, b.collective.sequence)
    }

    public var description: String { "epoch \(epoch) \(collective)" }
}
