import Transport

/// Timeouts of the membership layer (docs/membership.md, "Timeouts").
///
/// The defaults suit loopback and a WAN alike: a heartbeat every 0.5 s costs nothing, and
/// 3 s of silence is many round trips even across continents. On lossy links raise the
/// timeout; in tests lower both.
public struct MembershipOptions: Sendable {
    /// How often a member and the coordinator send heartbeats on an idle control link.
    public var heartbeatInterval: Duration = .milliseconds(500)
    /// Silence after which a peer is declared dead (the coordinator removes it; a member starts
    /// a failover). Also bounds how long a new coordinator waits for the last view to re-attach,
    /// how long a proposal waits for its quorum before asking again, and how long a member
    /// tries one failover candidate.
    public var heartbeatTimeout: Duration = .seconds(3)
    /// How long `leave()` waits for the view without this node to commit.
    public var leaveTimeout: Duration = .seconds(3)
    /// How long a node started with a seed keeps trying to be registered before `start()` gives
    /// up (nil, the default: for ever, as a daemon should: the seed may be restarting). A node
    /// that must join anew later never gives up.
    public var joinTimeout: Duration?
    /// How many heartbeat timeouts a view change may go without a quorum before the part of the
    /// cluster this coordinator reaches goes on as a new line (docs/membership.md, "Lines"):
    /// availability first. nil: never; a minority then waits for the majority for ever.
    public var forkAfterTimeouts: Int? = 3
    public var forkAfter: Duration? { forkAfterTimeouts.map { heartbeatTimeout * $0 } }
    public var transport = TransportOptions()
    /// `measured`: the coordinator orders the ring from the links members report
    /// (``MembershipNode/reportLinks(_:)``); `joined`: view order. Docs: membership.md, "Ring order".
    public var ringOrder: RingOrderMode = .measured
    /// A measured plan replaces the ring's order only if the model time improves by this fraction.
    public var ringOrderImprovement = 0.2

    public init() {}
}

/// What a status page shows about membership: a plain value, read with ``MembershipNode/status``.
public struct MembershipStatus: Sendable, Hashable, Codable {
    public enum Role: String, Sendable, Hashable, Codable {
        case idle, joining, member, coordinator, electing, left, stopped
        /// Out of the view (removed, deposed, cut off) and joining anew by itself.
        case rejoining
    }
    public var localId: UInt64
    public var role: Role
    public var view: MembershipView?
    public var epoch: UInt64 { view?.epoch ?? 0 }
    public var coordinator: UInt64? { view?.coordinator }
    /// Why the node is rejoining (with role `rejoining`).
    public var rejoinReason: String?
    /// Times this node found itself out of the view and joined anew.
    public var rejoins = 0
    /// Counted from the views this node committed (a node counts only what it saw).
    public var joins = 0
    public var leaves = 0
    public var deaths = 0
    /// Outcome rounds that ended in abort, plus rings this node aborted because a committed
    /// view dropped one of its members.
    public var aborts = 0
    /// `updateTopology()` calls made after an abort (the caller retrying).
    public var retries = 0
    /// Proposals this node (as coordinator) saw time out without a quorum.
    public var proposalsWithoutQuorum = 0
    /// New lines this node started as coordinator (no quorum for `forkAfter`).
    public var forks = 0
    /// Lines this node, as coordinator, merged into another it met.
    public var merges = 0
    /// The line of the current view (0 before the first view).
    public var line: UInt64 { view?.line ?? 0 }
    /// Joiners waiting for admission (coordinator only).
    public var pendingJoiners = 0
}
