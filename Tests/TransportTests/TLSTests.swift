import Foundation
import InMemoryLogging
import Logging
import NIOCore
import NIOPosix
import PeerTestSupport
import Testing
@testable import Transport

// Link security on both ports: a plaintext peer meeting a TLS peer, and mutual TLS with
// certificates (a CA's, a foreign CA's, an expired one, an id that is not the certificate's).
// Each refusal is one clear line on both sides (docs/operations.md "Link security").

private let quiet = Logger(label: "quiet")

/// The message of the error `body` throws, or nil if it succeeds.
private func failure(_ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return nil
    } catch {
        return "\(error)"
    }
}

/// Waits up to 10 s for a log line containing `text`.
private func logged(_ logs: InMemoryLogHandler, _ text: String) async -> Bool {
    for _ in 0..<1000 {
        if logs.entries.contains(where: { "\($0.message)".contains(text) }) { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// The dialer's error and the listener's log line each name the cause of a plaintext/TLS mismatch.
private func expectMismatchLines(listenerTLS: Bool, dialer message: String?, listener logs: InMemoryLogHandler) async {
    if listenerTLS {
        #expect(message?.contains("this node requires TLS") == true, "\(message ?? "accepted")")
        #expect(await logged(logs, "the peer spoke plaintext"))
    } else {
        #expect(message?.contains("the peer answered in plaintext") == true, "\(message ?? "accepted")")
        #expect(await logged(logs, "the peer speaks TLS and this node runs with --plaintext"))
    }
}

@Test(arguments: [true, false]) func plaintextAgainstTLSIsRefusedOnTheDataPortWithAClearLineOnBothSides(listenerTLS: Bool) async throws {
    let logs = InMemoryLogHandler()
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 1, key: listenerTLS ? testKey : plaintextTestKey,
                                    handshakeTimeout: 10, logger: Logger(label: "t", factory: { _ in logs })) { link, _ in link.close() }
    defer { listener.stop() }
    let message = await failure {
        _ = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 2, key: listenerTLS ? plaintextTestKey : testKey,
                                    purpose: .ring, info: [], timeout: 10)
    }
    await expectMismatchLines(listenerTLS: listenerTLS, dialer: message, listener: logs)
}

@Test(arguments: [true, false]) func plaintextAgainstTLSIsRefusedOnTheControlPortWithAClearLineOnBothSides(listenerTLS: Bool) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let logs = InMemoryLogHandler()
    let server = TransportNode(localId: 1, key: listenerTLS ? testKey : plaintextTestKey, group: group,
                               logger: Logger(label: "t", factory: { _ in logs }))
    let client = TransportNode(localId: 2, key: listenerTLS ? plaintextTestKey : testKey, group: group, logger: quiet)
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { _ in Recorder() }
    let message = await failure { _ = try await client.dial(host: "127.0.0.1", port: listener.port, purpose: .control, delegate: Recorder()) }
    await expectMismatchLines(listenerTLS: listenerTLS, dialer: message, listener: logs)
    await listener.close()
    try await group.shutdownGracefully()
}

private func dial(_ context: TLSContext, id: UInt64? = nil, to listener: DataListener) async -> String? {
    await failure {
        let key = testKey.with(security: .tls(context))
        let (link, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: id ?? context.nodeId(random: 7),
                                                key: key, purpose: .ring, info: [], timeout: 10)
        link.close()
    }
}

@Test func certificatesOfOneCAConnectAndOthersAreRefusedWithAClearLineOnBothSides() async throws {
    let certificates = try TestCertificates()
    let a = try certificates.context("a")
    let logs = InMemoryLogHandler()
    let accepted = Box()
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: a.nodeId(random: 1), key: testKey.with(security: .tls(a)),
                                    logger: Logger(label: "t", factory: { _ in logs })) { link, result in
        accepted.add(result.remoteId)
        link.close()
    }
    defer { listener.stop() }
    let b = try certificates.context("b")
    #expect(a.identityPrefix != b.identityPrefix)
    #expect(await dial(b, to: listener) == nil)
    for _ in 0..<1000 where accepted.ids.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
    #expect(accepted.ids == [b.nodeId(random: 7)])

    let stranger = await dial(try certificates.context("stranger", ca: "foreign-ca"), to: listener)
    #expect(stranger?.contains("certificate") == true, "\(stranger ?? "accepted")")
    // In TLS 1.3 the dialer checks first: the stranger refuses this CA's certificate, and says so.
    #expect(await logged(logs, "the peer refused this node's certificate (tlsv1 alert unknown ca)"), "\(logs.entries.map { "\($0.message)" })")

    let expired = await dial(try certificates.context("expired"), to: listener)
    #expect(expired?.contains("certificate") == true, "\(expired ?? "accepted")")
    #expect(await logged(logs, "certificate has expired"))

    // A valid certificate with a node id that is not its own.
    let impostor = await dial(b, id: 0x0123_4567_89AB_CDEF, to: listener)
    #expect(impostor != nil, "an id not matching its certificate was accepted")
    #expect(await logged(logs, "which is not its certificate's"))

    // A node with only the cluster key (PSK) against a node with certificates.
    let keyOnly = await failure {
        _ = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 9, key: testKey, purpose: .ring, info: [], timeout: 10)
    }
    #expect(keyOnly != nil, "a PSK node was accepted by a certificate node")
    #expect(keyOnly?.contains("plaintext") == false, "\(keyOnly ?? "")")
    #expect(accepted.ids.count == 1)
}

