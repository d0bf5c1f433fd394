@testable import Collectives
import Testing

// The state machines alone: no sockets, no clock but the instants passed in.

private func node(_ id: UInt64) -> NodeInfo {
    NodeInfo(id: id, controlHost: "h\(id)", controlPort: Int(7000 + id), dataHost: "h\(id)", dataPort: Int(8000 + id), inRing: true)
}

private let t0 = ContinuousClock.now
private let view2 = MembershipView(epoch: 2, coordinator: 1, nodes: [node(1), node(2), node(3), node(4)])

/// A member of `view2` (id `me`), attached to coordinator 1.
private func memberOfView2(_ me: UInt64) -> MemberMachine {
    var m = MemberMachine(me: node(me), interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    _ = m.join(seedHost: "h1", seedPort: 7001, now: t0)
    _ = m.linkOpened(1, now: t0)
    _ = m.receive(.commit(view2, departed: []), from: 1, now: t0)
    return m
}

private func acks(_ actions: [MemberMachine.Action]) -> [MembershipMessage] {
    actions.compactMap { if case .send(_, let message) = $0 { message } else { nil } }
}

@Test func aMemberAcknowledgesAtMostOneViewPerEpoch() {
    var m = memberOfView2(3)
    #expect(m.phase == .member && m.view == view2)
    let p1 = MembershipView(epoch: 3, coordinator: 1, nodes: [node(1), node(2), node(3)])
    let p2 = MembershipView(epoch: 3, coordinator: 2, nodes: [node(2), node(3)])
    #expect(acks(m.receive(.propose(p1), from: 1, now: t0)) == [.ack(epoch: 3, accepted: true, acked: nil)])
    // The same view again (a retry, or a new coordinator adopting it) is fine...
    #expect(acks(m.receive(.propose(p1), from: 2, now: t0)) == [.ack(epoch: 3, accepted: true, acked: nil)])
    // ...another view for the same epoch is refused, naming the one acknowledged.
    #expect(acks(m.receive(.propose(p2), from: 2, now: t0)) == [.ack(epoch: 3, accepted: false, acked: p1)])
    // Epochs that skip one are refused: the member must first learn the missing view.
    let p4 = MembershipView(epoch: 4, coordinator: 1, nodes: [node(1), node(3)])
    #expect(acks(m.receive(.propose(p4), from: 1, now: t0)) == [.ack(epoch: 4, accepted: false, acked: nil)])
}

@Test func theCoordinatorAsksTheSuccessorFirstAndCommitsOnAQuorum() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    // Node 4 closes its link: a view without it is proposed, to the coordinator itself and
    // the successor (node 2) only.
    let first = c.disconnected(4, now: t0)
    let next = MembershipView(epoch: 3, coordinator: 1, nodes: [node(1), node(2), node(3)])
    #expect(first == [.declaredDead(4, reason: "its control link closed"), .send(1, .propose(next)), .send(2, .propose(next))])
    // The coordinator's own ack is not a quorum of 4 (1 of 4).
    #expect(c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 1, now: t0) == [])
    // Once the successor acknowledged, the others are asked; 1 and 2 are exactly half with the coordinator.
    let second = c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 2, now: t0)
    #expect(second.first == .send(3, .propose(next)))
    #expect(second.contains(.send(3, .commit(next, departed: []))))
    #expect(c.view == next)
}

@Test func aMinorityCoordinatorNeverCommits() {
    // Elected by nodes 3 and 4 after losing 1 and 2: half of view 2 without its coordinator.
    var c = CoordinatorMachine(me: 3, view: view2, failover: 1, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    _ = c.receive(.rejoin(node(4), epoch: 2, decisions: []), from: 4, now: t0 + .milliseconds(900))
    var actions = c.tick(now: t0 + .milliseconds(1100))   // node 2 never re-attached: proposal without 1 and 2
    let proposal = MembershipView(epoch: 3, coordinator: 3, nodes: [node(3), node(4)])
    #expect(actions.contains(.send(3, .propose(proposal))))
    actions = c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 3, now: t0 + .milliseconds(1100))
    actions += c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 4, now: t0 + .milliseconds(1100))
    #expect(!actions.contains { if case .send(_, .commit) = $0 { true } else { false } })
    #expect(c.view == view2)
    #expect(c.tick(now: t0 + .seconds(3)).contains(.noQuorum(epoch: 3)))
}

