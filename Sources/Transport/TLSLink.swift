import Foundation

/// A link whose bytes go through a blocking socket: plain TCP (``BlockingSocket`` itself) or TLS
/// over one (``TLSLink``). The socket is there for what belongs to it, not to the frames: its
/// send-rate cap, its timeouts, its descriptor for `poll`.
public protocol SocketLink: Link {
    var socket: BlockingSocket { get }
}

extension BlockingSocket: SocketLink {
    public var socket: BlockingSocket { self }
}

/// TLS 1.3 over a blocking socket (OpenSSL through ``TLSSession``): the data port's links when
/// the cluster runs with TLS, which is the default.
///
/// One thread may send while another receives, as on every link: the engine is shared, so
/// its calls are serialized by a lock, but the socket I/O of each direction happens outside it,
/// and a receiver blocked in `recv` never holds up the sender. Small pieces (frame headers) are
/// gathered into one record with what follows instead of costing a record each.
public final class TLSLink: SocketLink, @unchecked Sendable {
    public let socket: BlockingSocket
    private let session: TLSSession
    private let engine = NSLock()
    private let sending = NSLock()
    private let receiving = NSLock()
    /// Sealed records waiting for the socket (sender's); plaintext gathered from small pieces.
    private var sealed: [UInt8] = []
    private var gathered: [UInt8] = []
    /// Ciphertext from the socket on its way into the engine (receiver's).
    private let inbox = UnsafeMutableRawBufferPointer.allocate(byteCount: TLSLink.chunk, alignment: 16)
    /// The cipher suite both ends agreed on.
    public var cipher: String { engine.withLock { session.cipher } }

    /// Bytes handed to the engine per call, and sealed bytes gathered before a `send`.
    static let chunk = 256 << 10
    /// Pieces smaller than this are copied into the next record instead of sealed alone.
    static let gatherBelow = 4096

    private init(socket: BlockingSocket, session: TLSSession) {
        self.socket = socket
        self.session = session
        sealed.reserveCapacity(Self.chunk + 4096)
        gathered.reserveCapacity(Self.chunk)
    }

    // The socket closes itself when its last owner lets go (BlockingSocket's deinit): closing
    // it here would free its descriptor number while a caller that still holds the socket (a
    // failed handshake about to send its reject) could write to whatever reuses the number.
    deinit { inbox.deallocate() }

    /// Runs the TLS handshake on `socket`, all of it by `deadline`; returns the link and the
    /// channel binding for the peernode handshake that follows. A server that finds plaintext
    /// peernode frames where TLS was due tells the peer why in a plaintext `reject` frame.
    static func establish(on socket: BlockingSocket, context: TLSContext, role: TLSSession.Role,
                          deadline: ContinuousClock.Instant) throws -> (TLSLink, binding: [UInt8], peerPrefix: UInt32?) {
        let session = try TLSSession(context: context, role: role)
        let link = TLSLink(socket: socket, session: session)
        var out: [UInt8] = []
        func flush() throws {
            session.drainOutput(into: &out)
            guard !out.isEmpty else { return }
            try BlockingHandshake.sendBounded(socket, deadline: deadline) { try out.withUnsafeBytes { try socket.send([$0]) } }
            out.removeAll(keepingCapacity: true)
        }
        do {
            try session.handshake()
            try flush()
            while !session.established {
                let got = try socket.receiveSome(into: link.inbox.baseAddress!, count: link.inbox.count, deadline: deadline)
                try session.feed(UnsafeRawBufferPointer(rebasing: link.inbox[..<got]))
                try session.handshake()
                try flush()
            }
        } catch let error as TLSError {
            if error.code == .plaintextPeer, role == .server {
                HandshakeStateMachine.sendReject(on: socket, code: .security,
                    reason: "this node requires TLS (\(context.mode)); it does not accept plaintext peers (give both ends --plaintext, or neither)")
            } else {
                try? flush()  // the alert, so the peer learns why
            }
            throw error
        } catch let error as BlockingSocket.IOError where error.errno == ETIMEDOUT || error.errno == EAGAIN {
            throw HandshakeError(code: .timeout, message: "TLS handshake not finished by its deadline")
        }
        return (link, try session.channelBinding(), session.peerIdentityPrefix())
    }

    public func send(_ pieces: [UnsafeRawBufferPointer]) throws {
        sending.lock()
        defer { sending.unlock() }
        for piece in pieces where piece.count > 0 {
            if piece.count < Self.gatherBelow {
                if gathered.count + piece.count > Self.chunk { try sealGathered() }
                gathered.append(contentsOf: piece)
                continue
            }
            try sealGathered()
            var offset = 0
            while offset < piece.count {
                let n = min(piece.count - offset, Self.chunk)
                try engine.withLock { try session.seal(UnsafeRawBufferPointer(rebasing: piece[offset..<(offset + n)]), into: &sealed) }
                offset += n
                if sealed.count >= Self.chunk { try flushSealed() }
            }
        }
        try sealGathered()
        try flushSealed()
    }

    private func sealGathered() throws {
        guard !gathered.isEmpty else { return }
        try gathered.withUnsafeBytes { raw in try engine.withLock { try session.seal(raw, into: &sealed) } }
        gathered.removeAll(keepingCapacity: true)
    }

    private func flushSealed() throws {
        guard !sealed.isEmpty else { return }
        try sealed.withUnsafeBytes { try socket.send([$0]) }
        sealed.removeAll(keepingCapacity: true)
    }

    public func receive(into buffer: UnsafeMutableRawPointer, count: Int) throws {
        try receive(into: buffer, count: count, by: nil)
    }

    public func receive(into buffer: UnsafeMutableRawPointer, count: Int, deadline: ContinuousClock.Instant) throws {
        try receive(into: buffer, count: count, by: deadline)
    }

    private func receive(into buffer: UnsafeMutableRawPointer, count: Int, by deadline: ContinuousClock.Instant?) throws {
        receiving.lock()
        defer { receiving.unlock() }
        var done = 0
        while done < count {
            let n = try engine.withLock { try session.open(into: buffer + done, count: count - done) }
            if n > 0 {
                done += n
                continue
            }
            let got = try socket.receiveSome(into: inbox.baseAddress!, count: inbox.count, deadline: deadline)
            try engine.withLock { try session.feed(UnsafeRawBufferPointer(rebasing: inbox[..<got])) }
        }
    }

    public func shutdown() { socket.shutdown() }
    public func close() { socket.close() }
}
