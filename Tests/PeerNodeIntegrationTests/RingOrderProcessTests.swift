import Foundation
import Testing

// Real `peernode run` processes on hosts of a virtual network with two sites joined by a WAN
// (scripts/netkit.sh: namespaces, `wan` = router namespace with a rate limit and a delaying wire,
// `pair` = a slow link between two hosts; docs/netkit.md). Each daemon listens on 0.0.0.0 and
// advertises its address; hosts 2...5 join through host 1's address. The ring order comes from
// the links the members probe (docs/membership.md §9): the test follows the views the founder
// commits and checks that the ring crosses the WAN only twice after the joins, after another join
// and after a kill, and that a slow link appearing mid-run makes the ring avoid it; the members
// train DiLoCo all along and end with equal digests. Needs root (CI runs as root); skipped otherwise.

private let kitScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("scripts/netkit.sh").path

private struct RingKitError: Error, CustomStringConvertible {
    var description: String
}

/// Runs `scripts/netkit.sh args...` to completion (at most 60 s); throws with its stderr if it fails.
private func ringKit(_ args: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = [kitScript] + args
    let err = Pipe()
    process.standardOutput = FileHandle.nullDevice
    process.standardError = err
    try process.run()
    let killer = DispatchWorkItem { kill(process.processIdentifier, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: killer)
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    guard process.terminationStatus == 0 else {
        throw RingKitError(description: "netkit.sh \(args.joined(separator: " ")) failed: " + String(decoding: errors, as: UTF8.self))
    }
}

/// A committed view as the daemon logs it: `view committed: epoch E line L coordinator C [ids] ring [ids]`.
private struct CommittedView {
    var epoch: Int
    var ids: [String]
    var ring: [String]

    init?(_ text: Substring) {
        guard let at = text.range(of: "view committed: epoch ") else { return nil }
        let rest = text[at.upperBound...]
        guard let epoch = Int(rest.prefix { $0.isNumber }),
              let open = rest.firstIndex(of: "["), let close = rest[open...].firstIndex(of: "]") else { return nil }
        self.epoch = epoch
        ids = rest[rest.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if let r = rest[close...].range(of: " ring ["), let end = rest[r.upperBound...].firstIndex(of: "]") {
            ring = rest[r.upperBound..<end].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        } else {
            ring = ids
        }
    }

    /// The ring's links a -> b, as (sender, receiver).
    var links: [(String, String)] { ring.indices.map { (ring[$0], ring[($0 + 1) % ring.count]) } }
}

private func poll(until deadline: Date, _ condition: () -> Bool) -> Bool {
    while !condition() {
        if Date() >= deadline { return false }
        Thread.sleep(forTimeInterval: 0.2)
    }
    return true
}

@Suite(.serialized, .enabled(if: getuid() == 0, "needs root: network namespaces for the virtual hosts (CI runs as root)"))
struct RingOrderProcessTests {
    @Test(.timeLimit(.minutes(3))) func twoSitesJoinKillAndASlowLink() throws {
        let started = Date()
        let deadline = started.addingTimeInterval(150)
        let prefix = "pnro-\(getpid())"
        // Hosts 1, 3, 5 on site a; 2, 4 on site b; joined in the order 1 2 3 4 (then 5): the ring as
        // joined crosses the WAN four times.
        let siteOf: [Int: Character] = [1: "a", 2: "b", 3: "a", 4: "b", 5: "a"]
        try ringKit(["down", prefix])
        try ringKit(["up", prefix, "5", "2,4"])
        var daemons: [Int: Daemon] = [:]
        defer {
            for d in daemons.values { d.signal(SIGKILL) }
            for d in daemons.values { _ = d.finish(timeout: 5) }
            if let dir = ProcessInfo.processInfo.environment["PEERNODE_TEST_LOG_DIR"], !dir.isEmpty {
                for (i, d) in daemons {
                    let base = URL(fileURLWithPath: dir).appendingPathComponent("\(prefix)-h\(i)")
                    try? (d.output.joined(separator: "\n") + "\n").write(to: base.appendingPathExtension("out"), atomically: true, encoding: .utf8)
                    try? d.stderrText.write(to: base.appendingPathExtension("err"), atomically: true, encoding: .utf8)
                }
            }
            do { try ringKit(["down", prefix]) } catch { Issue.record("teardown: \(error)") }
        }
        try ringKit(["wan", prefix, "100mbit", "10"])

        func start(_ i: Int) throws -> Daemon {
            let args = ["--listen", "0.0.0.0:7100", "--data-listen", "0.0.0.0:7200", "--advertise", "10.77.0.\(10 + i)",
                        "--min-peers", "4", "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "3000",
                        "--inner-steps", "4", "--shard-count", "5", "--shard-index", "\(i - 1)", "--log-level", "info",
                        "--probe-interval-s", "3",
                        // A bound for a daemon orphaned by a killed test run; `netkit.sh down` also ends it.
                        "--outer-steps", "5000"] + (i == 1 ? [] : ["--seed", "10.77.0.11:7100"])
            return try Daemon(args, prefix: ["/bin/bash", kitScript, "exec", prefix, "\(i)"])
        }
        var hostOf: [String: Int] = [:]
        func admit(_ i: Int) throws -> Bool {
            let d = try start(i)
            daemons[i] = d
            guard let ready = d.waitFor("ready id=", timeout: 30),
                  let id = ready.split(separator: " ").first(where: { $0.hasPrefix("id=") })?.dropFirst(3) else {
                Issue.record("host \(i) did not start: \(d.stderrTail)")
                return false
            }
            hostOf[String(id)] = i
            return true
        }
        func views() -> [CommittedView] {
            daemons[1]!.loggedLines("view committed: ").compactMap { CommittedView(Substring($0)) }
        }
        func crossings(_ v: CommittedView) -> Int {
            v.links.filter { siteOf[hostOf[$0.0] ?? 0] != siteOf[hostOf[$0.1] ?? 0] }.count
        }
        func hosts(_ v: CommittedView) -> Set<Int> { Set(v.ids.compactMap { hostOf[$0] }) }
        func describe(_ v: CommittedView) -> String { "epoch \(v.epoch) ring \(v.ring.map { "h\(hostOf[$0] ?? 0)" })" }
        func tails() -> String {
            daemons.keys.sorted().map { "--- host \($0) stdout:\n\(daemons[$0]!.output.suffix(6).joined(separator: "\n"))\n--- host \($0) stderr:\n\(daemons[$0]!.stderrTail.suffix(3000))" }
                .joined(separator: "\n") + "\n--- views: " + views().map(describe).joined(separator: "; ")
        }
        /// Waits for a committed view of exactly `members` whose ring crosses the WAN twice.
        func planned(_ members: Set<Int>, _ what: String) -> CommittedView? {
            var found: CommittedView?
            _ = poll(until: deadline) {
                found = views().last { hosts($0) == members && crossings($0) == 2 }
                return found != nil
            }
            if found == nil { Issue.record("\(what): no view of hosts \(members.sorted()) with a ring that crosses the WAN twice: \(tails())") }
            return found
        }

        for i in 1...4 {
            guard try admit(i) else { return }
            if i > 1 {
                guard poll(until: deadline, { views().contains { hosts($0).contains(i) } }) else {
                    Issue.record("host \(i) was not admitted: \(tails())")
                    return
                }
            }
        }
        // 1. The four joined a b a b; once they probed each other, the ring crosses twice.
        guard let first = planned([1, 2, 3, 4], "after the joins") else { return }
        let joinedOrder = views().first { hosts($0) == [1, 2, 3, 4] }!
        #expect(crossings(joinedOrder) == 4, "the first view of four should be in joining order: \(describe(joinedOrder))")

        // 2. A fifth host joins (site a): appended, then placed.
        guard try admit(5) else { return }
        guard let second = planned([1, 2, 3, 4, 5], "after host 5 joined") else { return }
        #expect(second.epoch > first.epoch)

        // 3. Host 3 is killed: the view without it is planned at once.
        daemons[3]!.signal(SIGKILL)
        guard let third = planned([1, 2, 4, 5], "after host 3 was killed") else { return }

        // 4. A slow link appears on a link the ring uses inside site a; the ring stops using it.
        let slow = third.links.first { siteOf[hostOf[$0.0]!] == "a" && siteOf[hostOf[$0.1]!] == "a" }!
        let (from, to) = (hostOf[slow.0]!, hostOf[slow.1]!)
        try ringKit(["pair", prefix, "\(from)", "\(to)", "5mbit"])
        var avoided: CommittedView?
        _ = poll(until: deadline) {
            avoided = views().last { $0.epoch > third.epoch && hosts($0) == [1, 2, 4, 5] && !$0.links.contains { $0 == slow } }
            return avoided != nil
        }
        guard let avoided else {
            Issue.record("the ring kept the slow link h\(from) -> h\(to): \(tails())")
            return
        }

        // 5. The survivors train on in the re-ordered ring with equal digests.
        let survivors = [1, 2, 4, 5]
        var common: (revision: String, digest: String)?
        _ = poll(until: deadline) {
            let lines = survivors.map { daemons[$0]!.outerLines.filter { $0["peers"] == "4" && Int($0["epoch"] ?? "") ?? 0 >= avoided.epoch } }
            for step in lines[0].reversed() {
                if lines.dropFirst().allSatisfy({ $0.contains { $0["revision"] == step["revision"] && $0["digest"] == step["digest"] } }) {
                    common = (step["revision"]!, step["digest"]!)
                    return true
                }
            }
            return false
        }
        guard let common else {
            Issue.record("no step of the four survivors with equal digests after the re-order: \(tails())")
            return
        }
        print("ring order: joined \(describe(joinedOrder)) -> \(describe(first)); with h5 \(describe(second)); h3 killed \(describe(third)); "
              + "slow h\(from)->h\(to): \(describe(avoided)); equal digests at revision \(common.revision); \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }
}
