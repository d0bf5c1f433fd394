/// The member side of membership as a value type: events in, actions out, no I/O.
///
/// Every node runs one, the coordinator included (its "link" is then itself and messages go
/// to its own ``CoordinatorMachine`` without a socket). It keeps the last committed view,
/// enforces "acknowledge at most one view per epoch", watches the coordinator's heartbeats and,
/// when the coordinator is lost, walks the last view in order to find its successor.
struct MemberMachine {
    enum Phase: Hashable, Sendable { case idle, joining, member, electing, left, removed }

    enum Action: Equatable {
        /// Send to a node (possibly this node's own coordinator machine).
        case send(UInt64, MembershipMessage)
        /// Open a control link to host:port; report `linkOpened` or `dialFailed`.
        case dial(host: String, port: Int)
        case closeLink(UInt64)
        /// Start coordinating `view`; `failover` names the lost coordinator, `adopted` a view this
        /// node already acknowledged for the next epoch, which the new coordinator must propose first.
        case becomeCoordinator(MembershipView, failover: UInt64?, adopted: MembershipView?)
        /// Stop coordinating (another node holds the role in a newer view).
        case resignCoordinator
        /// The coordinator registered this joiner.
        case registered
        case committed(old: MembershipView?, new: MembershipView, departed: [UInt64])
        case updateDone(MembershipView)
        case decided(RoundKey, Bool)
        case failed(MembershipError)
    }

    let me: NodeInfo
    let interval: Duration
    let timeout: Duration

    private(set) var phase: Phase = .idle
    private(set) var view: MembershipView?
    /// The node this member treats as its coordinator (or candidate while electing).
    private(set) var link: UInt64?
    private var linkUp = false
    private var dialing = false
    private var lastHeard: ContinuousClock.Instant
    private var lastSent: ContinuousClock.Instant
    private var candidateSince: ContinuousClock.Instant
    private var retryAt: ContinuousClock.Instant?
    /// Nodes this member saw fail as coordinator or candidate, skipped when electing.
    private(set) var failed: Set<UInt64> = []
    /// epoch -> the one view acknowledged for it.
    private(set) var acked: [UInt64: MembershipView] = [:]
    private(set) var wantsUpdate = false
    private var pending: [RoundKey: Bool] = [:]
    private var decided: [RoundKey: Bool] = [:]
    private var decidedOrder: [RoundKey] = []

    init(me: NodeInfo, interval: Duration, timeout: Duration, now: ContinuousClock.Instant) {
        self.me = me
        self.interval = interval
        self.timeout = timeout
        lastHeard = now
        lastSent = now
        candidateSince = now
    }

    // MARK: Starting

    /// A node without a seed founds the cluster: epoch 1, itself alone, itself coordinator.
    mutating func bootstrap(now: ContinuousClock.Instant) -> [Action] {
        let first = MembershipView(epoch: 1, coordinator: me.id, nodes: [me])
        view = first
        phase = .member
        link = me.id
        linkUp = true
        return [.becomeCoordinator(first, failover: nil, adopted: nil), .committed(old: nil, new: first, departed: [])]
    }

    mutating func join(seedHost: String, seedPort: Int, now: ContinuousClock.Instant) -> [Action] {
        phase = .joining
        dialing = true
        lastHeard = now
        return [.dial(host: seedHost, port: seedPort)]
    }

    // MARK: Links

    mutating func linkOpened(_ id: UInt64, now: ContinuousClock.Instant) -> [Action] {
        guard dialing else { return [] }
        dialing = false
        link = id
        linkUp = true
        lastHeard = now
        return greeting()
    }

    mutating func dialFailed(now: ContinuousClock.Instant, error: String) -> [Action] {
        guard dialing else { return [] }
        dialing = false
        switch phase {
        case .joining:
            phase = .idle
            return [.failed(MembershipError(code: .joinFailed, message: "cannot reach the seed or coordinator: \(error)"))]
        case .electing, .member:
            if let link { failed.insert(link) }
            return elect(now: now)
        default:
            return []
        }
    }

    mutating func linkClosed(_ id: UInt64, now: ContinuousClock.Instant) -> [Action] {
        guard id == link, id != me.id, !dialing else { return [] }
        linkUp = false
        switch phase {
        case .member, .electing:
            failed.insert(id)
            return elect(now: now)
        case .joining:
            phase = .idle
            return [.failed(MembershipError(code: .joinFailed, message: "the coordinator closed the connection before admitting this node"))]
        default:
            return []
        }
    }

