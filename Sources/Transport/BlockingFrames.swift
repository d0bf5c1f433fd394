extension BlockingSocket {
    /// Writes one frame: header, then the payload pieces.
    public func sendFrame(_ header: FrameHeader, _ payload: [UnsafeRawBufferPointer] = []) throws {
        let head = header.bytes
        try head.withUnsafeBytes { try send([$0] + payload) }
    }

    public func sendFrame(_ type: MessageType, flags: UInt16 = 0, tag: UInt64 = 0, aux: UInt64 = 0, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            try sendFrame(FrameHeader(type: type, flags: flags, length: UInt32(raw.count), tag: tag, aux: aux), [raw])
        }
    }

    /// Reads one whole frame, checked by the shared header rules (magic, version, type, the
    /// type's length limit) before any payload byte is read.
    public func receiveFrame(limits: FrameLimits = FrameLimits()) throws -> (FrameHeader, [UInt8]) {
        var head = [UInt8](repeating: 0, count: FrameHeader.size)
        try head.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: FrameHeader.size) }
        let header = try head.withUnsafeBytes { try FrameHeader.parse($0, limits: limits) }
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        if header.length > 0 {
            try payload.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: $0.count) }
        }
        return (header, payload)
    }

    /// ``receiveFrame(limits:)`` with the whole frame due by `deadline` (see
    /// ``receive(into:count:deadline:)``): for peers that may stop without closing the link.
    public func receiveFrame(limits: FrameLimits = FrameLimits(), deadline: ContinuousClock.Instant) throws -> (FrameHeader, [UInt8]) {
        var head = [UInt8](repeating: 0, count: FrameHeader.size)
        try head.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: FrameHeader.size, deadline: deadline) }
        let header = try head.withUnsafeBytes { try FrameHeader.parse($0, limits: limits) }
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        if header.length > 0 {
            try payload.withUnsafeMutableBytes { try receive(into: $0.baseAddress!, count: $0.count, deadline: deadline) }
        }
        return (header, payload)
    }
}
