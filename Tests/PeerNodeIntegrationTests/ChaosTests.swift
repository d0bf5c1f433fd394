import Foundation
import Models
import Testing

// A chaos driver of the project's own: real `peernode run` processes, driven only from outside
// (signals, new processes, the status ports), with random SIGKILLs, SIGSTOP for 1-10 s then
// SIGCONT, coordinator kills, restarts of killed peers and new joiners. CI runs a short
// fixed-seed form; `scripts/chaos.sh` runs it long (CHAOS_SECONDS, CHAOS_SEED, CHAOS_PEERS).

/// What the run is asked to be, from the environment (the CI form by default).
private struct ChaosPlan {
    var seconds = 100.0
    var seed: UInt64 = 7
    var peers = 5
    /// Seconds between events, drawn uniformly: the CI form's pace by default; the long run
    /// (`scripts/chaos.sh`) goes faster for 1000 events and more in half an hour.
    var interval = (low: 0.8, high: 2.5)
    /// After the events: every process resumed, no new fault, until one view and one state.
    var quietLimit = 90.0
    static let heartbeatTimeout = 2.0

    init() {
        let env = ProcessInfo.processInfo.environment
        if let s = env["CHAOS_SECONDS"].flatMap(Double.init) { seconds = s }
        if let s = env["CHAOS_SEED"].flatMap(UInt64.init) { seed = s }
        if let p = env["CHAOS_PEERS"].flatMap(Int.init) { peers = max(p, 3) }
        if let low = env["CHAOS_INTERVAL_LOW"].flatMap(Double.init), let high = env["CHAOS_INTERVAL_HIGH"].flatMap(Double.init),
           low > 0, high >= low {
            interval = (low, high)
        }
    }
}

/// The event choices from the project's seeded generator: the same seed gives the same choice
/// of events (their timing is real).
private extension SplitMix64 {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * Double(next() >> 11) / Double(1 << 53) }
}

/// One `peernode run` process of the chaos run and what the driver did to it.
private final class ChaosPeer {
    let name: String
    let daemon: Daemon
    var killed = false
    var restarted = false
    var pausedUntil: Date?
    /// The processes given to it as `--seed`: all it knows until it is admitted.
    let seeds: [ChaosPeer]
    private var known: (control: Int, status: Int)?

    /// Starts the process; `wait`: seconds to wait for its `ready` line (a joiner may take longer
    /// than that to be admitted while the cluster is in turmoil, which is no failure: it is live,
    /// just not ready yet, and the driver uses it once it is).
    init(name: String, args: [String], wait: Double, seeds: [ChaosPeer] = []) throws {
        self.name = name
        self.seeds = seeds
        daemon = try Daemon(args)
        if wait > 0, ports(wait: wait) == nil {
            daemon.signal(SIGKILL)
            throw ChaosFailure(description: "\(name) did not start: \(daemon.stderrTail)")
        }
    }

    /// Control and status ports from the `ready` line, once the process printed it.
    func ports(wait: Double = 0) -> (control: Int, status: Int)? {
        if let known { return known }
        guard let line = daemon.waitFor("ready ", timeout: wait) else { return nil }
        func field(_ name: String) -> Int? {
            line.split(separator: " ").first { $0.hasPrefix(name + "=") }.flatMap { Int($0.dropFirst(name.count + 1)) }
        }
        guard let control = field("control_port"), let status = field("status_port") else { return nil }
        known = (control, status)
        return known
    }

    var live: Bool { !killed }
    /// Never admitted, and every seed it was given is dead: no address can ever answer it, so
    /// it keeps trying (what it should do) but cannot be in the final view.
    var orphaned: Bool { live && ports() == nil && !seeds.isEmpty && seeds.allSatisfy(\.killed) }
    var running: Bool { !killed && pausedUntil == nil }

    /// role and line from the status port, nil if it does not answer (or is not ready yet).
    func status() -> (role: String, line: String, members: Int)? {
        guard let statusPort = ports()?.status,
              let response = try? httpRequest("GET", port: statusPort, path: "/status"), response.status == 200,
              let json = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
              let role = json["role"] as? String, let line = json["line"] as? String,
              let members = json["members"] as? [Any] else { return nil }
        return (role, line, members.count)
    }
}

private struct ChaosFailure: Error, CustomStringConvertible {
    var description: String
}

/// (line, revision) -> digest of every `outer` line a process printed.
private func outerRecords(_ daemon: Daemon) -> [(line: String, revision: Int, digest: String)] {
    daemon.outerLines.compactMap { fields in
        guard let line = fields["line"], let revision = fields["revision"].flatMap(Int.init), let digest = fields["digest"] else { return nil }
        return (line, revision, digest)
    }
}

