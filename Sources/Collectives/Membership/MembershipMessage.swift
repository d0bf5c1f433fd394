import Transport

/// Membership messages, carried one per `control` frame (type 32). Names say who sends:
/// M2C member to coordinator, C2M coordinator to member. Layouts: docs/membership.md.
enum MembershipMessage: Hashable, Sendable {
    /// M2C: a new node asks to be admitted (sent to any member; a non-coordinator redirects).
    /// `settings`: what every ring member must share (model, state size, modes), compared by the
    /// coordinator; empty for a node without a ring position.
    case join(NodeInfo, settings: String)
    /// M2C: a member (re)attaches to a coordinator: after a failover, a handover, or a redirect.
    /// Carries its epoch and the outcome decisions it knows, so a new coordinator never contradicts them.
    case rejoin(NodeInfo, epoch: UInt64, decisions: [Decision])
    /// M2C: liveness.
    case memberHeartbeat(epoch: UInt64)
    /// M2C: the sender called `updateTopology()` and waits at the update point.
    case updateRequest(epoch: UInt64)
    /// M2C: the sender acknowledges (or refuses) the proposal of `epoch`; a refusal names the
    /// view the sender already acknowledged for that epoch, if any.
    case ack(epoch: UInt64, accepted: Bool, acked: MembershipView?)
    /// M2C: graceful leave.
    case leave
    /// M2C: the sender's result of one collective.
    case outcome(RoundKey, done: Bool)
    /// M2C: what the sender measured of its links to other members (docs/membership.md, "Ring
    /// order"), for the coordinator's ring plan.
    case links([LinkReport])
    /// M2C, in answer to a proposal of an epoch the sender has already committed differently:
    /// the sender's committed view. The proposer has missed that view and must join anew.
    case stale(MembershipView)

    /// C2M: talk to this node instead (it is, or is believed to be, the coordinator).
    case redirect(id: UInt64, host: String, port: Int)
    /// C2M: liveness; the first one after a join or rejoin also says "registered".
    case coordinatorHeartbeat(epoch: UInt64)
    /// C2M: a proposed next view; members acknowledge at most one view per epoch.
    case propose(MembershipView)
    /// C2M: a view acknowledged by a quorum of its predecessor; `departed` lists nodes that
    /// left gracefully (other removed nodes died).
    case commit(MembershipView, departed: [UInt64])
    /// C2M: every ring member reached the update point of `epoch`: `updateTopology()` returns.
    /// `point` numbers the update points of the epoch (1, 2, …); collectives run after it carry
    /// it in their identity, so that a retry after an abort is a collective of its own.
    case proceed(epoch: UInt64, point: UInt64)
    /// C2M: the agreed outcome of one collective (true: commit, false: abort).
    case decision(RoundKey, commit: Bool)
    /// C2M: the sender is not (or no longer) a member; it must join anew.
    case removed(reason: String)
    /// C2M: the joiner's settings do not match the cluster's: retrying cannot help.
    case incompatible(reason: String)
    /// C2M: this node's line merges into `view`'s line (they met again after a split): leave this
    /// line and join that one.
    case merge(MembershipView)

    /// Any direction: the view (line) the sender is in. A coordinator sends it to addresses it
    /// knows outside its view, looking for other lines of the cluster; a node of another line
    /// answers with its own (`reply`), and the line that loses (``MembershipRules/wins(_:over:)``)
    /// merges into the other.
    case line(MembershipView, reply: Bool)

    /// One measured link, from the sender to `to`.
    struct LinkReport: Hashable, Sendable {
        var to: UInt64
        /// Bytes per second.
        var bandwidth: UInt64
        /// One way, microseconds (half the least round trip seen).
        var latencyMicros: UInt32
    }

    struct Decision: Hashable, Sendable {
        var key: RoundKey
        var commit: Bool
    }
}

