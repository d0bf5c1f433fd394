import NIOCore
import Transport

/// Delegate of an accepted ring connection until the ring that uses it exists.
///
/// The left neighbour may finish forming its side of the ring, and start sending, before this
/// peer has adopted the connection. Until then the link stops reading (TCP holds the rest)
/// and keeps what already arrived, then replays it in order. Confined to the ring loop.
final class InboundLink: ConnectionDelegate, @unchecked Sendable {
    private var target: ConnectionDelegate?
    private var held: [FrameEvent] = []
    private var closed: (any Error)?? = nil

    func connection(_ connection: Connection, received event: FrameEvent) {
        if let target {
            target.connection(connection, received: event)
        } else {
            held.append(event)
            connection.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
    }

    func connectionWritabilityChanged(_ connection: Connection) {
        target?.connectionWritabilityChanged(connection)
    }

    func connectionClosed(_ connection: Connection, error: (any Error)?) {
        if let target { target.connectionClosed(connection, error: error) } else { closed = .some(error) }
    }

    /// Hands the link to its user; replays what was held.
    func adopt(_ connection: Connection, by delegate: ConnectionDelegate) {
        target = delegate
        let replay = held
        held = []
        for event in replay { delegate.connection(connection, received: event) }
        if let closed {
            delegate.connectionClosed(connection, error: closed)
        } else {
            connection.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
    }
}
