@testable import Collectives
import Testing

// The coordinator's ring plan (docs/membership.md §9): the view carries the order, planned from
// the links members report; re-planned on a join, on a leave, and when a link slows down.

private func node(_ id: UInt64) -> NodeInfo {
    NodeInfo(id: id, controlHost: "h\(id)", controlPort: Int(7000 + id), dataHost: "h\(id)", dataPort: Int(8000 + id), inRing: true)
}

private let t0 = ContinuousClock.now

/// Two sites: odd ids on site a, even ids on site b; 1 Gbit/s inside a site, 100 Mbit/s and 20 ms between.
private func siteLinks(from: UInt64, to peers: [UInt64], slow: Set<UInt64> = []) -> [MembershipMessage.LinkReport] {
    peers.filter { $0 != from }.map { to in
        let cross = from % 2 != to % 2
        let bandwidth: UInt64 = slow.contains(to) || slow.contains(from) ? 1_250_000 : cross ? 12_500_000 : 125_000_000
        return .init(to: to, bandwidth: bandwidth, latencyMicros: cross ? 20_000 : 50)
    }
}

private func proposals(_ actions: [CoordinatorMachine.Action]) -> [MembershipView] {
    actions.compactMap { if case .send(_, .propose(let v)) = $0 { v } else { nil } }
}

/// Runs the proposal in flight to its commit (every node acknowledges).
private func commitAll(_ c: inout CoordinatorMachine, _ view: MembershipView) -> [CoordinatorMachine.Action] {
    var out: [CoordinatorMachine.Action] = []
    for id in c.view.ids { out += c.receive(.ack(epoch: view.epoch, accepted: true, acked: nil), from: id, now: t0) }
    return out
}

private func crossings(_ order: [UInt64]) -> Int {
    order.indices.filter { order[$0] % 2 != order[($0 + 1) % order.count] % 2 }.count
}

@Suite struct RingOrderTests {
    @Test func ringViewFollowsTheOrderAndEveryMemberDerivesTheSameRanks() {
        let view = MembershipView(epoch: 5, coordinator: 1, nodes: [1, 2, 3, 4].map(node), ringOrder: [3, 1, 9, 4])
        // 9 is not a member: skipped; 2 is not named: after the named ones.
        #expect(view.ringIdsInOrder == [3, 1, 4, 2])
        #expect(view.ringView.members.map(\.id) == [3, 1, 4, 2])
        #expect(view.ringView.rank(of: 4) == 2)
        #expect(MembershipView(epoch: 5, coordinator: 1, nodes: [1, 2].map(node)).ringIdsInOrder == [1, 2])
    }