extension MembershipMessage {
    /// The message's name in docs/membership.md, for log lines.
    var kindName: String {
        switch self {
        case .join: "join"
        case .rejoin: "rejoin"
        case .memberHeartbeat: "member heartbeat"
        case .updateRequest: "update request"
        case .ack: "ack"
        case .leave: "leave"
        case .outcome: "outcome"
        case .stale: "stale"
        case .links: "links"
        case .redirect: "redirect"
        case .coordinatorHeartbeat: "coordinator heartbeat"
        case .propose: "propose"
        case .commit: "commit"
        case .proceed: "proceed"
        case .decision: "decision"
        case .removed: "removed"
        case .incompatible: "incompatible"
        case .merge: "merge"
        case .line: "line"
        }
    }
}

/// Bounds every decoder enforces before allocating.
enum MembershipLimits {
    static let maxNodes = 4096
    static let maxHost = 255
    static let maxReason = 512
    static let maxDecisions = 256
    /// The largest view epoch a message may carry: far beyond any cluster's life (one change a
    /// microsecond for 146,000 years), and far enough below 2⁶⁴ that every `epoch + 1` the
    /// machines compute stays in range (a view of epoch 2⁶⁴−1 trapped in the next election;
    /// found by fuzzing).
    static let maxEpoch: UInt64 = 1 << 62
}

struct MembershipCodecError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension MembershipMessage {
    private enum Kind: UInt8 {
        case join = 1, rejoin = 2, memberHeartbeat = 3, updateRequest = 4, ack = 5, leave = 6, outcome = 7, stale = 8, links = 9
        case redirect = 16, coordinatorHeartbeat = 17, propose = 18, commit = 19, proceed = 20, decision = 21, removed = 22
        case merge = 23, incompatible = 24
        case line = 32
    }

    func encode() -> [UInt8] {
        var w = Writer()
        switch self {
        case .join(let node, let settings):
            w.u8(Kind.join.rawValue); w.node(node); w.string(settings)
        case .rejoin(let node, let epoch, let decisions):
            w.u8(Kind.rejoin.rawValue); w.node(node); w.u64(epoch)
            let kept = decisions.suffix(MembershipLimits.maxDecisions)
            w.u16(UInt16(kept.count))
            for d in kept { w.roundKey(d.key); w.u8(d.commit ? 1 : 0) }
        case .memberHeartbeat(let epoch):
            w.u8(Kind.memberHeartbeat.rawValue); w.u64(epoch)
        case .updateRequest(let epoch):
            w.u8(Kind.updateRequest.rawValue); w.u64(epoch)
        case .ack(let epoch, let accepted, let acked):
            w.u8(Kind.ack.rawValue); w.u64(epoch); w.u8(accepted ? 1 : 0)
            if let acked { w.u8(1); w.view(acked) } else { w.u8(0) }
        case .leave:
            w.u8(Kind.leave.rawValue)
        case .outcome(let key, let done):
            w.u8(Kind.outcome.rawValue); w.roundKey(key); w.u8(done ? 1 : 0)
        case .stale(let view):
            w.u8(Kind.stale.rawValue); w.view(view)
        case .links(let reports):
            w.u8(Kind.links.rawValue)
            let kept = reports.prefix(MembershipLimits.maxNodes)
            w.u16(UInt16(kept.count))
            for r in kept { w.u64(r.to); w.u64(r.bandwidth); w.u32(r.latencyMicros) }
        case .merge(let view):
            w.u8(Kind.merge.rawValue); w.view(view)
        case .incompatible(let reason):
            w.u8(Kind.incompatible.rawValue)
            w.string(String(decoding: Array(reason.utf8.prefix(MembershipLimits.maxReason)), as: UTF8.self),
                     limit: MembershipLimits.maxReason)
        case .line(let view, let reply):
            w.u8(Kind.line.rawValue); w.view(view); w.u8(reply ? 1 : 0)
        case .redirect(let id, let host, let port):
            w.u8(Kind.redirect.rawValue); w.u64(id); w.string(host); w.u16(UInt16(clamping: port))
        case .coordinatorHeartbeat(let epoch):
            w.u8(Kind.coordinatorHeartbeat.rawValue); w.u64(epoch)
        case .propose(let view):
            w.u8(Kind.propose.rawValue); w.view(view)
        case .commit(let view, let departed):
            w.u8(Kind.commit.rawValue); w.view(view)
            let kept = departed.prefix(MembershipLimits.maxNodes)
            w.u16(UInt16(kept.count)); for id in kept { w.u64(id) }
        case .proceed(let epoch, let point):
            w.u8(Kind.proceed.rawValue); w.u64(epoch); w.u64(point)
        case .decision(let key, let commit):
            w.u8(Kind.decision.rawValue); w.roundKey(key); w.u8(commit ? 1 : 0)
        case .removed(let reason):
            w.u8(Kind.removed.rawValue)
            w.string(String(decoding: Array(reason.utf8.prefix(MembershipLimits.maxReason)), as: UTF8.self),
                     limit: MembershipLimits.maxReason)
        }
        return w.bytes
    }

