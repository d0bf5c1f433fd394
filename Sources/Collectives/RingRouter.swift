import Logging
import NIOCore
import Transport

/// Delegate of the ring links: routes data frames to the collective with their tag.
///
/// A neighbour may start a collective before this peer does; its frames wait here (bounded:
/// past `maxEarlyBytes` the link stops reading, and TCP pushes back on the sender) until the
/// local call with the same tag registers. Confined to the ring event loop.
final class RingRouter: ConnectionDelegate, @unchecked Sendable {
    private let loop: any EventLoop
    private let logger: Logger
    private var ops: [UInt64: RingAllReduceOp] = [:]
    private var early: [UInt64: [(FrameHeader, Int, ByteBuffer)]] = [:]
    private var earlyBytes = 0
    private let maxEarlyBytes: Int
    private(set) var left: Connection?
    private(set) var right: Connection?
    /// Called once when a ring link goes away; the communicator then needs a new ring.
    var onLinkLost: ((String) -> Void)?
    private(set) var broken = false

    let rank: Int
    let size: Int

    init(loop: any EventLoop, rank: Int, size: Int, maxEarlyBytes: Int, logger: Logger) {
        self.loop = loop
        self.rank = rank
        self.size = size
        self.maxEarlyBytes = maxEarlyBytes
        self.logger = logger
    }

    func attach(left: Connection?, right: Connection?) {
        self.left = left
        self.right = right
    }

    func register(_ op: RingAllReduceOp) throws {
        loop.preconditionInEventLoop()
        guard !broken else { throw CollectiveError(code: .notConnected, message: "the ring is broken; reconnect first") }
        guard ops[op.options.tag] == nil else {
            throw CollectiveError(code: .invalidArgument, message: "tag \(op.options.tag) is already in use by a running collective")
        }
        ops[op.options.tag] = op
        op.onFinish = { [unowned self] in self.ops[op.options.tag] = nil }
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        op.promise.futureResult.whenFailure { error in
            loopBound.value.breakRing("collective tag \(op.options.tag) failed: \(error)")
        }
        op.start()
        if let waiting = early.removeValue(forKey: op.options.tag) {
            for (header, offset, bytes) in waiting {
                earlyBytes -= bytes.readableBytes
                op.receive(header, offset: offset, bytes: bytes)
            }
            if earlyBytes <= maxEarlyBytes, let left { left.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
        }
    }

    func connection(_ connection: Connection, received event: FrameEvent) {
        guard loop.inEventLoop, connection === left else { return }
        switch event {
        case .dataFragment(let header, let offset, let bytes):
            if let op = ops[header.tag] {
                op.receive(header, offset: offset, bytes: bytes)
            } else {
                early[header.tag, default: []].append((header, offset, bytes))
                earlyBytes += bytes.readableBytes
                if earlyBytes > maxEarlyBytes {
                    connection.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                }
            }
        case .frame(let header, _):
            logger.warning("unexpected \(header.type) frame on a ring link", metadata: ["peer.id": "\(hex(connection.remoteId))"])
        }
    }

    // The right link lives on the send loop; its events hop over to the ring loop.

    func connectionWritabilityChanged(_ connection: Connection) {
        guard loop.inEventLoop else {
            loop.execute { self.connectionWritabilityChanged(connection) }
            return
        }
        guard connection === right, connection.isWritable else { return }
        for op in ops.values { op.pump() }
    }

    func connectionClosed(_ connection: Connection, error: (any Error)?) {
        guard loop.inEventLoop else {
            let reason = error.map { "\($0)" }
            loop.execute { self.linkClosed(connection, reason: reason) }
            return
        }
        linkClosed(connection, reason: error.map { "\($0)" })
    }

    private func linkClosed(_ connection: Connection, reason: String?) {
        guard connection === left || connection === right else { return }
        breakRing("ring link with \(hex(connection.remoteId)) closed" + (reason.map { ": \($0)" } ?? ""))
    }

    /// Fails every collective in flight and closes both links: after an abort the byte streams
    /// are in an unknown state, so the ring is only usable again once rebuilt.
    func breakRing(_ reason: String) {
        guard !broken else { return }
        broken = true
        let running = Array(ops.values)
        ops.removeAll()
        early.removeAll()
        earlyBytes = 0
        for op in running { op.fail(.aborted(reason)) }
        left?.close()
        right?.close()
        onLinkLost?(reason)
    }
}
