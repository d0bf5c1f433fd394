import Foundation
import InMemoryLogging
import Logging
import NIOConcurrencyHelpers
import PeerTestSupport
import Testing
@testable import Transport

/// Writing to a link whose peer has closed must fail with an error the caller can handle
/// (EPIPE or ECONNRESET), never raise SIGPIPE: its default action would kill this whole test
/// process, as it would a daemon whose neighbour died mid all-reduce.
@Test func sendingToAClosedPeerThrowsInsteadOfRaisingSIGPIPE() throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey, logger: logger) { socket, _ in
        socket.close()
    }
    defer { listener.stop() }
    let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 1, key: testKey,
                                              purpose: .ring, info: [0, 0, 0, 0, 0, 0, 0, 1], timeout: 10)
    defer { socket.close() }
    let chunk = [UInt8](repeating: 7, count: 1 << 16)
    var failure: (any Error)?
    for _ in 0..<10_000 where failure == nil {
        do {
            try chunk.withUnsafeBytes { try socket.send([$0]) }
        } catch {
            failure = error
        }
    }
    let error = try #require(failure as? BlockingSocket.IOError, "sends kept succeeding after the peer closed")
    #expect(error.errno == EPIPE || error.errno == ECONNRESET, "\(error)")
}

/// The per-stream send-rate cap reaches the kernel (read back with getsockopt), and 0 lifts it.
@Test func aSendRateCapIsSetOnTheSocket() throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey, logger: logger) { _, _ in }
    defer { listener.stop() }
    let (link, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 1, key: testKey,
                                            purpose: .ring, info: [0, 0, 0, 0, 0, 0, 0, 1], timeout: 10)
    defer { link.close() }
    let socket = link.socket
    func current() -> UInt64 {
        var rate: UInt64 = 0
        var length = socklen_t(MemoryLayout<UInt64>.size)
        _ = getsockopt(socket.fd, SOL_SOCKET, 47 /* SO_MAX_PACING_RATE */, &rate, &length)
        return length == 4 ? rate & 0xFFFF_FFFF : rate
    }
    #expect(socket.setMaxSendRate(bytesPerSecond: 12_500_000))
    #expect(current() == 12_500_000)
    #expect(socket.setMaxSendRate(bytesPerSecond: 0))
    #expect(current() != 12_500_000)
}

/// A peer on this host gets small socket buffers (the kernel's packet buffers then stay in cache
/// between the two copies), any other the large ones (a long path needs them for its rate).
@Test func socketBuffersFollowWhereThePeerIs() throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let accepted = NIOLockedValueBox<(any SocketLink)?>(nil)
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey, logger: logger) { link, _ in
        accepted.withLockedValue { $0 = link }
    }
    defer { listener.stop() }
    let (link, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 1, key: testKey,
                                            purpose: .ring, info: [0, 0, 0, 0, 0, 0, 0, 1], timeout: 10)
    defer { link.close() }
    let socket = link.socket
    func buffer(_ fd: Int32, _ option: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, option, &value, &length)
        return value
    }
    // Linux caps a size at net.core.{w,r}mem_max, then reports twice it (the other half is its
    // bookkeeping).
    func expected(_ limit: String) -> Int32 {
        let text = (try? String(contentsOfFile: "/proc/sys/net/core/\(limit)", encoding: .utf8)) ?? ""
        let cap = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max
        return 2 * min(BlockingSocket.sameHostBufferBytes, cap)
    }
    #expect(socket.peerIsOnThisHost)
    #expect(buffer(socket.fd, SO_SNDBUF) == expected("wmem_max"))
    #expect(buffer(socket.fd, SO_RCVBUF) == expected("rmem_max"))
    let deadline = Date().addingTimeInterval(10)
    while accepted.withLockedValue({ $0 }) == nil, Date() < deadline { usleep(1000) }
    let other = try #require(accepted.withLockedValue { $0 }, "the listener never handed over the connection").socket
    #expect(other.peerIsOnThisHost && buffer(other.fd, SO_RCVBUF) == expected("rmem_max"))

    let v4 = { (a: UInt8, b: UInt8, c: UInt8, d: UInt8) in [a, b, c, d] }
    let v6 = { (tail: [UInt8]) in [UInt8](repeating: 0, count: 16 - tail.count) + tail }
    #expect(BlockingSocket.sameHost(local: v4(10, 0, 0, 5), remote: v4(10, 0, 0, 5)))
    #expect(!BlockingSocket.sameHost(local: v4(10, 0, 0, 5), remote: v4(10, 0, 0, 6)))
    #expect(BlockingSocket.sameHost(local: v4(127, 0, 0, 1), remote: v4(127, 0, 0, 2)))
    #expect(BlockingSocket.sameHost(local: v6([1]), remote: v6([1])))
    #expect(BlockingSocket.sameHost(local: v6([0xFF, 0xFF, 127, 0, 0, 1]), remote: v6([0xFF, 0xFF, 10, 0, 0, 1])))
    #expect(!BlockingSocket.sameHost(local: v6([0xFF, 0xFF, 10, 0, 0, 1]), remote: v6([0xFF, 0xFF, 10, 0, 0, 2])))
    #expect(!BlockingSocket.sameHost(local: [0x20, 0x01] + v6([1]).dropFirst(2), remote: [0x20, 0x01] + v6([2]).dropFirst(2)))
}