    /// Decodes one payload, which must be consumed exactly; throws on anything else.
    static func decode(_ bytes: [UInt8]) throws -> MembershipMessage {
        var r = Reader(bytes: bytes)
        let raw = try r.u8()
        guard let kind = Kind(rawValue: raw) else { throw MembershipCodecError(message: "unknown membership message kind \(raw)") }
        let message: MembershipMessage
        switch kind {
        case .join: message = .join(try r.node(), settings: try r.string())
        case .rejoin:
            let node = try r.node()
            let epoch = try r.u64()
            let count = Int(try r.u16())
            guard count <= MembershipLimits.maxDecisions else { throw MembershipCodecError(message: "\(count) decisions exceed the limit") }
            var decisions: [Decision] = []
            for _ in 0..<count {
                decisions.append(Decision(key: try r.roundKey(), commit: try r.bool()))
            }
            message = .rejoin(node, epoch: epoch, decisions: decisions)
        case .memberHeartbeat: message = .memberHeartbeat(epoch: try r.u64())
        case .updateRequest: message = .updateRequest(epoch: try r.u64())
        case .ack:
            let epoch = try r.u64()
            let accepted = try r.bool()
            let acked = try r.bool() ? try r.view() : nil
            message = .ack(epoch: epoch, accepted: accepted, acked: acked)
        case .leave: message = .leave
        case .outcome: message = .outcome(try r.roundKey(), done: try r.bool())
        case .stale: message = .stale(try r.view())
        case .links:
            let count = Int(try r.u16())
            guard count <= MembershipLimits.maxNodes, count * 20 <= r.remaining else {
                throw MembershipCodecError(message: "\(count) link reports exceed the limit or the payload")
            }
            var reports: [LinkReport] = []
            for _ in 0..<count { reports.append(LinkReport(to: try r.u64(), bandwidth: try r.u64(), latencyMicros: try r.u32())) }
            message = .links(reports)
        case .merge: message = .merge(try r.view())
        case .incompatible: message = .incompatible(reason: try r.string(limit: MembershipLimits.maxReason))
        case .line: message = .line(try r.view(), reply: try r.bool())
        case .redirect: message = .redirect(id: try r.u64(), host: try r.host(), port: Int(try r.u16()))
        case .coordinatorHeartbeat: message = .coordinatorHeartbeat(epoch: try r.u64())
        case .propose: message = .propose(try r.view())
        case .commit:
            let view = try r.view()
            let count = Int(try r.u16())
            guard count <= MembershipLimits.maxNodes else { throw MembershipCodecError(message: "\(count) departed ids exceed the limit") }
            var departed: [UInt64] = []
            for _ in 0..<count { departed.append(try r.u64()) }
            message = .commit(view, departed: departed)
        case .proceed: message = .proceed(epoch: try r.u64(), point: try r.u64())
        case .decision: message = .decision(try r.roundKey(), commit: try r.bool())
        case .removed: message = .removed(reason: try r.string(limit: MembershipLimits.maxReason))
        }
        guard r.remaining == 0 else { throw MembershipCodecError(message: "\(r.remaining) trailing bytes after a \(kind) message") }
        return message
    }
}