@Test func aSuccessorThatAcknowledgedAViewAdoptsItWhenElected() {
    // Node 2 acknowledged p (admitting node 5) for epoch 3, then coordinator 1 died before committing.
    var m = memberOfView2(2)
    let p = MembershipView(epoch: 3, coordinator: 1, nodes: view2.nodes + [node(5)])
    _ = m.receive(.propose(p), from: 1, now: t0)
    let elected = m.linkClosed(1, now: t0)
    #expect(elected.first == .becomeCoordinator(view2, failover: 1, adopted: p))
    // The new coordinator proposes p unchanged once the others re-attached, then removes node 1.
    var c = CoordinatorMachine(me: 2, view: view2, failover: 1, adopted: p,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    _ = c.receive(.rejoin(node(3), epoch: 2, decisions: []), from: 3, now: t0)
    let proposing = c.receive(.rejoin(node(4), epoch: 2, decisions: []), from: 4, now: t0)
    #expect(proposing.contains(.send(2, .propose(p))))
    for id: UInt64 in [2, 3] { _ = c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: id, now: t0) }
    let committed = c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: 4, now: t0)
    #expect(c.view.epoch >= 3)
    #expect(committed.contains(.send(5, .commit(p, departed: []))))
    // The next proposal drops the dead coordinator and names the new one.
    let next = MembershipView(epoch: 4, coordinator: 2, nodes: [node(2), node(3), node(4), node(5)])
    #expect(committed.contains(.send(2, .propose(next))))
}

@Test func outcomeRoundsCommitOnlyWhenEveryRingMemberIsDone() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    let key = RoundKey(epoch: 2, tag: 9)
    for id: UInt64 in [1, 2, 3] { #expect(c.receive(.outcome(key, done: true), from: id, now: t0) == []) }
    let done = c.receive(.outcome(key, done: true), from: 4, now: t0)
    #expect(done == [1, 2, 3, 4].map { .send($0, .decision(key, commit: true)) })
    // One failure aborts for all at once; a later report of the same round gets the same answer.
    let other = RoundKey(epoch: 2, tag: 10)
    #expect(c.receive(.outcome(other, done: false), from: 3, now: t0) == [1, 2, 3, 4].map { .send($0, .decision(other, commit: false)) })
    #expect(c.receive(.outcome(other, done: true), from: 1, now: t0) == [.send(1, .decision(other, commit: false))])
    // A decision a member learned from a dead coordinator wins over anything a new one would decide.
    var successor = CoordinatorMachine(me: 2, view: view2, failover: 1, adopted: nil,
                                       interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    let known = RoundKey(epoch: 2, tag: 11)
    _ = successor.receive(.rejoin(node(3), epoch: 2, decisions: [.init(key: known, commit: true)]), from: 3, now: t0)
    #expect(successor.receive(.outcome(known, done: true), from: 4, now: t0) == [.send(4, .decision(known, commit: true))])
}

@Test func aSilentCoordinatorStartsAFailoverToTheNextNode() {
    var m = memberOfView2(3)
    _ = m.receive(.coordinatorHeartbeat(epoch: 2), from: 1, now: t0)
    #expect(m.tick(now: t0 + .milliseconds(500)) == [.send(1, .memberHeartbeat(epoch: 2))])
    let actions = m.tick(now: t0 + .milliseconds(1100))
    #expect(actions == [.closeLink(1), .dial(host: "h2", port: 7002)])
    #expect(m.phase == .electing)
    // Node 2 cannot be reached either: node 3 is next, and takes over itself.
    let takeOver = m.dialFailed(now: t0 + .milliseconds(1200), error: "refused")
    #expect(takeOver.first == .becomeCoordinator(view2, failover: 1, adopted: nil))
    #expect(m.failed == [1, 2])
}

@Test func aSilentMemberIsToldItWasRemovedAndLearnsIt() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    for id: UInt64 in [2, 3] { _ = c.receive(.memberHeartbeat(epoch: 2), from: id, now: t0 + .milliseconds(900)) }
    let actions = c.tick(now: t0 + .milliseconds(1100))
    #expect(actions.contains(.declaredDead(4, reason: "silent for more than 1.0 seconds")))
    #expect(actions.contains(.send(4, .removed(reason: "silent for more than 1.0 seconds"))))
    #expect(actions.contains(.closeLink(4)))
    #expect(!actions.contains { if case .declaredDead(let id, _) = $0 { id != 4 } else { false } })
    // The removed member does not stop: it joins anew, through the view's coordinator first.
    var m = memberOfView2(4)
    let learned = m.receive(.removed(reason: "silent"), from: 1, now: t0)
    #expect(m.phase == .joining && m.rejoinReason == "removed from the cluster: silent")
    #expect(learned.contains(.rejoining(reason: "removed from the cluster: silent")))
    #expect(learned.last == .dial(host: "h1", port: 7001))
    #expect(!learned.contains { if case .failed = $0 { true } else { false } })
}

