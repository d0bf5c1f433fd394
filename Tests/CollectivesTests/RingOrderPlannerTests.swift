import Foundation
import Testing
@testable import Collectives
import PeerTestSupport

/// Random asymmetric links: bandwidth log-uniform from 10 Mbit/s to 10 Gbit/s, latency 0 to 50 ms.
private func randomLinks(_ n: Int, _ rng: inout SplitMix64, sites: Int? = nil) -> LinkMatrix {
    var bandwidth = [[Double]](repeating: [Double](repeating: 1, count: n), count: n)
    var latency = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
    for i in 0..<n {
        for j in 0..<n where i != j {
            let exponent = Double(rng.next() % 1_000_000) / 1_000_000 * 3   // 10^0 ... 10^3
            bandwidth[i][j] = 1.25e6 * pow(10, exponent)
            latency[i][j] = Double(rng.next() % 50_000) / 1_000_000
        }
    }
    return LinkMatrix(bandwidth: bandwidth, latency: latency, sites: sites.map { k in (0..<n).map { _ in Int(rng.next() % UInt64(k)) } })
}

/// Two sites of `perSite` hosts: `fast` inside a site, `slow` with `delay` one way between sites.
/// Member i is on site i % 2: the join order a1 b1 a2 b2 ...
private func twoSites(perSite: Int, fast: Double, slow: Double, delay: Double) -> LinkMatrix {
    let n = 2 * perSite
    var bandwidth = [[Double]](repeating: [Double](repeating: fast, count: n), count: n)
    var latency = [[Double]](repeating: [Double](repeating: 5e-5, count: n), count: n)
    for i in 0..<n { for j in 0..<n where i % 2 != j % 2 { bandwidth[i][j] = slow; latency[i][j] = delay } }
    return LinkMatrix(bandwidth: bandwidth, latency: latency, sites: (0..<n).map { $0 % 2 })
}

/// The least model time over all orders with member 0 first (every ring has such a rotation).
private func bruteForce(_ links: LinkMatrix, bytes: Int) -> Double {
    var best = Double.infinity
    var rest = Array(1..<links.count)
    func permute(_ k: Int) {
        if k == rest.count {
            best = min(best, RingOrderPlanner.time(of: [0] + rest, links: links, bytes: bytes))
            return
        }
        for i in k..<rest.count {
            rest.swapAt(k, i)
            permute(k + 1)
            rest.swapAt(k, i)
        }
    }
    permute(0)
    return best
}

private func isPermutation(_ order: [Int], _ n: Int) -> Bool { order.sorted() == Array(0..<n) }

@Suite struct RingOrderPlannerTests {
    @Test(arguments: [2, 3, 4, 5, 6, 7, 8])
    func exactMatchesBruteForce(n: Int) {
        var rng = SplitMix64(seed: 0x5eed_0000 + UInt64(n))
        for bytes in [4096, 16 << 20] {
            for trial in 0..<12 {
                // Half the instances with shared sites (two or three), half without.
                let links = randomLinks(n, &rng, sites: trial % 2 == 0 ? nil : 2 + trial % 4 / 2)
                let order = RingOrderPlanner.exact(links: links, bytes: bytes)
                #expect(isPermutation(order, n))
                #expect(order.first == 0)
                let planned = RingOrderPlanner.time(of: order, links: links, bytes: bytes)
                let best = bruteForce(links, bytes: bytes)
                #expect(abs(planned - best) <= 1e-12 * best, "n=\(n) bytes=\(bytes): planned \(planned) best \(best)")
            }
        }
    }

    @Test func exactCrossesTwoSitesOnlyTwice() {
        // The bench's shape: 1 Gbit/s inside a site, 100 Mbit/s and 20 ms between, joined a1 b1 a2 b2 a3 b3.
        let links = twoSites(perSite: 3, fast: 125e6, slow: 12.5e6, delay: 0.02)
        let order = RingOrderPlanner.plan(links: links, bytes: 16 << 20)
        let crossings = order.indices.filter { order[$0] % 2 != order[($0 + 1) % order.count] % 2 }.count
        #expect(crossings == 2, "\(order)")
        let joined = RingOrderPlanner.time(of: Array(0..<6), links: links, bytes: 16 << 20)
        let planned = RingOrderPlanner.time(of: order, links: links, bytes: 16 << 20)
        #expect(planned < joined)
    }

    @Test func oneSlowLinkIsAvoided() {
        // All links equal but 0 -> 1, which is 100 times slower: the plan must not use it.
        let n = 6
        var bandwidth = [[Double]](repeating: [Double](repeating: 100e6, count: n), count: n)
        bandwidth[0][1] = 1e6
        let links = LinkMatrix(bandwidth: bandwidth, latency: [[Double]](repeating: [Double](repeating: 1e-4, count: n), count: n))
        let order = RingOrderPlanner.plan(links: links, bytes: 1 << 20)
        let uses = order.indices.contains { order[$0] == 0 && order[($0 + 1) % n] == 1 }
        #expect(!uses, "\(order)")
    }

    /// The stated bound (docs/membership.md): on random instances with 8 to 10 members the local
    /// search is within 15 % of the exact optimum on every instance and within 2 % on average
    /// (seen: exact on all 40 instances of 8 and 9 members; of 10, 0.5 % on average, 9.8 % at worst).
    @Test(arguments: [8, 9, 10])
    func heuristicNearExact(n: Int) {
        var rng = SplitMix64(seed: 0xbeef_0000 + UInt64(n))
        var ratios: [Double] = []
        for _ in 0..<20 {
            let links = randomLinks(n, &rng)
            let bytes = 16 << 20
            let heuristic = RingOrderPlanner.heuristic(links: links, bytes: bytes)
            #expect(isPermutation(heuristic, n))
            let exact = RingOrderPlanner.time(of: RingOrderPlanner.exact(links: links, bytes: bytes), links: links, bytes: bytes)
            let ratio = RingOrderPlanner.time(of: heuristic, links: links, bytes: bytes) / exact
            #expect(ratio >= 1 - 1e-12)
            #expect(ratio <= 1.15, "n=\(n): heuristic \(ratio)× exact")
            ratios.append(ratio)
        }
        let mean = ratios.reduce(0, +) / Double(ratios.count)
        #expect(mean <= 1.02, "n=\(n): mean \(mean), worst \(ratios.max()!)")
    }

    @Test func largeRingsUseTheHeuristicAndNeverLoseToTheJoinedOrder() {
        var rng = SplitMix64(seed: 0x1616)
        for n in [11, 16, 24] {
            let links = randomLinks(n, &rng)
            let order = RingOrderPlanner.plan(links: links, bytes: 16 << 20)
            #expect(isPermutation(order, n))
            #expect(RingOrderPlanner.time(of: order, links: links, bytes: 16 << 20)
                    <= RingOrderPlanner.time(of: Array(0..<n), links: links, bytes: 16 << 20))
        }
        // Two sites of eight: the heuristic finds the two-crossing ring too.
        let sites = twoSites(perSite: 8, fast: 125e6, slow: 12.5e6, delay: 0.02)
        let order = RingOrderPlanner.plan(links: sites, bytes: 16 << 20)
        let crossings = order.indices.filter { order[$0] % 2 != order[($0 + 1) % order.count] % 2 }.count
        #expect(crossings == 2, "\(order)")
    }
}
