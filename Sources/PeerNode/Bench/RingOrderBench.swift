import ArgumentParser
import Collectives
import Foundation
import Logging
import Transport

/// Times ring all-reduces among peers in network namespaces (scripts/netkit.sh) in three orders:
/// as joined, as planned from the links the peers probe, and the best order for the topology the
/// kit configured (brute force over the configured link matrix). `scripts/bench-ring-order.sh`
/// builds the network and runs it; docs/benchmarks.md has the figures.
struct RingOrderBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring-order",
        abstract: "Time all-reduces among peers in network namespaces: ring as joined, as planned, and the best.")

    @Option(name: .customLong("host"), help: "A peer: NAMESPACE@ADDRESS@SITE, in joining order (repeat).") var hosts: [String] = []
    @Option(name: .customLong("site-mbps"), help: "The configured rate of each host's link (for the best order).") var siteMbps = 1000.0
    @Option(name: .customLong("wan-mbps"), help: "The configured rate between sites, each way.") var wanMbps = 100.0
    @Option(name: .customLong("wan-delay-ms"), help: "The configured one-way delay between sites.") var wanDelayMs = 20.0
    @Option(name: .customLong("size-mib"), help: "All-reduce size, MiB of f32.") var sizeMiB = 16.0
    @Option(help: "Timed all-reduces per order (after one warm-up).") var reps = 5
    @Option(help: "TCP streams between ring neighbours.") var streams = 1
    @Option(help: "Give up after this many seconds.") var timeout = 900

    func validate() throws {
        guard (2...10).contains(hosts.count), hosts.allSatisfy({ $0.split(separator: "@").count == 3 }) else {
            throw ValidationError("give 2...10 --host NAMESPACE@ADDRESS@SITE")
        }
        guard reps >= 1, sizeMiB > 0 else { throw ValidationError("--reps ≥ 1 and --size-mib > 0") }
    }

    func run() async throws {
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        let parts = hosts.map { $0.split(separator: "@").map(String.init) }
        let n = parts.count
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"
        var key = [UInt8](repeating: 0, count: 24)
        for i in key.indices { key[i] = UInt8.random(in: 0...255) }
        var environment = ProcessInfo.processInfo.environment
        environment[ClusterKey.environmentVariable] = key.map { String(format: "%02x", $0) }.joined()
        var workers: [WorkerProcess] = []
        defer { for w in workers { w.writeLine("quit"); w.terminate() } }
        for (rank, p) in parts.enumerated() {
            workers.append(try WorkerProcess(executable: ip, rank: rank, arguments: [
                "netns", "exec", p[0], executable, "bench", "ring-order-worker", "--id", "\(rank + 1)", "--host", p[1],
                "--size-mib", "\(sizeMiB)", "--reps", "\(reps)", "--streams", "\(streams)",
            ], environment: environment))
        }
        var endpoints: [PeerEndpoint] = []
        for w in workers {
            guard let fields = w.readFields("port", until: deadline), let port = fields["port"].flatMap(Int.init) else {
                throw BenchError("worker \(w.rank) did not start: \(w.stderrTail())")
            }
            endpoints.append(PeerEndpoint(id: UInt64(w.rank + 1), host: parts[w.rank][1], port: port))
        }
        let spec = { (e: PeerEndpoint) in "\(e.id)@\(e.host):\(e.port)" }
        print("# peernode bench ring-order: N=\(n) size_mib=\(sizeMiB) reps=\(reps) streams=\(streams) sites=\(parts.map { $0[2] }.joined(separator: ",")) "
              + "configured site_mbps=\(siteMbps) wan_mbps=\(wanMbps) wan_delay_ms=\(wanDelayMs)")

        // 1. Probe: every peer probes every other, one at a time, all peers at once, each starting
        // with the next peer in joining order (as LinkProber does).
        let probeStart = Date()
        for (rank, w) in workers.enumerated() {
            w.writeLine("probe " + (1..<n).map { spec(endpoints[(rank + $0) % n]) }.joined(separator: " "))
        }
        var bandwidth = [[Double]](repeating: [Double](repeating: 1, count: n), count: n)
        var latency = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        var pairSeconds: [Double] = [], pairBytes: [Double] = []
        for (rank, w) in workers.enumerated() {
            for _ in 1..<n {
                guard let f = w.readFields("probed", until: deadline), let to = f["to"].flatMap(Int.init),
                      let bw = f["bw"].flatMap(Double.init), let lat = f["lat"].flatMap(Double.init),
                      let s = f["s"].flatMap(Double.init), let bytes = f["bytes"].flatMap(Double.init) else {
                    throw BenchError("worker \(rank) probe failed: \(w.stderrTail())")
                }
                bandwidth[rank][to - 1] = bw
                latency[rank][to - 1] = lat
                pairSeconds.append(s)
                pairBytes.append(bytes)
            }
        }
        let probeRound = Date().timeIntervalSince(probeStart)
        print("probe pairs=\(pairSeconds.count) round_s=\(fmt(probeRound)) seconds_per_pair_median=\(fmt(median(pairSeconds))) "
              + "seconds_per_pair_max=\(fmt(pairSeconds.max()!)) mib_per_pair_median=\(fmt(median(pairBytes) / 1_048_576)) "
              + "mib_per_pair_max=\(fmt(pairBytes.max()! / 1_048_576))")
        for i in 0..<n {
            print("links from=\(i + 1) " + (0..<n).filter { $0 != i }.map {
                "to\($0 + 1)=\(fmt(bandwidth[i][$0] * 8 / 1e6))Mbit/\(fmt(latency[i][$0] * 1e3))ms"
            }.joined(separator: " "))
        }

        // 2. Plan, as the coordinator does (sites: latency ≤ 1 ms both ways).
        let bytes = Int(sizeMiB * 1_048_576)
        let measured = LinkMatrix(bandwidth: bandwidth, latency: latency, sites: LinkMatrix.sites(latency: latency, within: 0.001))
        let planStart = DispatchTime.now().uptimeNanoseconds
        let planned = RingOrderPlanner.plan(links: measured, bytes: bytes)
        let planMs = Double(DispatchTime.now().uptimeNanoseconds - planStart) / 1e6

        // 3. The best order for the configured topology, by brute force over every order.
        let site = parts.map { $0[2] }
        var cbw = [[Double]](repeating: [Double](repeating: 1, count: n), count: n)
        var clat = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in 0..<n where i != j {
                let cross = site[i] != site[j]
                cbw[i][j] = (cross ? min(wanMbps, siteMbps) : siteMbps) * 1e6 / 8
                clat[i][j] = cross ? wanDelayMs / 1000 : 0.0001
            }
        }
        let siteIndex = site.map { s in site.firstIndex(of: s)! }
        let configured = LinkMatrix(bandwidth: cbw, latency: clat, sites: siteIndex)
        var best = Array(0..<n)
        var bestTime = RingOrderPlanner.time(of: best, links: configured, bytes: bytes)
        var rest = Array(1..<n)
        func permute(_ k: Int) {
            if k == rest.count {
                let t = RingOrderPlanner.time(of: [0] + rest, links: configured, bytes: bytes)
                if t < bestTime - 1e-12 { (bestTime, best) = (t, [0] + rest) }
                return
            }
            for i in k..<rest.count {
                rest.swapAt(k, i)
                permute(k + 1)
                rest.swapAt(k, i)
            }
        }
        permute(0)
        let name = { (order: [Int]) in order.map { "\(parts[$0][2])\($0 + 1)" }.joined(separator: ",") }
        print("plan plan_ms=\(fmt(planMs)) measured_sites=\(measured.sites.map(String.init).joined(separator: ",")) planned=\(name(planned)) best=\(name(best)) "
              + "model_joined_s=\(fmt(RingOrderPlanner.time(of: Array(0..<n), links: configured, bytes: bytes))) "
              + "model_planned_s=\(fmt(RingOrderPlanner.time(of: planned, links: configured, bytes: bytes))) model_best_s=\(fmt(bestTime))")

        // 4. Time each order.
        var epoch: UInt64 = 0
        func measure(_ order: [Int]) throws -> [Double] {
            epoch += 1
            let line = "ring \(epoch) " + order.map { spec(endpoints[$0]) }.joined(separator: " ")
            for w in workers { w.writeLine(line) }
            var times: [[Double]] = []
            for w in workers {
                guard let f = w.readFields("result", until: deadline) else { throw BenchError("worker \(w.rank) failed: \(w.stderrTail())") }
                times.append((f["times_ms"] ?? "").split(separator: ",").compactMap { Double($0) })
            }
            return (0..<reps).map { i in times.map { $0.indices.contains(i) ? $0[i] : .infinity }.max()! }.sorted()
        }
        let joinedTimes = try measure(Array(0..<n))
        let plannedTimes = try measure(planned)
        let bestTimes = planned == best ? plannedTimes : try measure(best)
        let triple = { (t: [Double]) in "\(fmt(t.first!))/\(fmt(median(t)))/\(fmt(t.last!))" }
        print("ring_order N=\(n) joined_ms=\(triple(joinedTimes)) planned_ms=\(triple(plannedTimes)) best_ms=\(triple(bestTimes)) "
              + "planned_over_best=\(fmt(median(plannedTimes) / median(bestTimes))) joined_over_planned=\(fmt(median(joinedTimes) / median(plannedTimes))) "
              + "(min/median/max over \(reps); ratios of medians)")
        fflush(nil)
    }
}

