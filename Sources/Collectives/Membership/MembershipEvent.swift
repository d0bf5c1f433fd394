/// What a ``MembershipNode`` publishes as it happens (``MembershipNode/events()``), so that the
/// training loop, the status port and tests react to membership instead of polling it.
public enum MembershipEvent: Sendable, Hashable {
    /// This node committed a view (it may not be in it: then a `rejoining` role follows).
    case viewCommitted(MembershipView)
    /// The node's role changed; `reason` says why it is rejoining, with role `rejoining`.
    case roleChanged(MembershipStatus.Role, reason: String?)
}
