import NIOCore

/// What a connection is for, declared by the dialer and authenticated with the key.
public struct ConnectionPurpose: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Collective data from the left ring neighbour.
    public static let ring = ConnectionPurpose(rawValue: 1)
    /// Membership and coordination traffic.
    public static let control = ConnectionPurpose(rawValue: 2)
    /// Shared-state downloads.
    public static let stateTransfer = ConnectionPurpose(rawValue: 3)
    public var description: String {
        switch self {
        case .ring: "ring"
        case .control: "control"
        case .stateTransfer: "state-transfer"
        default: "purpose(\(rawValue))"
        }
    }
}

/// Who is on the other end, once both sides have proven the key.
public struct HandshakeResult: Sendable, Hashable {
    public var remoteId: UInt64
    public var purpose: ConnectionPurpose
    /// Opaque bytes the dialer attached to its hello (e.g. its listening address).
    public var info: [UInt8]
}

public struct HandshakeError: Error, Hashable, CustomStringConvertible {
    public enum Code: UInt8, Sendable {
        case badKey = 1, versionMismatch = 2, protocolViolation = 3, timeout = 4, refused = 5
        /// Link security differs: one end runs TLS, the other plaintext, or the TLS layer failed
        /// (a certificate refused, a node id not matching its certificate).
        case security = 6
    }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// The connection handshake as a value type: events in, actions out (no I/O here).
///
/// ```
/// dialer                                   acceptor
///   hello     id_d, purpose, nonce_d, info  ->
///          <-  challenge id_a, nonce_a, HMAC(k, "peernode/1 acceptor" | nonce_d | nonce_a | id_a | id_d)
///   response  HMAC(k, "peernode/1 dialer" | nonce_d | nonce_a | id_d | id_a | purpose)  ->
///          <-  accept  (or reject: code u8, UTF-8 reason)
/// ```
/// Both sides contribute a fresh 32-byte nonce, so neither MAC can be replayed, and the acceptor
/// proves the key first, so a dialer never reveals a MAC to an impostor.
struct HandshakeStateMachine {
    enum Role { case dialer(ConnectionPurpose, info: [UInt8]), acceptor }

    struct Step {
        var send: (MessageType, [UInt8])?
        var outcome: Outcome?
    }
    enum Outcome {
        case authenticated(HandshakeResult)
        case failed(HandshakeError)
    }

    private enum State {
        case idle
        case dialerAwaitingChallenge(nonce: [UInt8])
        case dialerAwaitingAccept(HandshakeResult)
        case acceptorAwaitingHello
        case acceptorAwaitingResponse(HandshakeResult, nonceD: [UInt8], nonceA: [UInt8])
        case done
    }

    static let nonceSize = 32
    static let macSize = 32
    static let maxInfo = 512

    private let role: Role
    private let localId: UInt64
    private let key: ClusterKey
    private var state: State = .idle
    /// The TLS channel binding (32 exporter bytes; empty on a plaintext link): both MACs cover
    /// it, so the proof of the key and of the node ids holds for this TLS channel only.
    var binding: [UInt8] = []
    /// With certificates: the four bytes the peer's node id must begin with (its certificate's).
    var peerPrefix: UInt32?

    init(role: Role, localId: UInt64, key: ClusterKey) {
        self.role = role
        self.localId = localId
        self.key = key
        if case .acceptor = role { state = .acceptorAwaitingHello }
    }

    /// The dialer speaks first.
    mutating func start() -> Step {
        guard case .dialer(let purpose, let info) = role, case .idle = state else { return Step() }
        let nonce = randomBytes(Self.nonceSize)
        state = .dialerAwaitingChallenge(nonce: nonce)
        var payload = be(localId) + [purpose.rawValue] + nonce
        payload += be16(UInt16(min(info.count, Self.maxInfo))) + info.prefix(Self.maxInfo)
        return Step(send: (.hello, payload))
    }

