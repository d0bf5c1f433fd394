import Foundation
import Testing

extension Daemon {
    /// A `key=value` field of the ready line.
    func readyField(_ key: String) -> String? {
        waitFor("ready ", timeout: 60).flatMap { line in
            line.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
        }
    }
}

/// The /status document, loosely: the test reads it as JSON, not through the daemon's own types.
private func statusJSON(port: Int) throws -> [String: Any] {
    let response = try httpRequest("GET", port: port, path: "/status")
    #expect(response.status == 200)
    #expect(response.headers["content-type"]?.hasPrefix("application/json") == true)
    let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8))
    return try #require(object as? [String: Any], "not a JSON object: \(response.body.prefix(200))")
}

/// revision -> digest from a /status history.
private func digests(_ status: [String: Any]) -> [Int: String] {
    var out: [Int: String] = [:]
    for step in status["history"] as? [[String: Any]] ?? [] {
        if let revision = step["revision"] as? Int, let digest = step["digest"] as? String { out[revision] = digest }
    }
    return out
}

/// Two real daemons with status ports: every route answers as documented on both, `peernode
/// status` reads them, and SIGTERM still ends both promptly with the server running.
@Test func statusPortServesStatusMetricsHealthAndThePage() throws {
    let common = ["--min-peers", "2", "--inner-steps", "2", "--shard-count", "2",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "--log-level", "warning"]
    let founder = try Daemon(common + ["--shard-index", "0"])
    defer { founder.signal(SIGKILL) }
    let control = try #require(founder.controlPort, "the founder did not start: \(founder.stderrTail)")
    let joiner = try Daemon(common + ["--shard-index", "1", "--seed", "127.0.0.1:\(control)", "--status-port", "0"])
    defer { joiner.signal(SIGKILL) }
    let founderId = try #require(founder.readyField("id"))
    let ports = try [founder, joiner].map { daemon in
        try #require(daemon.readyField("status_port").flatMap { Int($0) }, "no status_port in the ready line")
    }
    for daemon in [founder, joiner] {
        try #require(daemon.waitFor("revision=2 ", timeout: 60) != nil, "no second outer step: \(daemon.stderrTail)")
    }

    // The default bind address is loopback.
    if let addresses = listeningAddresses(port: ports[0]) {
        #expect(addresses == ["127.0.0.1"], "status port listens on \(addresses)")
    }

    // /status on both: same cluster, same digests where their histories overlap.
    let statuses = try ports.map { try statusJSON(port: $0) }
    for (i, status) in statuses.enumerated() {
        #expect((status["revision"] as? Int ?? 0) >= 1, "peer \(i): \(status["revision"] ?? "none")")
        #expect((status["members"] as? [Any])?.count == 2, "peer \(i) sees \(status["members"] ?? "none")")
        #expect(status["healthy"] as? Bool == true, "peer \(i): \(status["health"] ?? "")")
        #expect(status["coordinator"] as? String == founderId)
        #expect(status["model"] as? String == "moe")
        for key in ["epoch", "digest", "dataset", "metric_name", "throughput", "events", "bytes_sent",
                    "bytes_received", "uptime_seconds", "version", "history"] {
            #expect(status[key] != nil, "peer \(i): /status has no \(key)")
        }
    }
    // The membership events the status port followed: the joiner's admission is a view of two
    // on both; the joiner also saw its own role change to member.
    for (i, status) in statuses.enumerated() {
        let log = status["membership_log"] as? [[String: Any]] ?? []
        #expect(log.contains { $0["kind"] as? String == "view" && ($0["detail"] as? String ?? "").hasSuffix("members 2") },
                "peer \(i): \(log)")
    }
    #expect((statuses[1]["membership_log"] as? [[String: Any]] ?? []).contains {
        $0["kind"] as? String == "role" && $0["detail"] as? String == "member" })
    #expect(statuses[0]["id"] as? String == founderId)
    #expect(statuses[0]["role"] as? String == "coordinator")
    #expect(statuses[1]["role"] as? String == "member")
    let (a, b) = (digests(statuses[0]), digests(statuses[1]))
    let common_ = Set(a.keys).intersection(b.keys)
    #expect(!common_.isEmpty, "no revision in both histories: \(a.keys.sorted()) vs \(b.keys.sorted())")
    for revision in common_ { #expect(a[revision] == b[revision], "revision \(revision)") }
    #expect((statuses[0]["bytes_sent"] as? Int ?? 0) > 0)
    let since = try httpRequest("GET", port: ports[0], path: "/status?since=1000000")
    #expect(since.body.contains("\"history\":[]"), "?since= must drop older steps")

    // /metrics: Prometheus text, every sample line well-formed, the revision a number ≥ 1.
    let metrics = try httpRequest("GET", port: ports[0], path: "/metrics")
    #expect(metrics.status == 200)
    #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
    let sample = try Regex(#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (-?[0-9.]+([eE][-+]?[0-9]+)?|NaN|[-+]Inf)$"#)
    var names: [String: Double] = [:]
    for line in metrics.body.split(separator: "\n") where !line.hasPrefix("#") {
        #expect(line.wholeMatch(of: sample) != nil, "not an exposition line: \(line)")
        let parts = line.split(separator: " ")
        names[String(parts[0])] = Double(parts.last ?? "")
    }
    #expect((names["peernode_outer_revision"] ?? 0) >= 1, "\(metrics.body)")
    for name in ["peernode_bytes_sent_total", "peernode_inner_loss", "peernode_peers",
                 "peernode_membership_events_total{kind=\"join\"}"] {
        #expect(names[name] != nil, "/metrics has no \(name)")
    }
    #expect(names["peernode_peers"] == 2)

    // /healthz, the page, and what a read-only port refuses.
    let health = try httpRequest("GET", port: ports[1], path: "/healthz")
    #expect(health.status == 200 && health.body.hasPrefix("ok"), "\(health)")
    let page = try httpRequest("GET", port: ports[0], path: "/")
    #expect(page.status == 200 && page.body.contains("<canvas"))
    #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
    #expect(!page.body.contains("<script src"), "the page must be self-contained")
    let post = try httpRequest("POST", port: ports[0], path: "/status")
    #expect(post.status == 405 && post.headers["allow"] == "GET", "\(post)")
    #expect(try httpRequest("DELETE", port: ports[0], path: "/").status == 405)
    #expect(try httpRequest("GET", port: ports[0], path: "/nope").status == 404)

    // `peernode status`: a table with the id, or the JSON.
    let table = try runPeernode(["status", "127.0.0.1:\(ports[0])"], timeout: 30)
    #expect(table.status == 0, "\(table.stderr)")
    #expect(table.stdout.contains(founderId) && table.stdout.contains("coordinator") && table.stdout.contains("members"),
            "\(table.stdout)")
    let json = try runPeernode(["status", "127.0.0.1:\(ports[1])", "--json"], timeout: 30)
    #expect(json.status == 0, "\(json.stderr)")
    let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
    #expect(parsed?["role"] as? String == "member")

    // Both still leave promptly on SIGTERM with the server up (a browser-like open connection too).
    for daemon in [founder, joiner] { daemon.signal(SIGTERM) }
    for daemon in [founder, joiner] {
        #expect(daemon.finish(timeout: 20) == 0, "did not exit cleanly on SIGTERM: \(daemon.stderrTail)")
    }
}