    @Test func aLeaveIsPlannedAtOnce() throws {
        // Seven members joined interleaved: a1 b1 a2 b2 a3 b3 a4 = ids 1...7 (odd: site a).
        let ids: [UInt64] = [1, 2, 3, 4, 5, 6, 7]
        let start = MembershipView(epoch: 2, coordinator: 1, nodes: ids.map(node))
        var c = CoordinatorMachine(me: 1, view: start, failover: nil, adopted: nil,
                                   interval: .milliseconds(100), timeout: .seconds(5), now: t0)
        c.ringOrder = RingOrderBook()
        for id in ids { #expect(c.receive(.links(siteLinks(from: id, to: ids)), from: id, now: t0) == []) }

        // Leave: 7 goes before any update point; the survivors' links are known, so the view
        // without it is planned at once (view order 1...6 would cross six times).
        var actions = c.receive(.leave, from: 7, now: t0)
        let left = try #require(proposals(actions).first)
        #expect(left.ids == [1, 2, 3, 4, 5, 6])
        #expect(crossings(left.ringIdsInOrder) == 2, "\(left.ringIdsInOrder)")
        _ = commitAll(&c, left)
        // At the update point the plan is current: it simply completes.
        actions = []
        for id in left.ids { actions += c.receive(.updateRequest(epoch: left.epoch), from: id, now: t0) }
        #expect(proposals(actions).isEmpty)
        #expect(actions.contains { if case .send(4, .proceed(epoch: left.epoch, _)) = $0 { true } else { false } })

    }

    @Test func aJoinerIsAppendedThenPlacedOnceItsLinksAreKnown() throws {
        // One site; the joiner 5's link from 4 (the ring's last member, so the joiner's left
        // neighbour when appended) is slow.
        let ids: [UInt64] = [1, 2, 3, 4]
        var c = CoordinatorMachine(me: 1, view: MembershipView(epoch: 2, coordinator: 1, nodes: ids.map(node)), failover: nil,
                                   adopted: nil, interval: .milliseconds(100), timeout: .seconds(5), now: t0)
        c.ringOrder = RingOrderBook()
        func report(_ members: [UInt64]) {
            for from in members {
                _ = c.receive(.links(members.filter { $0 != from }.map {
                    .init(to: $0, bandwidth: from == 4 && $0 == 5 ? 1_250_000 : 125_000_000, latencyMicros: 100)
                }), from: from, now: t0)
            }
        }
        report(ids)
        _ = c.receive(.join(node(5), settings: ""), from: 5, now: t0)
        var actions: [CoordinatorMachine.Action] = []
        for id in ids { actions += c.receive(.updateRequest(epoch: 2), from: id, now: t0) }
        let joined = try #require(proposals(actions).first)
        #expect(joined.ringIdsInOrder == [1, 2, 3, 4, 5])
        _ = commitAll(&c, joined)
        report(joined.ids)
        actions = []
        for id in joined.ids { actions += c.receive(.updateRequest(epoch: joined.epoch), from: id, now: t0) }
        let replanned = try #require(proposals(actions).first)
        #expect(replanned.epoch == joined.epoch + 1 && replanned.ids == joined.ids)
        let order = replanned.ringIdsInOrder
        #expect(!order.indices.contains { order[$0] == 4 && order[($0 + 1) % order.count] == 5 }, "\(order)")
        actions = commitAll(&c, replanned)
        #expect(c.view == replanned)
        // Committed while every member waits, and the plan is current: the update point completes.
        #expect(actions.contains { if case .send(5, .proceed(epoch: replanned.epoch, _)) = $0 { true } else { false } })
    }

    @Test func aSlowLinkChangesTheOrder() throws {
        // Four members on one site; then the link 1 -> 2 (which the ring uses) slows to 10 Mbit/s.
        let ids: [UInt64] = [1, 2, 3, 4]
        let start = MembershipView(epoch: 2, coordinator: 1, nodes: ids.map(node))
        var c = CoordinatorMachine(me: 1, view: start, failover: nil, adopted: nil,
                                   interval: .milliseconds(100), timeout: .seconds(5), now: t0)
        c.ringOrder = RingOrderBook()
        func report(_ slow: Bool) -> [CoordinatorMachine.Action] {
            var out: [CoordinatorMachine.Action] = []
            for from in ids {
                out += c.receive(.links(ids.filter { $0 != from }.map {
                    .init(to: $0, bandwidth: slow && from == 1 && $0 == 2 ? 1_250_000 : 125_000_000, latencyMicros: 100)
                }), from: from, now: t0)
            }
            return out
        }
        _ = report(false)
        var actions: [CoordinatorMachine.Action] = []
        for id in ids { actions += c.receive(.updateRequest(epoch: 2), from: id, now: t0) }
        #expect(proposals(actions).isEmpty)   // all links alike: view order stays
        _ = report(true)
        actions = []
        for id in ids { actions += c.receive(.updateRequest(epoch: 2), from: id, now: t0) }
        let replanned = try #require(proposals(actions).first)
        let order = replanned.ringIdsInOrder
        let uses12 = order.indices.contains { order[$0] == 1 && order[($0 + 1) % order.count] == 2 }
        #expect(!uses12, "\(order)")
    }

    @Test func joinedModeKeepsViewOrder() {
        let ids: [UInt64] = [1, 2, 3, 4]
        var c = CoordinatorMachine(me: 1, view: MembershipView(epoch: 2, coordinator: 1, nodes: ids.map(node)), failover: nil,
                                   adopted: nil, interval: .milliseconds(100), timeout: .seconds(5), now: t0)
        // No book (--ring-order joined): reports are ignored and the update point completes.
        for id in ids { _ = c.receive(.links(siteLinks(from: id, to: ids)), from: id, now: t0) }
        var actions: [CoordinatorMachine.Action] = []
        for id in ids { actions += c.receive(.updateRequest(epoch: 2), from: id, now: t0) }
        #expect(proposals(actions).isEmpty)
        #expect(actions.contains { if case .send(3, .proceed(epoch: 2, _)) = $0 { true } else { false } })
    }
}
