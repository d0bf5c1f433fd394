import Foundation
import Transport

/// Writes frames to one socket, in the order they were queued, on a thread of its own.
///
/// Payload pieces are sent straight from wherever they live (the caller's input, the result
/// buffer, or a frame buffer owned by the item), so queueing costs no copy.
final class FrameSender: @unchecked Sendable {
    struct Item {
        var header: FrameHeader
        var pieces: [UnsafeRawBufferPointer]
        /// Called on the sender thread once the bytes are written, or with the error.
        var done: (Error?) -> Void
    }

    private let socket: BlockingSocket
    private let condition = NSCondition()
    private var queue: [Item] = []
    private var head = 0
    private var failure: Error?

    init(socket: BlockingSocket, name: String) {
        self.socket = socket
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    func enqueue(_ item: Item) {
        condition.lock()
        if let failure {
            condition.unlock()
            item.done(failure)
            return
        }
        queue.append(item)
        condition.signal()
        condition.unlock()
    }

    /// Fails what is queued and ends the thread; the socket is shut down by the caller.
    func stop(_ error: Error) {
        condition.lock()
        if failure == nil { failure = error }
        let dropped = Array(queue[head...])
        queue.removeAll()
        head = 0
        condition.signal()
        condition.unlock()
        for item in dropped { item.done(error) }
    }

    private func run() {
        while true {
            condition.lock()
            while head == queue.count, failure == nil { condition.wait() }
            if failure != nil {
                condition.unlock()
                return
            }
            let item = queue[head]
            head += 1
            if head > 1024, head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            condition.unlock()
            do {
                let header = item.header.bytes
                try header.withUnsafeBytes { try socket.send([$0] + item.pieces) }
                item.done(nil)
            } catch {
                stop(error)
                item.done(error)
                return
            }
        }
    }
}
