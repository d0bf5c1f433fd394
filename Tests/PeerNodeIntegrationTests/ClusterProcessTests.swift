import Foundation
import Testing

/// A `peernode run` child whose stdout lines are collected as they come.
final class Daemon: @unchecked Sendable {
    let process = Process()
    private let lock = NSCondition()
    private var lines: [String] = []
    private var partial = Data()
    private let errors = Pipe()
    private var errorText = Data()

    /// The last lines the daemon logged, for failure messages.
    var stderrTail: String {
        lock.withLock { String(decoding: errorText.suffix(20000), as: UTF8.self) }
    }

    /// `prefix`: a command that runs the binary, e.g. `["ip", "netns", "exec", NAME]` for a network
    /// namespace; it must exec the binary (as `ip netns exec` does), so that signals reach it.
    init(_ args: [String], command: String = "run", prefix: [String] = []) throws {
        if prefix.isEmpty {
            process.executableURL = try peernodeBinary()
            process.arguments = [command] + args
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = prefix + [try peernodeBinary().path, command] + args
        }
        var env = ProcessInfo.processInfo.environment
        env["PEERNODE_CLUSTER_KEY"] = "integration-test-cluster-key-0123456789"
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = errors
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil }
            guard let self, !data.isEmpty else { return }
            self.lock.withLock {
                self.partial.append(data)
                while let nl = self.partial.firstIndex(of: 10) {
                    self.lines.append(String(decoding: self.partial[self.partial.startIndex..<nl], as: UTF8.self))
                    self.partial.removeSubrange(self.partial.startIndex...nl)
                }
                self.lock.broadcast()
            }
        }
        errors.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil }
            guard let self, !data.isEmpty else { return }
            self.lock.withLock {
                self.errorText.append(data)
                if self.errorText.count > 1 << 20 { self.errorText.removeFirst(self.errorText.count - (1 << 20)) }
            }
        }
        try process.run()
    }

    /// Whether the daemon logged `text` (within the last MiB of its stderr).
    func logged(_ text: String) -> Bool {
        lock.withLock { String(decoding: errorText, as: UTF8.self).contains(text) }
    }

    /// Everything the daemon logged (the last MiB of its stderr).
    var stderrText: String { lock.withLock { String(decoding: errorText, as: UTF8.self) } }

    /// The stdout lines so far.
    var output: [String] { lock.withLock { lines } }

    /// The stderr lines containing `text` (within the last MiB).
    func loggedLines(_ text: String) -> [String] {
        lock.withLock { String(decoding: errorText, as: UTF8.self).split(separator: "\n").filter { $0.contains(text) }.map(String.init) }
    }

    /// Waits for a line containing `text`; returns it (nil on timeout).
    func waitFor(_ text: String, timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while true {
            if let line = lines.first(where: { $0.contains(text) }) { return line }
            guard lock.wait(until: deadline) else { return nil }
        }
    }

    /// The key=value fields of every `outer` line so far, in order.
    /// How many outer steps the process has printed (a cheap progress count).
    var outerStepCount: Int { lock.withLock { lines.reduce(0) { $0 + ($1.hasPrefix("outer ") ? 1 : 0) } } }

    var outerLines: [[String: String]] {
        lock.withLock {
            lines.filter { $0.hasPrefix("outer ") }.map { line in
                Dictionary(line.split(separator: " ").dropFirst().compactMap { kv -> (String, String)? in
                    let p = kv.split(separator: "=", maxSplits: 1)
                    return p.count == 2 ? (String(p[0]), String(p[1])) : nil
                }, uniquingKeysWith: { $1 })
            }
        }
    }

    /// revision -> digest, from the `outer` lines so far.
    var digests: [Int: String] {
        lock.withLock {
            var out: [Int: String] = [:]
            for line in lines where line.hasPrefix("outer ") {
                let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").dropFirst().compactMap { kv -> (String, String)? in
                    let p = kv.split(separator: "=", maxSplits: 1)
                    return p.count == 2 ? (String(p[0]), String(p[1])) : nil
                })
                if let r = fields["revision"].flatMap({ Int($0) }), let d = fields["digest"] { out[r] = d }
            }
            return out
        }
    }

    var controlPort: Int? {
        waitFor("ready ", timeout: 60).flatMap { line in
            line.split(separator: " ").first { $0.hasPrefix("control_port=") }.flatMap { Int($0.dropFirst(13)) }
        }
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for exit, killing after `timeout`; returns the exit status.
    func finish(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }
}

