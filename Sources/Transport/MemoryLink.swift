import Foundation

/// A link whose two ends live in one process, for tests of collectives: the same frames as on
/// TCP, through a bounded buffer in each direction (a sender waits while it is full, like a
/// socket's), with no ports, handshakes or kernel in between, so collective tests are fast and
/// independent of the machine's network. ``shutdown()`` on either end fails what is blocked on
/// both, as a reset TCP connection does.
public final class MemoryLink: Link, @unchecked Sendable {
    private let outgoing: Pipe
    private let incoming: Pipe

    private init(outgoing: Pipe, incoming: Pipe) {
        self.outgoing = outgoing
        self.incoming = incoming
    }

    /// Two connected ends; `capacity` bytes may be in flight each way.
    public static func pair(capacity: Int = 1 << 20) -> (MemoryLink, MemoryLink) {
        let ab = Pipe(capacity: capacity)
        let ba = Pipe(capacity: capacity)
        return (MemoryLink(outgoing: ab, incoming: ba), MemoryLink(outgoing: ba, incoming: ab))
    }

    public func send(_ pieces: [UnsafeRawBufferPointer]) throws {
        for piece in pieces where piece.count > 0 { try outgoing.write(piece) }
    }

    public func receive(into buffer: UnsafeMutableRawPointer, count: Int) throws {
        try incoming.read(into: buffer, count: count, deadline: nil)
    }

    public func receive(into buffer: UnsafeMutableRawPointer, count: Int, deadline: ContinuousClock.Instant) throws {
        try incoming.read(into: buffer, count: count, deadline: deadline)
    }

    public func shutdown() {
        outgoing.close()
        incoming.close()
    }

    public func close() { shutdown() }

    public struct Closed: Error, CustomStringConvertible {
        public var operation: String
        public var description: String { "\(operation): the in-memory link was shut down" }
    }

    public struct TimedOut: Error, CustomStringConvertible {
        public var description: String { "receive (deadline passed) on an in-memory link" }
    }

    /// One direction: a ring buffer of bytes.
    private final class Pipe: @unchecked Sendable {
        private let condition = NSCondition()
        private let storage: UnsafeMutableRawBufferPointer
        private var head = 0
        private var count = 0
        private var closed = false

        init(capacity: Int) {
            storage = .allocate(byteCount: max(capacity, 64), alignment: 64)
        }

        deinit { storage.deallocate() }

        func close() {
            condition.withLock {
                closed = true
                condition.broadcast()
            }
        }

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            var done = 0
            condition.lock()
            defer { condition.unlock() }
            while done < bytes.count {
                while count == storage.count, !closed { condition.wait() }
                if closed { throw Closed(operation: "send") }
                let tail = (head + count) % storage.count
                let n = min(bytes.count - done, storage.count - count, storage.count - tail)
                (storage.baseAddress! + tail).copyMemory(from: bytes.baseAddress! + done, byteCount: n)
                count += n
                done += n
                condition.broadcast()
            }
        }

        func read(into buffer: UnsafeMutableRawPointer, count wanted: Int, deadline: ContinuousClock.Instant?) throws {
            var done = 0
            condition.lock()
            defer { condition.unlock() }
            while done < wanted {
                while count == 0, !closed {
                    if let deadline {
                        let left = ContinuousClock.now.duration(to: deadline)
                        guard left > .zero else { throw TimedOut() }
                        let (s, atto) = left.components
                        _ = condition.wait(until: Date().addingTimeInterval(Double(s) + Double(atto) / 1e18))
                    } else {
                        condition.wait()
                    }
                }
                if count == 0 { throw Closed(operation: "receive") }
                let n = min(wanted - done, count, storage.count - head)
                (buffer + done).copyMemory(from: storage.baseAddress! + head, byteCount: n)
                head = (head + n) % storage.count
                count -= n
                done += n
                condition.broadcast()
            }
        }
    }
}