/// A rejoining node tries every address it knows, round after round, with a growing jittered
/// backoff, and never gives up; a node whose key is refused gives up at once.
@Test func aRejoiningMemberTriesEveryKnownAddressWithBackoff() {
    var m = memberOfView2(4)
    _ = m.receive(.removed(reason: "silent"), from: 1, now: t0)
    var now = t0
    var dialled: [String] = ["h1"]
    var delays: [Duration] = []
    for _ in 0..<12 {
        let setback = m.dialFailed(now: now, error: "refused")
        for case .joinRetry(_, let delay) in setback { delays.append(delay) }
        #expect(!setback.contains { if case .failed = $0 { true } else { false } })
        // Ticks until the next dial.
        var next: [MemberMachine.Action] = []
        while next.isEmpty {
            now = now + .milliseconds(10)
            next = m.tick(now: now)
        }
        for case .dial(let host, _) in next { dialled.append(host) }
    }
    // The view's coordinator first, then the other members.
    #expect(Array(dialled.prefix(4)) == ["h1", "h2", "h3", "h1"], "\(dialled)")
    // Within a round the next address follows at once; rounds back off, up to 5 s ± 50 %.
    let roundDelays = delays.enumerated().filter { ($0.offset + 1) % 3 == 0 }.map(\.element)
    #expect(roundDelays.count == 4 && roundDelays[3] > roundDelays[0], "\(roundDelays)")
    #expect(delays.allSatisfy { $0 <= .milliseconds(7500) })
    var refused = memberOfView2(4)
    _ = refused.receive(.removed(reason: "silent"), from: 1, now: t0)
    let fatal = refused.dialFailed(now: t0, error: "authentication failed: wrong cluster key", fatal: true)
    #expect(fatal.contains { if case .failed(let e) = $0 { e.code == .joinFailed } else { false } })
}

/// A coordinator that missed a newer view (it was frozen while the others failed over) hears of
/// it from any member it proposes to, and stops coordinating.
@Test func aStaleCoordinatorIsDeposedByAMemberNamingANewerView() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    // Nobody heard for a timeout: every other node is declared dead, and the view of 1 alone
    // lacks a quorum of view2.
    _ = c.tick(now: t0 + .milliseconds(1100))
    let asked = c.tick(now: t0 + .milliseconds(2200))
    #expect(asked.contains(.noQuorum(epoch: 3)))
    // The voters it cannot hear are probed.
    #expect(asked.contains { if case .probe(let node, .propose) = $0 { node.id == 2 } else { false } })
    // Node 2 committed epoch 3 without node 1 meanwhile.
    let newer = MembershipView(epoch: 3, coordinator: 2, nodes: [node(2), node(3), node(4)])
    var m = memberOfView2(2)
    _ = m.receive(.commit(newer, departed: []), from: 1, now: t0)
    let answer = acks(m.receive(.propose(MembershipView(epoch: 3, coordinator: 1, nodes: [node(1)])), from: 1, now: t0))
    #expect(answer == [.stale(newer)])
    #expect(c.receive(.stale(newer), from: 2, now: t0 + .milliseconds(2300)) == [.deposed(newer)])
    #expect(c.tick(now: t0 + .seconds(5)).isEmpty)
}

