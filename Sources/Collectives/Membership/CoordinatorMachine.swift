import Transport

/// The coordinator side of membership as a value type: events in, actions out, no I/O.
///
/// It tracks who is alive (heartbeats, closed links), queues joiners until every ring member
/// reaches the update point, runs one view change at a time (propose, collect a quorum of the
/// current view, commit), and decides outcome rounds. docs/membership.md explains the rules.
struct CoordinatorMachine {
    enum Action: Equatable {
        case send(UInt64, MembershipMessage)
        case closeLink(UInt64)
        /// A proposal's deadline passed without a quorum (a minority side stays here).
        case noQuorum(epoch: UInt64)
        /// A node of the view is declared dead (its removal follows).
        case declaredDead(UInt64, reason: String)
        /// Dial this voter (no link to it is open) and send it the message: a proposal that
        /// lacks its quorum asks the voters it cannot hear, which is how a coordinator that was
        /// frozen or cut off learns of a newer view.
        case probe(NodeInfo, MembershipMessage)
        /// A view newer than this coordinator's was committed without it: stop coordinating and
        /// join anew (through that view's nodes).
        case deposed(MembershipView)
        /// No quorum for `forkAfter`: this coordinator went on as a new line with the nodes it
        /// can reach (the view is committed like any other).
        case forked(from: MembershipView, to: MembershipView)
        /// A message this coordinator does not take from that sender (not in the role the
        /// message needs); the node logs it, naming the sender.
        case refused(from: UInt64, String)
    }

    private struct Proposal {
        var view: MembershipView
        var departed: [UInt64]
        var admitted: Set<UInt64>
        /// Voters of the current view that acknowledged.
        var acks: Set<UInt64> = []
        /// Asked first; the others are asked once it acknowledged (see "Failover" in the doc).
        var successor: UInt64?
        var broadcast = false
        var deadline: ContinuousClock.Instant
        /// When the view change began: a fork is due `forkAfter` later without a quorum.
        var began: ContinuousClock.Instant
    }

    /// Registered joiners are admitted at the next update point of the ring; that point then
    /// completes once they call updateTopology() as members.
    private struct Joiner {
        var node: NodeInfo
    }

    let me: UInt64
    let interval: Duration
    let timeout: Duration
    /// How long a view change may lack its quorum before the reachable part forks (nil: never).
    let forkAfter: Duration?

    private(set) var view: MembershipView
    /// What every ring member must share: this node's own, or (a coordinate-only node) the first
    /// ring member's it admits. Empty: not known yet.
    var settings = ""
    /// Measured links and ring plans (docs/membership.md, "Ring order"); nil: rings in view order.
    var ringOrder: RingOrderBook?
    private var lastHeard: [UInt64: ContinuousClock.Instant] = [:]
    private var lastBeat: ContinuousClock.Instant
    private var joiners: [UInt64: Joiner] = [:]
    private var joinOrder: [UInt64] = []
    private var waiting: Set<UInt64> = []
    private var gone: Set<UInt64> = []
    private var leaving: Set<UInt64> = []
    private var proposal: Proposal?
    /// While set, the coordinator was just elected and waits for the last view's nodes to attach.
    private var failoverUntil: ContinuousClock.Instant?
    private var rejoined: Set<UInt64> = []
    private var adopted: MembershipView?
    /// Open outcome rounds: the ring members that reported the collective done.
    private var rounds: [RoundKey: Set<UInt64>] = [:]
    /// Open rounds of an earlier epoch: the members of their ring still in the view, all of
    /// whom must report done for the round to commit (docs/membership.md, "Outcome rounds").
    private var late: [RoundKey: Set<UInt64>] = [:]
    /// The ring of the view before the current one, for a round of its epoch first reported
    /// after the change.
    private var previousRing: (epoch: UInt64, ids: Set<UInt64>)?
    /// The update points of the current epoch so far; the next proceed names the next one.
    private var points: (epoch: UInt64, count: UInt64) = (0, 0)
    private var decided: [RoundKey: Bool] = [:]
    private var decidedOrder: [RoundKey] = []
    /// Set once a newer view was seen: the machine does nothing more (the node drops it).
    private var deposed = false
    /// A failover's start: the fork clock of its first proposal starts here, not after the
    /// wait for re-attachments.
    private var stalledSince: ContinuousClock.Instant?

    var pendingJoiners: Int { joiners.count }