    mutating func receive(_ type: MessageType, _ payload: ByteBuffer) -> Step {
        var p = payload
        switch (state, type) {
        case (_, .reject):
            state = .done
            let code = p.readInteger(as: UInt8.self).flatMap(HandshakeError.Code.init(rawValue:)) ?? .refused
            // The peer's own words: escaped, since they end up in this node's log.
            let reason = p.readString(length: min(p.readableBytes, 1024)) ?? ""
            return fail(code, "refused by peer: \(escapedForLog(reason))", reject: false)

        case (.acceptorAwaitingHello, .hello):
            guard let dialerId = p.readInteger(as: UInt64.self),
                  let purpose = p.readInteger(as: UInt8.self),
                  let nonceD = p.readBytes(length: Self.nonceSize),
                  let infoLength = p.readInteger(as: UInt16.self), Int(infoLength) <= Self.maxInfo,
                  let info = p.readBytes(length: Int(infoLength)), p.readableBytes == 0
            else { return fail(.protocolViolation, "malformed hello") }
            if let refusal = refusingAnotherCertificate(dialerId) { return refusal }
            let nonceA = randomBytes(Self.nonceSize)
            let result = HandshakeResult(remoteId: dialerId, purpose: ConnectionPurpose(rawValue: purpose), info: info)
            state = .acceptorAwaitingResponse(result, nonceD: nonceD, nonceA: nonceA)
            let proof = key.mac(Array("peernode/1 acceptor".utf8), nonceD, nonceA, be(localId), be(dialerId), binding)
            return Step(send: (.challenge, be(localId) + nonceA + proof))

        case (.dialerAwaitingChallenge(let nonceD), .challenge):
            guard case .dialer(let purpose, let info) = role,
                  let acceptorId = p.readInteger(as: UInt64.self),
                  let nonceA = p.readBytes(length: Self.nonceSize),
                  let proof = p.readBytes(length: Self.macSize), p.readableBytes == 0
            else { return fail(.protocolViolation, "malformed challenge") }
            if let refusal = refusingAnotherCertificate(acceptorId) { return refusal }
            let expected = key.mac(Array("peernode/1 acceptor".utf8), nonceD, nonceA, be(acceptorId), be(localId), binding)
            guard constantTimeEqual(proof, expected) else {
                return fail(.badKey, "peer \(hex(acceptorId)) failed the cluster key check (different cluster key?)")
            }
            state = .dialerAwaitingAccept(HandshakeResult(remoteId: acceptorId, purpose: purpose, info: info))
            let answer = key.mac(Array("peernode/1 dialer".utf8), nonceD, nonceA, be(localId), be(acceptorId),
                                 [purpose.rawValue], binding)
            return Step(send: (.response, answer))

        case (.acceptorAwaitingResponse(let result, let nonceD, let nonceA), .response):
            guard let answer = p.readBytes(length: Self.macSize), p.readableBytes == 0 else {
                return fail(.protocolViolation, "malformed response")
            }
            let expected = key.mac(Array("peernode/1 dialer".utf8), nonceD, nonceA, be(result.remoteId), be(localId),
                                   [result.purpose.rawValue], binding)
            guard constantTimeEqual(answer, expected) else {
                return fail(.badKey, "peer \(hex(result.remoteId)) failed the cluster key check (different cluster key?)")
            }
            state = .done
            return Step(send: (.accept, []), outcome: .authenticated(result))

        case (.dialerAwaitingAccept(let result), .accept):
            guard p.readableBytes == 0 else { return fail(.protocolViolation, "malformed accept") }
            state = .done
            return Step(outcome: .authenticated(result))

        default:
            return fail(.protocolViolation, "unexpected \(type) frame during the handshake")
        }
    }

    /// With certificates, a peer id that does not begin with its certificate's four bytes.
    private mutating func refusingAnotherCertificate(_ id: UInt64) -> Step? {
        guard let peerPrefix, UInt32(truncatingIfNeeded: id >> 32) != peerPrefix else { return nil }
        return fail(.security, "peer claims node id \(hex(id)), which is not its certificate's (it must begin with \(String(peerPrefix, radix: 16)))")
    }

    /// A failure the other side should hear about gets a reject frame before the close.
    private mutating func fail(_ code: HandshakeError.Code, _ message: String, reject: Bool = true) -> Step {
        state = .done
        let send: (MessageType, [UInt8])? = reject ? (.reject, [code.rawValue] + Array(rejectReason(code).utf8)) : nil
        return Step(send: send, outcome: .failed(HandshakeError(code: code, message: message)))
    }

    private func rejectReason(_ code: HandshakeError.Code) -> String {
        switch code {
        case .badKey: "authentication failed: wrong cluster key"
        case .versionMismatch: "protocol version mismatch (this node speaks v\(FrameHeader.protocolVersion))"
        case .protocolViolation: "protocol violation during the handshake"
        case .timeout: "handshake timed out"
        case .refused: "refused"
        case .security: "link security refused (TLS against plaintext, or a certificate not matching the node id)"
        }
    }
}

func be(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
func be16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
/// Peer ids are shown as 16 hex digits everywhere (logs, status page).
public func hex(_ id: UInt64) -> String {
    let s = String(id, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
