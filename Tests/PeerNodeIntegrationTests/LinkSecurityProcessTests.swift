import Foundation
import PeerTestSupport
import Testing

// Link security between real `peernode run` processes: TLS keyed by the cluster key is the
// default (every other process test runs on it), certificates by option, and a plaintext node
// meeting a TLS one is refused with a line on each side (docs/operations.md "Link security").

/// Polls `daemon`'s stderr for `text`, up to `timeout` seconds.
private func stderrContains(_ daemon: Daemon, _ text: String, timeout: Double) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if daemon.stderrText.contains(text) { return true }
        Thread.sleep(forTimeInterval: 0.1)
    }
    return false
}

@Test func processesWithCertificatesTrainTogetherOverMutualTLS() throws {
    let certificates = try TestCertificates()
    func args(_ name: String, _ index: Int) -> [String] {
        let f = certificates.files(name)
        return ["--min-peers", "2", "--outer-steps", "3", "--inner-steps", "4", "--shard-count", "2", "--shard-index", "\(index)",
                "--log-level", "warning", "--tls-cert", f.certificate, "--tls-key", f.key, "--tls-ca", f.authority]
    }
    let first = try Daemon(args("a", 0))
    defer { first.signal(SIGKILL) }
    let port = try #require(first.controlPort)
    let second = try Daemon(args("b", 1) + ["--seed", "127.0.0.1:\(port)"])
    defer { second.signal(SIGKILL) }
    for daemon in [first, second] {
        let ready = try #require(daemon.waitFor("ready ", timeout: 60))
        #expect(ready.contains("tls=certificate"), "\(ready)")
    }
    for daemon in [first, second] { #expect(daemon.finish(timeout: 180) == 0, "\(daemon.stderrTail)") }
    #expect(first.digests[3] != nil && first.digests[3] == second.digests[3])
}

@Test func aPlaintextNodeAndATLSNodeRefuseEachOtherWithALineOnEachSide() throws {
    let founder = try Daemon(["--min-peers", "2", "--outer-steps", "1", "--log-level", "info"])
    defer { founder.signal(SIGKILL) }
    let port = try #require(founder.controlPort)
    let ready = try #require(founder.waitFor("ready ", timeout: 60))
    #expect(ready.contains("tls=psk"), "\(ready)")
    let joiner = try Daemon(["--plaintext", "--seed", "127.0.0.1:\(port)", "--log-level", "info"])
    defer { joiner.signal(SIGKILL) }
    #expect(stderrContains(joiner, "this node requires TLS", timeout: 30), "\(joiner.stderrTail)")
    #expect(stderrContains(founder, "the peer spoke plaintext", timeout: 30), "\(founder.stderrTail)")
    #expect(joiner.waitFor("ready ", timeout: 0) == nil, "a plaintext node was admitted to a TLS cluster")
}