    init(me: UInt64, view: MembershipView, failover lost: UInt64?, adopted: MembershipView?,
         interval: Duration, timeout: Duration, forkAfter: Duration? = nil, now: ContinuousClock.Instant) {
        self.me = me
        self.view = view
        self.interval = interval
        self.timeout = timeout
        self.forkAfter = forkAfter
        lastBeat = now
        for id in view.ids where id != me { lastHeard[id] = now }
        if let lost {
            gone.insert(lost)
            lastHeard[lost] = nil
            failoverUntil = now + timeout
            stalledSince = now
            self.adopted = adopted
        }
    }

    // MARK: Events

    mutating func disconnected(_ id: UInt64, now: ContinuousClock.Instant) -> [Action] {
        if joiners.removeValue(forKey: id) != nil {
            joinOrder.removeAll { $0 == id }
            return []
        }
        guard view.contains(id), id != me, !gone.contains(id) else { return [] }
        gone.insert(id)
        lastHeard[id] = nil
        return [.declaredDead(id, reason: "its control link closed")] + advance(now: now)
    }

    mutating func receive(_ message: MembershipMessage, from: UInt64, now: ContinuousClock.Instant) -> [Action] {
        guard !deposed else { return [] }
        if lastHeard[from] != nil || joiners[from] != nil { lastHeard[from] = now }
        switch message {
        case .join(let node, let joinerSettings):
            guard node.id == from else {
                return [.refused(from: from, "join for another node id (\(hex(node.id)))"), .closeLink(from)]
            }
            if view.contains(from) { return attach(node, epoch: 0, now: now) }
            if node.inRing {
                if settings.isEmpty { settings = joinerSettings }
                if joinerSettings != settings {
                    let theirs = escapedForLog(joinerSettings)
                    return [.send(from, .incompatible(reason: "incompatible settings: this node runs \(theirs), the cluster \(settings)")),
                            .closeLink(from)]
                }
            }
            if joiners[from] == nil { joinOrder.append(from) }
            joiners[from] = Joiner(node: node)
            lastHeard[from] = now
            // Admitted at once if every ring member already waits at the update point (or the
            // ring is empty: a coordinate-only coordinator alone).
            return [.send(from, .coordinatorHeartbeat(epoch: view.epoch))] + advance(now: now)

        case .rejoin(let node, let epoch, let decisions):
            guard node.id == from else {
                return [.refused(from: from, "rejoin for another node id (\(hex(node.id)))"), .closeLink(from)]
            }
            var out: [Action] = []
            // Decisions a member carries over from the coordinator before: only a member of
            // this view has seen any (a stranger's would decide rounds it never ran).
            if view.contains(from), !gone.contains(from) {
                for d in decisions where decided[d.key] == nil {
                    out += decide(d.key, d.commit)
                }
            } else if !decisions.isEmpty {
                out.append(.refused(from: from, "\(decisions.count) outcome decision(s) from a node outside the view"))
            }
            return out + attach(node, epoch: epoch, now: now)

        case .memberHeartbeat:
            return []

        case .updateRequest:
            guard view.contains(from) else { return [.refused(from: from, "update request from a node outside the view")] }
            waiting.insert(from)
            return advance(now: now)

        case .ack(let epoch, let accepted, _):
            guard view.contains(from) else { return [.refused(from: from, "ack from a node outside the view")] }
            guard var p = proposal, p.view.epoch == epoch else { return [] }
            guard accepted else { return [] }
            p.acks.insert(from)
            var out: [Action] = []
            if !p.broadcast, from == p.successor {
                p.broadcast = true
                out += askVoters(p, skip: p.acks)
            }
            proposal = p
            if MembershipRules.isQuorum(p.acks, of: view) { out += commit(now: now) }
            return out

        case .leave:
            if joiners.removeValue(forKey: from) != nil {
                joinOrder.removeAll { $0 == from }
                return []
            }
            guard view.contains(from), !gone.contains(from) else { return [] }
            leaving.insert(from)
            gone.insert(from)
            return advance(now: now)

        case .outcome(let key, let done):
            return outcome(key, done: done, from: from)

        case .links(let reports):
            guard view.contains(from), ringOrder != nil else { return [] }
            ringOrder!.record(from: from, reports)
            return advance(now: now)

        case .stale(let newer):
            // Only a voter of this view that is in the newer view it names may depose this
            // coordinator (a stale answer comes from a voter that committed that view).
            guard view.contains(from), newer.contains(from) else {
                return [.refused(from: from, "stale (epoch \(newer.epoch)) from a node outside the view or the newer view")]
            }
            // Only a newer view of this line deposes; another line is met through `line`.
            guard newer.line == view.line, newer.epoch > view.epoch, !deposed else { return [] }
            deposed = true
            proposal = nil
            return [.deposed(newer)]

        case .redirect, .coordinatorHeartbeat, .propose, .commit, .proceed, .decision, .removed, .merge, .line, .incompatible:
            return []
        }
    }