/// A successor that answers but still believes in the old coordinator (it has not timed it out
/// yet, or it can still reach it) is alive: the member keeps asking it instead of declaring it
/// failed and taking over itself, which left two coordinators behind and the member outside the
/// view its successor committed. A successor that does not answer is still skipped.
@Test func aSuccessorThatStillRedirectsToTheOldCoordinatorIsNotSkipped() {
    var m = memberOfView2(3)
    _ = m.receive(.coordinatorHeartbeat(epoch: 2), from: 1, now: t0)
    #expect(m.tick(now: t0 + .milliseconds(1100)) == [.closeLink(1), .dial(host: "h2", port: 7002)])
    var now = t0 + .milliseconds(1150)
    _ = m.linkOpened(2, now: now)
    var everyAction: [MemberMachine.Action] = []
    // Six timeouts of redirects to the lost coordinator, redialling each time.
    while now < t0 + .seconds(7) {
        everyAction += m.receive(.redirect(id: 1, host: "h1", port: 7001), from: 2, now: now)
        now = now + .milliseconds(100)
        let actions = m.tick(now: now)
        everyAction += actions
        if actions.contains(.dial(host: "h2", port: 7002)) { everyAction += m.linkOpened(2, now: now) }
    }
    #expect(!everyAction.contains { if case .becomeCoordinator = $0 { true } else { false } }, "took over while node 2 answers")
    #expect(m.failed == [1] && m.link == 2)
    // Once node 2 coordinates, it commits the next view, and the member follows it.
    let view3 = MembershipView(epoch: 3, coordinator: 2, nodes: [node(2), node(3), node(4)])
    _ = m.receive(.propose(view3), from: 2, now: now)
    _ = m.receive(.commit(view3, departed: []), from: 2, now: now)
    #expect(m.view == view3 && m.phase == .member)
}

/// The two-member view that loses its coordinator: the survivor alone is half of the view
/// without the old coordinator, never a quorum. After `forkAfter` it goes on as a new line.
@Test func aSurvivorWithoutAQuorumForksAfterTheBound() {
    let two = MembershipView(epoch: 2, line: 7, coordinator: 1, nodes: [node(1), node(2)])
    var c = CoordinatorMachine(me: 2, view: two, failover: 1, adopted: nil, interval: .milliseconds(100),
                               timeout: .seconds(1), forkAfter: .seconds(3), now: t0)
    var now = t0
    var actions: [CoordinatorMachine.Action] = []
    while now < t0 + .milliseconds(2900) {
        now = now + .milliseconds(100)
        actions += c.tick(now: now)
    }
    #expect(!actions.contains { if case .forked = $0 { true } else { false } }, "forked before the bound")
    #expect(actions.contains(.noQuorum(epoch: 3)))
    // (The lost coordinator is probed: it might be alive and know better.)
    #expect(actions.contains { if case .probe(let n, _) = $0 { n.id == 1 } else { false } })
    let fork = c.tick(now: t0 + .milliseconds(3100))
    let line = MembershipRules.forkedLine(from: 7, coordinator: 2, epoch: 3)
    let forked = MembershipView(epoch: 3, line: line, coordinator: 2, nodes: [node(2)])
    #expect(fork.contains(.forked(from: two, to: forked)))
    #expect(fork.contains(.send(2, .commit(forked, departed: []))))
    #expect(c.view == forked && line != 7)
}

