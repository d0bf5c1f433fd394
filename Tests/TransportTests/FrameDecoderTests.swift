import NIOCore
import NIOEmbedded
import PeerTestSupport
import Testing
@testable import Transport

/// Reassembles decoder output into (header, payload) pairs so that any split of the input
/// stream can be compared with any other.
private func frames(_ events: [FrameEvent]) -> [(FrameHeader, [UInt8])] {
    var out: [(FrameHeader, [UInt8])] = []
    for event in events {
        switch event {
        case .frame(let header, let payload):
            out.append((header, Array(payload.readableBytesView)))
        case .dataFragment(let header, let offset, let bytes):
            if offset == 0 { out.append((header, [])) }
            #expect(out.last!.0 == header)
            #expect(out.last!.1.count == offset)
            out[out.count - 1].1 += Array(bytes.readableBytesView)
        }
    }
    return out
}

private func encode(_ type: MessageType, tag: UInt64 = 0, aux: UInt64 = 0, _ payload: [UInt8]) -> [UInt8] {
    var buffer = ByteBuffer()
    FrameHeader(type: type, length: UInt32(payload.count), tag: tag, aux: aux).write(to: &buffer)
    buffer.writeBytes(payload)
    return Array(buffer.readableBytesView)
}

/// Feeds `bytes` to a decoder in pieces of the given sizes (cycled) and returns the events.
private func decode(_ bytes: [UInt8], pieces: [Int], limits: FrameLimits = FrameLimits()) throws -> [FrameEvent] {
    var decoder = FrameDecoder(limits: limits)
    var events: [FrameEvent] = []
    var cumulation = ByteBuffer()
    var i = 0
    var p = 0
    while i < bytes.count {
        let n = min(pieces[p % pieces.count], bytes.count - i)
        cumulation.writeBytes(bytes[i..<(i + n)])
        i += n
        p += 1
        while let event = try decoder.next(&cumulation) { events.append(event) }
        cumulation.discardReadBytes()
    }
    return events
}

private let stream: [UInt8] =
    encode(.control, tag: 7, Array(0..<100)) + encode(.data, tag: 1, aux: 2, (0..<5000).map { UInt8($0 % 251) })
    + encode(.data, tag: 3, []) + encode(.collectiveControl, tag: 4, [9, 9]) + encode(.data, tag: 5, [1, 2, 3])

@Test(arguments: [[1], [2], [3], [27, 1], [28], [29], [4096], [100_000], [7, 13, 1, 64]])
func anySplitGivesTheSameFrames(pieces: [Int]) throws {
    let whole = frames(try decode(stream, pieces: [stream.count]))
    let split = frames(try decode(stream, pieces: pieces))
    #expect(whole.count == 5)
    #expect(whole.map(\.0.tag) == [7, 1, 3, 4, 5])
    #expect(whole[1].1 == (0..<5000).map { UInt8($0 % 251) })
    #expect(whole[2].1.isEmpty)
    #expect(split.map(\.0) == whole.map(\.0))
    #expect(split.map(\.1) == whole.map(\.1))
}

@Test func dataFragmentsAreViewsNotWholeFrames() throws {
    // A data frame that arrives in 1000-byte reads is passed on read by read.
    let events = try decode(encode(.data, tag: 1, Array(repeating: 1, count: 5000)), pieces: [1000])
    #expect(events.count >= 5)
}

@Test func badMagicIsRejectedAtOnce() {
    #expect(throws: FrameDecodingError.self) { _ = try decode(Array("GET / HTTP/1.1\r\n".utf8), pieces: [1]) }
    #expect(throws: FrameDecodingError.self) { _ = try decode([0x50, 0x4E, 0x00], pieces: [3]) }
}

@Test func wrongVersionIsRejected() throws {
    var bytes = encode(.control, [1])
    bytes[4] = FrameHeader.protocolVersion &+ 1
    do {
        _ = try decode(bytes, pieces: [bytes.count])
        Issue.record("accepted a frame of another version")
    } catch let error as FrameDecodingError {
        #expect(error.code == .versionMismatch)
        #expect(error.message.contains("version"))
    }
}

@Test func unknownTypeIsRejected() {
    var bytes = encode(.control, [1])
    bytes[5] = 200
    #expect(throws: FrameDecodingError.self) { _ = try decode(bytes, pieces: [bytes.count]) }
}

@Test func oversizedFramesAreRejectedBeforeTheirPayloadArrives() throws {
    var limits = FrameLimits()
    limits.maxControlPayload = 64
    limits.maxDataPayload = 128
    limits.maxHandshakePayload = 8
    // Only the header is given: the decoder must refuse without waiting for the payload.
    let header = Array(encode(.control, Array(repeating: 0, count: 65)).prefix(FrameHeader.size))
    #expect(throws: FrameDecodingError.self) { _ = try decode(header, pieces: [1], limits: limits) }
    let data = Array(encode(.data, Array(repeating: 0, count: 129)).prefix(FrameHeader.size))
    #expect(throws: FrameDecodingError.self) { _ = try decode(data, pieces: [5], limits: limits) }
    let hello = Array(encode(.hello, Array(repeating: 0, count: 9)).prefix(FrameHeader.size))
    #expect(throws: FrameDecodingError.self) { _ = try decode(hello, pieces: [28], limits: limits) }
    // A header claiming 4 GiB does not allocate: it is refused.
    var huge = encode(.control, [])
    huge.replaceSubrange(8..<12, with: [0xFF, 0xFF, 0xFF, 0xFF])
    #expect(throws: FrameDecodingError.self) { _ = try decode(huge, pieces: [28]) }
}

@Test func randomGarbageNeverCrashes() {
    var rng = SplitMix64(seed: 42)
    for _ in 0..<2000 {
        let n = Int(rng.next() % 200)
        var bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // Half the time start with a valid magic and version to reach the deeper checks.
        if rng.next() % 2 == 0, n >= 5 { bytes.replaceSubrange(0..<5, with: [0x50, 0x4E, 0x4F, 0x44, 1]) }
        _ = try? decode(bytes, pieces: [Int(rng.next() % 40) + 1])
    }
}

@Test func truncatedFrameYieldsNothingAndEndsCleanlyInAChannel() throws {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
    let bytes = encode(.control, tag: 1, Array(repeating: 5, count: 50))
    var buffer = channel.allocator.buffer(capacity: 40)
    buffer.writeBytes(bytes.prefix(40))
    try channel.writeInbound(buffer)
    #expect(try channel.readInbound(as: FrameEvent.self) == nil)
    var rest = channel.allocator.buffer(capacity: 40)
    rest.writeBytes(bytes.dropFirst(40))
    try channel.writeInbound(rest)
    guard case .frame(let header, let payload)? = try channel.readInbound(as: FrameEvent.self) else {
        Issue.record("no frame")
        return
    }
    #expect(header.tag == 1 && payload.readableBytes == 50)
    #expect(try channel.finish().isClean)
}