/// One peer of `peernode bench ring-order` (started by it in a namespace; not for direct use).
/// Reads `probe ID@HOST:PORT...`, `ring EPOCH ID@HOST:PORT...` and `quit` on stdin.
struct RingOrderWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring-order-worker", abstract: "One peer of `bench ring-order`.", shouldDisplay: false)

    @Option var id: UInt64
    @Option var host: String
    @Option(name: .customLong("size-mib")) var sizeMiB: Double
    @Option var reps: Int
    @Option var streams: Int

    func run() async throws {
        var logger = Logger(label: "peernode.bench")
        logger.logLevel = .warning
        var options = CommunicatorOptions()
        options.streams = streams
        let communicator = Communicator(localId: id, key: try ClusterKey.load(file: nil), options: options, logger: logger)
        let port = try await communicator.listen(host: host, port: 0)
        print("port port=\(port)")
        fflush(nil)
        let count = Int(sizeMiB * 1_048_576) / 4
        var data = [Float](repeating: 0, count: count)
        var barrierTag: UInt64 = 1 << 40
        func endpoints(_ words: ArraySlice<Substring>) -> [PeerEndpoint] {
            words.compactMap { w in
                let a = w.split(separator: "@"), b = a.count == 2 ? a[1].split(separator: ":") : []
                guard a.count == 2, b.count == 2, let id = UInt64(a[0]), let port = Int(b[1]) else { return nil }
                return PeerEndpoint(id: id, host: String(b[0]), port: port)
            }
        }
        while let line = readLine() {
            let words = line.split(separator: " ")
            guard let command = words.first else { continue }
            switch command {
            case "probe":
                for peer in endpoints(words.dropFirst()) {
                    let link = try await Task.detached { try communicator.probeLink(to: peer) }.value
                    print("probed to=\(peer.id) bw=\(link.bandwidth) lat=\(link.latency) bytes=\(link.bytes) s=\(link.seconds)")
                    fflush(nil)
                }
            case "ring":
                guard words.count > 2, let epoch = UInt64(words[1]) else { continue }
                try await communicator.connect(view: RingView(epoch: epoch, members: endpoints(words.dropFirst(2))))
                var times: [Double] = []
                for rep in 0...reps {
                    var one: [Float] = [0]
                    barrierTag += 1
                    try await communicator.allReduce(&one, options: AllReduceOptions(tag: barrierTag))
                    for i in data.indices { data[i] = Float(id) }
                    let start = DispatchTime.now().uptimeNanoseconds
                    try await communicator.allReduce(&data, options: AllReduceOptions(tag: 1, op: .sum, timeout: .seconds(300)))
                    if rep > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
                }
                print("result times_ms=\(times.map { String(format: "%.3f", $0) }.joined(separator: ","))")
                fflush(nil)
            default:
                await communicator.shutdown()
                return
            }
        }
        await communicator.shutdown()
    }
}
