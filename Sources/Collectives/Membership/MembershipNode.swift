import Foundation
import Logging
import NIOCore
import Transport

/// Membership of one node: joins, leaves, failure detection, coordinator failover and outcome
/// agreement, over authenticated control connections (purpose `control`, frame type 32).
///
/// Thin on purpose: the decisions live in ``MemberMachine`` and ``CoordinatorMachine``; this
/// class feeds them socket events and a clock tick, and carries out what they return. Every
/// node runs a member machine; the node holding the coordinator role also runs a coordinator
/// machine, and the two talk without a socket.
public final class MembershipNode: @unchecked Sendable {
    public let localId: UInt64
    private let options: MembershipOptions
    private let logger: Logger
    private let group: any EventLoopGroup
    private let transport: TransportNode
    private let delegate = ControlLinkDelegate()

    private let lock = NSLock()
    private var member: MemberMachine?
    private var coordinator: CoordinatorMachine?
    private var links: [UInt64: Connection] = [:]
    private var listener: TransportNode.Listener?
    private var ticker: RepeatedTask?
    private var stopped = false
    private var failure: MembershipError?
    private var startWaiter: CheckedContinuation<Void, any Error>?
    private var nextWaiter = 0
    private var updateWaiters: [Int: CheckedContinuation<UpdatePoint, any Error>] = [:]
    private var agreeWaiters: [RoundKey: [Int: CheckedContinuation<Bool, any Error>]] = [:]
    private var counters: MembershipStatus
    private var abortedSinceUpdate = false
    private var leaveWaiter: CheckedContinuation<Void, Never>?
    private weak var communicator: Communicator?
    private var frozen = false
    /// What arrived while frozen (a message, or nil for a closed link), delivered on thaw as
    /// a stopped process would read it after SIGCONT.
    private var deferred: [(Connection, MembershipMessage?)] = []
    private var blocked: Set<UInt64> = []
    /// When the clock last ticked: a long gap means this process was stopped (see `tick()`).
    private var lastTick = ContinuousClock.now
    private var subscribers: [Int: AsyncStream<MembershipEvent>.Continuation] = [:]
    private var nextSubscriber = 0
    private var lastRole: MembershipStatus.Role = .idle
    private var lastJoinersWaiting = 0
    /// Probe connections (both ends), apart from `links`: their answers are read, replies may go
    /// back on them, and closing one is nobody's death.
    private var probeLinks: [UInt64: Connection] = [:]
    /// Refused messages are logged at a bounded rate (a stranger with the key could send many).
    private let refusalLog = LogRateLimiter()
    /// The handshake `info` that marks a control connection as a probe.
    static let probeInfo: [UInt8] = [0x50]

    public init(localId: UInt64, key: ClusterKey, options: MembershipOptions = MembershipOptions(), logger: Logger) {
        self.localId = localId
        self.options = options
        var logger = logger
        logger[metadataKey: "node.id"] = "\(hex(localId))"
        self.logger = logger
        group = TransportNode.makeEventLoopGroup(threads: 1)
        // A control handshake never waits longer than a heartbeat timeout: a frozen candidate or
        // seed accepts TCP (the kernel does) but never answers, and a failover or a join must
        // move on to the next address in about the time it takes to notice a silent peer.
        var transportOptions = options.transport
        let bound = TimeAmount.nanoseconds(options.heartbeatTimeout.components.seconds * 1_000_000_000
                                           + options.heartbeatTimeout.components.attoseconds / 1_000_000_000)
        transportOptions.handshakeTimeout = min(transportOptions.handshakeTimeout, bound)
        transport = TransportNode(localId: localId, key: key, group: group, options: transportOptions, logger: logger)
        counters = MembershipStatus(localId: localId, role: .idle)
        delegate.node = self
    }

    deinit {
        // Not in shutdown(): a dial may still be in flight then (it holds the node, so no
        // dial is running once the node is released).
        group.shutdownGracefully { _ in }
    }

    /// Collectives of this communicator's ring are aborted when a committed view drops one of
    /// the ring's members (a frozen peer keeps its TCP links open, so the ring cannot notice).
    public func attach(_ communicator: Communicator) {
        lock.withLock { self.communicator = communicator }
    }

    // MARK: - Public API

