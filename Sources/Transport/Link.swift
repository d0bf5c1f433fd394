/// One ordered, reliable byte stream to a peer, already authenticated, that carries frames:
/// what the collectives talk over, without knowing whether it is a TCP socket, TLS over one, or
/// memory (gloo's transport/algorithm split: the algorithm owns no socket).
///
/// Implementations provide the byte primitives; the frame layer on top of them (writing a
/// frame, reading and checking a header, reading a payload into the caller's memory) is written
/// once, in the extension below, so there is one frame reader for every kind of link. Each link
/// is used by at most one sending and one receiving thread at a time.
public protocol Link: AnyObject, Sendable {
    /// Writes every byte of every piece, in order, straight from the caller's memory.
    func send(_ pieces: [UnsafeRawBufferPointer]) throws
    /// Reads exactly `count` bytes into `buffer`; blocks until they are there or the link fails.
    func receive(into buffer: UnsafeMutableRawPointer, count: Int) throws
    /// Reads exactly `count` bytes, all of them by `deadline`; past it, throws.
    func receive(into buffer: UnsafeMutableRawPointer, count: Int, deadline: ContinuousClock.Instant) throws
    /// Unblocks every call in progress on this link, which then fail, as do later ones. Idempotent.
    func shutdown()
    /// Releases the link (shutting it down first). Idempotent.
    func close()
}

/// The frame layer of every link (docs/protocol.md §1).
extension Link {
    /// Writes one frame: the 28 header bytes, then the payload pieces.
    public func sendFrame(_ header: FrameHeader, _ payload: [UnsafeRawBufferPointer] = []) throws {
        let head = header.bytes
        try head.withUnsafeBytes { try send([$0] + payload) }
    }

    public func sendFrame(_ type: MessageType, flags: UInt16 = 0, tag: UInt64 = 0, aux: UInt64 = 0, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            try sendFrame(FrameHeader(type: type, flags: flags, length: UInt32(raw.count), tag: tag, aux: aux), [raw])
        }
    }

    /// Reads the next frame's header and checks it by the shared rules (magic, version, type,
    /// the type's length limit) before any payload byte is read; the payload is the caller's
    /// to read next, with ``receive(into:count:)``, wherever it belongs.
    public func receiveHeader(limits: FrameLimits, deadline: ContinuousClock.Instant? = nil) throws -> FrameHeader {
        try withUnsafeTemporaryAllocation(byteCount: FrameHeader.size, alignment: 8) { head in
            if let deadline {
                try receive(into: head.baseAddress!, count: FrameHeader.size, deadline: deadline)
            } else {
                try receive(into: head.baseAddress!, count: FrameHeader.size)
            }
            return try FrameHeader.parse(UnsafeRawBufferPointer(head), limits: limits)
        }
    }

    /// Reads one whole frame (header checked first, then the payload, bounded by the limits).
    public func receiveFrame(limits: FrameLimits = FrameLimits()) throws -> (FrameHeader, [UInt8]) {
        let header = try receiveHeader(limits: limits)
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        if header.length > 0 {
            try payload.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: $0.count) }
        }
        return (header, payload)
    }

    /// ``receiveFrame(limits:)`` with the whole frame due by `deadline`: for peers that may stop
    /// without closing the link.
    public func receiveFrame(limits: FrameLimits = FrameLimits(), deadline: ContinuousClock.Instant) throws -> (FrameHeader, [UInt8]) {
        let header = try receiveHeader(limits: limits, deadline: deadline)
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        if header.length > 0 {
            try payload.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: $0.count, deadline: deadline) }
        }
        return (header, payload)
    }
}
