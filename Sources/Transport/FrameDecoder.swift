import NIOCore

/// What the decoder hands up the pipeline.
///
/// Data frames are streamed: every slice of payload that arrives is passed on at once, as a
/// view into NIO's receive buffer, so a 64 MiB collective segment is never accumulated (or
/// copied) before the collective reduces it. All other frames are small and arrive whole.
public enum FrameEvent: Sendable {
    /// A complete non-streamed frame.
    case frame(FrameHeader, ByteBuffer)
    /// `bytes` are the payload bytes of a data frame starting at `offset`. A frame of length 0
    /// produces one fragment with empty bytes; the last fragment ends at `header.length`.
    case dataFragment(FrameHeader, offset: Int, bytes: ByteBuffer)
}

/// Limits the decoder enforces before it allocates or waits for anything.
public struct FrameLimits: Sendable, Hashable {
    /// Handshake frames carry ids, nonces and MACs: a few hundred bytes.
    public var maxHandshakePayload: Int = 1024
    /// Control frames are buffered whole, so this bounds the memory one frame can claim.
    public var maxControlPayload: Int = 16 << 20
    /// Data frames are streamed; the bound only rejects absurd lengths early.
    public var maxDataPayload: Int = 256 << 20

    public init() {}
}

/// Errors that end a connection: the peer is not speaking our protocol.
public struct FrameDecodingError: Error, Hashable, CustomStringConvertible {
    /// The error for bytes that do not begin with the magic, naming the one likely cause.
    static func badMagic(firstByte: UInt8) -> FrameDecodingError {
        firstByte == 22
            ? FrameDecodingError(code: .tlsRecord, message: "the peer speaks TLS and this node runs with --plaintext; both ends must agree (drop --plaintext here, or give it to the peer too)")
            : FrameDecodingError(code: .badMagic, message: "not a peernode frame (bad magic): is something else talking to this port?")
    }

    public enum Code: Hashable, Sendable {
        case badMagic, versionMismatch, unknownType, oversized
        /// A TLS record (first byte 22) where a plaintext frame was due: the peer runs with TLS
        /// and this end with `--plaintext`.
        case tlsRecord
    }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// Splits a byte stream into frames (see ``FrameHeader`` for the layout).
///
/// Consumes every readable byte of a data payload at once, so NIO never has to grow its
/// cumulation buffer for bulk transfers.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = FrameEvent

    private enum State {
        case header
        case streaming(FrameHeader, offset: Int)
    }

    private var state: State = .header
    private let limits: FrameLimits

    public init(limits: FrameLimits = FrameLimits()) {
        self.limits = limits
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let event = try next(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(event))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A frame cut short by EOF is dropped: its owner learns of the loss from the close.
        while let event = try next(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(event))
        }
        return .needMoreData
    }

    /// The decoding step without a channel, so that tests and other transports can reuse it.
    public mutating func next(_ buffer: inout ByteBuffer) throws -> FrameEvent? {
        switch state {
        case .header:
            guard buffer.readableBytes >= FrameHeader.size else {
                // Fail early on a wrong magic, even before a whole header is in.
                try checkMagicPrefix(buffer)
                return nil
            }
            let header = try parseHeader(buffer)
            if header.type.isStreamed {
                buffer.moveReaderIndex(forwardBy: FrameHeader.size)
                if header.length == 0 {
                    return .dataFragment(header, offset: 0, bytes: buffer.getSlice(at: buffer.readerIndex, length: 0)!)
                }
                state = .streaming(header, offset: 0)
                return try next(&buffer)
            }
            let total = FrameHeader.size + Int(header.length)
            guard buffer.readableBytes >= total else { return nil }
            buffer.moveReaderIndex(forwardBy: FrameHeader.size)
            let payload = buffer.readSlice(length: Int(header.length))!
            return .frame(header, payload)

        case .streaming(let header, let offset):
            let remaining = Int(header.length) - offset
            let take = min(remaining, buffer.readableBytes)
            guard take > 0 else { return nil }
            let bytes = buffer.readSlice(length: take)!
            state = take == remaining ? .header : .streaming(header, offset: offset + take)
            return .dataFragment(header, offset: offset, bytes: bytes)
        }
    }

    private func checkMagicPrefix(_ buffer: ByteBuffer) throws {
        let n = min(buffer.readableBytes, 4)
        guard n > 0, let got = buffer.getBytes(at: buffer.readerIndex, length: n) else { return }
        let want = withUnsafeBytes(of: FrameHeader.magic.bigEndian) { Array($0.prefix(n)) }
        if got != want { throw FrameDecodingError.badMagic(firstByte: got[0]) }
    }

    private func parseHeader(_ buffer: ByteBuffer) throws -> FrameHeader {
        try buffer.withUnsafeReadableBytes { try FrameHeader.parse($0, limits: limits) }
    }
}
