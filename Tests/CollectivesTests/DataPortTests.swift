import Collectives
import Foundation
import InMemoryLogging
import Logging
import PeerTestSupport
import Testing
import Transport

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

@Test func dataPortClosesOnGarbage() async throws {
    let logs = InMemoryLogHandler()
    let peer = Communicator(localId: 1, key: testKey, logger: logger(logs))
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
    #expect(logs.entries.contains { "\($0.message)".contains("bad magic") })
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
    var links: [BlockingSocket] = []
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
    private var socket: BlockingSocket?
    func set(_ s: BlockingSocket) { lock.withLock { socket = s } }
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