@Test func statusCommandFailsClearlyWithoutAStatusPort() throws {
    let port = try closedPort()
    let closed = try runPeernode(["status", "127.0.0.1:\(port)"], timeout: 30)
    #expect(closed.status == 1)
    #expect(closed.stderr.contains("cannot connect to 127.0.0.1:\(port)"), "\(closed.stderr)")
    #expect(closed.stdout.isEmpty)
    let bad = try runPeernode(["status", "nowhere"], timeout: 30)
    #expect(bad.status != 0 && bad.stderr.contains("HOST:PORT"), "\(bad.stderr)")

    // A port that speaks something else (a daemon's control port): no hang, exit 1.
    let daemon = try Daemon(["--min-peers", "2", "--outer-steps", "1", "--log-level", "critical"])
    defer { daemon.signal(SIGKILL) }
    let control = try #require(daemon.controlPort)
    let garbage = try runPeernode(["status", "127.0.0.1:\(control)", "--timeout", "2"], timeout: 30)
    #expect(garbage.status == 1, "\(garbage.stdout)")
    #expect(garbage.stderr.contains("127.0.0.1:\(control)"), "\(garbage.stderr)")
}

/// Malformed answers (a negative length, a chunk size that would overflow, a chunk cut short, a
/// body cut short) end `peernode status` with one error line and exit 1, never a trap.
@Test func statusCommandSurvivesMalformedAnswers() throws {
    let answers = [
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n{}",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{\"id\":",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ]
    for answer in answers {
        let server = try CannedHTTPServer(answer: Array(answer.utf8))
        defer { server.stop() }
        let result = try runPeernode(["status", "127.0.0.1:\(server.port)", "--timeout", "5"], timeout: 30)
        #expect(result.status == 1, "\(answer.debugDescription): status \(result.status) \(result.stderr)")
        #expect(result.stderr.contains("Error"), "\(answer.debugDescription): \(result.stderr)")
    }
}

/// A status port that is taken fails the start before the node founded or joined anything.
@Test func aTakenStatusPortFailsTheStartClearly() throws {
    let holder = try CannedHTTPServer(answer: [])
    defer { holder.stop() }
    let result = try runPeernode(["run", "--status-port", "\(holder.port)", "--outer-steps", "1"],
                                 environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"], timeout: 60)
    #expect(result.status != 0)
    #expect(result.stderr.contains("cannot start the status port"), "\(result.stderr)")
    #expect(!result.stdout.contains("ready "), "\(result.stdout)")
}

/// `--no-status` (or `"status": false` in a config) opens no HTTP listener: the ready line says
/// so and the node trains as usual; a non-boolean value is refused with the key named.
@Test func noStatusMeansNoHTTPListener() throws {
    let args = ["--min-peers", "1", "--outer-steps", "2", "--inner-steps", "2", "--log-level", "warning"]
    let flag = try Daemon(args + ["--no-status"])
    defer { flag.signal(SIGKILL) }
    #expect(flag.readyField("status_port") == "off", "\(flag.stderrTail)")
    #expect(flag.finish(timeout: 60) == 0, "\(flag.stderrTail)")

    let dir = NSTemporaryDirectory() + "peernode-nostatus-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Data(#"{"status": false}"#.utf8).write(to: URL(fileURLWithPath: dir + "/off.json"))
    let config = try Daemon(args + ["--config", dir + "/off.json"])
    defer { config.signal(SIGKILL) }
    #expect(config.readyField("status_port") == "off", "\(config.stderrTail)")
    #expect(config.finish(timeout: 60) == 0, "\(config.stderrTail)")

    try Data(#"{"status": "no"}"#.utf8).write(to: URL(fileURLWithPath: dir + "/bad.json"))
    let bad = try runPeernode(["run", "--config", dir + "/bad.json"],
                              environment: ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"])
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("\"status\" must be true or false"), "\(bad.stderr)")
}
