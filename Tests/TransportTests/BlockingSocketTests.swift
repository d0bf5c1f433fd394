import Foundation
import Logging
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
    let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: listener.port, localId: 1, key: testKey,
                                              purpose: .ring, info: [0, 0, 0, 0, 0, 0, 0, 1], timeout: 10)
    defer { socket.close() }
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
