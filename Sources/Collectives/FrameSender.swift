import Foundation
import Transport

/// Writes frames to one link on a thread of its own, later ring steps first.
///
/// A collective queues its whole first step at once; partial sums and all-gather frames made
/// later are on the ring's critical path (the neighbour waits for them to go on), so the queue
/// with the highest step number is served first, in order within a step. Payload pieces are
/// sent straight from wherever they live (the caller's input, the result buffer, or a frame
/// buffer owned by the item), so queueing costs no copy.
final class FrameSender: @unchecked Sendable {
    struct Item {
        /// Higher first; the ring step of a data frame.
        var priority: Int
        var header: FrameHeader
        var pieces: [UnsafeRawBufferPointer]
        /// Called on the sender thread once the bytes are written, or with the error.
        var done: (Error?) -> Void
    }

    private let link: any Link
    private let condition = NSCondition()
    /// Queues by priority; `heads[p]` is the next item of `queues[p]`.
    private var queues: [[Item]] = []
    private var heads: [Int] = []
    private var queued = 0
    private var failure: Error?

    private let traffic: TrafficCounter

    /// `threads`: the owner's group, which this sender's thread is part of until it ends.
    init(link: any Link, traffic: TrafficCounter, name: String, threads: DispatchGroup) {
        self.link = link
        self.traffic = traffic
        threads.enter()
        let thread = Thread { [self] in
            defer { threads.leave() }
            run()
        }
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
        let p = max(0, item.priority)
        while queues.count <= p {
            queues.append([])
            heads.append(0)
        }
        queues[p].append(item)
        queued += 1
        condition.signal()
        condition.unlock()
    }

    /// Fails what is queued and ends the thread; the link is shut down by the caller.
    func stop(_ error: Error) {
        condition.lock()
        if failure == nil { failure = error }
        var dropped: [Item] = []
        for p in queues.indices { dropped += queues[p][heads[p]...] }
        queues.removeAll()
        heads.removeAll()
        queued = 0
        condition.signal()
        condition.unlock()
        for item in dropped { item.done(error) }
    }

    private func run() {
        while true {
            condition.lock()
            while queued == 0, failure == nil { condition.wait() }
            if failure != nil {
                condition.unlock()
                return
            }
            let p = queues.indices.last { heads[$0] < queues[$0].count }!
            let item = queues[p][heads[p]]
            heads[p] += 1
            queued -= 1
            if heads[p] == queues[p].count {
                queues[p].removeAll(keepingCapacity: true)
                heads[p] = 0
            }
            condition.unlock()
            do {
                let header = item.header.bytes
                try header.withUnsafeBytes { try link.send([$0] + item.pieces) }
                traffic.addSent(header.count + item.pieces.reduce(0) { $0 + $1.count })
                item.done(nil)
            } catch {
                stop(error)
                item.done(error)
                return
            }
        }
    }
}
