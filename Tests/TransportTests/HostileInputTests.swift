import Foundation
import InMemoryLogging
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PeerTestSupport
import Testing
@testable import Transport

#if canImport(Glibc)
import Glibc
#endif

/// A loopback listener that answers every connection's first frame with `reply` (raw bytes),
/// then keeps it open until `stop()`: a peer that says whatever it likes.
private final class RawReplier: @unchecked Sendable {
    let fd: Int32
    let port: Int
    private let reply: [UInt8]
    private let lock = NSLock()
    private var accepted: [Int32] = []

    init(reply: [UInt8]) throws {
        self.reply = reply
        let listening = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, length) }
        }
        listen(listening, 8)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listening, $0, &length) }
        }
        fd = listening
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            lock.withLock { accepted.append(client) }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var header = [UInt8](repeating: 0, count: FrameHeader.size)
            _ = recv(client, &header, header.count, Int32(MSG_WAITALL))
            let length = Int(header[8]) << 24 | Int(header[9]) << 16 | Int(header[10]) << 8 | Int(header[11])
            var payload = [UInt8](repeating: 0, count: max(length, 1))
            if length > 0 { _ = recv(client, &payload, length, Int32(MSG_WAITALL)) }
            _ = reply.withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    func stop() {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        for client in lock.withLock({ accepted }) { close(client) }
    }
}

private let hostileReason = "bye\n2026-12-03T00:00:00 critical: forged line \u{1B}[31mred\u{1B}[0m\r\u{7}"

private func rejectFrame(_ reason: String) -> [UInt8] {
    let text = Array(reason.utf8)
    var buffer = ByteBuffer()
    FrameHeader(type: .reject, length: UInt32(1 + text.count)).write(to: &buffer)
    buffer.writeInteger(HandshakeError.Code.refused.rawValue)
    buffer.writeBytes(text)
    return Array(buffer.readableBytesView)
}

private func isEscaped(_ text: String) -> Bool {
    !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F } && text.contains("\\n") && text.contains("\\u{1B}")
}

@Test func escapedForLogLeavesNoControlCharacterAndBoundsTheLength() {
    #expect(escapedForLog("plain text") == "plain text")
    #expect(escapedForLog("a\nb\\c\u{1B}[0m") == "a\\nb\\\\c\\u{1B}[0m")
    #expect(escapedForLog("\u{202E}evil") == "\\u{202E}evil")
    #expect(escapedForLog(String(repeating: "x", count: 1000), limit: 10) == String(repeating: "x", count: 10) + "…")
}

@Test func aRejectReasonWithNewlinesAndEscapesIsLoggedEscaped() async throws {
    let replier = try RawReplier(reply: rejectFrame(hostileReason))
    defer { replier.stop() }
    // The control side (NIO): the error and the log line carry the reason escaped.
    let logs = InMemoryLogHandler()
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let node = TransportNode(localId: 2, key: plaintextTestKey, group: group, logger: Logger(label: "test", factory: { _ in logs }))
    do {
        _ = try await node.dial(host: "127.0.0.1", port: replier.port, purpose: .control, delegate: Recorder())
        Issue.record("a rejected handshake succeeded")
    } catch let error as HandshakeError {
        #expect(isEscaped(error.message), "\(error.message)")
    }
    let lines = logs.entries.map { "\($0.message)" }
    #expect(lines.contains { $0.contains("forged line") }, "\(lines)")
    for line in lines { #expect(!line.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "\(line)") }
    try await group.shutdownGracefully()

    // The data side (blocking sockets): the same.
    do {
        _ = try BlockingSocket.dial(host: "127.0.0.1", port: replier.port, localId: 2, key: plaintextTestKey, purpose: .ring,
                                    info: [], timeout: 30)
        Issue.record("a rejected handshake succeeded")
    } catch let error as HandshakeError {
        #expect(isEscaped(error.message), "\(error.message)")
    }
}

/// Connections that have not finished the handshake are capped per source address (and per
/// port): the excess is closed at accept, while authenticated connections are not counted.
@Test func theControlPortCapsUnfinishedHandshakes() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var options = TransportOptions()
    options.handshakeTimeout = .seconds(60)
    options.maxPendingHandshakes = 8
    options.maxPendingHandshakesPerAddress = 3
    let logs = InMemoryLogHandler()
    let server = TransportNode(localId: 1, key: testKey, group: group, options: options,
                               logger: Logger(label: "test", factory: { _ in logs }))
    let listener = try await server.listen(host: "127.0.0.1", port: 0) { _ in Recorder() }
    // Silent connections: they never send a hello.
    let silent = try (0..<6).map { _ in try BlockingSocket.connect(host: "127.0.0.1", port: listener.port, timeout: 10) }
    var refused = 0
    for socket in silent {
        var byte: UInt8 = 0
        do {
            try socket.receive(into: &byte, count: 1, deadline: .now + .seconds(2))
        } catch let error as BlockingSocket.IOError where error.errno != ETIMEDOUT {
            refused += 1  // closed by the server
        } catch {}
    }
    #expect(refused == 3, "\(refused) of 6 silent connections from one address closed at accept")
    #expect(listener.admission.count == 3)
    #expect(logs.entries.contains { "\($0.message)".contains("refused a connection from 127.0.0.1") })
    // A real peer still gets in once the slots are free again.
    for socket in silent { socket.close() }
    let client = TransportNode(localId: 2, key: testKey, group: group, options: options, logger: Logger(label: "test"))
    let deadline = ContinuousClock.now + .seconds(20)
    var connection: Connection?
    while connection == nil, ContinuousClock.now < deadline {
        connection = try? await client.dial(host: "127.0.0.1", port: listener.port, purpose: .control, delegate: Recorder())
        if connection == nil { try await Task.sleep(for: .milliseconds(50)) }
    }
    #expect(connection != nil)
    #expect(listener.admission.count == 0)
    connection?.close()
    await listener.close()
    try await group.shutdownGracefully()
}

@Test func aLogRateLimiterLetsABurstThroughAndCountsTheRest() {
    let limiter = LogRateLimiter(burst: 3, interval: .seconds(10))
    let t0 = ContinuousClock.now
    #expect((0..<3).map { _ in limiter.admit(now: t0) } == [0, 0, 0])
    #expect((0..<5).map { _ in limiter.admit(now: t0 + .seconds(1)) }.allSatisfy { $0 == nil })
    #expect(limiter.admit(now: t0 + .seconds(11)) == 5)
}
