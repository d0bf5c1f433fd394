/// What a ``MembershipNode`` publishes as it happens (``MembershipNode/events()``), so that the
/// training loop, the status port and tests react to membership instead of polling it.
public enum MembershipEvent: Sendable, Hashable {
    /// This node committed a view (it may not be in it: then a `rejoining` role follows).
    case viewCommitted(MembershipView)
    /// The node's role changed; `reason` says why it is rejoining, with role `rejoining`.
    case roleChanged(MembershipStatus.Role, reason: String?)
    /// As coordinator: the number of joiners registered and waiting for the next update point changed.
    case joinersWaiting(Int)
    /// As coordinator: a proposed view found no quorum within a heartbeat timeout; asking again
    /// (a fork follows after `forkAfter`).
    case noQuorum(epoch: UInt64)
}
