import Foundation
import Testing

// Real `peernode run` processes, paused with SIGSTOP past the heartbeat timeout and resumed: the
// paused one used to exit ("removed from the cluster") or, as coordinator, ask for a quorum for
// ever. Now it joins anew by itself, downloads the state and trains on with the others.

/// Three peers training until stopped; `victim` is paused for `pause` seconds once it reached
/// revision 3, then resumed. It must train again with the others (a step at a revision the
/// others reached after it was resumed), every peer must leave cleanly on SIGTERM, and no two
/// peers may ever have held different states at one revision.
private func pausedPeerComesBack(victim: Int, pause: Double) throws {
    let common = ["--min-peers", "3", "--inner-steps", "4", "--shard-count", "3",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "info"]
    let founder = try Daemon(common + ["--shard-index", "0"])
    guard let port = founder.controlPort else {
        founder.signal(SIGKILL)
        Issue.record("the founder did not start: \(founder.stderrTail)")
        return
    }
    let others = try (1...2).map { try Daemon(common + ["--shard-index", "\($0)", "--seed", "127.0.0.1:\(port)"]) }
    let peers = [founder] + others
    defer { for p in peers { p.signal(SIGCONT); p.signal(SIGKILL) } }
    #expect(peers[victim].waitFor("revision=3 ", timeout: 120) != nil, "the run did not get going")
    peers[victim].signal(SIGSTOP)
    Thread.sleep(forTimeInterval: pause)
    peers[victim].signal(SIGCONT)
    let resumedAt = peers.indices.filter { $0 != victim }.compactMap { peers[$0].digests.keys.max() }.max() ?? 0
    let deadline = Date().addingTimeInterval(120)
    let survivor = peers[(victim + 1) % peers.count]
    func back() -> Bool {
        guard let mine = peers[victim].outerLines.last, let theirs = survivor.outerLines.last else { return false }
        return mine["line"] == theirs["line"] && (mine["revision"].flatMap(Int.init) ?? 0) > resumedAt + 2
    }
    while !back(), Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
    #expect(back(),
            "the victim did not train with the others again (they were at \(resumedAt) when it resumed): \(peers[victim].stderrTail)")
    for p in peers { p.signal(SIGTERM) }
    for (i, p) in peers.enumerated() {
        let status = p.finish(timeout: 60)
        #expect(status == 0, "peer \(i) did not finish cleanly: \(p.stderrTail)")
    }
    #expect(peers[victim].logged("joining anew"), "the victim never rejoined: \(peers[victim].stderrTail)")
    // Within one line, one state per revision (a peer that could reach nobody for the fork
    // bound on a loaded machine may have trained alone in a line of its own meanwhile).
    var states: [String: Set<String>] = [:]
    for p in peers {
        for fields in p.outerLines {
            if let line = fields["line"], let revision = fields["revision"], let digest = fields["digest"] {
                states["\(line)@\(revision)", default: []].insert(digest)
            }
        }
    }
    #expect(states.allSatisfy { $0.value.count == 1 }, "\(states.filter { $0.value.count > 1 })")
    // And all ended in one line with one state.
    let finals = peers.map { $0.outerLines.last }
    #expect(Set(finals.map { $0?["line"] }).count == 1, "\(finals)")
}

@Test func aMemberPausedPastTheTimeoutRejoinsAndTrainsOn() throws {
    try pausedPeerComesBack(victim: 2, pause: 5)
}

@Test func aCoordinatorPausedPastTheTimeoutIsReplacedAndRejoins() throws {
    try pausedPeerComesBack(victim: 0, pause: 6)
}

/// A peer of another model joining a running cluster: refused with one line, exit status 1, and
/// the cluster trains on.
@Test func aPeerWithAnotherModelIsRefusedWithOneLine() throws {
    let founder = try Daemon(["--min-peers", "1", "--inner-steps", "2", "--log-level", "warning"])
    defer { founder.signal(SIGKILL) }
    let port = try #require(founder.controlPort, "the founder did not start: \(founder.stderrTail)")
    let result = try runPeernode(["run", "--model", "gin", "--seed", "127.0.0.1:\(port)", "--log-level", "error"],
                                 environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"], timeout: 60)
    #expect(result.status == 1)
    let errors = result.stderr.split(separator: "\n").filter { $0.contains("Error") }
    #expect(errors.count == 1 && errors[0].contains("incompatible settings") && errors[0].contains("model=gin"), "\(result.stderr)")
    let before = founder.digests.keys.max() ?? 0
    #expect(founder.waitFor("revision=\(before + 2) ", timeout: 60) != nil, "the cluster stopped training")
}
