import InMemoryLogging
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import Transport

/// Collects what a connection delivers, for assertions.
final class Recorder: ConnectionDelegate, @unchecked Sendable {
    private let lock = NIOLock()
    private var _frames: [(FrameHeader, [UInt8])] = []
    private var _closed = false
    private var waiters: [(Int, CheckedContinuation<Void, Never>)] = []

    var frames: [(FrameHeader, [UInt8])] { lock.withLock { _frames } }
    var closed: Bool { lock.withLock { _closed } }

    func connection(_ connection: Connection, received event: FrameEvent) {
        lock.withLock {
            switch event {
            case .frame(let h, let p): _frames.append((h, Array(p.readableBytesView)))
            case .dataFragment(let h, let offset, let bytes):
                if offset == 0 { _frames.append((h, [])) }
                _frames[_frames.count - 1].1 += Array(bytes.readableBytesView)
            }
            let ready = waiters.filter { $0.0 <= _frames.count && _frames.last!.1.count == Int(_frames.last!.0.length) }
            waiters.removeAll { $0.0 <= _frames.count && _frames.last!.1.count == Int(_frames.last!.0.length) }
            for w in ready { w.1.resume() }
        }
    }
    func connectionWritabilityChanged(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, error: (any Error)?) { lock.withLock { _closed = true } }

    func waitForFrames(_ n: Int) async {
        await withCheckedContinuation { c in
            lock.withLock {
                if _frames.count >= n, _frames.last!.1.count == Int(_frames.last!.0.length) { c.resume() } else { waiters.append((n, c)) }
            }
        }
    }
}

private func node(_ id: UInt64, key: String, group: any EventLoopGroup, logs: InMemoryLogHandler? = nil,
                  plaintext: Bool = false) throws -> TransportNode {
    var logger = Logger(label: "test")
    if let logs { logger = Logger(label: "test", factory: { _ in logs }) }
    // A generous handshake timeout: a loaded CI machine must not turn these tests into timeout tests.
    var options = TransportOptions()
    options.handshakeTimeout = .seconds(60)
    let clusterKey = try ClusterKey(string: key)
    return TransportNode(localId: id, key: plaintext ? clusterKey.with(security: .plaintext) : clusterKey, group: group,
                         options: options, logger: logger)
}

@Test func sameKeyConnectsAndCarriesFrames() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try node(1, key: "correct horse battery staple", group: group)
    let client = try node(2, key: "correct horse battery staple", group: group)
    let received = Recorder()
    let accepted = NIOLockedValueBox<[UInt64]>([])
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { connection in
        accepted.withLockedValue { $0.append(connection.remoteId) }
        return received
    }
    #expect(listener.port > 0)
    let connection = try await client.dial(host: "127.0.0.1", port: listener.port, purpose: .ring, info: [1, 2],
                                           delegate: Recorder())
    #expect(connection.remoteId == 1)
    try await connection.send(.control, tag: 9, bytes: [1, 2, 3]).get()
    var payload = ByteBuffer()
    payload.writeBytes((0..<300_000).map { UInt8($0 & 0xFF) })
    try await connection.send(FrameHeader(type: .data, length: UInt32(payload.readableBytes), tag: 4, aux: 5),
                              [payload.getSlice(at: 0, length: 100_000)!, payload.getSlice(at: 100_000, length: 200_000)!]).get()
    await received.waitForFrames(2)
    #expect(accepted.withLockedValue { $0 } == [2])
    #expect(received.frames.map(\.0.tag) == [9, 4])
    #expect(received.frames[0].1 == [1, 2, 3])
    #expect(received.frames[1].1 == (0..<300_000).map { UInt8($0 & 0xFF) })
    connection.close()
    await listener.close()
    try await group.shutdownGracefully()
}

@Test func wrongKeyIsRefusedOnBothSidesWithAClearLogLine() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let serverLogs = InMemoryLogHandler()
    let clientLogs = InMemoryLogHandler()
    let server = try node(1, key: "the right key for this cluster", group: group, logs: serverLogs)
    let client = try node(2, key: "a wrong key for this cluster!!", group: group, logs: clientLogs)
    let wanted = NIOLockedValueBox(false)
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { _ in
        wanted.withLockedValue { $0 = true }
        return Recorder()
    }
    do {
        _ = try await client.dial(host: "127.0.0.1", port: listener.port, purpose: .ring, delegate: Recorder())
        Issue.record("a wrong key was accepted")
    } catch let error as HandshakeError {
        #expect(error.code == .badKey, "\(error)")
    }
    #expect(!wanted.withLockedValue { $0 })
    #expect(clientLogs.entries.contains { $0.level == .error && "\($0.message)".contains("cluster key") })
    // The server learns about it when the client gives up: wait for its log line.
    for _ in 0..<2000 where !serverLogs.entries.contains(where: { $0.level == .error }) {
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(serverLogs.entries.contains { $0.level == .error && "\($0.message)".contains("handshake failed") }, "\(serverLogs.entries.map { "\($0.message)" })")
    await listener.close()
    try await group.shutdownGracefully()
}

@Test func impostorWithoutKeyGetsNoMacOutOfTheServerBeyondTheChallenge() throws {
    // The dialer checks the acceptor's proof before answering: a wrong proof ends the handshake.
    var dialer = HandshakeStateMachine(role: .dialer(.ring, info: []), localId: 2, key: try ClusterKey(string: "key number one, long enough"))
    _ = dialer.start()
    var forged = ByteBuffer()
    forged.writeInteger(UInt64(1))
    forged.writeBytes([UInt8](repeating: 7, count: 64))
    let step = dialer.receive(.challenge, forged)
    guard case .failed(let error)? = step.outcome else { Issue.record("forged challenge accepted"); return }
    #expect(error.code == .badKey)
    #expect(step.send?.0 == .reject)
}

@Test func wrongVersionIsRefusedWithAClearMessage() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let logs = InMemoryLogHandler()
    let server = try node(1, key: "correct horse battery staple", group: group, logs: logs, plaintext: true)
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { _ in Recorder() }
    // A raw client speaking a future version (in plaintext: the frame layer is what is tested).
    let raw = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: listener.port).get()
    var hello = raw.allocator.buffer(capacity: 64)
    FrameHeader(type: .hello, length: 0).write(to: &hello)
    hello.setInteger(UInt8(99), at: 4)
    try? await raw.writeAndFlush(hello)
    try await raw.closeFuture.get()   // the server closes on us
    for _ in 0..<2000 where !logs.entries.contains(where: { $0.level == .error }) {
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(logs.entries.contains { "\($0.message)".contains("version mismatch") })
    await listener.close()
    try await group.shutdownGracefully()
}

@Test func keyLoading() throws {
    #expect(throws: ClusterKey.LoadError.self) { try ClusterKey(string: "short") }
    #expect(throws: ClusterKey.LoadError.self) { try ClusterKey.load(file: nil, environment: [:]) }
    #expect(throws: ClusterKey.LoadError.self) { try ClusterKey.load(file: "/nonexistent/key", environment: [:]) }
    let k = try ClusterKey.load(file: nil, environment: [ClusterKey.environmentVariable: "  0123456789abcdef\n"])
    #expect(k.bytes == Array("0123456789abcdef".utf8))
}