/// Big-endian writer for membership payloads.
private struct Writer {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func string(_ s: String, limit: Int = MembershipLimits.maxHost) {
        let utf8 = Array(s.utf8.prefix(limit))
        u16(UInt16(utf8.count))
        bytes += utf8
    }
    /// Epoch (u64), purpose (u8), sequence (u64), update point (u64): 25 bytes.
    mutating func roundKey(_ k: RoundKey) {
        u64(k.epoch); u8(k.collective.purpose.rawValue); u64(k.collective.sequence); u64(k.collective.point)
    }
    mutating func node(_ n: NodeInfo) {
        u64(n.id); string(n.controlHost); u16(UInt16(clamping: n.controlPort))
        string(n.dataHost); u16(UInt16(clamping: n.dataPort)); u8(n.inRing ? 1 : 0)
    }
    mutating func view(_ v: MembershipView) {
        u64(v.epoch); u64(v.line); u64(v.coordinator)
        u16(UInt16(min(v.nodes.count, MembershipLimits.maxNodes)))
        for n in v.nodes.prefix(MembershipLimits.maxNodes) { node(n) }
        // v3: the planned ring order (ids; 0 entries: view order).
        let order = v.ringOrder.prefix(MembershipLimits.maxNodes)
        u16(UInt16(order.count)); for id in order { u64(id) }
    }
}

/// Bounds-checked reader: every length is checked against the limit and the bytes left before use.
private struct Reader {
    let bytes: [UInt8]
    var index = 0
    var remaining: Int { bytes.count - index }

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n <= remaining else { throw MembershipCodecError(message: "membership message cut short") }
        defer { index += n }
        return bytes[index..<index + n]
    }
    mutating func u8() throws -> UInt8 { try take(1).first! }
    mutating func bool() throws -> Bool {
        let v = try u8()
        guard v <= 1 else { throw MembershipCodecError(message: "boolean byte \(v)") }
        return v == 1
    }
    mutating func u16() throws -> UInt16 { try take(2).reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32() throws -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func string(limit: Int = MembershipLimits.maxHost) throws -> String {
        let n = Int(try u16())
        guard n <= limit else { throw MembershipCodecError(message: "string of \(n) bytes exceeds \(limit)") }
        guard let s = String(validating: try take(n), as: UTF8.self) else { throw MembershipCodecError(message: "invalid UTF-8") }
        return s
    }
    mutating func roundKey() throws -> RoundKey {
        let epoch = try u64()
        let purpose = CollectivePurpose(rawValue: try u8())
        let sequence = try u64()
        guard sequence <= CollectiveID.maxSequence else { throw MembershipCodecError(message: "collective sequence \(sequence) exceeds 56 bits") }
        return RoundKey(epoch: epoch, collective: CollectiveID(purpose: purpose, sequence: sequence, point: try u64()))
    }
    mutating func node() throws -> NodeInfo {
        NodeInfo(id: try u64(), controlHost: try host(), controlPort: Int(try u16()),
                 dataHost: try host(), dataPort: Int(try u16()), inRing: try bool())
    }
    /// A host name or address: printable ASCII without spaces (it is dialled and logged).
    mutating func host() throws -> String {
        let s = try string()
        guard s.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw MembershipCodecError(message: "host \(escapedForLog(s, limit: 64)) has characters a host cannot have")
        }
        return s
    }
    mutating func view() throws -> MembershipView {
        let epoch = try u64()
        guard epoch <= MembershipLimits.maxEpoch else { throw MembershipCodecError(message: "view epoch \(epoch) exceeds 2^62") }
        let line = try u64()
        let coordinator = try u64()
        let count = Int(try u16())
        guard count <= MembershipLimits.maxNodes else { throw MembershipCodecError(message: "view of \(count) nodes exceeds the limit") }
        // Each node takes at least 17 bytes: refuse counts the payload cannot hold before looping.
        guard count * 17 <= remaining else { throw MembershipCodecError(message: "membership message cut short") }
        var nodes: [NodeInfo] = []
        nodes.reserveCapacity(count)
        for _ in 0..<count { nodes.append(try node()) }
        guard Set(nodes.map(\.id)).count == nodes.count else { throw MembershipCodecError(message: "duplicate node ids in a view") }
        let orderCount = Int(try u16())
        guard orderCount <= MembershipLimits.maxNodes, orderCount * 8 <= remaining else {
            throw MembershipCodecError(message: "ring order of \(orderCount) ids exceeds the limit or the payload")
        }
        var order: [UInt64] = []
        for _ in 0..<orderCount { order.append(try u64()) }
        return MembershipView(epoch: epoch, line: line, coordinator: coordinator, nodes: nodes, ringOrder: order)
    }
}