    /// What a member says first on a new link to a coordinator.
    private mutating func greeting() -> [Action] {
        guard let link else { return [] }
        var out: [Action] = []
        if phase == .joining {
            out.append(.send(link, .join(me)))
        } else {
            let known = decidedOrder.compactMap { key in decided[key].map { MembershipMessage.Decision(key: key, commit: $0) } }
            out.append(.send(link, .rejoin(me, epoch: view?.epoch ?? 0, decisions: known)))
            for (key, done) in pending.sorted(by: { ($0.key.epoch, $0.key.tag) < ($1.key.epoch, $1.key.tag) }) {
                out.append(.send(link, .outcome(key, done: done)))
            }
        }
        if wantsUpdate, phase != .joining { out.append(.send(link, .updateRequest(epoch: view?.epoch ?? 0))) }
        return out
    }

    /// Picks the first node of the last view not known to have failed and attaches to it.
    private mutating func elect(now: ContinuousClock.Instant) -> [Action] {
        guard let view else { return [] }
        phase = .electing
        linkUp = false
        retryAt = nil
        guard let next = MembershipRules.successor(in: view, excluding: failed) else { return [] }
        candidateSince = now
        lastHeard = now
        if next.id == me.id {
            link = me.id
            linkUp = true
            return [.becomeCoordinator(view, failover: view.coordinator, adopted: acked[view.epoch + 1])] + greeting()
        }
        link = next.id
        dialing = true
        return [.dial(host: next.controlHost, port: next.controlPort)]
    }

    // MARK: Messages

    mutating func receive(_ message: MembershipMessage, from: UInt64, now: ContinuousClock.Instant) -> [Action] {
        if from == link { lastHeard = now }
        switch message {
        case .redirect(let id, let host, let port):
            guard from == link else { return [] }
            var out: [Action] = [.closeLink(from)]
            linkUp = false
            if phase == .joining {
                dialing = true
                out.append(.dial(host: host, port: port))
            } else if phase == .electing {
                if failed.contains(id) || id == from {
                    // The candidate still believes in the lost coordinator: ask again shortly. It
                    // answered, so it is alive and not to be skipped: it times the coordinator out
                    // itself soon (or can still reach it, and then this node is the one cut off,
                    // which must not take over).
                    retryAt = now + interval
                    candidateSince = now
                } else {
                    link = id
                    dialing = true
                    out.append(.dial(host: host, port: port))
                }
            }
            return out

        case .coordinatorHeartbeat:
            if phase == .joining, from == link, !registeredSent {
                registeredSent = true
                return [.registered]
            }
            return []

        case .propose(let proposal):
            return [.send(from, acknowledge(proposal))]

        case .commit(let next, let departed):
            return commit(next, departed: departed, from: from, now: now)

        case .proceed(let epoch):
            guard wantsUpdate, let view, view.epoch == epoch, phase == .member else { return [] }
            wantsUpdate = false
            return [.updateDone(view)]

        case .decision(let key, let commit):
            remember(key, commit)
            guard pending.removeValue(forKey: key) != nil else { return [] }
            return [.decided(key, commit)]

        case .removed(let reason):
            guard from == link || phase == .joining else { return [] }
            phase = .removed
            return [.failed(MembershipError(code: .removed, message: "removed from the cluster: \(reason)"))]

        case .join, .rejoin, .memberHeartbeat, .updateRequest, .ack, .leave, .outcome:
            return []
        }
    }

    private var registeredSent = false

    /// The one-view-per-epoch rule.
    private mutating func acknowledge(_ proposal: MembershipView) -> MembershipMessage {
        let epoch = proposal.epoch
        guard let view, phase == .member || phase == .electing || phase == .left else {
            return .ack(epoch: epoch, accepted: false, acked: nil)
        }
        if epoch <= view.epoch {
            // Already committed: only the same view is acknowledged again.
            return .ack(epoch: epoch, accepted: epoch == view.epoch && proposal == view, acked: epoch == view.epoch ? view : nil)
        }
        guard epoch == view.epoch + 1 else { return .ack(epoch: epoch, accepted: false, acked: nil) }
        if let earlier = acked[epoch], earlier != proposal {
            return .ack(epoch: epoch, accepted: false, acked: earlier)
        }
        acked[epoch] = proposal
        return .ack(epoch: epoch, accepted: true, acked: nil)
    }

