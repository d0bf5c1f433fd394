import Collectives
import Foundation
import InMemoryLogging
import Logging
import PeerTestSupport
import Testing
import Transport
#if canImport(Glibc)
import Glibc
#endif

private func logger(_ handler: InMemoryLogHandler) -> Logger {
    Logger(label: "test", factory: { _ in handler })
}

@Test func dataPortRefusesAWrongKey() async throws {
    let logs = InMemoryLogHandler()
    let peer = Communicator(localId: 1, key: testKey, logger: logger(logs))
    let port = try await peer.listen(host: "127.0.0.1", port: 0)
    let wrong = try ClusterKey(string: "not the cluster key at all, sorry")
    #expect(throws: HandshakeError.self) {
        _ = try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: 2, key: wrong, purpose: .ring,
                                    info: [0, 0, 0, 0, 0, 0, 0, 1], timeout: 30)
    }
    for _ in 0..<2000 where !logs.entries.contains(where: { $0.level == .error }) {
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(logs.entries.contains { "\($0.message)".contains("handshake failed") })
    await peer.shutdown()
}

/// Garbage on the data port: closed at once with a log line; on plaintext links the frame
/// layer names it (bad magic), on TLS links OpenSSL does (here: an HTTP request).
@Test(arguments: [true, false]) func dataPortClosesOnGarbage(tls: Bool) async throws {
    let logs = InMemoryLogHandler()
    let peer = Communicator(localId: 1, key: tls ? testKey : plaintextTestKey, logger: logger(logs))
    let port = try await peer.listen(host: "127.0.0.1", port: 0)
    let socket = try BlockingSocket.connect(host: "127.0.0.1", port: port, timeout: 30)
    socket.setTimeouts(5)
    let garbage = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + [UInt8](repeating: 0xFF, count: 64)
    try garbage.withUnsafeBytes { try socket.send([$0]) }
    var byte: UInt8 = 0
    // The peer hangs up (EOF or reset) instead of waiting for more.
    #expect(throws: BlockingSocket.IOError.self) {
        for _ in 0..<1024 { try socket.receive(into: &byte, count: 1) }
    }
    for _ in 0..<2000 where !logs.entries.contains(where: { $0.level == .error }) {
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(logs.entries.contains { "\($0.message)".contains(tls ? "http request" : "bad magic") }, "\(logs.entries.map { "\($0.message)" })")
    await peer.shutdown()
}

/// A hand-made left neighbour that completes the ring with `peer` (`streams` links each way),
/// then sends `frame` on link `sendOn`.
private func ringWithFakeNeighbour(sending frame: [UInt8], streams: Int = 1, sendOn: Int = 0) async throws -> CollectiveError? {
    var log = Logger(label: "test")
    log.logLevel = .critical
    var options = CommunicatorOptions()
    options.streams = streams
    let peer = Communicator(localId: 1, key: testKey, options: options, logger: log)
    let port = try await peer.listen(host: "127.0.0.1", port: 0)
    // The fake's own data port, which `peer` dials as its right neighbour.
    let accepted = AcceptedBox()
    let fake = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey, logger: log) { socket, _ in
        accepted.set(socket)
    }
    let view = RingView(epoch: 1, members: [PeerEndpoint(id: 1, host: "127.0.0.1", port: port),
                                            PeerEndpoint(id: 2, host: "127.0.0.1", port: fake.port)])
    async let formed: Void = peer.connect(view: view)
    var links: [any SocketLink] = []
    for stream in 0..<streams {
        let info: [UInt8] = streams == 1 ? [0, 0, 0, 0, 0, 0, 0, 1] : [0, 0, 0, 0, 0, 0, 0, 1, UInt8(stream), UInt8(streams)]
        links.append(try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: 2, key: testKey, purpose: .ring,
                                             info: info, timeout: 30).0)
    }
    try await formed
    try frame.withUnsafeBytes { try links[sendOn].send([$0]) }
    var values = [Float](repeating: 1, count: 1000)
    defer { fake.stop() }
    do {
        try await peer.allReduce(&values, options: AllReduceOptions(tag: 7, timeout: .seconds(10)))
        await peer.shutdown()
        return nil
    } catch let error as CollectiveError {
        #expect(values == [Float](repeating: 1, count: 1000), "the input must be left as it was")
        await peer.shutdown()
        return error
    }
}