@Test func chaosNeverStallsNeverForksAStateAndConvergesWhenQuiet() throws {
    let plan = ChaosPlan()
    var random = SplitMix64(seed: plan.seed)
    let common = ["--min-peers", "1", "--inner-steps", "4", "--shard-count", "\(plan.peers)",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "\(Int(ChaosPlan.heartbeatTimeout * 1000))",
                  "--fork-after-timeouts", "3", "--log-level", "info"]
    var peers: [ChaosPeer] = []
    defer { for p in peers { p.daemon.signal(SIGCONT); p.daemon.signal(SIGKILL) } }
    func args(_ index: Int, seeds: [ChaosPeer]) -> [String] {
        common + ["--shard-index", "\(index % plan.peers)"] + seeds.flatMap { ["--seed", "127.0.0.1:\($0.ports()!.control)"] }
    }
    peers.append(try ChaosPeer(name: "p0", args: args(0, seeds: []), wait: 60))
    let founder = peers[0]
    for i in 1..<plan.peers {
        peers.append(try ChaosPeer(name: "p\(i)", args: args(i, seeds: [founder]), wait: 60, seeds: [founder]))
    }

    var events: [String: Int] = ["kill": 0, "pause": 0, "coordinator-kill": 0, "restart": 0, "join": 0]
    var unexpectedExits: [String] = []
    // Progress: an outer step on any line (lines are how the cluster stays available, so a
    // line that trains is progress); the top revision's gap is reported beside it, since the
    // highest line may be the one that lost its members while a lower one trains on.
    var maxRevision = 0
    var stepsSeen = 0
    var lastProgress = Date()
    var lastTopProgress = Date()
    var longestGap = 0.0
    var longestTopGap = 0.0
    var longestGapEnd = Date()
    let start = Date()
    var nextEvent = start.addingTimeInterval(5)
    func observe() {
        let now = Date()
        for p in peers where p.live && !p.daemon.process.isRunning && !unexpectedExits.contains(p.name) {
            unexpectedExits.append(p.name)
            Issue.record("\(p.name) exited without being killed (status \(p.daemon.process.terminationStatus)): \(p.daemon.stderrTail)")
        }
        for p in peers where p.pausedUntil.map({ $0 <= now }) == true {
            p.daemon.signal(SIGCONT)
            p.pausedUntil = nil
        }
        let top = peers.compactMap { $0.daemon.digests.keys.max() }.max() ?? 0
        if top > maxRevision {
            maxRevision = top
            lastTopProgress = now
        }
        let steps = peers.reduce(0) { $0 + $1.daemon.outerStepCount }
        if steps > stepsSeen {
            stepsSeen = steps
            lastProgress = now
        }
        longestTopGap = max(longestTopGap, now.timeIntervalSince(lastTopProgress))
        if now.timeIntervalSince(lastProgress) > longestGap {
            longestGap = now.timeIntervalSince(lastProgress)
            longestGapEnd = now
        }
    }
    /// Up to three processes in the cluster, as an operator would list several seeds: a
    /// joiner whose only seed is killed before it registered has no other address to try.
    func seeds() -> [ChaosPeer] {
        var candidates = peers.filter { $0.running && $0.ports() != nil }
        var chosen: [ChaosPeer] = []
        while chosen.count < 3, !candidates.isEmpty { chosen.append(candidates.remove(at: random.below(candidates.count))) }
        return chosen
    }
    while Date().timeIntervalSince(start) < plan.seconds {
        observe()
        guard Date() >= nextEvent else {
            Thread.sleep(forTimeInterval: 0.1)
            continue
        }
        nextEvent = Date().addingTimeInterval(random.uniform(plan.interval.low, plan.interval.high))
        // Faults hit the processes that are in the cluster (ready): a joiner not admitted yet
        // does not count, or the driver could kill the last members and leave only joiners
        // whose seeds are gone.
        let running = peers.filter { $0.running && $0.ports() != nil }
        switch random.below(10) {
        case 0...2 where running.count > 2:
            let victim = running[random.below(running.count)]
            victim.daemon.signal(SIGKILL)
            victim.killed = true
            events["kill"]! += 1
        case 3...4 where running.count > 2:
            let victim = running[random.below(running.count)]
            victim.daemon.signal(SIGSTOP)
            victim.pausedUntil = Date().addingTimeInterval(random.uniform(1, 10))
            events["pause"]! += 1
        case 5 where running.count > 2:
            if let coordinator = running.first(where: { $0.status()?.role == "coordinator" }) {
                coordinator.daemon.signal(SIGKILL)
                coordinator.killed = true
                events["coordinator-kill"]! += 1
            }
        case 6...7:
            if let dead = peers.first(where: { $0.killed && !$0.restarted }), case let s = seeds(), !s.isEmpty {
                dead.restarted = true
                peers.append(try ChaosPeer(name: dead.name + "'", args: args(peers.count, seeds: s), wait: 0, seeds: s))
                events["restart"]! += 1
            }
        default:
            if peers.filter(\.live).count < plan.peers + 2, case let s = seeds(), !s.isEmpty {
                peers.append(try ChaosPeer(name: "p\(peers.count)", args: args(peers.count, seeds: s), wait: 0, seeds: s))
                events["join"]! += 1
            }
        }
    }
    // Quiet: everybody runs; one view, one line, one state.
    for p in peers where p.pausedUntil != nil {
        p.daemon.signal(SIGCONT)
        p.pausedUntil = nil
    }
    let quietStart = Date()
    var converged = false
    while Date().timeIntervalSince(quietStart) < plan.quietLimit {
        observe()
        let live = peers.filter { $0.live && !$0.orphaned }
        let statuses = live.map { $0.status() }
        if statuses.allSatisfy({ $0 != nil && ["member", "coordinator"].contains($0!.role) }),
           Set(statuses.map { $0!.line }).count == 1, statuses.allSatisfy({ $0!.members == live.count }) {
            converged = true
            break
        }
        Thread.sleep(forTimeInterval: 0.5)
    }
    let quietSeconds = Date().timeIntervalSince(quietStart)
    // A step every live process took after converging, then a graceful stop.
    let orphans = peers.filter(\.orphaned)
    let live = peers.filter { $0.live && !$0.orphaned }
    let afterQuiet = live.map { $0.daemon.digests.keys.max() ?? 0 }.max() ?? 0
    let deadline = Date().addingTimeInterval(60)
    while converged, Date() < deadline, !live.allSatisfy({ ($0.daemon.digests.keys.max() ?? 0) > afterQuiet + 1 }) {
        observe()
        Thread.sleep(forTimeInterval: 0.2)
    }
    observe()
    for p in live + orphans { p.daemon.signal(SIGTERM) }
    for p in live + orphans {
        let status = p.daemon.finish(timeout: 60)
        #expect(status == 0, "\(p.name) did not leave cleanly: \(p.daemon.stderrTail)")
    }
    // Within one line, one state per revision, across every process that ever ran.
    var digests: [String: Set<String>] = [:]
    for p in peers {
        for r in outerRecords(p.daemon) { digests["\(r.line)@\(r.revision)", default: []].insert(r.digest) }
    }
    let mismatches = digests.filter { $0.value.count > 1 }
    let finals = live.map { $0.daemon.digests }
    let lastCommon = finals.dropFirst().reduce(Set(finals[0].keys)) { $0.intersection($1.keys) }.max()
    let summary = "chaos seconds=\(Int(plan.seconds)) seed=\(plan.seed) peers=\(plan.peers) events=\(events.values.reduce(0, +)) "
        + events.keys.sorted().map { "\($0)=\(events[$0]!)" }.joined(separator: " ")
        + " processes=\(peers.count) revisions=\(maxRevision) longest_gap_s=\(String(format: "%.1f", longestGap)) "
        + "longest_top_revision_gap_s=\(String(format: "%.1f", longestTopGap)) "
        + "digest_mismatches=\(mismatches.count) unexpected_exits=\(unexpectedExits.count) converged=\(converged) "
        + "quiet_to_one_view_s=\(String(format: "%.1f", quietSeconds)) orphaned_joiners=\(orphans.count) lines=\(Set(digests.keys.map { $0.split(separator: "@")[0] }).count)"
    print(summary)
    print("chaos longest gap ended at \(ISO8601DateFormatter().string(from: longestGapEnd))")
    if let dir = ProcessInfo.processInfo.environment["CHAOS_LOG_DIR"] {
        // Every process's log, for reading a failed run.
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for p in peers {
            try? p.daemon.stderrText.write(toFile: "\(dir)/\(p.name).log", atomically: true, encoding: .utf8)
            try? p.daemon.output.joined(separator: "\n").write(toFile: "\(dir)/\(p.name).out", atomically: true, encoding: .utf8)
        }
        let listed = mismatches.keys.sorted().map { key in
            "\(key): " + peers.flatMap { p in outerRecords(p.daemon).filter { "\($0.line)@\($0.revision)" == key }.map { "\(p.name)=\($0.digest)" } }.joined(separator: " ")
        }
        try? listed.joined(separator: "\n").write(toFile: "\(dir)/mismatches.txt", atomically: true, encoding: .utf8)
    }
    if let path = ProcessInfo.processInfo.environment["CHAOS_SUMMARY"] {
        try? (summary + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
    #expect(unexpectedExits.isEmpty)
    #expect(mismatches.isEmpty, "one line, one revision, two states: \(mismatches.prefix(5))")
    #expect(longestGap <= ChaosPlan.heartbeatTimeout + 15, "no outer step on any line for \(longestGap) s")
    #expect(converged, "no single view \(plan.quietLimit) s after the faults stopped: \(live.map { "\($0.name): \(String(describing: $0.status()))" })")
    let commonRevision = try #require(lastCommon, "no revision every live process reached")
    #expect(Set(finals.map { $0[commonRevision] }).count == 1, "final states differ at revision \(commonRevision)")
}