    /// Binds the control port and founds the cluster (no `seed`) or asks the seed to be admitted.
    ///
    /// A joiner returns once the coordinator registered it; it becomes a member at the next
    /// ``updateTopology()``. The control port listens on `controlHost`; the view announces
    /// `advertiseHost` (default: `controlHost`) and `dataHost`, the addresses other nodes dial.
    /// Returns the control port (the one the OS chose when 0 was asked for).
    ///
    /// `settings`: what every ring member must share (the caller's model, state size, modes: any
    /// text up to 255 bytes). A joiner whose settings differ from the cluster's is refused with
    /// `incompatible`, and `start()` throws: retrying cannot fix that.
    public func start(controlHost: String = "127.0.0.1", controlPort: Int = 0, advertiseHost: String? = nil,
                      dataHost: String = "127.0.0.1",
                      dataPort: Int, seed: (host: String, port: Int)?, coordinatorOnly: Bool = false,
                      settings: String = "") async throws -> Int {
        try await start(controlHost: controlHost, controlPort: controlPort, advertiseHost: advertiseHost, dataHost: dataHost,
                        dataPort: dataPort, seeds: seed.map { [$0] } ?? [], coordinatorOnly: coordinatorOnly, settings: settings)
    }

    /// ``start(controlHost:controlPort:advertiseHost:dataHost:dataPort:seed:coordinatorOnly:settings:)``
    /// with several seeds: tried in order, round after round with backoff, until one of them
    /// (or a node it redirects to) registers this node. No seeds: found a cluster.
    public func start(controlHost: String = "127.0.0.1", controlPort: Int = 0, advertiseHost: String? = nil,
                      dataHost: String = "127.0.0.1",
                      dataPort: Int, seeds: [(host: String, port: Int)], coordinatorOnly: Bool = false,
                      settings: String = "") async throws -> Int {
        let delegate = self.delegate
        if let refusal = lock.withLock({ member != nil ? "start() was already called" : stopped ? "the node is shut down" : nil }) {
            throw MembershipError(code: .notStarted, message: refusal)
        }
        let listener = try await transport.listen(host: controlHost, port: controlPort) { [weak self] connection in
            guard connection.purpose == .control, let self else { return nil }
            self.accepted(connection)
            return delegate
        }
        let me = NodeInfo(id: localId, controlHost: advertiseHost ?? controlHost, controlPort: listener.port,
                          dataHost: dataHost, dataPort: dataPort, inRing: !coordinatorOnly)
        var machine = MemberMachine(me: me, interval: options.heartbeatInterval, timeout: options.heartbeatTimeout, now: .now)
        // One heartbeat timeout past the fork bound: by then a cluster that was failing over has
        // a coordinator again, or its reachable members have forked and answer as a line.
        machine.foundLineAfter = options.forkAfter.map { $0 + options.heartbeatTimeout }
        machine.settings = String(decoding: Array(settings.utf8.prefix(MembershipLimits.maxHost)), as: UTF8.self)
        if !seeds.isEmpty {
            do {
                try await register(machine, listener: listener, seeds: seeds)
            } catch {
                await close(reason: MembershipError(code: .stopped, message: "could not join: \(error)"))
                throw error
            }
            logger.info("registered with the cluster; waiting for admission at the next topology update")
        } else {
            let effects = lock.withLock { () -> [Effect] in
                self.listener = listener
                var machine = machine
                let actions = machine.bootstrap(now: .now)
                member = machine
                return run(member: actions)
            }
            perform(effects)
            startTicker()
            logger.info("founded a new cluster as its coordinator", metadata: ["control.port": "\(listener.port)"])
        }
        return listener.port
    }