/// The bad frame may break the ring before or after the local call starts: either way the
/// call fails, and the reason is the protocol violation.
private func isProtocolViolation(_ error: CollectiveError?) -> Bool {
    guard let error else { return false }
    return error.code == .protocolViolation || (error.code == .notConnected && error.message.contains("left neighbour"))
}

private final class AcceptedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var socket: (any SocketLink)?
    func set(_ s: any SocketLink) { lock.withLock { socket = s } }
}

@Test func aFrameThatDoesNotFitThePlanBreaksTheRingCleanly() async throws {
    // Segment 5 of step 0 first: out of order.
    let header = FrameHeader(type: .data, length: 4, tag: 7, aux: 5).bytes
    let error = try await ringWithFakeNeighbour(sending: header + [0, 0, 0, 0])
    #expect(isProtocolViolation(error), "\(String(describing: error))")
}

@Test func anAbsurdLengthIsRefusedWithoutAllocating() async throws {
    var header = FrameHeader(type: .data, length: 0, tag: 7, aux: 0).bytes
    header.replaceSubrange(8..<12, with: [0xFF, 0xFF, 0xFF, 0xF0])
    let error = try await ringWithFakeNeighbour(sending: header)
    #expect(isProtocolViolation(error), "\(String(describing: error))")
}

@Test func garbageOnARingLinkBreaksTheRingCleanly() async throws {
    let error = try await ringWithFakeNeighbour(sending: [UInt8](repeating: 0xAB, count: 100))
    #expect(isProtocolViolation(error), "\(String(describing: error))")
}

/// With two streams, segment 1 belongs on stream 1: sent on stream 0 it would share stream 1's
/// receive buffers with that stream's thread, so the ring breaks instead.
@Test func aSegmentOnTheWrongStreamBreaksTheRing() async throws {
    let header = FrameHeader(type: .data, length: 4, tag: 7, aux: 1).bytes
    let error = try await ringWithFakeNeighbour(sending: header + [0, 0, 0, 0], streams: 2, sendOn: 0)
    #expect(isProtocolViolation(error), "\(String(describing: error))")
    #expect(error?.message.contains("arrived on stream 0 of 2") == true, "\(String(describing: error))")
}

// MARK: - Hostile input on the data port (issue 12)

/// Server-side sockets of loopback TCP port `port` in `state` ("01" established, "08" close-wait),
/// from /proc/net/tcp: what this process still holds open, whoever else runs tests meanwhile.
private func serverSockets(port: Int, state: String) -> Int {
    // (Read to the end: procfs reports no size, and a one-page read would miss sockets.)
    guard let file = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return -1 }
    defer { try? file.close() }
    let table = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
    let local = String(format: ":%04X", port)
    return table.split(separator: "\n").dropFirst().filter { line in
        let fields = line.split(separator: " ")
        return fields.count > 3 && fields[1].hasSuffix(local) && fields[3] == state
    }.count
}

private func ringInfo(epoch: UInt64) -> [UInt8] { withUnsafeBytes(of: epoch.bigEndian) { Array($0) } }

/// Closed by the other end (EOF, reset, or a reject frame followed by EOF)?
private func isClosedByPeer(_ link: any SocketLink) -> Bool {
    var entry = pollfd(fd: link.socket.fd, events: Int16(0x2000 /* POLLRDHUP */), revents: 0)
    return poll(&entry, 1, 0) > 0 && entry.revents & (Int16(0x2000) | Int16(POLLHUP) | Int16(POLLERR)) != 0
}

private final class Closings: @unchecked Sendable {
    let lock = NSLock()
    var at: [Int: Double] = [:]
}