@Test func aRoundEveryMemberFinishedCommitsWhenTheCoordinatorThatDecidedItIsLost() {
    // Coordinator 1 had every report and decided commit, applied it itself, and was cut off
    // before its decision left. Its successor must not abort what the old coordinator kept:
    // every member still in the view finished, so the round commits for them too.
    let key = RoundKey(epoch: 2, collective: CollectiveID(purpose: .pseudoGradient, sequence: 17, point: 3))
    var c = CoordinatorMachine(me: 2, view: view2, failover: 1, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    var actions: [CoordinatorMachine.Action] = []
    for id: UInt64 in [2, 3, 4] {
        actions += c.receive(.rejoin(node(id), epoch: 2, decisions: []), from: id, now: t0)
        actions += c.receive(.outcome(key, done: true), from: id, now: t0)
    }
    #expect(!actions.contains { if case .send(_, .decision) = $0 { true } else { false } })
    for id: UInt64 in [2, 3, 4] { actions += c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: id, now: t0) }
    #expect(c.view.epoch == 3)
    let decisions = actions.filter { if case .send(_, .decision) = $0 { true } else { false } }
    #expect(decisions == [2, 3, 4].map { .send($0, .decision(key, commit: true)) })
}

@Test func aRoundOfAChangedViewWaitsForTheSurvivorsAndAbortsOnAFailure() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    let finished = RoundKey(epoch: 2, collective: CollectiveID(purpose: .pseudoGradient, sequence: 5, point: 1))
    let failed = RoundKey(epoch: 2, collective: CollectiveID(purpose: .pseudoGradient, sequence: 5, point: 2))
    // Members 1 and 2 reported done; node 4 dies; node 3 has not reported yet.
    for id: UInt64 in [1, 2] {
        _ = c.receive(.outcome(finished, done: true), from: id, now: t0)
        _ = c.receive(.outcome(failed, done: true), from: id, now: t0)
    }
    var actions = c.disconnected(4, now: t0)
    for id: UInt64 in [1, 2] { actions += c.receive(.ack(epoch: 3, accepted: true, acked: nil), from: id, now: t0) }
    #expect(c.view.epoch == 3)
    #expect(!actions.contains { if case .send(_, .decision) = $0 { true } else { false } })
    // The survivor's late reports decide: done commits, not done aborts, each for the survivors.
    #expect(c.receive(.outcome(finished, done: true), from: 3, now: t0) == [1, 2, 3].map { .send($0, .decision(finished, commit: true)) })
    #expect(c.receive(.outcome(failed, done: false), from: 3, now: t0) == [1, 2, 3].map { .send($0, .decision(failed, commit: false)) })
    // The dead member, had it a say, would only hear the answer.
    #expect(c.receive(.outcome(finished, done: true), from: 4, now: t0) == [.send(4, .decision(finished, commit: true))])
}

@Test func updatePointsAreNumberedWithinTheEpoch() {
    var c = CoordinatorMachine(me: 1, view: view2, failover: nil, adopted: nil,
                               interval: .milliseconds(100), timeout: .seconds(1), now: t0)
    for point: UInt64 in 1...3 {
        var actions: [CoordinatorMachine.Action] = []
        for id: UInt64 in 1...4 { actions += c.receive(.updateRequest(epoch: 2), from: id, now: t0) }
        #expect(actions == (1...4).map { .send($0, .proceed(epoch: 2, point: point)) })
    }
}

@Test func aRejoiningMemberThatReachesNobodyFoundsALineOfItsOwn() {
    // Removed, and every address it knows is dead (the whole cluster was killed, say): after
    // `foundLineAfter` it goes on alone as a new line instead of knocking on dead ports for ever.
    var m = memberOfView2(3)
    m.foundLineAfter = .seconds(4)
    var actions = m.receive(.removed(reason: "silent for more than 1 s"), from: 1, now: t0)
    var now = t0
    var founded: MembershipView?
    for _ in 0..<400 where founded == nil {
        for action in actions {
            if case .becomeCoordinator(let view, nil, nil) = action { founded = view }
        }
        if actions.contains(where: { if case .dial = $0 { true } else { false } }) {
            actions = m.dialFailed(now: now, error: "connection refused")
            continue
        }
        now = now + .milliseconds(100)
        actions = m.tick(now: now)
    }
    let view = try? #require(founded)
    #expect(view?.nodes == [node(3)] && view?.coordinator == 3)
    #expect(view?.line != view2.line && view?.line != 0)
    #expect(now - t0 >= .seconds(4), "founded after \(now - t0)")
    #expect(m.phase == .member && m.rejoinReason == nil)
}