/// Three peers train (`--outer-steps 8`); `victim` gets `signal` once it reached revision 2.
/// The survivors must finish and agree on every revision.
private func clusterSurvives(victim: Int, signal sig: Int32, extra: [String] = []) throws {
    let common = extra + ["--min-peers", "3", "--outer-steps", "8", "--inner-steps", "4", "--shard-count", "3",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "warning"]
    let founder = try Daemon(common + ["--shard-index", "0"])
    guard let port = founder.controlPort else {
        founder.signal(SIGKILL)
        Issue.record("the founder did not start")
        return
    }
    let others = try (1...2).map { try Daemon(common + ["--shard-index", "\($0)", "--seed", "127.0.0.1:\(port)"]) }
    let peers = [founder] + others
    defer { for p in peers { p.signal(SIGKILL) } }
    #expect(peers[victim].waitFor("revision=2 ", timeout: 120) != nil, "the run did not get going")
    peers[victim].signal(sig)
    let survivors = peers.indices.filter { $0 != victim }
    for i in survivors {
        let status = peers[i].finish(timeout: 120)
        #expect(status == 0, "survivor \(i) did not finish cleanly: \(peers[i].stderrTail)")
    }
    let a = peers[survivors[0]].digests
    let b = peers[survivors[1]].digests
    #expect(a[8] != nil && a[8] == b[8], "final states differ: \(String(describing: a[8])) vs \(String(describing: b[8]))")
    for (revision, digest) in a where b[revision] != nil { #expect(b[revision] == digest, "revision \(revision)") }
}

@Test func survivorsFinishWhenAMemberIsKilled() throws {
    try clusterSurvives(victim: 2, signal: SIGKILL)
}

/// With two TCP streams per ring neighbour: both links of the dead peer break the ring.
@Test func survivorsFinishWhenTheCoordinatorIsKilled() throws {
    try clusterSurvives(victim: 0, signal: SIGKILL, extra: ["--streams", "2"])
}

@Test func survivorsFinishWhenAMemberFreezes() throws {
    try clusterSurvives(victim: 1, signal: SIGSTOP)
}

@Test func runRejectsBadArgumentsAndAMissingKey() throws {
    for args in [["--listen", "nowhere"], ["--model", "bert"], ["--shard-index", "3", "--shard-count", "2"], ["--seed", "host:99999"], ["--streams", "0"]] {
        let result = try runPeernode(["run"] + args, environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"])
        #expect(result.status != 0, "\(args)")
        #expect(result.stderr.contains("Error"), "\(args): \(result.stderr)")
    }
    let noKey = try runPeernode(["run"], environment: ["PEERNODE_CLUSTER_KEY": ""])
    #expect(noKey.status != 0)
    #expect(noKey.stderr.contains("cluster key"), "\(noKey.stderr)")
    // A control port that is taken: a clear error, no crash.
    let holder = try Daemon(["--min-peers", "2", "--outer-steps", "1"])
    defer { holder.signal(SIGKILL) }
    let port = try #require(holder.controlPort)
    let busy = try runPeernode(["run", "--listen", "127.0.0.1:\(port)", "--outer-steps", "1"],
                               environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"])
    #expect(busy.status != 0, "binding a taken port must fail")
    #expect(busy.stderr.contains("cannot start"), "\(busy.stderr)")
}

@Test func aKilledPeerRestartedFromItsCheckpointRejoinsAndEndsEqual() throws {
    let dir = NSTemporaryDirectory() + "peernode-resume-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func args(_ i: Int) -> [String] {
        ["--min-peers", "3", "--outer-steps", "24", "--inner-steps", "4", "--shard-count", "3", "--shard-index", "\(i)",
         "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "warning",
         "--checkpoint", dir + "/peer\(i).ckpt", "--checkpoint-every", "2"]
    }
    let founder = try Daemon(args(0))
    let port = try #require(founder.controlPort)
    var peers = [founder] + (try (1...2).map { try Daemon(args($0) + ["--seed", "127.0.0.1:\(port)"]) })
    defer { for p in peers { p.signal(SIGKILL) } }
    #expect(peers[2].waitFor("revision=5 ", timeout: 120) != nil)
    peers[2].signal(SIGKILL)
    _ = peers[2].finish(timeout: 10)
    // The restarted peer resumes from its last checkpoint (revision 4), joins, and catches up.
    let restarted = try Daemon(args(2) + ["--seed", "127.0.0.1:\(port)", "--min-peers", "1"])
    peers[2] = restarted
    let ready = try #require(restarted.waitFor("ready ", timeout: 60))
    #expect(ready.contains("revision=4"), "\(ready)")
    // …with its own AdamW state: 4 outer steps × 4 inner steps.
    #expect(ready.contains("optimizer_step=16"), "\(ready)")
    for i in 0..<3 {
        let status = peers[i].finish(timeout: 180)
        #expect(status == 0, "peer \(i): \(peers[i].stderrTail)")
    }
    let finals = peers.map { $0.digests[24] }
    #expect(finals[0] != nil && finals[0] == finals[1] && finals[1] == finals[2], "\(finals)")
}

@Test func aCoordinateOnlyNodeRunsTheClusterAndLeavesGracefully() throws {
    let coordinator = try Daemon(["--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000"], command: "coordinator")
    defer { coordinator.signal(SIGKILL) }
    let port = try #require(coordinator.controlPort, "the coordinator did not start: \(coordinator.stderrTail)")
    let common = ["--seed", "127.0.0.1:\(port)", "--min-peers", "2", "--outer-steps", "3", "--inner-steps", "4",
                  "--shard-count", "2", "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "warning"]
    let peers = try (0..<2).map { try Daemon(common + ["--shard-index", "\($0)"]) }
    defer { for p in peers { p.signal(SIGKILL) } }
    for (i, p) in peers.enumerated() {
        #expect(p.finish(timeout: 120) == 0, "peer \(i): \(p.stderrTail)")
    }
    let a = peers[0].digests, b = peers[1].digests
    #expect(a[3] != nil && a[3] == b[3], "\(a) vs \(b)")
    // The coordinator saw both peers in the ring, and holds no ring position itself.
    #expect(coordinator.waitFor("ring=2", timeout: 5) != nil)
    coordinator.signal(SIGTERM)
    #expect(coordinator.finish(timeout: 20) == 0, "\(coordinator.stderrTail)")
}

@Test func aConfigFileSetsWhatTheCommandLineDoesNotAndBadOnesAreRefused() throws {
    let dir = NSTemporaryDirectory() + "peernode-config-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let good = dir + "/good.json"
    try #"{"inner-steps": 3, "outer-steps": 5, "quant": "none", "log-level": "warning", "checkpoint-every": 1}"#
        .write(toFile: good, atomically: true, encoding: .utf8)
    let env = ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"]
    // The command line wins over the file: 2 outer steps, not 5; the checkpoint lands every step.
    let result = try runPeernode(["run", "--config", good, "--outer-steps", "2", "--checkpoint", dir + "/c.ckpt"],
                                 environment: env, timeout: 120)
    #expect(result.status == 0, "\(result.stderr)")
    let outer = result.stdout.split(separator: "\n").filter { $0.hasPrefix("outer ") }
    #expect(outer.count == 2, "\(result.stdout)")
    #expect(FileManager.default.fileExists(atPath: dir + "/c.ckpt"))
    let cases: [(String, String)] = [
        (#"{"inner-step": 3}"#, "unknown setting \"inner-step\""),
        (#"{"inner-steps": "3"}"#, "must be a whole number"),
        (#"{"inner-steps": 0}"#, "--inner-steps"),
        (#"{"listen": "0.0.0.0:7000"}"#, "--advertise"),
        (#"[1, 2]"#, "one JSON object"),
        (#"{"inner-steps": 3"#, "one JSON object"),
    ]
    for (i, (text, message)) in cases.enumerated() {
        let path = dir + "/bad\(i).json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let bad = try runPeernode(["run", "--config", path], environment: env)
        #expect(bad.status != 0, "\(text) was accepted")
        #expect(bad.stderr.contains(message), "\(text): \(bad.stderr)")
    }
    let missing = try runPeernode(["run", "--config", dir + "/none.json"], environment: env)
    #expect(missing.status != 0 && missing.stderr.contains("cannot read config file"), "\(missing.stderr)")
}

/// SIGTERM while the step cannot end (its partner is frozen and the heartbeat timeout is long):
/// the grace period runs out, the step is aborted, the peer leaves and exits 0 in bounded time.
@Test func sigtermDuringAStuckStepEndsAfterTheGracePeriod() throws {
    let common = ["--min-peers", "2", "--inner-steps", "2", "--shard-count", "2", "--heartbeat-ms", "200",
                  "--heartbeat-timeout-ms", "120000", "--log-level", "info"]
    let dir = NSTemporaryDirectory() + "peernode-grace-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let checkpoint = dir + "/founder.ckpt"
    let founder = try Daemon(common + ["--shard-index", "0", "--shutdown-grace-s", "1",
                                       "--checkpoint", checkpoint, "--checkpoint-every", "1"])
    defer { founder.signal(SIGKILL) }
    let port = try #require(founder.controlPort)
    let other = try Daemon(common + ["--shard-index", "1", "--seed", "127.0.0.1:\(port)"])
    defer { other.signal(SIGCONT); other.signal(SIGKILL) }
    #expect(founder.waitFor("revision=2 ", timeout: 120) != nil, "the run did not get going: \(founder.stderrTail)")
    other.signal(SIGSTOP)
    Thread.sleep(forTimeInterval: 0.5)
    let start = Date()
    founder.signal(SIGTERM)
    let status = founder.finish(timeout: 60)
    #expect(status == 0, "\(founder.stderrTail)")
    // Grace (1 s) + the leave timeout (3 s) + slack: far below the 120 s heartbeat timeout.
    #expect(Date().timeIntervalSince(start) < 30)
    #expect(founder.stderrTail.contains("grace period"), "\(founder.stderrTail)")
    // The checkpoint is the last finished step's, not a half-done one.
    let last = try #require(founder.digests.keys.max())
    let resumed = try runPeernode(["run", "--checkpoint", checkpoint, "--outer-steps", "1", "--log-level", "warning"],
                                  environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    #expect(resumed.stdout.contains("ready ") && resumed.stdout.contains("revision=\(last) "), "last step \(last): \(resumed.stdout)")
}

/// SIGTERM with no grace period: the peer leaves in the middle of whatever it was doing (inner
/// steps or the all-reduce); the others abort that step, retry without it, and go on equal.
@Test func sigtermWithoutGraceLeavesMidStepAndTheOthersGoOn() throws {
    let common = ["--min-peers", "3", "--outer-steps", "10", "--inner-steps", "4", "--shard-count", "3",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "info"]
    let founder = try Daemon(common + ["--shard-index", "0"])
    defer { founder.signal(SIGKILL) }
    let port = try #require(founder.controlPort)
    let others = try (1...2).map { try Daemon(common + ["--shard-index", "\($0)", "--seed", "127.0.0.1:\(port)"]
                                              + ($0 == 2 ? ["--shutdown-grace-s", "0"] : [])) }
    defer { for p in others { p.signal(SIGKILL) } }
    let victim = others[1]
    #expect(victim.waitFor("revision=3 ", timeout: 120) != nil, "the run did not get going: \(victim.stderrTail)")
    victim.signal(SIGTERM)
    #expect(victim.finish(timeout: 30) == 0, "\(victim.stderrTail)")
    for (i, p) in [founder, others[0]].enumerated() {
        #expect(p.finish(timeout: 120) == 0, "survivor \(i): \(p.stderrTail)")
    }
    let a = founder.digests, b = others[0].digests
    #expect(a[10] != nil && a[10] == b[10], "\(a) vs \(b)")
    for (revision, digest) in a where b[revision] != nil { #expect(b[revision] == digest, "revision \(revision)") }
    #expect(founder.waitFor("peers=2 ", timeout: 1) != nil, "the survivors never ran a step without the leaver")
}

@Test func runRejectsAMissingDatasetAndAnUnreadableCheckpoint() throws {
    let env = ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"]
    let noData = try runPeernode(["run", "--model", "gcn", "--data-dir", "/nonexistent/cora"], environment: env)
    #expect(noData.status != 0)
    #expect(noData.stderr.contains("cannot load the training data"), "\(noData.stderr)")
    let dir = NSTemporaryDirectory() + "peernode-badckpt-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir + "/a-directory", withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Data("not a checkpoint at all".utf8).write(to: URL(fileURLWithPath: dir + "/garbage.ckpt"))
    for path in [dir + "/garbage.ckpt", dir + "/a-directory"] {
        let result = try runPeernode(["run", "--checkpoint", path, "--outer-steps", "1"], environment: env)
        #expect(result.status != 0, "\(path)")
        #expect(result.stderr.contains("cannot resume"), "\(path): \(result.stderr)")
    }
    // Nothing was overwritten.
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/garbage.ckpt")) == Data("not a checkpoint at all".utf8))
}

/// The first pod of a StatefulSet: its seeds (comma-separated, nothing listens there) never
/// answer; with --found-after-join-timeout it founds the cluster and trains, without it it fails.
@Test func aNodeWhoseSeedsNeverAnswerFoundsTheClusterWhenToldTo() throws {
    let env = ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"]
    let common = ["run", "--seed", "127.0.0.1:1,127.0.0.1:2", "--join-timeout-s", "1", "--outer-steps", "1", "--inner-steps", "2",
                  "--log-level", "notice"]
    let founded = try runPeernode(common + ["--found-after-join-timeout"], environment: env, timeout: 60)
    #expect(founded.status == 0, "\(founded.stderr)")
    #expect(founded.stderr.contains("founding the cluster"), "\(founded.stderr)")
    #expect(founded.stdout.contains("outer revision=1"), "\(founded.stdout)")
    let failed = try runPeernode(common, environment: env, timeout: 60)
    #expect(failed.status != 0)
    #expect(failed.stderr.contains("gave up joining"), "\(failed.stderr)")
    let coordinator = try runPeernode(["coordinator", "--seed", "127.0.0.1:1", "--join-timeout-s", "1"], environment: env, timeout: 60)
    #expect(coordinator.status != 0 && coordinator.stderr.contains("gave up joining"), "\(coordinator.stderr)")
}

/// The same node restarted while the cluster runs: the first seed is dead, the second a member;
/// it joins through the second and does not found a cluster of its own.
@Test func aNodeThatMayFoundJoinsARunningClusterThroughItsSecondSeed() throws {
    let common = ["--min-peers", "2", "--inner-steps", "2", "--outer-steps", "6", "--shard-count", "2",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "notice"]
    let member = try Daemon(common + ["--shard-index", "1"])
    defer { member.signal(SIGKILL) }
    let port = try #require(member.controlPort)
    let restarted = try Daemon(common + ["--shard-index", "0", "--seed", "127.0.0.1:1,127.0.0.1:\(port)", "--join-timeout-s", "20",
                                         "--found-after-join-timeout"])
    defer { restarted.signal(SIGKILL) }
    #expect(restarted.finish(timeout: 120) == 0, "\(restarted.stderrTail)")
    #expect(member.finish(timeout: 60) == 0, "\(member.stderrTail)")
    #expect(!restarted.stderrText.contains("founding the cluster"), "\(restarted.stderrTail)")
    #expect(restarted.outerLines.last?["peers"] == "2", "\(restarted.output.suffix(3))")
    #expect(restarted.digests[6] != nil && restarted.digests[6] == member.digests[6])
}
