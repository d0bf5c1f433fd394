/// Measured links between the members of a ring: `bandwidth[i][j]` (bytes per second) and
/// `latency[i][j]` (seconds, one way) for sending from member i to member j. Asymmetric in
/// general: an uplink is not a downlink. The diagonal is ignored.
///
/// `sites[i]` groups members behind a shared link: ring links from one site to another are taken
/// to share one path of the measured bandwidth (two offices behind one WAN link), so k of them
/// each get 1/k of it. Default: every member a site of its own (no sharing).
public struct LinkMatrix: Sendable, Equatable {
    public var bandwidth: [[Double]]
    public var latency: [[Double]]
    public var sites: [Int]

    public init(bandwidth: [[Double]], latency: [[Double]], sites: [Int]? = nil) {
        precondition(sites == nil || sites!.count == bandwidth.count, "one site per member")
        self.sites = sites ?? Array(bandwidth.indices)
        precondition(bandwidth.count == latency.count, "bandwidth and latency matrices of different sizes")
        for i in bandwidth.indices {
            precondition(bandwidth[i].count == bandwidth.count && latency[i].count == bandwidth.count, "matrices not square")
            for j in bandwidth.indices where i != j {
                precondition(bandwidth[i][j] > 0 && bandwidth[i][j].isFinite, "bandwidth \(i)->\(j) must be positive")
                precondition(latency[i][j] >= 0 && latency[i][j].isFinite, "latency \(i)->\(j) must be finite, not negative")
            }
        }
        self.bandwidth = bandwidth
        self.latency = latency
    }

    public var count: Int { bandwidth.count }

    /// True when no two members share a site.
    var sitesAreDistinct: Bool { Set(sites).count == sites.count }

    /// Groups members into sites: i and j are on one site when the latency both ways is at most
    /// `within` (single linkage: a chain of close members is one site).
    public static func sites(latency: [[Double]], within: Double) -> [Int] {
        let n = latency.count
        var parent = Array(0..<n)
        func root(_ i: Int) -> Int {
            var i = i
            while parent[i] != i { i = parent[i] }
            return i
        }
        for i in 0..<n {
            for j in (i + 1)..<n where latency[i][j] <= within && latency[j][i] <= within {
                let (a, b) = (root(i), root(j))
                if a != b { parent[max(a, b)] = min(a, b) }
            }
        }
        return (0..<n).map(root)
    }
}

/// Chooses the order of a ring all-reduce from measured links (docs/membership.md, "Ring order").
///
/// The model. In a ring all-reduce of S bytes over n members, every member sends 2(n − 1) chunks of
/// S/n bytes to its right neighbour, pipelined in segments, so every link carries the same bytes
/// and the links run concurrently: the bulk finishes when the slowest link has sent its share,
/// 2(n − 1)/n · S / min bandwidth. The latency adds along the chain of steps: a chunk visits
/// 2(n − 1) consecutive links, each step waiting for the previous one's first segment, which
/// averages to 2(n − 1)/n · Σ latency over the ring's links. So
///
///     T(order) = 2(n − 1)/n · (S · max over ring links of 1/bandwidth + Σ over ring links of latency)
///
/// a bottleneck term plus a sum term. Minimising only the sum (a travelling salesman on per-link
/// costs) lets one slow link in for a few fast ones; minimising only the bottleneck ignores how
/// many slow long links the ring crosses. Links between two sites (``LinkMatrix/sites``) share one
/// path: k ring links from site A to site B each count at bandwidth/k in the maximum, which is what
/// pairwise probes cannot see and what makes a ring that crosses a WAN six times three times slower
/// than one that crosses it twice.
///
/// Exact for n ≤ ``exactLimit``. Without shared sites: for every candidate bottleneck τ (each
/// distinct 1/bandwidth, in increasing order), a Held–Karp dynamic programme finds the ring of
/// least latency sum among those whose links all have 1/bandwidth ≤ τ; the best S·τ + sum over τ
/// is the optimum (T is increasing in both terms, so some optimal ring is found at τ equal to its
/// own bottleneck), and τ stops once S·τ alone exceeds the best found. With shared sites: a
/// depth-first branch and bound over orders, bounded by the partial ring's bottleneck (which only
/// grows as links are added) plus its latency sum, started from the local search's answer. Beyond
/// ``exactLimit``, a local search (Or-opt moves of one to three members, and 2-opt reversals)
/// from several starts.
public enum RingOrderPlanner {
    /// Up to this many members the plan is exact (Held–Karp, O(2ⁿ n²) per bottleneck candidate).
    public static let exactLimit = 10

