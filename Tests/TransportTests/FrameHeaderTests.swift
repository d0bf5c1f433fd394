import NIOCore
import Testing
@testable import Transport

@Test func headerLayoutIsFixed() {
    var buffer = ByteBuffer()
    FrameHeader(type: .data, flags: 0x0102, length: 7, tag: 0x1122334455667788, aux: 9).write(to: &buffer)
    #expect(buffer.readableBytes == FrameHeader.size)
    #expect(Array(buffer.readableBytesView.prefix(12)) == [0x50, 0x4E, 0x4F, 0x44, 4, 16, 1, 2, 0, 0, 0, 7])
}
