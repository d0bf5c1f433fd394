/// One member of the ring: its id and where its data port listens.
public struct PeerEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    public var id: UInt64
    public var host: String
    public var port: Int

    public init(id: UInt64, host: String, port: Int) {
        self.id = id
        self.host = host
        self.port = port
    }

    public var description: String { "\(String(id, radix: 16))@\(host):\(port)" }
}

/// An ordered member set with its epoch: the value a membership change replaces.
public struct RingView: Hashable, Sendable, Codable {
    public var epoch: UInt64
    public var members: [PeerEndpoint]
    /// The membership line the ring's view belongs to (docs/membership.md, "Lines").
    public var line: UInt64

    public init(epoch: UInt64, members: [PeerEndpoint], line: UInt64 = 0) {
        self.epoch = epoch
        self.members = members
        self.line = line
    }

    public func rank(of id: UInt64) -> Int? { members.firstIndex { $0.id == id } }
    public var count: Int { members.count }
}