    /// The model's all-reduce time (seconds) of `bytes` bytes over the ring `order` (a permutation
    /// of the member indices; member order[k] sends to order[k + 1], the last to the first).
    public static func time(of order: [Int], links: LinkMatrix, bytes: Int) -> Double {
        let n = order.count
        guard n > 1 else { return 0 }
        let terms = ringTerms(order, links)
        return 2 * Double(n - 1) / Double(n) * (Double(bytes) * terms.inverseBandwidth + terms.latency)
    }

    /// The best ring order for an all-reduce of `bytes` bytes: exact up to ``exactLimit`` members,
    /// a local search beyond. Starts with member 0 (a ring has no first member; this fixes the
    /// rotation, so equal inputs give equal outputs).
    public static func plan(links: LinkMatrix, bytes: Int) -> [Int] {
        links.count <= exactLimit ? exact(links: links, bytes: bytes) : heuristic(links: links, bytes: bytes)
    }

    // MARK: Exact

    /// The optimal order (see the type's comment), for up to about 16 members (memory 2ⁿ⁻¹·n).
    public static func exact(links: LinkMatrix, bytes: Int) -> [Int] {
        let n = links.count
        guard n > 2 else { return Array(0..<n) }
        precondition(n <= 16, "the exact planner is for small rings")
        guard links.sitesAreDistinct else { return branchAndBound(links: links, bytes: bytes) }
        let s = Double(bytes)
        var thresholds: [Double] = []
        for i in 0..<n { for j in 0..<n where i != j { thresholds.append(1 / links.bandwidth[i][j]) } }
        thresholds = Array(Set(thresholds)).sorted()
        var best: (cost: Double, order: [Int])? = nil
        for tau in thresholds {
            if let b = best, s * tau >= b.cost { break }
            guard let (sum, order) = minLatencyRing(links, maxInverseBandwidth: tau) else { continue }
            let cost = s * tau + sum
            if best == nil || cost < best!.cost { best = (cost, order) }
        }
        return best!.order
    }

    /// Held–Karp: the ring of least latency sum using only links with 1/bandwidth ≤ `tau`, or nil
    /// if there is none. Member 0 is first; subsets are of members 1 ..< n.
    static func minLatencyRing(_ links: LinkMatrix, maxInverseBandwidth tau: Double) -> (Double, [Int])? {
        let n = links.count
        let m = n - 1
        let full = (1 << m) - 1
        var allowed = [Bool](repeating: false, count: n * n)
        for i in 0..<n { for j in 0..<n where i != j { allowed[i * n + j] = 1 / links.bandwidth[i][j] <= tau } }
        // dp[mask * n + j]: least latency of a path 0 → … → j through exactly the members in mask
        // (bit k − 1 for member k), j in mask.
        var dp = [Double](repeating: .infinity, count: (1 << m) * n)
        var parent = [Int8](repeating: -1, count: (1 << m) * n)
        for j in 1..<n where allowed[j] { dp[(1 << (j - 1)) * n + j] = links.latency[0][j] }
        for mask in 1...full {
            for j in 1..<n where mask & (1 << (j - 1)) != 0 {
                let here = dp[mask * n + j]
                if here == .infinity { continue }
                for k in 1..<n where mask & (1 << (k - 1)) == 0 && allowed[j * n + k] {
                    let next = mask | (1 << (k - 1))
                    let cost = here + links.latency[j][k]
                    if cost < dp[next * n + k] {
                        dp[next * n + k] = cost
                        parent[next * n + k] = Int8(j)
                    }
                }
            }
        }
        var bestLast = -1
        var bestCost = Double.infinity
        for j in 1..<n where allowed[j * n] {
            let cost = dp[full * n + j] + links.latency[j][0]
            if cost < bestCost { (bestCost, bestLast) = (cost, j) }
        }
        guard bestLast > 0 else { return nil }
        var order: [Int] = []
        var mask = full
        var j = bestLast
        while j > 0 {
            order.append(j)
            let p = Int(parent[mask * n + j])
            mask &= ~(1 << (j - 1))
            j = p
        }
        return (bestCost, [0] + order.reversed())
    }

