import Foundation
import Testing
import Transport

@Test func aMemoryLinkCarriesFramesInOrderThroughASmallBuffer() throws {
    let (a, b) = MemoryLink.pair(capacity: 100)
    let payload = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
    // The writer blocks on the 100-byte buffer until the reader drains it, as on a socket.
    let writer = Thread {
        try? a.sendFrame(.data, tag: 9, aux: 1, bytes: payload)
        try? a.sendFrame(.control, bytes: [1, 2, 3])
    }
    writer.start()
    let (first, body) = try b.receiveFrame()
    #expect(first.type == .data && first.tag == 9 && first.aux == 1 && body == payload)
    let (second, small) = try b.receiveFrame()
    #expect(second.type == .control && small == [1, 2, 3])
}

@Test func shuttingDownEitherEndFailsWhatWaitsOnBoth() throws {
    let (a, b) = MemoryLink.pair()
    let failed = NSCondition()
    nonisolated(unsafe) var receiveFailed = false
    let reader = Thread {
        var byte: UInt8 = 0
        do { try b.receive(into: &byte, count: 1) } catch { failed.withLock { receiveFailed = true; failed.broadcast() } }
    }
    reader.start()
    Thread.sleep(forTimeInterval: 0.05)
    a.shutdown()
    let woke = failed.withLock { () -> Bool in
        let deadline = Date().addingTimeInterval(5)
        while !receiveFailed { if !failed.wait(until: deadline) { break } }
        return receiveFailed
    }
    #expect(woke)
    #expect(throws: (any Error).self) { try a.sendFrame(.control, bytes: [1]) }
}

@Test func aReceiveWithADeadlineGivesUp() {
    let (_, b) = MemoryLink.pair()
    var byte: UInt8 = 0
    let start = ContinuousClock.now
    #expect(throws: MemoryLink.TimedOut.self) { try b.receive(into: &byte, count: 1, deadline: .now + .milliseconds(100)) }
    #expect(ContinuousClock.now - start < .seconds(5))
}

@Test func aGarbageHeaderIsRefusedByTheOneFrameReader() throws {
    let (a, b) = MemoryLink.pair()
    let junk = [UInt8](repeating: 0x41, count: FrameHeader.size)
    try junk.withUnsafeBytes { try a.send([$0]) }
    #expect(throws: FrameDecodingError.self) { _ = try b.receiveHeader(limits: FrameLimits()) }
}
