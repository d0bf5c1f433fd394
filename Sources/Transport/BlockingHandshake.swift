import NIOCore

/// Runs the connection handshake (``HandshakeStateMachine``, the same protocol as the NIO
/// connections) over a blocking socket, within the socket's timeouts.
enum BlockingHandshake {
    static func run(_ socket: BlockingSocket, machine: inout HandshakeStateMachine) throws -> HandshakeResult {
        var step = machine.start()
        while true {
            if let (type, bytes) = step.send {
                var frame = ByteBuffer()
                FrameHeader(type: type, length: UInt32(bytes.count)).write(to: &frame)
                frame.writeBytes(bytes)
                try frame.withUnsafeReadableBytes { try socket.send([$0]) }
            }
            switch step.outcome {
            case .authenticated(let result)?: return result
            case .failed(let error)?: throw error
            case nil: break
            }
            let (header, payload) = try readFrame(socket)
            step = machine.receive(header.type, payload)
        }
    }

    /// Reads one whole handshake frame; the shared decoder checks magic, version, type and
    /// length limit before any payload is read.
    private static func readFrame(_ socket: BlockingSocket) throws -> (FrameHeader, ByteBuffer) {
        var buffer = ByteBuffer()
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: FrameHeader.size) { raw in
            try socket.receive(into: raw.baseAddress!, count: FrameHeader.size)
            return FrameHeader.size
        }
        guard let type = buffer.getInteger(at: 5, as: UInt8.self).map(MessageType.init(rawValue:)), type.isHandshake else {
            var probe = buffer
            var decoder = FrameDecoder()
            do { _ = try decoder.next(&probe) } catch let error as FrameDecodingError {
                throw HandshakeError(code: error.code == .versionMismatch ? .versionMismatch : .protocolViolation,
                                     message: error.message)
            }
            throw HandshakeError(code: .protocolViolation, message: "non-handshake frame during the handshake")
        }
        var decoder = FrameDecoder()
        do {
            var probe = buffer
            _ = try decoder.next(&probe)
            let length = Int(buffer.getInteger(at: 8, as: UInt32.self)!)
            if length > 0 {
                try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
                    try socket.receive(into: raw.baseAddress!, count: length)
                    return length
                }
            }
            decoder = FrameDecoder()
            guard case .frame(let header, let payload)? = try decoder.next(&buffer) else {
                throw HandshakeError(code: .protocolViolation, message: "incomplete handshake frame")
            }
            return (header, payload)
        } catch let error as FrameDecodingError {
            throw HandshakeError(code: error.code == .versionMismatch ? .versionMismatch : .protocolViolation, message: error.message)
        }
    }
}