    /// The coordinator itself leaves: hand the role to the next node in view order.
    mutating func leaveSelf(now: ContinuousClock.Instant) -> [Action] {
        leaving.insert(me)
        gone.insert(me)
        return advance(now: now)
    }

    private mutating func attach(_ node: NodeInfo, epoch: UInt64, now: ContinuousClock.Instant) -> [Action] {
        guard view.contains(node.id), !gone.contains(node.id) else {
            return [.send(node.id, .removed(reason: "not a member of epoch \(view.epoch)")), .closeLink(node.id)]
        }
        // The coordinator's own member side needs no liveness check (and gets no heartbeats).
        if node.id != me { lastHeard[node.id] = now }
        rejoined.insert(node.id)
        var out: [Action] = [.send(node.id, .coordinatorHeartbeat(epoch: view.epoch))]
        if epoch < view.epoch { out.append(.send(node.id, .commit(view, departed: []))) }
        if let p = proposal, p.broadcast || p.successor == node.id, !p.acks.contains(node.id) {
            out.append(.send(node.id, .propose(p.view)))
        }
        return out + advance(now: now)
    }

    /// This process was stopped and runs again: nobody is timed out for the silence it caused.
    mutating func resumed(now: ContinuousClock.Instant) {
        for id in lastHeard.keys { lastHeard[id] = now }
        lastBeat = now
        if var p = proposal {
            // The pause is not time the view change waited for a quorum: no fork for it.
            p.deadline = now + timeout
            p.began = now
            proposal = p
        }
        if stalledSince != nil { stalledSince = now }
        if failoverUntil != nil { failoverUntil = now + timeout }
    }

    mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        guard !deposed else { return [] }
        var out: [Action] = []
        if now - lastBeat >= interval {
            lastBeat = now
            for id in lastHeard.keys.sorted() where id != me {
                out.append(.send(id, .coordinatorHeartbeat(epoch: view.epoch)))
            }
        }
        var changed = false
        for (id, heard) in lastHeard.sorted(by: { $0.key < $1.key }) where id != me && now - heard > timeout {
            lastHeard[id] = nil
            // A node that is merely slow learns why, instead of starting a failover of its own.
            out.append(.send(id, .removed(reason: "silent for more than \(timeout)")))
            out.append(.closeLink(id))
            if joiners.removeValue(forKey: id) != nil {
                joinOrder.removeAll { $0 == id }
            } else if view.contains(id) {
                gone.insert(id)
                out.append(.declaredDead(id, reason: "silent for more than \(timeout)"))
                changed = true
            }
        }
        if var p = proposal, now >= p.deadline {
            out.append(.noQuorum(epoch: p.view.epoch))
            // Ask again (the same view: votes already given stay valid); a minority stays here.
            p.deadline = now + timeout
            p.broadcast = true
            proposal = p
            out += askVoters(p, skip: p.acks)
            // Voters this coordinator cannot hear are dialled: alive, they vote, or tell of the
            // newer view they committed without it.
            for node in view.nodes where node.id != me && !p.acks.contains(node.id) && lastHeard[node.id] == nil {
                out.append(.probe(node, .propose(p.view)))
            }
        }
        if let forkAfter, let p = proposal, now - p.began >= forkAfter, p.view.contains(me) {
            out += fork(p, now: now)
        }
        if changed || failoverUntil.map({ now >= $0 }) == true { out += advance(now: now) }
        return out
    }

    // MARK: View changes

    /// Starts the next view change, if any is due and none is running.
    private mutating func advance(now: ContinuousClock.Instant) -> [Action] {
        guard proposal == nil else { return [] }
        if let until = failoverUntil {
            let expected = Set(view.ids).subtracting(gone).subtracting([me])
            guard expected.isSubset(of: rejoined) || now >= until else { return [] }
            failoverUntil = nil
            for id in expected.subtracting(rejoined) {
                gone.insert(id)
                lastHeard[id] = nil
            }
            if let adopted, adopted.epoch == view.epoch + 1 {
                // This node already acknowledged a view for the next epoch: only that one can
                // still commit, so it is proposed unchanged; the removals follow in the next epoch.
                self.adopted = nil
                return propose(adopted, departed: [], admitted: [], now: now)
            }
        }
        let removing = view.ids.filter { gone.contains($0) }
        if !removing.isEmpty {
            let survivors = view.nodes.filter { !gone.contains($0.id) }
            guard !survivors.isEmpty else { return [] }
            let coordinator = gone.contains(me) ? survivors[0].id : me
            var next = MembershipView(epoch: view.epoch + 1, line: view.line, coordinator: coordinator, nodes: survivors,
                                      ringOrder: view.ringOrder)
            if ringOrder != nil { next.ringOrder = ringOrder!.order(for: next) }
            return propose(next, departed: removing.filter { leaving.contains($0) }, admitted: [], now: now)
        }
        let ring = Set(view.ringIds)
        guard ring.isSubset(of: waiting) else { return [] }
        let ready = joinOrder.filter { joiners[$0] != nil }
        if !ready.isEmpty {
            var next = MembershipView(epoch: view.epoch + 1, line: view.line, coordinator: view.coordinator,
                                      nodes: view.nodes + ready.compactMap { joiners[$0]?.node }, ringOrder: view.ringOrder)
            if ringOrder != nil { next.ringOrder = ringOrder!.order(for: next) }
            return propose(next, departed: [], admitted: Set(ready), now: now)
        }
        // Every ring member waits at the update point: the moment to re-order the ring when the
        // measurements say another order is clearly faster (a view change with the same nodes).
        if let order = ringOrder?.replan(view) {
            var next = view
            next.epoch += 1
            next.ringOrder = order
            return propose(next, departed: [], admitted: [], now: now)
        }
        guard !waiting.isEmpty else { return [] }
        if points.epoch != view.epoch { points = (view.epoch, 0) }
        points.count += 1
        let point = points.count
        let out = waiting.sorted().map { Action.send($0, .proceed(epoch: view.epoch, point: point)) }
        waiting.removeAll()
        return out
    }

    private mutating func propose(_ next: MembershipView, departed: [UInt64], admitted: Set<UInt64>,
                                  now: ContinuousClock.Instant) -> [Action] {
        // The successor is asked first, alone: whoever acknowledges this view after it knows that
        // the successor did too, so a successor that takes over re-proposes this very view.
        let successor = view.nodes.first { $0.id != me && !gone.contains($0.id) }?.id
        // A re-proposal after a failover or an adoption keeps the clock of the change it continues.
        let began = proposal?.began ?? stalledSince ?? now
        stalledSince = nil
        var p = Proposal(view: next, departed: departed, admitted: admitted, successor: successor,
                         broadcast: successor == nil, deadline: now + timeout, began: began)
        proposal = p
        var out: [Action] = []
        if view.contains(me) { out.append(.send(me, .propose(next))) }
        if let successor {
            out.append(.send(successor, .propose(next)))
        } else {
            p.broadcast = true
            out += askVoters(p, skip: [me])
        }
        return out
    }

    /// Availability first (docs/membership.md, "Lines"): the view change found no quorum of the
    /// last view for `forkAfter`, so the nodes that cannot be reached are dead or cut off. This
    /// coordinator commits, as a new line, the proposed view restricted to itself, the voters
    /// that acknowledged it and the joiners it admits; it keeps admitting joiners, and the lines
    /// merge when they meet again.
    private mutating func fork(_ p: Proposal, now: ContinuousClock.Instant) -> [Action] {
        let keep = p.acks.union(p.admitted).union([me])
        let nodes = p.view.nodes.filter { keep.contains($0.id) }
        let line = MembershipRules.forkedLine(from: view.line, coordinator: me, epoch: p.view.epoch)
        let next = MembershipView(epoch: p.view.epoch, line: line, coordinator: me, nodes: nodes)
        let old = view
        proposal = Proposal(view: next, departed: p.departed, admitted: p.admitted.intersection(keep), acks: keep,
                            successor: nil, broadcast: true, deadline: now + timeout, began: now)
        // Nodes left out are gone for this line (a node that comes back joins anew).
        for id in view.ids where !keep.contains(id) {
            gone.insert(id)
            lastHeard[id] = nil
        }
        return [.forked(from: old, to: next)] + commit(now: now)
    }

    private func askVoters(_ p: Proposal, skip: Set<UInt64>) -> [Action] {
        view.ids.filter { !skip.contains($0) && !gone.contains($0) }.map { .send($0, .propose(p.view)) }
    }

    private mutating func commit(now: ContinuousClock.Instant) -> [Action] {
        guard let p = proposal else { return [] }
        proposal = nil
        let old = view
        view = p.view
        var out: [Action] = []
        for node in p.view.nodes {
            out.append(.send(node.id, .commit(p.view, departed: p.departed)))
        }
        // Departed nodes still connected (a graceful leaver waits for this) hear it too.
        for id in p.departed where !p.view.contains(id) { out.append(.send(id, .commit(p.view, departed: p.departed))) }
        for id in p.admitted {
            // The update point completes once the new members reach it too.
            joiners[id] = nil
            lastHeard[id] = now
            rejoined.insert(id)
        }
        joinOrder.removeAll { p.admitted.contains($0) }
        let ids = Set(p.view.ids)
        waiting = waiting.intersection(ids)
        for id in old.ids where !ids.contains(id) {
            lastHeard[id] = nil
            leaving.remove(id)
        }
        gone = gone.filter { ids.contains($0) || $0 == me }
        ringOrder?.keep(only: ids)
        // A collective of an earlier epoch commits if every member of its ring that is still in
        // the view finished it; members that left do not hold anything the others need.
        previousRing = (old.epoch, Set(old.ringIds))
        for key in Set(rounds.keys).union(late.keys).sorted() where key.epoch < view.epoch {
            let needed = (late[key] ?? (key.epoch == old.epoch ? Set(old.ringIds) : [])).intersection(ids)
            if needed.isEmpty {
                out += decide(key, false)
            } else if needed.isSubset(of: rounds[key] ?? []) {
                out += decide(key, true)
            } else {
                late[key] = needed
            }
        }
        while late.count > MembershipLimits.maxDecisions, let oldest = late.keys.min() { out += decide(oldest, false) }
        if p.view.coordinator != me && !gone.contains(p.view.coordinator) { return out }
        return out + advance(now: now)
    }

    // MARK: Outcome rounds

    private mutating func outcome(_ key: RoundKey, done: Bool, from: UInt64) -> [Action] {
        if let known = decided[key] { return [.send(from, .decision(key, commit: known))] }
        // A round of an epoch not committed yet cannot have run; one of this epoch only on its
        // ring. Neither is decided for the others on a report from outside (it would abort a
        // round of the members', or one to come); the sender alone hears "abort".
        // (A member of the view reporting a later epoch: this coordinator took over without
        // that epoch's commit; the round is decided "abort" for all, as any of an epoch it does
        // not know.)
        if key.epoch > view.epoch, !view.contains(from) {
            return [.refused(from: from, "outcome of a round of epoch \(key.epoch), past this view's \(view.epoch), from a node outside the view"),
                    .send(from, .decision(key, commit: false))]
        }
        if key.epoch == view.epoch, !view.ringIds.contains(from) {
            return [.refused(from: from, "outcome of a round of epoch \(key.epoch) from a node outside its ring"),
                    .send(from, .decision(key, commit: false))]
        }
        let needed: Set<UInt64>
        if key.epoch == view.epoch {
            needed = Set(view.ringIds)
        } else if key.epoch < view.epoch,
                  let waiting = late[key] ?? (key.epoch == previousRing?.epoch ? previousRing?.ids.intersection(view.ids) : nil),
                  !waiting.isEmpty {
            // The view changed while it ran (see `commit`).
            guard waiting.contains(from) else {
                // Not a member of that ring still here: it learns that it keeps nothing, and the
                // others' round goes on.
                return [.send(from, .decision(key, commit: false))]
            }
            needed = waiting
            late[key] = waiting
        } else {
            // An epoch this coordinator knows nothing of: not every member of it can report done.
            return decide(key, false, extra: [from])
        }
        guard done else { return decide(key, false) }
        rounds[key, default: []].insert(from)
        guard needed.isSubset(of: rounds[key]!) else { return [] }
        return decide(key, true)
    }

    private mutating func decide(_ key: RoundKey, _ commit: Bool, extra: Set<UInt64> = []) -> [Action] {
        let reporters = rounds.removeValue(forKey: key) ?? []
        let waiting = late.removeValue(forKey: key) ?? []
        if decided.updateValue(commit, forKey: key) == nil { decidedOrder.append(key) }
        if decidedOrder.count > MembershipLimits.maxDecisions { decided[decidedOrder.removeFirst()] = nil }
        var targets = reporters.union(extra).union(waiting)
        if key.epoch == view.epoch { targets.formUnion(view.ringIds) }
        return targets.sorted().map { .send($0, .decision(key, commit: commit)) }
    }
}