    private mutating func commit(_ next: MembershipView, departed: [UInt64], from: UInt64,
                                 now: ContinuousClock.Instant) -> [Action] {
        if let view, next.epoch <= view.epoch { return [] }
        let old = view
        guard next.contains(me.id) else {
            view = next
            if phase == .left || departed.contains(me.id) {
                phase = .left
                return [.committed(old: old, new: next, departed: departed), .resignCoordinator]
            }
            phase = .removed
            return [.committed(old: old, new: next, departed: departed), .resignCoordinator,
                    .failed(MembershipError(code: .removed, message: "removed from the cluster at epoch \(next.epoch)"))]
        }
        view = next
        acked = acked.filter { $0.key > next.epoch }
        var out: [Action] = [.committed(old: old, new: next, departed: departed)]
        if phase == .joining, let link {
            // Admitted: the new member is expected at the update point that admitted it.
            phase = .member
            if wantsUpdate { out.append(.send(link, .updateRequest(epoch: next.epoch))) }
        }
        if phase == .electing { phase = .member }
        if next.coordinator == me.id {
            if link != me.id {
                if let link, linkUp { out.append(.closeLink(link)) }
                link = me.id
                linkUp = true
                out.append(.becomeCoordinator(next, failover: nil, adopted: nil))
                out += greeting()
            }
        } else if next.coordinator != link, !failed.contains(next.coordinator), let target = next.node(next.coordinator) {
            // Handover: the role moved to another node.
            if link == me.id { out.append(.resignCoordinator) } else if let link, linkUp { out.append(.closeLink(link)) }
            link = target.id
            linkUp = false
            dialing = true
            out.append(.dial(host: target.controlHost, port: target.controlPort))
        }
        return out
    }

    private mutating func remember(_ key: RoundKey, _ commit: Bool) {
        if decided.updateValue(commit, forKey: key) == nil { decidedOrder.append(key) }
        if decidedOrder.count > MembershipLimits.maxDecisions { decided[decidedOrder.removeFirst()] = nil }
    }

    // MARK: Calls

    mutating func requestUpdate() -> [Action] {
        wantsUpdate = true
        // A joiner waits at the update point by being queued; it reports once admitted.
        guard phase != .joining, let link, linkUp else { return [] }
        return [.send(link, .updateRequest(epoch: view?.epoch ?? 0))]
    }

    mutating func report(_ key: RoundKey, done: Bool) -> [Action] {
        if let known = decided[key] { return [.decided(key, known)] }
        pending[key] = done
        guard let link, linkUp else { return [] }
        return [.send(link, .outcome(key, done: done))]
    }

    mutating func leave() -> [Action] {
        let previous = phase
        phase = .left
        wantsUpdate = false
        guard previous == .member, let link, linkUp else { return [] }
        return [.send(link, .leave)]
    }

    // MARK: Time

    mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        switch phase {
        case .member, .joining, .electing:
            break
        default:
            return []
        }
        if phase == .electing, !linkUp, !dialing {
            if let retryAt, now >= retryAt, let link, let node = view?.node(link) {
                if now - candidateSince > timeout * 2 {
                    failed.insert(link)
                    return elect(now: now)
                }
                self.retryAt = nil
                dialing = true
                return [.dial(host: node.controlHost, port: node.controlPort)]
            }
            return []
        }
        guard let link, link != me.id, linkUp else { return [] }
        if now - lastHeard > timeout {
            linkUp = false
            if phase == .joining {
                phase = .idle
                return [.closeLink(link), .failed(MembershipError(code: .joinFailed, message: "the coordinator went silent"))]
            }
            failed.insert(link)
            return [.closeLink(link)] + elect(now: now)
        }
        if now - lastSent >= interval {
            lastSent = now
            return [.send(link, .memberHeartbeat(epoch: view?.epoch ?? 0))]
        }
        return []
    }
}

/// Why a membership call failed.
public struct MembershipError: Error, Hashable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case joinFailed
        /// The cluster removed this node (it was declared dead, or is not in the current view).
        case removed
        /// This node left or was shut down.
        case stopped
        case timedOut
        case notStarted
    }
    public var code: Code
    public var message: String
    public var description: String { "membership: \(message)" }
}