    /// Asks the seeds to be admitted and waits until the coordinator registered this node: through
    /// restarts of the seeds and closed connections, with backoff, until `joinTimeout` (if set).
    private func register(_ machine: MemberMachine, listener: TransportNode.Listener,
                          seeds: [(host: String, port: Int)]) async throws {
        var joining = machine
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let effects = lock.withLock { () -> [Effect] in
                self.listener = listener
                startWaiter = continuation
                let actions = joining.join(seeds: seeds.map { MemberMachine.Address(host: $0.host, port: $0.port) },
                                           giveUpAfter: options.joinTimeout, now: .now)
                member = joining
                return run(member: actions)
            }
            perform(effects)
            startTicker()
        }
    }

    /// Sends what this node measured of its links (``LinkProber``) to the coordinator it follows,
    /// for the ring plan (docs/membership.md, "Ring order"). Dropped when it follows none.
    /// `reports`: (peer id, bytes per second, one-way latency in seconds).
    public func reportLinks(_ reports: [(peer: UInt64, bandwidth: Double, latency: Double)]) {
        let message = MembershipMessage.links(reports.map {
            .init(to: $0.peer, bandwidth: UInt64(max(1, min($0.bandwidth, 1e15))),
                  latencyMicros: UInt32(max(0, min($0.latency * 1e6, Double(UInt32.max)))))
        })
        let effects = lock.withLock { () -> [Effect] in
            guard !stopped, let member, member.phase == .member else { return [] }
            if coordinator != nil { return run([.toCoordinator(localId, message)]) }
            guard let link = member.link, link != localId else { return [] }
            return write(message, to: link)
        }
        perform(effects)
    }

    /// The update point: blocks until every ring member reached it and the coordinator admitted
    /// waiting joiners (or committed removals); returns the ring of the view then current.
    public func updateTopology() async throws -> RingView {
        try await passUpdatePoint().ring
    }

    /// The update point, with its number in the epoch, which names the collectives run after it
    /// (``CollectiveID/point``).
    public func passUpdatePoint() async throws -> UpdatePoint {
        let id = lock.withLock { () -> Int in
            nextWaiter += 1
            return nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<UpdatePoint, any Error>) in
                let effects = lock.withLock { () -> [Effect] in
                    if let error = refusal() {
                        continuation.resume(throwing: error)
                        return []
                    }
                    if abortedSinceUpdate {
                        abortedSinceUpdate = false
                        counters.retries += 1
                    }
                    updateWaiters[id] = continuation
                    return run(member: member!.requestUpdate())
                }
                perform(effects)
            }
        } onCancel: {
            lock.withLock { updateWaiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Why a call cannot wait now, if it cannot (lock held).
    private func refusal() -> (any Error)? {
        if Task.isCancelled { return CancellationError() }
        if let failure { return failure }
        if stopped { return MembershipError(code: .stopped, message: "the node is shut down") }
        if member == nil { return MembershipError(code: .notStarted, message: "start() first") }
        return nil
    }

    /// The outcome round of one collective: reports whether it succeeded here and returns the
    /// cluster's answer: true (keep the result) only if every ring member of `epoch` succeeded.
    public func agree(epoch: UInt64, collective: CollectiveID, succeeded: Bool) async throws -> Bool {
        let key = RoundKey(epoch: epoch, collective: collective)
        let id = lock.withLock { () -> Int in
            nextWaiter += 1
            return nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Bool, any Error>) in
                let effects = lock.withLock { () -> [Effect] in
                    if let error = refusal() {
                        continuation.resume(throwing: error)
                        return []
                    }
                    agreeWaiters[key, default: [:]][id] = continuation
                    return run(member: member!.report(key, done: succeeded))
                }
                perform(effects)
            }
        } onCancel: {
            lock.withLock { agreeWaiters[key]?.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Graceful leave: tells the coordinator (no timeout needed on the others' side), waits up to
    /// `leaveTimeout` for the view without this node, then shuts down. A leaving coordinator
    /// hands the role to the next node in view order.
    public func leave() async {
        let (effects, alone) = lock.withLock { () -> ([Effect], Bool) in
            guard var machine = member, !stopped else { return ([], true) }
            let alone = machine.view?.ids == [localId]
            let actions = machine.leave()
            member = machine
            return (run(member: actions), alone)
        }
        perform(effects)
        if !alone {
            // Until the view without this node commits, or leaveTimeout.
            let timeout = options.leaveTimeout
            let amount = TimeAmount.nanoseconds(timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let gone = lock.withLock { () -> Bool in
                    // (A second concurrent leave() does not wait.)
                    if stopped || leaveWaiter != nil || member?.view.map({ !$0.contains(localId) }) ?? true { return true }
                    leaveWaiter = continuation
                    return false
                }
                if gone { return continuation.resume() }
                group.next().scheduleTask(in: amount) { [weak self] in
                    self?.lock.withLock { () -> CheckedContinuation<Void, Never>? in
                        defer { self?.leaveWaiter = nil }
                        return self?.leaveWaiter
                    }?.resume()
                }
            }
        }
        lock.withLock { counters.role = .left }
        await close(reason: MembershipError(code: .stopped, message: "this node left the cluster"))
        logger.info("left the cluster")
    }

    /// Stops at once, without a goodbye: to the others this looks like a crash.
    public func shutdown() async {
        await close(reason: MembershipError(code: .stopped, message: "the node is shut down"))
    }

    public var status: MembershipStatus {
        lock.withLock {
            var s = counters
            s.view = member?.view
            s.role = currentRole()
            s.rejoinReason = member?.rejoinReason
            s.pendingJoiners = coordinator?.pendingJoiners ?? 0
            return s
        }
    }

    /// (Lock held.)
    private func currentRole() -> MembershipStatus.Role {
        if counters.role == .stopped || counters.role == .left { return counters.role }
        switch member?.phase {
        case .none, .idle?: return .idle
        case .joining?: return member?.rejoinReason != nil ? .rejoining : .joining
        case .member?: return coordinator != nil ? .coordinator : .member
        case .electing?: return .electing
        case .left?: return .left
        }
    }

    /// The last committed view this node knows.
    public var view: MembershipView? { lock.withLock { member?.view } }

    /// What happens to this node's membership, as it happens: views committed, role changes,
    /// rejoins. Each call is one subscriber, which starts with the current role (and view, if
    /// any); events beyond the newest 256 unread are dropped. The stream ends when the node stops.
    public func events() -> AsyncStream<MembershipEvent> {
        let (stream, continuation) = AsyncStream<MembershipEvent>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let finished = lock.withLock { () -> Bool in
            if stopped { return true }
            nextSubscriber += 1
            let id = nextSubscriber
            subscribers[id] = continuation
            continuation.onTermination = { [weak self] _ in
                self?.lock.withLock { _ = self?.subscribers.removeValue(forKey: id) }
            }
            continuation.yield(.roleChanged(currentRole(), reason: member?.rejoinReason))
            if let view = member?.view { continuation.yield(.viewCommitted(view)) }
            return false
        }
        if finished {
            continuation.yield(.roleChanged(lock.withLock { counters.role }, reason: nil))
            continuation.finish()
        }
        return stream
    }

    // MARK: - Test hooks

    /// Test hook: behave like a stopped process (SIGSTOP): links stay open, nothing is sent,
    /// received or timed out.
    public func freezeForTesting() {
        lock.withLock { frozen = true }
    }

    /// Test hook: the end of ``freezeForTesting()`` (SIGCONT): the node runs on, and sees the
    /// silence it caused as its own pause.
    public func thawForTesting() {
        let backlog = lock.withLock { () -> [(Connection, MembershipMessage?)] in
            frozen = false
            defer { deferred.removeAll() }
            return deferred
        }
        for (connection, message) in backlog {
            if let message { received(message, on: connection) } else { closed(connection) }
        }
    }

    /// Test hook: drop every control message to and from these nodes (a network partition).
    public func dropTrafficForTesting(with ids: Set<UInt64>) {
        lock.withLock { blocked = ids }
    }

    // MARK: - Events from links and the clock

    private func accepted(_ connection: Connection) {
        let old = lock.withLock { () -> Connection? in
            let id = connection.remoteId
            if connection.info == Self.probeInfo {
                // A probe never takes the place of a link the membership runs on: its close
                // must not read as that node's death.
                let old = probeLinks[id]
                probeLinks[id] = connection
                return old === connection ? nil : old
            }
            let old = links[id]
            links[id] = connection
            return old === connection ? nil : old
        }
        old?.close()
    }

    fileprivate func received(_ message: MembershipMessage, on connection: Connection) {
        let from = connection.remoteId
        logger.trace("received \(message) from \(hex(from))")
        let effects = lock.withLock { () -> [Effect] in
            if frozen, deferred.count < 100_000 { deferred.append((connection, message)) }
            guard !stopped, !frozen, !blocked.contains(from),
                  links[from] === connection || probeLinks[from] === connection else { return [] }
            return route(message, from: from)
        }
        perform(effects)
    }

    fileprivate func garbage(_ connection: Connection, _ reason: String) {
        guard let suppressed = refusalLog.admit() else {
            connection.close()
            return
        }
        logger.warning("\(LogRateLimiter.annotate("closing control link from \(hex(connection.remoteId)) after a malformed message: \(escapedForLog(reason))", suppressed: suppressed))",
                       metadata: ["peer.id": "\(hex(connection.remoteId))"])
        connection.close()
    }

    fileprivate func closed(_ connection: Connection) {
        let id = connection.remoteId
        let effects = lock.withLock { () -> [Effect] in
            if frozen, deferred.count < 100_000 {
                deferred.append((connection, nil))
                return []
            }
            if probeLinks[id] === connection { probeLinks[id] = nil }
            guard links[id] === connection else { return [] }
            links[id] = nil
            guard !stopped else { return [] }
            let now = ContinuousClock.now
            var out = run(member: member?.linkClosed(id, now: now) ?? [])
            if coordinator != nil { out += run(coordinator: coordinator!.disconnected(id, now: now)) }
            return out
        }
        perform(effects)
    }

    /// The clock runs on the node's own event loop, not on the Swift concurrency pool: a process
    /// busy computing on every pool thread must still heartbeat and detect deaths in time.
    private func startTicker() {
        let period = max(options.heartbeatInterval / 5, .milliseconds(10))
        let amount = TimeAmount.nanoseconds(period.components.seconds * 1_000_000_000 + period.components.attoseconds / 1_000_000_000)
        let task = group.next().scheduleRepeatedTask(initialDelay: amount, delay: amount) { [weak self] _ in
            self?.tick()
        }
        lock.withLock { ticker = task }
    }

    private func tick() {
        let effects = lock.withLock { () -> [Effect] in
            guard !stopped, !frozen else { return [] }
            let now = ContinuousClock.now
            let gap = now - lastTick
            lastTick = now
            if gap > options.heartbeatTimeout / 2 {
                // The clock did not tick for a long while: this process was stopped. Nobody is
                // timed out for that silence; what changed meanwhile arrives on the links.
                logger.warning("resumed after a pause of \(gap); not timing anyone out for it")
                member?.resumed(now: now)
                coordinator?.resumed(now: now)
                return []
            }
            var out = run(member: member?.tick(now: now) ?? [])
            if coordinator != nil { out += run(coordinator: coordinator!.tick(now: now)) }
            return out
        }
        perform(effects)
    }

    private func close(reason: MembershipError) async {
        let (listener, links, ticker, effects) = lock.withLock {
            () -> (TransportNode.Listener?, [Connection], RepeatedTask?, [Effect]) in
            var effects = stopped ? [] : failAll(reason)
            stopped = true
            if counters.role != .left { counters.role = .stopped }
            let role = counters.role
            for subscriber in subscribers.values {
                effects.append(.resume {
                    subscriber.yield(.roleChanged(role, reason: nil))
                    subscriber.finish()
                })
            }
            subscribers.removeAll()
            defer { self.listener = nil; self.links.removeAll(); self.probeLinks.removeAll(); self.ticker = nil }
            return (self.listener, Array(self.links.values) + Array(self.probeLinks.values), self.ticker, effects)
        }
        perform(effects)
        ticker?.cancel(promise: nil)
        await listener?.close()
        for link in links { link.close() }
    }

    // MARK: - Running the machines (lock held)

    private enum Effect {
        case write(Connection, [UInt8])
        case close(Connection)
        case dial(String, Int)
        case resume(@Sendable () -> Void)
        /// Aborts the communicator's ring if older than the epoch.
        case abortRing(Communicator, String, UInt64)
        /// Breaks the communicator's current ring, whatever its epoch.
        case breakRing(Communicator, String)
        /// Dial a node and send it a message once the link is up (a coordinator's probe).
        case probe(String, Int, [UInt8])
        /// The same, looking for another line of the cluster.
        case lineProbe(String, Int, [UInt8])
        case event(MembershipEvent)
    }

    private enum Work {
        case member(MemberMachine.Action)
        case coordinator(CoordinatorMachine.Action)
        case toMember(UInt64, MembershipMessage)
        case toCoordinator(UInt64, MembershipMessage)
    }

    /// Messages for the coordinator role go to this node's coordinator machine; the rest to its member machine.
    private static func isForCoordinator(_ message: MembershipMessage) -> Bool {
        switch message {
        case .join, .rejoin, .memberHeartbeat, .updateRequest, .ack, .leave, .outcome, .stale, .links: true
        case .redirect, .coordinatorHeartbeat, .propose, .commit, .proceed, .decision, .removed, .merge, .line, .incompatible: false
        }
    }

    private func route(_ message: MembershipMessage, from: UInt64) -> [Effect] {
        guard Self.isForCoordinator(message) else { return run([.toMember(from, message)]) }
        if coordinator != nil { return run([.toCoordinator(from, message)]) }
        if case .rejoin(let node, let epoch, _) = message, let view = member?.view, view.epoch > epoch,
           !view.contains(node.id), let connection = links[from] {
            // A node that missed the views without it (it was frozen, or cut off): it would
            // only be sent on to a coordinator that no longer counts it as a member.
            logger.info("telling \(hex(from)) it is not in the view of epoch \(view.epoch)")
            return [.write(connection, MembershipMessage.removed(reason: "not a member of epoch \(view.epoch)").encode())]
        }
        switch message {
        case .ack, .leave, .outcome, .stale:
            // Member-to-coordinator messages for a node that does not hold the role.
            logRefusal(from: from, "\(message.kindName) sent to a node that is not a coordinator")
            return []
        case .join, .rejoin:
            // Not the coordinator: point the sender at the one this node follows.
            guard let member, let link = member.link, link != localId, let target = member.view?.node(link),
                  let connection = links[from] else {
                return links[from].map { [.close($0)] } ?? []
            }
            logger.info("redirecting \(hex(from)) to the coordinator \(hex(target.id))")
            return [.write(connection, MembershipMessage.redirect(id: target.id, host: target.controlHost, port: target.controlPort).encode())]
        default:
            return []
        }
    }

    private func run(member actions: [MemberMachine.Action] = [], coordinator cActions: [CoordinatorMachine.Action] = []) -> [Effect] {
        run(actions.map(Work.member) + cActions.map(Work.coordinator))
    }

    private func run(_ initial: [Work]) -> [Effect] {
        var queue = initial
        var effects: [Effect] = []
        let now = ContinuousClock.now
        var index = 0
        while index < queue.count {
            let work = queue[index]
            index += 1
            switch work {
            case .toMember(let from, let message):
                if from == localId { logger.trace("local to member: \(message)") }
                guard member != nil else { continue }
                queue += member!.receive(message, from: from, now: now).map(Work.member)
            case .toCoordinator(let from, let message):
                if from == localId { logger.trace("local to coordinator: \(message)") }
                guard coordinator != nil else { continue }
                queue += coordinator!.receive(message, from: from, now: now).map(Work.coordinator)
            case .coordinator(let action):
                switch action {
                case .send(let to, let message):
                    if case .incompatible(let reason) = message {
                        logger.warning("refused joiner \(hex(to)): \(reason)", metadata: ["peer.id": "\(hex(to))"])
                    }
                    if to == localId { queue.append(.toMember(localId, message)) } else { effects += write(message, to: to) }
                case .closeLink(let id):
                    if let link = links.removeValue(forKey: id) { effects.append(.close(link)) }
                    if let link = probeLinks.removeValue(forKey: id) { effects.append(.close(link)) }
                case .declaredDead(let id, let reason):
                    logger.warning("peer \(hex(id)) declared dead: \(reason); removing it", metadata: ["peer.id": "\(hex(id))"])
                case .noQuorum(let epoch):
                    counters.proposalsWithoutQuorum += 1
                    effects.append(.event(.noQuorum(epoch: epoch)))
                    logger.warning("no quorum for the view of epoch \(epoch) yet; asking again")
                case .probe(let node, let message):
                    if let link = links[node.id] {
                        effects.append(.write(link, message.encode()))
                    } else {
                        effects.append(.probe(node.controlHost, node.controlPort, message.encode()))
                    }
                case .forked(let old, let next):
                    counters.forks += 1
                    logger.warning("no quorum of epoch \(old.epoch)'s view for \(options.forkAfter.map { "\($0)" } ?? "-"): going on as line \(hex(next.line)) with the \(next.nodes.count) node(s) reachable; it merges with line \(hex(old.line)) when they meet")
                case .refused(let from, let reason):
                    logRefusal(from: from, reason)
                case .deposed(let newer):
                    coordinator = nil
                    logger.warning("a newer view exists without this node as coordinator: \(newer)")
                    if member != nil {
                        queue += member!.rejoin(reason: "deposed: the cluster committed epoch \(newer.epoch) without this node as coordinator",
                                                newer: newer, now: now).map(Work.member)
                    }
                }
            case .member(let action):
                effects += apply(action, queue: &queue, now: now)
            }
        }
        let role = currentRole()
        if role != lastRole {
            lastRole = role
            effects.append(.event(.roleChanged(role, reason: member?.rejoinReason)))
        }
        let joiners = coordinator?.pendingJoiners ?? 0
        if joiners != lastJoinersWaiting {
            lastJoinersWaiting = joiners
            effects.append(.event(.joinersWaiting(joiners)))
        }
        return effects
    }

    private func apply(_ action: MemberMachine.Action, queue: inout [Work], now: ContinuousClock.Instant) -> [Effect] {
        switch action {
        case .send(let to, let message):
            if to == localId {
                queue.append(.toCoordinator(localId, message))
                return []
            }
            return write(message, to: to)
        case .dial(let host, let port):
            return [.dial(host, port)]
        case .closeLink(let id):
            return [links.removeValue(forKey: id), probeLinks.removeValue(forKey: id)].compactMap { $0.map { .close($0) } }
        case .becomeCoordinator(let view, let lost, let adopted):
            coordinator = CoordinatorMachine(me: localId, view: view, failover: lost, adopted: adopted,
                                             interval: options.heartbeatInterval, timeout: options.heartbeatTimeout,
                                             forkAfter: options.forkAfter, now: now)
            coordinator!.settings = member?.settings ?? ""
            if options.ringOrder == .measured { coordinator!.ringOrder = RingOrderBook(improvement: options.ringOrderImprovement) }
            if let lost {
                logger.warning("coordinator \(hex(lost)) lost; taking over as the next in view order", metadata: ["epoch": "\(view.epoch)"])
            } else if view.epoch > 1 {
                logger.info("took over the coordinator role", metadata: ["epoch": "\(view.epoch)"])
            }
            return []
        case .resignCoordinator:
            coordinator = nil
            return []
        case .registered:
            guard let waiter = startWaiter else { return [] }
            startWaiter = nil
            return [.resume { waiter.resume() }]
        case .committed(let old, let new, let departed):
            let before = Set(old?.ids ?? [])
            let after = Set(new.ids)
            if old != nil { counters.joins += after.subtracting(before).count }
            for id in before.subtracting(after) {
                if departed.contains(id) { counters.leaves += 1 } else { counters.deaths += 1 }
            }
            logger.info("view committed: \(new)")
            var out: [Effect] = [.event(.viewCommitted(new))]
            if !new.contains(localId), let waiter = leaveWaiter {
                leaveWaiter = nil
                out.append(.resume { waiter.resume() })
            }
            if let old, !Set(old.ringIds).isSubset(of: Set(new.ringIds)), let communicator {
                out.append(.abortRing(communicator, "membership changed: epoch \(new.epoch) dropped a ring member", new.epoch))
            }
            return out
        case .updateDone(let view, let point):
            let waiters = updateWaiters.values
            updateWaiters.removeAll()
            let passed = UpdatePoint(ring: view.ringView, point: point)
            return waiters.map { waiter in .resume { waiter.resume(returning: passed) } }
        case .decided(let key, let commit):
            if !commit {
                counters.aborts += 1
                abortedSinceUpdate = true
            }
            let waiters = agreeWaiters.removeValue(forKey: key)?.values.map { $0 } ?? []
            return waiters.map { waiter in .resume { waiter.resume(returning: commit) } }
        case .rejoining(let reason):
            counters.rejoins += 1
            logger.warning("out of the cluster; joining anew: \(reason)")
            // Every link belongs to the membership this node just left.
            var out: [Effect] = (Array(links.values) + Array(probeLinks.values)).map { .close($0) }
            links.removeAll()
            probeLinks.removeAll()
            if let communicator {
                out.append(.breakRing(communicator, "this node is out of the view: \(reason)"))
            }
            return out
        case .joinRetry(let reason, let delay):
            logger.warning("cannot join yet: \(reason); trying again in \(delay)")
            return []
        case .probeLine(let address, let message):
            return [.lineProbe(address.host, address.port, message.encode())]
        case .closeProbe(let id):
            return probeLinks.removeValue(forKey: id).map { [.close($0)] } ?? []
        case .mergeLine(let view, let into):
            counters.merges += 1
            logger.warning("met line \(hex(into.line)) (\(into.nodes.count) nodes): this line (\(hex(view.line)), \(view.nodes.count) nodes) merges into it")
            let bytes = MembershipMessage.merge(into).encode()
            return view.ids.filter { $0 != localId }.compactMap { id in links[id].map { .write($0, bytes) } }
        case .failed(let error):
            logger.warning("\(error.message)")
            failure = error
            return failAll(error)
        case .refused(let from, let reason):
            logRefusal(from: from, reason)
            return []
        }
    }

    /// One line per refused message, naming the sender, at most ``LogRateLimiter``'s rate.
    private func logRefusal(from: UInt64, _ reason: String) {
        guard let suppressed = refusalLog.admit() else { return }
        logger.warning("\(LogRateLimiter.annotate("refused a control message from \(hex(from)): \(reason)", suppressed: suppressed))",
                       metadata: ["peer.id": "\(hex(from))"])
    }

    private func failAll(_ error: MembershipError) -> [Effect] {
        var out: [Effect] = []
        if let waiter = startWaiter {
            startWaiter = nil
            out.append(.resume { waiter.resume(throwing: error) })
        }
        if let waiter = leaveWaiter {
            leaveWaiter = nil
            out.append(.resume { waiter.resume() })
        }
        for waiter in updateWaiters.values { out.append(.resume { waiter.resume(throwing: error) }) }
        updateWaiters.removeAll()
        for waiters in agreeWaiters.values {
            for waiter in waiters.values { out.append(.resume { waiter.resume(throwing: error) }) }
        }
        agreeWaiters.removeAll()
        return out
    }

    private func write(_ message: MembershipMessage, to id: UInt64) -> [Effect] {
        guard !frozen, !blocked.contains(id), let link = links[id] ?? probeLinks[id] else {
            logger.trace("not sent to \(hex(id)): \(message)")
            return []
        }
        return [.write(link, message.encode())]
    }

    // MARK: - Carrying out effects (lock not held)

    private func perform(_ effects: [Effect]) {
        for effect in effects {
            switch effect {
            case .write(let connection, let bytes):
                connection.send(.control, bytes: bytes)
            case .close(let connection):
                connection.close()
            case .dial(let host, let port):
                dial(host: host, port: port)
            case .resume(let resume):
                resume()
            case .abortRing(let communicator, let reason, let epoch):
                communicator.abortRing(reason: reason, beforeEpoch: epoch)
            case .breakRing(let communicator, let reason):
                communicator.leaveRings(reason: reason)
            case .probe(let host, let port, let bytes):
                probe(host: host, port: port, bytes: bytes)
            case .lineProbe(let host, let port, let bytes):
                probe(host: host, port: port, bytes: bytes, lookingForLines: true)
            case .event(let event):
                for subscriber in lock.withLock({ Array(subscribers.values) }) { subscriber.yield(event) }
            }
        }
    }

    private func dial(host: String, port: Int) {
        let delegate = self.delegate
        Task { [weak self] in
            guard let self else { return }
            do {
                let connection = try await self.transport.dial(host: host, port: port, purpose: .control, delegate: delegate)
                let (old, effects) = self.lock.withLock { () -> (Connection?, [Effect]) in
                    guard !self.stopped else { return (nil, [.close(connection)]) }
                    let old = self.links[connection.remoteId]
                    self.links[connection.remoteId] = connection
                    return (old, self.run(member: self.member?.linkOpened(connection.remoteId, now: .now) ?? []))
                }
                old?.close()
                self.perform(effects)
            } catch {
                // A wrong key or protocol version is the operator's to fix: retrying cannot.
                let fatal = (error as? HandshakeError).map { $0.code == .badKey || $0.code == .versionMismatch } ?? false
                let effects = self.lock.withLock { () -> [Effect] in
                    guard !self.stopped else { return [] }
                    return self.run(member: self.member?.dialFailed(now: .now, error: "\(error)", fatal: fatal) ?? [])
                }
                self.perform(effects)
            }
        }
    }

    /// A coordinator's probe: a link to a voter it cannot hear, carrying one message. The answer
    /// (a vote, or the newer view that voter committed) arrives like any other.
    private func probe(host: String, port: Int, bytes: [UInt8], lookingForLines: Bool = false) {
        let delegate = self.delegate
        Task { [weak self] in
            guard let self else { return }
            defer { if lookingForLines { self.lock.withLock { self.member?.lineProbeEnded() } } }
            guard let connection = try? await self.transport.dial(host: host, port: port, purpose: .control,
                                                                   info: Self.probeInfo, delegate: delegate) else {
                self.logger.debug("probe of \(host):\(port) failed")
                return
            }
            let (keep, old) = self.lock.withLock { () -> (Bool, Connection?) in
                guard !self.stopped, self.coordinator != nil, connection.remoteId != self.localId else { return (false, nil) }
                let old = self.probeLinks[connection.remoteId]
                self.probeLinks[connection.remoteId] = connection
                return (true, old)
            }
            old?.close()
            if keep { connection.send(.control, bytes: bytes) } else { connection.close() }
        }
    }
}

/// Decodes control frames for a ``MembershipNode``; garbage closes the link with a log line.
final class ControlLinkDelegate: ConnectionDelegate, @unchecked Sendable {
    weak var node: MembershipNode?

    func connection(_ connection: Connection, received event: FrameEvent) {
        guard case .frame(let header, let payload) = event, header.type == .control else {
            node?.garbage(connection, "unexpected frame on a control link")
            return
        }
        do {
            let message = try MembershipMessage.decode(Array(payload.readableBytesView))
            node?.received(message, on: connection)
        } catch {
            node?.garbage(connection, "\(error)")
        }
    }

    func connectionWritabilityChanged(_ connection: Connection) {}

    func connectionClosed(_ connection: Connection, error: (any Error)?) {
        node?.closed(connection)
    }
}

/// An update point that passed: the ring of the view then current, and the point's number in
/// the view's epoch (1 for the first), the same on every member of the ring.
public struct UpdatePoint: Sendable, Equatable {
    public var ring: RingView
    public var point: UInt64
}
