#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Runs the connection handshake (``HandshakeStateMachine``, the same protocol as the NIO
/// connections) over a blocking socket, all of it by `deadline`: a whole-handshake bound, not a
/// per-read timeout, so a peer trickling a byte now and then is cut off at the deadline too.
enum BlockingHandshake {
    static func run(_ socket: BlockingSocket, machine: inout HandshakeStateMachine,
                    deadline: ContinuousClock.Instant) throws -> HandshakeResult {
        var step = machine.start()
        while true {
            if let (type, bytes) = step.send {
                var frame = ByteBuffer()
                FrameHeader(type: type, length: UInt32(bytes.count)).write(to: &frame)
                frame.writeBytes(bytes)
                // A few dozen bytes: they fit the socket buffer unless the peer reads nothing,
                // and then the send timeout (the time left) ends the wait.
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else { throw timedOut() }
                socket.setTimeouts(max(0.001, Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18))
                do {
                    try frame.withUnsafeReadableBytes { try socket.send([$0]) }
                } catch let error as BlockingSocket.IOError where error.errno == EAGAIN || error.errno == EWOULDBLOCK {
                    throw timedOut()
                }
            }
            switch step.outcome {
            case .authenticated(let result)?: return result
            case .failed(let error)?: throw error
            case nil: break
            }
            let (header, payload): (FrameHeader, ByteBuffer)
            do {
                (header, payload) = try readFrame(socket, deadline: deadline)
            } catch let error as BlockingSocket.IOError where error.errno == ETIMEDOUT {
                throw timedOut()
            }
            step = machine.receive(header.type, payload)
        }
    }

    private static func timedOut() -> HandshakeError {
        HandshakeError(code: .timeout, message: "handshake not finished by its deadline")
    }

    /// Reads one whole handshake frame; the shared decoder checks magic, version, type and
    /// length limit before any payload is read.
    private static func readFrame(_ socket: BlockingSocket, deadline: ContinuousClock.Instant) throws -> (FrameHeader, ByteBuffer) {
        var buffer = ByteBuffer()
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: FrameHeader.size) { raw in
            try socket.receive(into: raw.baseAddress!, count: FrameHeader.size, deadline: deadline)
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
                    try socket.receive(into: raw.baseAddress!, count: length, deadline: deadline)
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
