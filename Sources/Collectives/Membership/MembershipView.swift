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
public struct MembershipView: Hashable, Sendable, Codable, CustomStringConvertible {
    public var epoch: UInt64
    public var coordinator: UInt64
    public var nodes: [NodeInfo]

    public init(epoch: UInt64, coordinator: UInt64, nodes: [NodeInfo]) {
        self.epoch = epoch
        self.coordinator = coordinator
        self.nodes = nodes
    }

    public var ids: [UInt64] { nodes.map(\.id) }
    public var ringIds: [UInt64] { nodes.filter(\.inRing).map(\.id) }
    public func contains(_ id: UInt64) -> Bool { nodes.contains { $0.id == id } }
    public func node(_ id: UInt64) -> NodeInfo? { nodes.first { $0.id == id } }

    /// The data-plane view for ``Communicator/connect(view:)``: ring members in view order.
    public var ringView: RingView {
        RingView(epoch: epoch, members: nodes.filter(\.inRing).map {
            PeerEndpoint(id: $0.id, host: $0.dataHost, port: $0.dataPort)
        })
    }

    public var description: String {
        "epoch \(epoch) coordinator \(hex(coordinator)) [\(ids.map { hex($0) }.joined(separator: ", "))]"
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
}

/// One collective's outcome round: the ring epoch it ran on and its tag.
public struct RoundKey: Hashable, Sendable {
    public var epoch: UInt64
    public var tag: UInt64
    public init(epoch: UInt64, tag: UInt64) {
        self.epoch = epoch
        self.tag = tag
    }
}