    // MARK: Heuristic

    /// Local search for large rings: from the order given (the ring as joined) and greedy orders
    /// (each next member the cheapest to reach) from a few first members, apply improving Or-opt
    /// and 2-opt moves until none improves, keep the best. Moves are judged by the model's time,
    /// ties broken by the sum of 1/bandwidth over the ring (which gives the search a slope on the
    /// plateaus of the bottleneck term); then `kicks` rounds of iterated local search.
    /// Deterministic.
    public static func heuristic(links: LinkMatrix, bytes: Int, starts: Int = 16, kicks: Int = 40) -> [Int] {
        let n = links.count
        guard n > 3 else { return n <= 2 ? Array(0..<n) : [[0, 1, 2], [0, 2, 1]].min { time(of: $0, links: links, bytes: bytes) < time(of: $1, links: links, bytes: bytes) }! }
        // Each pass costs O(n³) model evaluations: fewer starts and kicks for large rings.
        let starts = n > 32 ? min(starts, 2) : starts
        let kicks = n > 32 ? min(kicks, 4) : kicks
        var firsts: [Int] = []
        for k in 0..<max(1, min(starts, n)) where !firsts.contains(k * n / max(1, min(starts, n))) {
            firsts.append(k * n / max(1, min(starts, n)))
        }
        let candidates = [Array(0..<n)] + firsts.map { greedy(links, bytes: bytes, from: $0) }
        var best: (key: Key, order: [Int])? = nil
        for start in candidates {
            let order = improve(start, links, bytes: bytes)
            let k = key(order, links, bytes: bytes)
            if best == nil || k < best!.key { best = (k, order) }
        }
        // Iterated local search: kick the best order (a double bridge: cut in four, reconnect
        // A C B D) and search again; keep what improves. The kicks come from a fixed sequence, so
        // the answer is the same on every run.
        var state: UInt64 = 0x13
        for _ in 0..<kicks where n >= 8 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            var cuts = [1 + Int((state >> 33) % UInt64(n - 1))]
            for shift: UInt64 in [7, 19] { cuts.append(1 + Int(((state >> shift) ^ (state >> 40)) % UInt64(n - 1))) }
            cuts.sort()
            guard cuts[0] < cuts[1], cuts[1] < cuts[2] else { continue }
            let o = best!.order
            let kicked = Array(o[..<cuts[0]] + o[cuts[1]..<cuts[2]] + o[cuts[0]..<cuts[1]] + o[cuts[2]...])
            let order = improve(kicked, links, bytes: bytes)
            let k = key(order, links, bytes: bytes)
            if k < best!.key { best = (k, order) }
        }
        return rotateToZero(best!.order)
    }

    private struct Key: Comparable {
        var time: Double
        var inverseBandwidthSum: Double
        static func < (a: Key, b: Key) -> Bool {
            // Relative tolerance: sums in another order may differ in the last bits.
            let eps = 1e-12 * max(abs(a.time), abs(b.time))
            if a.time < b.time - eps { return true }
            if a.time > b.time + eps { return false }
            return a.inverseBandwidthSum < b.inverseBandwidthSum * (1 - 1e-12)
        }
    }

    private static func key(_ order: [Int], _ links: LinkMatrix, bytes: Int) -> Key {
        var sum = 0.0
        for k in order.indices { sum += 1 / links.bandwidth[order[k]][order[(k + 1) % order.count]] }
        return Key(time: time(of: order, links: links, bytes: bytes), inverseBandwidthSum: sum)
    }

    private static func greedy(_ links: LinkMatrix, bytes: Int, from first: Int) -> [Int] {
        let n = links.count
        let s = Double(bytes) / Double(n)
        var order = [first]
        var left = Set(0..<n).subtracting([first])
        while !left.isEmpty {
            let from = order.last!
            let next = left.min { a, b in
                let ca = s / links.bandwidth[from][a] + links.latency[from][a]
                let cb = s / links.bandwidth[from][b] + links.latency[from][b]
                return ca != cb ? ca < cb : a < b
            }!
            order.append(next)
            left.remove(next)
        }
        return order
    }

    private static func improve(_ start: [Int], _ links: LinkMatrix, bytes: Int) -> [Int] {
        var order = start
        var current = key(order, links, bytes: bytes)
        let n = order.count
        var improved = true
        var passes = 0
        while improved && passes < 1000 {
            improved = false
            passes += 1
            // Or-opt: move a run of 1...3 members elsewhere, in either direction.
            for length in 1...3 where length < n - 1 {
                for i in 0..<n {
                    var rest = order
                    var run: [Int] = []
                    for k in 0..<length { run.append(order[(i + k) % n]) }
                    rest.removeAll { run.contains($0) }
                    for p in 0...rest.count {
                        for candidateRun in [run, run.reversed()] {
                            var candidate = rest
                            candidate.insert(contentsOf: candidateRun, at: p)
                            let k = key(candidate, links, bytes: bytes)
                            if k < current { (order, current, improved) = (candidate, k, true) }
                        }
                    }
                }
            }
            // 2-opt: reverse a stretch (on an asymmetric matrix this also turns its links around).
            for i in 0..<(n - 1) {
                for j in (i + 1)..<n {
                    var candidate = order
                    candidate[i...j].reverse()
                    let k = key(candidate, links, bytes: bytes)
                    if k < current { (order, current, improved) = (candidate, k, true) }
                }
            }
        }
        return order
    }

    private static func rotateToZero(_ order: [Int]) -> [Int] {
        guard let z = order.firstIndex(of: 0) else { return order }
        return Array(order[z...] + order[..<z])
    }

    private static func ringTerms(_ order: [Int], _ links: LinkMatrix) -> (inverseBandwidth: Double, latency: Double) {
        var worst = 0.0
        var latency = 0.0
        var shares: [Int: Int] = [:]
        let n = links.count
        for k in order.indices {
            let a = order[k], b = order[(k + 1) % order.count]
            if links.sites[a] != links.sites[b] { shares[links.sites[a] * n + links.sites[b], default: 0] += 1 }
        }
        for k in order.indices {
            let a = order[k], b = order[(k + 1) % order.count]
            let share = links.sites[a] != links.sites[b] ? Double(shares[links.sites[a] * n + links.sites[b]]!) : 1
            worst = max(worst, share / links.bandwidth[a][b])
            latency += links.latency[a][b]
        }
        return (worst, latency)
    }

    /// Branch and bound over orders with member 0 first, for matrices with shared sites.
    static func branchAndBound(links: LinkMatrix, bytes: Int) -> [Int] {
        let n = links.count
        let s = Double(bytes)
        var best = heuristic(links: links, bytes: bytes)
        var bestCost = s * ringTerms(best, links).inverseBandwidth + ringTerms(best, links).latency
        var order = [0]
        var used = [Bool](repeating: false, count: n)
        used[0] = true
        // Per ordered site pair: ring links so far and the least bandwidth among them.
        var count = [Int](repeating: 0, count: n * n)
        var least = [Double](repeating: .infinity, count: n * n)
        // Adding link a -> b to a partial ring with bottleneck `worst`: the new bottleneck. Counts
        // only grow along a branch, so only the pair of this link can raise the maximum.
        func descend(_ worst: Double, _ latencySum: Double) {
            let a = order.last!
            if order.count == n {
                let total = s * ringTerms(order, links).inverseBandwidth + ringTerms(order, links).latency
                if total < bestCost * (1 - 1e-12) { (bestCost, best) = (total, order) }
                return
            }
            for b in 1..<n where !used[b] {
                let sa = links.sites[a], sb = links.sites[b]
                var w = worst
                let pair = sa * n + sb
                let saved = (count[pair], least[pair])
                if sa != sb {
                    count[pair] += 1
                    least[pair] = min(least[pair], links.bandwidth[a][b])
                    w = max(w, Double(count[pair]) / least[pair])
                } else {
                    w = max(w, 1 / links.bandwidth[a][b])
                }
                let l = latencySum + links.latency[a][b]
                if s * w + l < bestCost * (1 - 1e-12) {
                    used[b] = true
                    order.append(b)
                    descend(w, l)
                    order.removeLast()
                    used[b] = false
                }
                (count[pair], least[pair]) = saved
            }
        }
        descend(0, 0)
        return best
    }
}