@Test func theControlPortSpeaksMutualTLSWithCertificates() async throws {
    let certificates = try TestCertificates()
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let a = try certificates.context("a"), b = try certificates.context("b")
    let server = TransportNode(localId: a.nodeId(random: 1), key: testKey.with(security: .tls(a)), group: group, logger: quiet)
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { _ in Recorder() }
    let client = TransportNode(localId: b.nodeId(random: 2), key: testKey.with(security: .tls(b)), group: group, logger: quiet)
    let connection = try await client.dial(host: "127.0.0.1", port: listener.port, purpose: .control, delegate: Recorder())
    #expect(connection.remoteId == a.nodeId(random: 1))
    connection.close()
    let foreign = try certificates.context("stranger", ca: "foreign-ca")
    let stranger = TransportNode(localId: foreign.nodeId(random: 3), key: testKey.with(security: .tls(foreign)), group: group, logger: quiet)
    let refused = await failure { _ = try await stranger.dial(host: "127.0.0.1", port: listener.port, purpose: .control, delegate: Recorder()) }
    #expect(refused?.contains("certificate") == true, "\(refused ?? "accepted")")
    await listener.close()
    try await group.shutdownGracefully()
}

@Test func unreadableOrMismatchedCertificateFilesAreOneLineErrors() throws {
    let certificates = try TestCertificates()
    let d = certificates.dir
    #expect(throws: TLSSetupError.self) { try TLSContext(certificate: "\(d)/missing.pem", privateKey: "\(d)/a.key", authority: "\(d)/ca.pem") }
    do {
        _ = try TLSContext(certificate: "\(d)/a.pem", privateKey: "\(d)/b.key", authority: "\(d)/ca.pem")
        Issue.record("a key of another certificate was taken")
    } catch let error as TLSSetupError {
        #expect(error.description.contains("does not belong to --tls-cert"))
    }
}

private final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var _ids: [UInt64] = []
    var ids: [UInt64] { lock.withLock { _ids } }
    func add(_ id: UInt64) { lock.withLock { _ids.append(id) } }
}

/// The refusal figure of docs/benchmarks.md "TLS": many attempts with a wrong key, a foreign
/// CA's certificate and an expired one, on the data port and the control port; every one refused
/// and none handed on. Prints `refused=R tried=T` per kind.
@Test func everyWrongKeyOrCertificateAttemptIsRefused() async throws {
    let attempts = 25
    let certificates = try TestCertificates()
    let a = try certificates.context("a")
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let handedOn = Box()
    var report: [String] = []
    for (kind, listenerKey, dialerKey) in [
        ("wrong-key", testKey, try ClusterKey(string: "another cluster's key, 0123456789")),
        ("foreign-ca", testKey.with(security: .tls(a)), testKey.with(security: .tls(try certificates.context("stranger", ca: "foreign-ca")))),
        ("expired", testKey.with(security: .tls(a)), testKey.with(security: .tls(try certificates.context("expired")))),
    ] {
        let data = try DataListener(host: "127.0.0.1", port: 0, localId: a.nodeId(random: 1), key: listenerKey, logger: quiet) { link, result in
            handedOn.add(result.remoteId)
            link.close()
        }
        let control = try await TransportNode(localId: a.nodeId(random: 1), key: listenerKey, group: group, logger: quiet)
            .listen(host: "127.0.0.1", port: 0) { connection in
                handedOn.add(connection.remoteId)
                return Recorder()
            }
        let dialer = TransportNode(localId: 0x0BAD, key: dialerKey, group: group, logger: quiet)
        var refused = 0
        for _ in 0..<attempts {
            if await failure({ _ = try BlockingSocket.dial(host: "127.0.0.1", port: data.port, localId: 0x0BAD, key: dialerKey,
                                                          purpose: .ring, info: [], timeout: 10) }) != nil { refused += 1 }
            if await failure({ _ = try await dialer.dial(host: "127.0.0.1", port: control.port, purpose: .control, delegate: Recorder()) }) != nil {
                refused += 1
            }
        }
        data.stop()
        await control.close()
        report.append("\(kind): refused=\(refused) tried=\(2 * attempts)")
        #expect(refused == 2 * attempts, "\(kind)")
    }
    print("tls refusals: " + report.joined(separator: ", "))
    #expect(handedOn.ids.isEmpty)
    try await group.shutdownGracefully()
}