/// Strangers trickling a handshake a byte every 0.5 s are closed at the handshake deadline (2 s
/// here), not kept while bytes keep coming; beyond the cap per source address (8) they are
/// closed at accept. Meanwhile the formed ring all-reduces without a failure, and afterwards a
/// real handshake gets in at once.
@Test func slowHandshakesAreClosedAtTheDeadlineWhileTheRingAllReduces() async throws {
    var options = CommunicatorOptions()
    options.transport.handshakeTimeout = .seconds(2)
    options.transport.maxPendingHandshakesPerAddress = 8
    let logs = InMemoryLogHandler()
    let peers = [Communicator(localId: 0xA000, key: testKey, options: options, logger: logger(logs)),
                 Communicator(localId: 0xA001, key: testKey, options: options, logger: Logger(label: "quiet"))]
    var members: [PeerEndpoint] = []
    for peer in peers {
        members.append(PeerEndpoint(id: peer.localId, host: "127.0.0.1", port: try await peer.listen(host: "127.0.0.1", port: 0)))
    }
    let view = RingView(epoch: 1, members: members)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for peer in peers { group.addTask { try await peer.connect(view: view) } }
        try await group.waitForAll()
    }
    let port = members[0].port
    let clients = try (0..<12).map { _ in try BlockingSocket.connect(host: "127.0.0.1", port: port, timeout: 10) }
    let closings = Closings()
    let started = Date()
    // The tricklers: the first bytes of a TLS ClientHello record (the data port runs TLS), one
    // per client every 0.5 s, for 8 s.
    let trickle = Task.detached {
        let header: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + [UInt8](repeating: 7, count: 32)
        for round in 0..<16 {
            for (i, client) in clients.enumerated() where closings.lock.withLock({ closings.at[i] == nil }) {
                if isClosedByPeer(client) {
                    closings.lock.withLock { closings.at[i] = Date().timeIntervalSince(started) }
                    continue
                }
                var byte = header[round % header.count]
                _ = send(client.fd, &byte, 1, Int32(MSG_NOSIGNAL))
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
    var reduced = 0
    while Date().timeIntervalSince(started) < 8 {
        let tag = UInt64(reduced + 1)
        let results = try await onEveryPeer(peers) { rank, peer in
            var values = [Float](repeating: Float(rank + 1), count: 10_000)
            try await peer.allReduce(&values, options: AllReduceOptions(tag: tag, timeout: .seconds(30)))
            return values[0]
        }
        #expect(results == [3, 3])
        reduced += 1
    }
    await trickle.value
    let closedAt = closings.lock.withLock { closings.at }
    #expect(reduced >= 3, "only \(reduced) all-reduces in 8 s")
    #expect(closedAt.values.filter { $0 < 1.8 }.count == 4, "closed at accept: \(closedAt.values.sorted())")
    #expect(closedAt.count == 12, "still open after 8 s of trickling: \(12 - closedAt.count) (closed at \(closedAt.values.sorted()))")
    #expect(closedAt.values.allSatisfy { $0 < 6 }, "\(closedAt.values.sorted())")
    #expect(logs.entries.contains { "\($0.message)".contains("refused a connection from 127.0.0.1") })
    #expect(logs.entries.contains { "\($0.message)".contains("handshake failed with 127.0.0.1") })
    // The port is free again for a real handshake.
    let (socket, result) = try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: 0xA009, key: testKey,
                                                   purpose: .stateTransfer, info: [], timeout: 10)
    #expect(result.remoteId == 0xA000)
    socket.close()
    for client in clients { client.close() }
    for peer in peers { await peer.shutdown() }
}

/// Authenticated ring links parked for a ring to come are released as soon as their dialer
/// closes them, not at the next view change; and one dialer parks at most two rings' worth.
@Test func ringLinksClosedByTheirDialerAreReleasedAtOnce() async throws {
    let peer = Communicator(localId: 1, key: testKey, logger: Logger(label: "quiet"))
    let port = try await peer.listen(host: "127.0.0.1", port: 0)
    var links: [any SocketLink] = []
    for i in 0..<20 {
        links.append(try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: UInt64(100 + i), key: testKey,
                                             purpose: .ring, info: ringInfo(epoch: UInt64(10 + i)), timeout: 30).0)
    }
    let deadline = Date().addingTimeInterval(20)
    while serverSockets(port: port, state: "01") < 20, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
    for link in links { link.close() }
    var waiting = serverSockets(port: port, state: "08")
    while waiting > 0, Date() < deadline {
        try await Task.sleep(for: .milliseconds(20))
        waiting = serverSockets(port: port, state: "08")
    }
    #expect(waiting == 0, "\(waiting) ring links the dialers closed are still open")

    // Five epochs' links from one dialer: only the newest two stay parked.
    let same = try (1...5).map {
        try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: 500, key: testKey, purpose: .ring,
                                info: ringInfo(epoch: UInt64($0)), timeout: 30).0
    }
    var closed: [Bool] = []
    while Date() < deadline {
        closed = same.map(isClosedByPeer)
        if closed == [true, true, true, false, false] { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    #expect(closed == [true, true, true, false, false])
    for link in same { link.close() }
    await peer.shutdown()
}
