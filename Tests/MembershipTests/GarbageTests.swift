import Collectives
import InMemoryLogging
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PeerTestSupport
import Testing
import Transport

/// Tells when the node closed the link on us.
private final class ClosedRecorder: ConnectionDelegate, @unchecked Sendable {
    let (closed, closing) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    func connection(_ connection: Connection, received event: FrameEvent) {}
    func connectionWritabilityChanged(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, error: (any Error)?) { closing.yield() }
}

@Test(arguments: [[UInt8]([99]), [1, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF], [18] + [UInt8](repeating: 0xFF, count: 18)])
func garbageOnAControlLinkClosesItWithALogLine(payload: [UInt8]) async throws {
    let logs = InMemoryLogHandler()
    let node = MembershipNode(localId: 0xC000, key: testKey, options: fastOptions,
                              logger: Logger(label: "garbage-test", factory: { _ in logs }))
    let port = try await node.start(dataPort: 43000, seed: nil)
    let group = TransportNode.makeEventLoopGroup(threads: 1)
    let raw = TransportNode(localId: 0xC001, key: testKey, group: group, logger: testLogger())
    let recorder = ClosedRecorder()
    let connection = try await raw.dial(host: "127.0.0.1", port: port, purpose: .control, delegate: recorder)
    try await connection.send(.control, bytes: payload).get()
    try await within(15, "the node closes the link") {
        for await _ in recorder.closed { return }
    }
    #expect(logs.entries.contains { "\($0.message)".contains("malformed message") })
    // The node is unharmed: still the coordinator of its one-node cluster.
    #expect(node.status.role == .coordinator && node.status.epoch == 1)
    await node.shutdown()
    try await group.shutdownGracefully()
}
