/// How the ring is ordered (`--ring-order`).
public enum RingOrderMode: String, Sendable, CaseIterable {
    /// Planned by the coordinator from the links members measure (docs/membership.md, "Ring order").
    case measured
    /// View order: the order in which members joined.
    case joined
}

/// The coordinator's record of measured links and its ring plans: a value, kept by
/// ``CoordinatorMachine`` (no I/O, no clock).
///
/// Members report what they measured (``MembershipMessage/links(_:)``); the book keeps the latest
/// report per directed pair. A plan needs every directed link between the ring's members; until
/// then the ring keeps its current order and new members follow it in joining order.
struct RingOrderBook {
    struct Link: Equatable {
        var bandwidth: Double
        var latency: Double
    }

    /// The all-reduce size the plan is made for (the model's T depends on it through the balance
    /// of the bandwidth and latency terms).
    var planBytes: Int
    /// A planned order replaces the current one only if the model time improves by this fraction
    /// (0.2: 20 %): measurement noise must not reshuffle the ring at every update point.
    var improvement: Double
    /// Members whose links both ways are at most this slow are taken to be on one site (behind
    /// one shared link to other sites: ``LinkMatrix/sites``).
    var siteLatency = 0.001
    private(set) var links: [UInt64: [UInt64: Link]] = [:]
    /// Bumped by every change to `links`: a plan is made once per (measurements, ring), not at
    /// every update point.
    private var generation = 0
    private var cache: (generation: Int, ring: [UInt64], keep: Bool, order: [UInt64])?

    /// Beyond this many ring members no plan is made (the local search is O(n³) per pass).
    static let maxPlanned = 128

    init(planBytes: Int = 16 << 20, improvement: Double = 0.2) {
        self.planBytes = planBytes
        self.improvement = improvement
    }

    mutating func record(from: UInt64, _ reports: [MembershipMessage.LinkReport]) {
        for r in reports where r.to != from && r.bandwidth > 0 {
            links[from, default: [:]][r.to] = Link(bandwidth: Double(r.bandwidth), latency: Double(r.latencyMicros) / 1e6)
        }
        generation += 1
    }

    /// Forgets links of nodes no longer in the view.
    mutating func keep(only ids: Set<UInt64>) {
        links = links.filter { ids.contains($0.key) }.mapValues { $0.filter { ids.contains($0.key) } }
        generation += 1
    }

    /// The link matrix of `ids` (in that order), if every directed link between them was measured.
    func matrix(_ ids: [UInt64]) -> LinkMatrix? {
        var bandwidth = [[Double]](repeating: [Double](repeating: 1, count: ids.count), count: ids.count)
        var latency = [[Double]](repeating: [Double](repeating: 0, count: ids.count), count: ids.count)
        for (i, a) in ids.enumerated() {
            for (j, b) in ids.enumerated() where i != j {
                guard let link = links[a]?[b] else { return nil }
                bandwidth[i][j] = link.bandwidth
                latency[i][j] = link.latency
            }
        }
        return LinkMatrix(bandwidth: bandwidth, latency: latency, sites: LinkMatrix.sites(latency: latency, within: siteLatency))
    }

    /// The ring order for `view` (its `ringOrder` field): the best plan if every link between its
    /// ring members is known and the plan beats the order the view would otherwise have by
    /// ``improvement``; else that order (the current plan, new members at the end).
    mutating func order(for view: MembershipView) -> [UInt64] {
        let current = view.ringIdsInOrder
        let keep = view.ringOrder.isEmpty
        if let c = cache, c.generation == generation, c.ring == current, c.keep == keep { return c.order }
        let order = plan(current, keepViewOrder: keep)
        cache = (generation, current, keep, order)
        return order
    }

    private func plan(_ current: [UInt64], keepViewOrder: Bool) -> [UInt64] {
        guard current.count > 2, current.count <= Self.maxPlanned, let links = matrix(current) else { return keepViewOrder ? [] : current }
        let planned = RingOrderPlanner.plan(links: links, bytes: planBytes)
        let now = RingOrderPlanner.time(of: Array(0..<current.count), links: links, bytes: planBytes)
        let better = RingOrderPlanner.time(of: planned, links: links, bytes: planBytes)
        guard better < now * (1 - improvement) else { return keepViewOrder ? [] : current }
        return planned.map { current[$0] }
    }

    /// A better order for the ring of `view` as it stands, or nil if it has none (see ``order(for:)``).
    mutating func replan(_ view: MembershipView) -> [UInt64]? {
        let order = order(for: view)
        return order.isEmpty || order == view.ringIdsInOrder ? nil : order
    }
}
