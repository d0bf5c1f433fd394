import NIOCore

/// The fixed 28-byte header in front of every frame on every peernode connection.
///
/// All integers are big-endian (network order). A reader needs nothing but these 28 bytes to
/// know how many payload bytes follow, so a receiver can bound and skip anything it does not
/// understand before reading it.
///
/// ```
///  0       4     5     6       8          12                  20                  28
///  +-------+-----+-----+-------+----------+-------------------+-------------------+----------
///  | magic | ver | type| flags |  length  |        tag        |        aux        | payload..
///  | PNOD  | u8  | u8  |  u16  |   u32    |        u64        |        u64        | (length)
///  +-------+-----+-----+-------+----------+-------------------+-------------------+----------
/// ```
public struct FrameHeader: Hashable, Sendable {
    /// "PNOD": lets a receiver tell a stray client (HTTP, TLS, a port scanner) from a peer at once.
    public static let magic: UInt32 = 0x504E_4F44
    /// Bumped on any incompatible change to framing, handshake or message layouts.
    public static let protocolVersion: UInt8 = 4
    public static let size = 28

    public var type: MessageType
    public var flags: UInt16
    /// Payload bytes following the header.
    public var length: UInt32
    /// Collective tag for data frames; request id for control frames; 0 otherwise.
    public var tag: UInt64
    /// Type-specific: the segment sequence number of a data frame.
    public var aux: UInt64

    public init(type: MessageType, flags: UInt16 = 0, length: UInt32, tag: UInt64 = 0, aux: UInt64 = 0) {
        self.type = type
        self.flags = flags
        self.length = length
        self.tag = tag
        self.aux = aux
    }

    /// Checks and reads a header from its first 28 bytes: magic, version, known type, and the
    /// type's length limit, so that nothing is read or allocated for a frame that is refused.
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: FrameLimits) throws -> FrameHeader {
        precondition(bytes.count >= size)
        func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        guard load(0, UInt32.self) == magic else { throw FrameDecodingError.badMagic(firstByte: bytes[0]) }
        let version = bytes[4]
        guard version == protocolVersion else {
            throw FrameDecodingError(
                code: .versionMismatch,
                message: "protocol version mismatch: peer speaks v\(version), this node speaks v\(protocolVersion)")
        }
        guard MessageType.known.contains(bytes[5]) else {
            throw FrameDecodingError(code: .unknownType, message: "unknown message type \(bytes[5])")
        }
        let type = MessageType(rawValue: bytes[5])
        let length = load(8, UInt32.self)
        let limit = type.isHandshake ? limits.maxHandshakePayload
            : type.isStreamed ? limits.maxDataPayload : limits.maxControlPayload
        guard Int(length) <= limit else {
            throw FrameDecodingError(code: .oversized, message: "\(type) frame of \(length) bytes exceeds the limit of \(limit)")
        }
        return FrameHeader(type: type, flags: load(6, UInt16.self), length: length, tag: load(12, UInt64.self),
                           aux: load(20, UInt64.self))
    }

    /// The 28 header bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { out += $0 } }
        put(Self.magic)
        put(Self.protocolVersion)
        put(type.rawValue)
        put(flags)
        put(length)
        put(tag)
        put(aux)
        return out
    }

    /// Appends the 28 header bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(Self.protocolVersion)
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(length)
        buffer.writeInteger(tag)
        buffer.writeInteger(aux)
    }
}

/// Message types. Numbers are part of the wire protocol (docs/protocol.md); never reuse one.
public struct MessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    // Handshake (P2P, both directions): see Handshake.swift.
    public static let hello = MessageType(rawValue: 1)
    public static let challenge = MessageType(rawValue: 2)
    public static let response = MessageType(rawValue: 3)
    public static let accept = MessageType(rawValue: 4)
    public static let reject = MessageType(rawValue: 5)

    /// Bulk collective payload. Streamed to the receiver in fragments, never buffered whole.
    public static let data = MessageType(rawValue: 16)
    /// Collective control (outcome votes, aborts): small, buffered whole.
    public static let collectiveControl = MessageType(rawValue: 17)

    /// Membership and coordination messages (small, buffered whole).
    public static let control = MessageType(rawValue: 32)

    /// Shared-state transfer (docs/protocol.md, section 4): request, one chunk, refusal.
    public static let stateRequest = MessageType(rawValue: 48)
    public static let stateChunk = MessageType(rawValue: 49)
    public static let stateError = MessageType(rawValue: 50)

    public var isHandshake: Bool { (1...5).contains(rawValue) }
    public var isStreamed: Bool { self == .data }

    public var description: String {
        switch self {
        case .hello: "hello"
        case .challenge: "challenge"
        case .response: "response"
        case .accept: "accept"
        case .reject: "reject"
        case .data: "data"
        case .collectiveControl: "collective-control"
        case .control: "control"
        case .stateRequest: "state-request"
        case .stateChunk: "state-chunk"
        case .stateError: "state-error"
        default: "type(\(rawValue))"
        }
    }

    static let known: Set<UInt8> = [1, 2, 3, 4, 5, 16, 17, 32, 48, 49, 50]
}