/// A peer that trickles (a byte now and then) must not hold a reader with a deadline past it:
/// the bound is on the whole read, not on the gap between bytes as `SO_RCVTIMEO` would be.
@Test func aReadWithADeadlineEndsOnTimeAgainstATrickle() throws {
    var fds: [Int32] = [0, 0]
    #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
    let reader = BlockingSocket(fd: fds[0])
    let writer = BlockingSocket(fd: fds[1])
    defer { reader.close() }
    let trickling = Thread {
        var byte: UInt8 = 1
        // Stops when the reader closes its end (the send fails).
        while (try? withUnsafeBytes(of: &byte) { try writer.send([$0]) }) != nil {
            Thread.sleep(forTimeInterval: 0.1)
        }
        writer.close()
    }
    trickling.start()
    var buffer = [UInt8](repeating: 0, count: 1000)
    let started = ContinuousClock.now
    let error = #expect(throws: BlockingSocket.IOError.self) {
        try buffer.withUnsafeMutableBytes { try reader.receive(into: $0.baseAddress!, count: 1000, deadline: started + .seconds(1)) }
    }
    let took = ContinuousClock.now - started
    #expect(error?.errno == ETIMEDOUT)
    #expect(took >= .seconds(1))
    #expect(took < .seconds(10), "the trickle extended the deadline: \(took)")
}

/// An `accept` that fails `failures` times with `code`, then (if `thenAccept`) accepts for real;
/// counts its calls.
private final class FailingAccept: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    let failures: Int
    let code: Int32
    init(failures: Int, code: Int32) {
        self.failures = failures
        self.code = code
    }
    var calls: Int { lock.withLock { count } }
    func call(_ fd: Int32) -> Int32 {
        let n = lock.withLock { () -> Int in count += 1; return count }
        if n <= failures {
            errno = code
            return -1
        }
        return accept(fd, nil, nil)
    }
}

/// A failing accept (here EMFILE, as when the process is out of descriptors) must not end the
/// data port's accept loop: it logs once, backs off and tries again, and connections get
/// through once the cause is gone.
@Test func theAcceptLoopOutlivesAcceptErrors() throws {
    let logs = InMemoryLogHandler()
    let failing = FailingAccept(failures: 4, code: EMFILE)  // backoffs 0.05 + 0.1 + 0.2 + 0.4 s
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey,
                                    logger: Logger(label: "test", factory: { _ in logs }),
                                    acceptCall: { failing.call($0) }) { socket, _ in socket.close() }
    defer { listener.stop() }
    let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 1, key: testKey,
                                              purpose: .stateTransfer, info: [], timeout: 30)
    socket.close()
    #expect(failing.calls >= 5)
    let messages = logs.entries.map { "\($0.message)" }
    // Four failures in well under the log interval: one line.
    #expect(messages.filter { $0.contains("data port cannot accept: Too many open files") }.count == 1, "\(messages)")
    #expect(messages.contains { $0.contains("accepting again after 4 failed accepts") }, "\(messages)")
}

/// ``DataListener/stop()`` ends an accept loop that is backing off without waiting the backoff
/// out, and returns only once the loop has ended (no `accept` on a descriptor number that may
/// already be reused).
@Test func stoppingEndsAnAcceptLoopThatBacksOff() throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let failing = FailingAccept(failures: .max, code: ENFILE)
    let listener = try DataListener(host: "127.0.0.1", port: 0, localId: 2, key: testKey, logger: logger,
                                    acceptCall: { failing.call($0) }) { socket, _ in socket.close() }
    Thread.sleep(forTimeInterval: 2)  // into the long backoffs (0.05 s doubling to 1 s)
    #expect(failing.calls >= 4, "the loop gave up after \(failing.calls) failed accepts")
    let started = ContinuousClock.now
    listener.stop()
    #expect(ContinuousClock.now - started < .seconds(5))
    let callsAtStop = failing.calls
    Thread.sleep(forTimeInterval: 1.5)
    #expect(failing.calls == callsAtStop, "accept was called after stop() returned")
}
