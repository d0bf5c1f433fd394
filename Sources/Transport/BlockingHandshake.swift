#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Runs the connection handshake (``HandshakeStateMachine``, the same protocol as the NIO
/// connections) over a blocking link, all of it by `deadline`: a whole-handshake bound, not a
/// per-read timeout, so a peer trickling a byte now and then is cut off at the deadline too.
enum BlockingHandshake {
    static func run(_ link: any SocketLink, machine: inout HandshakeStateMachine,
                    deadline: ContinuousClock.Instant) throws -> HandshakeResult {
        var step = machine.start()
        while true {
            if let (type, bytes) = step.send {
                var frame = ByteBuffer()
                FrameHeader(type: type, length: UInt32(bytes.count)).write(to: &frame)
                frame.writeBytes(bytes)
                try sendBounded(link.socket, deadline: deadline) { try frame.withUnsafeReadableBytes { try link.send([$0]) } }
            }
            switch step.outcome {
            case .authenticated(let result)?: return result
            case .failed(let error)?: throw error
            case nil: break
            }
            let (header, payload): (FrameHeader, ByteBuffer)
            do {
                (header, payload) = try readFrame(link, deadline: deadline)
            } catch let error as BlockingSocket.IOError where error.errno == ETIMEDOUT {
                throw timedOut()
            }
            step = machine.receive(header.type, payload)
        }
    }

    /// A send of a few dozen bytes (a handshake frame, a TLS flight) that may take no longer
    /// than the time left: they fit the socket buffer unless the peer reads nothing, and then
    /// the send timeout ends the wait.
    static func sendBounded(_ socket: BlockingSocket, deadline: ContinuousClock.Instant, _ send: () throws -> Void) throws {
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero else { throw timedOut() }
        socket.setTimeouts(max(0.001, Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18))
        do {
            try send()
        } catch let error as BlockingSocket.IOError where error.errno == EAGAIN || error.errno == EWOULDBLOCK {
            throw timedOut()
        }
    }

    private static func timedOut() -> HandshakeError {
        HandshakeError(code: .timeout, message: "handshake not finished by its deadline")
    }

    /// Reads one whole handshake frame; the shared decoder checks magic, version, type and
    /// length limit before any payload is read.
    private static func readFrame(_ link: any SocketLink, deadline: ContinuousClock.Instant) throws -> (FrameHeader, ByteBuffer) {
        var buffer = ByteBuffer()
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: FrameHeader.size) { raw in
            try link.receive(into: raw.baseAddress!, count: FrameHeader.size, deadline: deadline)
            return FrameHeader.size
        }
        guard let type = buffer.getInteger(at: 5, as: UInt8.self).map(MessageType.init(rawValue:)), type.isHandshake else {
            var probe = buffer
            var decoder = FrameDecoder()
            do { _ = try decoder.next(&probe) } catch let error as FrameDecodingError {
                throw HandshakeError(error)
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
                    try link.receive(into: raw.baseAddress!, count: length, deadline: deadline)
                    return length
                }
            }
            decoder = FrameDecoder()
            guard case .frame(let header, let payload)? = try decoder.next(&buffer) else {
                throw HandshakeError(code: .protocolViolation, message: "incomplete handshake frame")
            }
            return (header, payload)
        } catch let error as FrameDecodingError {
            throw HandshakeError(error)
        }
    }
}

extension HandshakeError {
    /// A frame the handshake could not read, as the handshake's error.
    init(_ error: FrameDecodingError) {
        let code: Code = switch error.code {
        case .versionMismatch: .versionMismatch
        case .tlsRecord: .security
        default: .protocolViolation
        }
        self.init(code: code, message: error.message)
    }
}

extension HandshakeError {
    /// A refused TLS handshake as the handshake's error: one error type for every refusal.
    init(_ error: TLSError) {
        self.init(code: error.code == .badKey ? .badKey : .security, message: error.message)
    }
}

extension HandshakeStateMachine {
    /// A plaintext `reject` frame straight on the socket, without waiting for the peer to read
    /// it: for refusals before (or instead of) a handshake, so the peer's log says why.
    static func sendReject(on socket: BlockingSocket, code: HandshakeError.Code, reason: String) {
        let text = Array(reason.utf8.prefix(1024))
        var frame = ByteBuffer()
        FrameHeader(type: .reject, length: UInt32(1 + text.count)).write(to: &frame)
        frame.writeInteger(code.rawValue)
        frame.writeBytes(text)
        socket.setTimeouts(0.05)
        try? frame.withUnsafeReadableBytes { try socket.send([$0]) }
    }
}
