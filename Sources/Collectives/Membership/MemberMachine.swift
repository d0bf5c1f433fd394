import Transport

/// The member side of membership as a value type: events in, actions out, no I/O.
///
/// Every node runs one, the coordinator included (its "link" is then itself and messages go
/// to its own ``CoordinatorMachine`` without a socket). It keeps the last committed view,
/// enforces "acknowledge at most one view per epoch", watches the coordinator's heartbeats and,
/// when the coordinator is lost, walks the last view in order to find its successor.
struct MemberMachine {
    enum Phase: Hashable, Sendable { case idle, joining, member, electing, left }

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
        /// The update point `point` of the view's epoch passed.
        case updateDone(MembershipView, point: UInt64)
        case decided(RoundKey, Bool)
        /// This node is out of the view (removed, deposed, or its view is stale): its ring is
        /// void and it joins anew through the addresses it knows.
        case rejoining(reason: String)
        /// A join attempt failed; the next one starts after `delay`.
        case joinRetry(reason: String, delay: Duration)
        /// Dial this address and send the message (a coordinator looking for other lines); report
        /// the end with ``lineProbeEnded()``.
        case probeLine(Address, MembershipMessage)
        /// Close the probe link to this node, if any (never the link membership runs on).
        case closeProbe(UInt64)
        /// As coordinator: this line merges into `into`'s; tell every member of `view` first.
        case mergeLine(view: MembershipView, into: MembershipView)
        /// Only for what retrying cannot fix (a wrong key, a protocol version mismatch, or the
        /// operator's deadline for joining at start).
        case failed(MembershipError)
        /// A message this node does not take from that sender (not its coordinator, or not in
        /// the role the message needs); the node logs it, naming the sender.
        case refused(from: UInt64, String)
    }

    /// A control address this node may join through.
    struct Address: Hashable, Sendable {
        var host: String
        var port: Int
    }

    let me: NodeInfo
    /// What every ring member must share, sent with `join` (see ``MembershipNode``).
    var settings = ""
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

    // Joining and rejoining
    /// Why this node is joining anew (nil for the first join at start).
    private(set) var rejoinReason: String?
    /// When this node left its view and began to join anew (nil: not rejoining).
    private var rejoinSince: ContinuousClock.Instant?
    /// A rejoining node that has reached nobody of any cluster for this long founds a line of
    /// its own with the state it holds (availability first; docs/membership.md, "Lines"); the
    /// lines merge when they meet. nil: it keeps trying for ever.
    var foundLineAfter: Duration?
    /// When a rejoin that reaches nobody founds its line (nil: not rejoining, or never).
    private var foundLineAt: ContinuousClock.Instant? {
        guard rejoinReason != nil, let foundLineAfter, let rejoinSince else { return nil }
        return rejoinSince + foundLineAfter
    }
    private var seeds: [Address] = []
    /// Every control address this node has seen (seeds, redirects, views), oldest first: where
    /// it looks for the cluster when it has to join anew.
    private(set) var addressBook: [Address] = []
    /// The addresses of the current round of join attempts, tried in order.
    private var joinAddresses: [Address] = []
    private var joinIndex = 0
    /// Failed rounds so far (every address tried once); the backoff grows with them.
    private var joinRounds = 0
    private var joinRetryAt: ContinuousClock.Instant?
    /// Set at start by the operator's option; a rejoin never gives up.
    private var giveUpAt: ContinuousClock.Instant?
    private var random: JitterRandom
    /// Line discovery (coordinator only): the next address to probe, and when.
    private var probeIndex = 0
    private var nextProbe: ContinuousClock.Instant?
    /// One line probe at a time: a dial to a dead address may take the connect timeout, and
    /// the round-robin moves on only when a probe was sent.
    private var probeInFlight = false
    static let maxAddresses = 256
    /// The longest wait between two rounds of join attempts.
    static let maxJoinBackoff: Duration = .seconds(5)

    init(me: NodeInfo, interval: Duration, timeout: Duration, now: ContinuousClock.Instant) {
        self.me = me
        self.interval = interval
        self.timeout = timeout
        lastHeard = now
        lastSent = now
        candidateSince = now
        random = JitterRandom(seed: me.id ^ 0x9E37_79B9_7F4A_7C15)
    }

    // MARK: Starting

    /// A node without a seed founds the cluster: epoch 1, itself alone, itself coordinator.
    mutating func bootstrap(now: ContinuousClock.Instant) -> [Action] {
        let first = MembershipView(epoch: 1, line: me.id, coordinator: me.id, nodes: [me])
        view = first
        phase = .member
        link = me.id
        linkUp = true
        return [.becomeCoordinator(first, failover: nil, adopted: nil), .committed(old: nil, new: first, departed: [])]
    }

    /// Joins through the seeds, in order, round after round with a growing, jittered backoff,
    /// until registered (or until `giveUpAfter`, when the operator set one).
    mutating func join(seeds: [Address], giveUpAfter: Duration? = nil, now: ContinuousClock.Instant) -> [Action] {
        phase = .joining
        self.seeds = seeds
        for seed in seeds { learn(seed) }
        giveUpAt = giveUpAfter.map { now + $0 }
        joinAddresses = seeds
        joinIndex = 0
        joinRounds = 0
        return dialNextJoinAddress(now: now)
    }

    mutating func join(seedHost: String, seedPort: Int, now: ContinuousClock.Instant) -> [Action] {
        join(seeds: [Address(host: seedHost, port: seedPort)], now: now)
    }

    /// Leaves the view this node believed in and joins anew: through the nodes of `newer` (a
    /// view that exists without this node) first, then the last view's, every address seen,
    /// and the seeds. Outcome rounds still open here are aborted: this node's ring is void.
    mutating func rejoin(reason: String, newer: MembershipView? = nil, now: ContinuousClock.Instant) -> [Action] {
        guard phase == .member || phase == .electing || phase == .joining else { return [] }
        var out: [Action] = []
        if link == me.id {
            out.append(.resignCoordinator)
        } else if let link, linkUp || dialing {
            out.append(.closeLink(link))
        }
        for key in pending.keys.sorted() { out.append(.decided(key, false)) }
        pending.removeAll()
        // Rounds of the membership left behind: the next line may reuse their keys.
        decided.removeAll()
        decidedOrder.removeAll()
        var order: [Address] = []
        for v in [newer, view].compactMap({ $0 }) {
            let nodes = v.nodes.filter { $0.id == v.coordinator } + v.nodes.filter { $0.id != v.coordinator }
            order += nodes.filter { $0.id != me.id }.map { Address(host: $0.controlHost, port: $0.controlPort) }
        }
        order += addressBook.reversed() + seeds
        var seen: Set<Address> = [Address(host: me.controlHost, port: me.controlPort)]
        joinAddresses = order.filter { seen.insert($0).inserted }
        joinIndex = 0
        joinRounds = 0
        joinRetryAt = nil
        giveUpAt = nil
        view = nil
        acked = [:]
        failed = []
        link = nil
        linkUp = false
        dialing = false
        registeredSent = false
        phase = .joining
        rejoinReason = reason
        if rejoinSince == nil { rejoinSince = now }
        out.append(.rejoining(reason: reason))
        guard !joinAddresses.isEmpty else {
            // Nobody known: found a cluster anew rather than wait for nobody.
            return out + bootstrap(now: now)
        }
        return out + dialNextJoinAddress(now: now)
    }

    private mutating func dialNextJoinAddress(now: ContinuousClock.Instant) -> [Action] {
        guard !joinAddresses.isEmpty else { return [] }
        let address = joinAddresses[joinIndex % joinAddresses.count]
        joinIndex += 1
        link = nil
        linkUp = false
        dialing = true
        registeredSent = false
        lastHeard = now
        return [.dial(host: address.host, port: address.port)]
    }

    /// A join attempt failed: the next address at once, or, after a whole round failed, the
    /// first again after a backoff (the heartbeat interval doubling per round up to
    /// ``maxJoinBackoff``, times a random factor in [0.5, 1.5) so that joiners do not return
    /// together).
    private mutating func joinSetback(_ reason: String, now: ContinuousClock.Instant) -> [Action] {
        dialing = false
        linkUp = false
        link = nil
        if let giveUpAt, now >= giveUpAt {
            phase = .idle
            return [.failed(MembershipError(code: .joinTimedOut, message: "gave up joining: \(reason)"))]
        }
        if joinIndex % max(joinAddresses.count, 1) != 0 {
            joinRetryAt = now + interval / 10
            return [.joinRetry(reason: reason, delay: interval / 10)]
        }
        joinRounds += 1
        if let foundAt = foundLineAt, now >= foundAt {
            return foundLine(now: now)
        }
        // The next round also tries every address learned meanwhile (redirect targets, say).
        var seen: Set<Address> = [Address(host: me.controlHost, port: me.controlPort)]
        joinAddresses = (joinAddresses + addressBook.reversed() + seeds).filter { seen.insert($0).inserted }
        joinIndex = 0
        let base = min(interval * (1 << min(joinRounds - 1, 16)), Self.maxJoinBackoff)
        var delay = base * (0.5 + random.unit())
        // The backoff does not carry a rejoin past its founding bound: the round that finds
        // nobody at that bound founds the line.
        if let foundAt = foundLineAt {
            delay = max(min(delay, foundAt - now), interval / 10)
        }
        joinRetryAt = now + delay
        return [.joinRetry(reason: reason, delay: delay)]
    }

    /// Every address this node knew failed for `foundLineAfter`: the cluster it was in is gone or
    /// unreachable (all its members killed, say). It goes on as a new line of one, with its
    /// state, coordinating itself and admitting joiners; as coordinator it keeps probing the
    /// addresses it knows, and merges with any line it meets.
    private mutating func foundLine(now: ContinuousClock.Instant) -> [Action] {
        let old = view
        let epoch = (old?.epoch ?? 0) + 1
        let line = MembershipRules.forkedLine(from: old?.line ?? me.id, coordinator: me.id, epoch: epoch)
        let next = MembershipView(epoch: epoch, line: line, coordinator: me.id, nodes: [me])
        view = next
        phase = .member
        link = me.id
        linkUp = true
        dialing = false
        rejoinReason = nil
        rejoinSince = nil
        joinRetryAt = nil
        var out: [Action] = [.becomeCoordinator(next, failover: nil, adopted: nil), .committed(old: old, new: next, departed: [])]
        if wantsUpdate { out.append(.send(me.id, .updateRequest(epoch: next.epoch))) }
        return out
    }

    /// Remembers an address (bounded: the oldest are forgotten first).
    private mutating func learn(_ address: Address) {
        guard address != Address(host: me.controlHost, port: me.controlPort) else { return }
        addressBook.removeAll { $0 == address }
        addressBook.append(address)
        if addressBook.count > Self.maxAddresses { addressBook.removeFirst(addressBook.count - Self.maxAddresses) }
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

    /// `fatal`: the failure is one retrying cannot fix (the peer refused this node's key or
    /// protocol version).
    mutating func dialFailed(now: ContinuousClock.Instant, error: String, fatal: Bool = false) -> [Action] {
        guard dialing else { return [] }
        dialing = false
        if fatal {
            phase = .idle
            return [.failed(MembershipError(code: .joinFailed, message: error))]
        }
        switch phase {
        case .joining:
            return joinSetback("cannot reach the seed or coordinator: \(error)", now: now)
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
            return joinSetback("the coordinator closed the connection before admitting this node", now: now)
        default:
            return []
        }
    }

    /// What a member says first on a new link to a coordinator.
    private mutating func greeting() -> [Action] {
        guard let link else { return [] }
        var out: [Action] = []
        if phase == .joining {
            out.append(.send(link, .join(me, settings: settings)))
        } else {
            let known = decidedOrder.compactMap { key in decided[key].map { MembershipMessage.Decision(key: key, commit: $0) } }
            out.append(.send(link, .rejoin(me, epoch: view?.epoch ?? 0, decisions: known)))
            for (key, done) in pending.sorted(by: { $0.key < $1.key }) {
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
            guard from == link else { return notFromLink(message, from) }
            var out: [Action] = [.closeLink(from)]
            linkUp = false
            learn(Address(host: host, port: port))
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
                giveUpAt = nil
                joinRounds = 0
                return [.registered]
            }
            return []

        case .propose(let proposal):
            if let refusal = proposerRefusal(proposal, from: from) { return [.refused(from: from, refusal)] }
            return [.send(from, acknowledge(proposal))]

        case .commit(let next, let departed):
            // Only from the node this one follows: a probe link of another line's coordinator
            // (epochs overlap across lines) must not switch this node's view.
            guard from == link else { return notFromLink(message, from) }
            return commit(next, departed: departed, from: from, now: now)

        case .proceed(let epoch, let point):
            guard from == link else { return notFromLink(message, from) }
            guard wantsUpdate, let view, view.epoch == epoch, phase == .member else { return [] }
            wantsUpdate = false
            return [.updateDone(view, point: point)]

        case .decision(let key, let commit):
            guard from == link else { return notFromLink(message, from) }
            remember(key, commit)
            guard pending.removeValue(forKey: key) != nil else { return [] }
            return [.decided(key, commit)]

        case .removed(let reason):
            guard from == link else { return notFromLink(message, from) }
            // The coordinator's words, logged by this node: escaped (they may come from a stranger
            // this node dialled as a seed).
            if phase == .joining {
                return [.closeLink(from)] + joinSetback("refused: \(escapedForLog(reason))", now: now)
            }
            return rejoin(reason: "removed from the cluster: \(escapedForLog(reason))", now: now)

        case .incompatible(let reason):
            guard from == link else { return notFromLink(message, from) }
            guard phase == .joining else { return [] }
            phase = .idle
            dialing = false
            return [.closeLink(from), .failed(MembershipError(code: .incompatible, message: escapedForLog(reason, limit: 600)))]

        case .merge(let into):
            guard from == link else { return notFromLink(message, from) }
            guard phase == .member, let view, into.line != view.line else { return [] }
            return rejoin(reason: "line \(hex(view.line)) merges into line \(hex(into.line))", newer: into, now: now)

        case .line(let other, let reply):
            // The sender speaks for a line it is in (the coordinator of a probe, a node answering
            // one), or is one of this line's members passing another line on to its coordinator.
            let relay = reply && link == me.id && (view?.contains(from) ?? false)
            guard other.contains(from) || relay, reply || other.coordinator == from else {
                return [.refused(from: from, "line message for line \(hex(other.line)) from a node that is not its coordinator or in it")]
            }
            return metLine(other, reply: reply, from: from, now: now)

        case .join, .rejoin, .memberHeartbeat, .updateRequest, .ack, .leave, .outcome, .stale, .links:
            // Member-to-coordinator messages reach the coordinator machine, never this one.
            return []
        }
    }

    /// A coordinator-to-member message from a node this one does not follow.
    private func notFromLink(_ message: MembershipMessage, _ from: UInt64) -> [Action] {
        [.refused(from: from, "\(message.kindName) from a node that is not this node's coordinator (it follows \(link.map(hex) ?? "none"))")]
    }

    /// Why a proposal from `from` is not answered, or nil to answer it. A proposal that could
    /// change this node's vote (the next epoch of its own line) is taken only from the node
    /// that may propose it: the coordinator of this node's view, the node it follows (a new
    /// coordinator it elected), or the first node after that coordinator in view order not
    /// known to have failed (the successor, which proposes before every member noticed the
    /// failover). Anything else is answered as before: "already committed" or "another line"
    /// change nothing here.
    private func proposerRefusal(_ proposal: MembershipView, from: UInt64) -> String? {
        guard let view, proposal.line == view.line, proposal.epoch > view.epoch else { return nil }
        guard view.contains(from) else {
            return "proposal of epoch \(proposal.epoch) from a node outside this node's view (epoch \(view.epoch))"
        }
        let successor = MembershipRules.successor(in: view, excluding: failed.union([view.coordinator]))?.id
        guard from == view.coordinator || from == link || from == successor else {
            return "proposal of epoch \(proposal.epoch) from a member that is not the coordinator of epoch \(view.epoch) nor its successor"
        }
        return nil
    }

    private var registeredSent = false

    /// Another line of the cluster spoke up (a probe, its answer, or a member passing one on).
    /// The line that loses merges into the other; the decision is the same on both sides,
    /// since both compare the same two views.
    private mutating func metLine(_ other: MembershipView, reply: Bool, from: UInt64,
                                  now: ContinuousClock.Instant) -> [Action] {
        guard phase == .member, let view, other.line != view.line else { return [] }
        for node in other.nodes where node.id != me.id { learn(Address(host: node.controlHost, port: node.controlPort)) }
        var out: [Action] = []
        if !reply { out.append(.send(from, .line(view, reply: true))) }
        guard MembershipRules.wins(other, over: view) else {
            if reply, !view.contains(from) { out.append(.closeProbe(from)) }
            return out
        }
        if link == me.id {
            return out + [.mergeLine(view: view, into: other)]
                + rejoin(reason: "line \(hex(view.line)) merges into line \(hex(other.line))", newer: other, now: now)
        }
        // A member: its coordinator decides for the line.
        if let link, linkUp { out.append(.send(link, .line(other, reply: true))) }
        return out
    }

    /// As coordinator, one address outside the view every `interval`: the lines of a cluster
    /// that was split find each other again once the network heals.
    private mutating func probeForLines(now: ContinuousClock.Instant) -> [Action] {
        guard link == me.id, phase == .member, let view, !probeInFlight else { return [] }
        if let nextProbe, now < nextProbe { return [] }
        nextProbe = now + interval
        let inView = Set(view.nodes.map { Address(host: $0.controlHost, port: $0.controlPort) })
        let targets = addressBook.filter { !inView.contains($0) }
        guard !targets.isEmpty else { return [] }
        probeIndex = (probeIndex + 1) % targets.count
        probeInFlight = true
        return [.probeLine(targets[probeIndex], .line(view, reply: false))]
    }

    /// The line probe sent last has connected and sent, or failed.
    mutating func lineProbeEnded() {
        probeInFlight = false
    }

    /// The one-view-per-epoch rule.
    private mutating func acknowledge(_ proposal: MembershipView) -> MembershipMessage {
        let epoch = proposal.epoch
        guard let view, phase == .member || phase == .electing || phase == .left else {
            return .ack(epoch: epoch, accepted: false, acked: nil)
        }
        // A proposal of another line (its coordinator still asks the voters of the view it
        // forked from): never a vote across lines; tell it which line this node is in.
        guard proposal.line == view.line else { return .line(view, reply: true) }
        if epoch <= view.epoch {
            // Already committed: only the same view is acknowledged again. Anything else comes
            // from a node that missed a newer view (a coordinator that was frozen or cut off):
            // it learns the view, and that it must join anew.
            return proposal == view ? .ack(epoch: epoch, accepted: true, acked: nil) : .stale(view)
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
            return [.committed(old: old, new: next, departed: departed)]
                + rejoin(reason: "removed from the cluster at epoch \(next.epoch)", newer: next, now: now)
        }
        view = next
        acked = acked.filter { $0.key > next.epoch }
        for node in next.nodes where node.id != me.id { learn(Address(host: node.controlHost, port: node.controlPort)) }
        var out: [Action] = [.committed(old: old, new: next, departed: departed)]
        if phase == .joining, let link {
            // Admitted: the new member is expected at the update point that admitted it.
            phase = .member
            rejoinReason = nil
            rejoinSince = nil
            joinRetryAt = nil
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
        // Out of every view (joining anew): no round of a ring this node was in can commit.
        if phase == .joining || phase == .idle { return [.decided(key, false)] }
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

    /// This process was stopped (SIGSTOP, a suspended VM) and runs again: the silence it sees is
    /// its own, so nobody is accused for it; what changed meanwhile arrives on the links.
    mutating func resumed(now: ContinuousClock.Instant) {
        lastHeard = now
        candidateSince = now
    }

    mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        switch phase {
        case .member, .joining, .electing:
            break
        default:
            return []
        }
        if phase == .joining {
            if let giveUpAt, now >= giveUpAt, !linkUp {
                phase = .idle
                dialing = false
                return [.failed(MembershipError(code: .joinTimedOut, message: "gave up joining: no member answered in time"))]
            }
            if let retryAt = joinRetryAt, !dialing, !linkUp {
                guard now >= retryAt else { return [] }
                joinRetryAt = nil
                return dialNextJoinAddress(now: now)
            }
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
        guard let link, link != me.id, linkUp else { return probeForLines(now: now) }
        if now - lastHeard > timeout {
            linkUp = false
            if phase == .joining {
                return [.closeLink(link)] + joinSetback("the coordinator went silent", now: now)
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
        /// A seed refused this node for good (another key or protocol version).
        case joinFailed
        /// No seed registered this node within `MembershipOptions.joinTimeout`.
        case joinTimedOut
        /// This node left or was shut down.
        case stopped
        case timedOut
        case notStarted
        /// This node's settings do not match the cluster's (another model, say).
        case incompatible
    }
    public var code: Code
    public var message: String
    public var description: String { "membership: \(message)" }
}

/// A small deterministic generator for the joiners' backoff jitter: seeded by the node id, so
/// two nodes spread apart while a test's machine replays the same delays.
struct JitterRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
