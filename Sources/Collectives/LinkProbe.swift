import Foundation
import Transport

extension ConnectionPurpose {
    /// A link probe between two members (docs/protocol.md, "Link probe").
    public static let linkProbe = ConnectionPurpose(rawValue: 4)
}

/// What one probe measured of the link from this peer to another.
public struct LinkMeasurement: Sendable, Equatable {
    /// Bytes per second the receiver saw, after the first quarter of the transfer (most of TCP's
    /// slow start).
    public var bandwidth: Double
    /// One way, seconds: half the least of the round trips.
    public var latency: Double
    /// Bulk bytes sent and how long the whole probe took (for the probe's cost).
    public var bytes: Int
    public var seconds: Double
}

/// The probe's bounds: at most `maxBytes` and about `maxSeconds` per link.
public struct LinkProbeOptions: Sendable, Equatable {
    public var pings = 5
    public var maxBytes = 4 << 20
    public var maxSeconds = 1.0
    public var frameBytes = 64 << 10

    public init() {}
}

/// The probe's frames (docs/protocol.md, "Link probe"): `collective-control` frames whose aux says
/// what they are, and `data` frames for the bulk.
private enum ProbeFrame {
    static let ping: UInt64 = 1
    static let pong: UInt64 = 2
    static let end: UInt64 = 3
    static let result: UInt64 = 4
    static let budget: UInt64 = 5
    static let limits: FrameLimits = {
        var l = FrameLimits()
        l.maxControlPayload = 64
        l.maxDataPayload = 1 << 20
        return l
    }()
}

extension Communicator {
    /// Measures the link from this peer to `peer`'s data port: `pings` round trips of a small
    /// frame, then bulk data until the receiver has seen `maxBytes` or 80 % of `maxSeconds` has
    /// passed since its first byte; the receiver then reports the rate it saw. Blocking; throws on
    /// any I/O error, a peer that breaks the protocol, or no result within about 2 × `maxSeconds` + 2 s.
    public func probeLink(to peer: PeerEndpoint, options: LinkProbeOptions = LinkProbeOptions()) throws -> LinkMeasurement {
        let started = ContinuousClock.now
        let deadline = started + .seconds(options.maxSeconds * 2 + 2)
        let (link, _) = try BlockingSocket.dial(host: peer.host, port: peer.port, localId: localId, key: key,
                                                  purpose: .linkProbe, info: [], timeout: max(1, options.maxSeconds))
        defer { link.close() }
        // What the kernel holds beyond what the link has carried is sent after the probe ends:
        // a small send buffer bounds that (and the probe's bytes) on a slow link.
        var sendBuffer: Int32 = 1 << 20
        setsockopt(link.socket.fd, SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))
        link.socket.setTimeouts(options.maxSeconds * 2 + 2)
        var best = Double.infinity
        for i in 0..<max(1, options.pings) {
            let t = ContinuousClock.now
            try link.sendFrame(.collectiveControl, aux: ProbeFrame.ping, bytes: be64(UInt64(i)))
            let (header, _) = try link.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
            guard header.type == .collectiveControl, header.aux == ProbeFrame.pong else { throw probeError(peer, "expected a pong") }
            best = min(best, seconds(ContinuousClock.now - t))
        }
        // The budget, for the receiver: bytes, then milliseconds.
        try link.sendFrame(.collectiveControl, aux: ProbeFrame.budget,
                             bytes: be64(UInt64(options.maxBytes)) + be64(UInt64(options.maxSeconds * 800)))
        let bulk = [UInt8](repeating: 0x5A, count: max(1024, options.frameBytes))
        let bulkStart = ContinuousClock.now
        var sent = 0
        var ended = false
        var result: [UInt8]?
        while result == nil {
            var ready = pollfd(fd: link.socket.fd, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, ended ? Int32(max(1, seconds(deadline - .now) * 1000)) : 0) > 0 {
                let (header, payload) = try link.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
                guard header.type == .collectiveControl, header.aux == ProbeFrame.result, payload.count == 16 else {
                    throw probeError(peer, "expected the probe's result")
                }
                result = payload
            } else if ended {
                throw probeError(peer, "no result")
            } else if sent >= options.maxBytes || seconds(ContinuousClock.now - bulkStart) >= options.maxSeconds {
                // The receiver ends the bulk by its own clock; this is the sender's bound.
                try link.sendFrame(.collectiveControl, aux: ProbeFrame.end, bytes: be64(UInt64(sent)))
                ended = true
            } else {
                try link.sendFrame(.data, bytes: bulk)
                sent += bulk.count
            }
        }
        let received = result![0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let rate = result![8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard received > 0, rate > 0 else { throw probeError(peer, "the peer measured nothing") }
        // Unsent bytes are dropped on close (SO_LINGER 0): the measurement is done.
        var off = linger(l_onoff: 1, l_linger: 0)
        setsockopt(link.socket.fd, SOL_SOCKET, SO_LINGER, &off, socklen_t(MemoryLayout<linger>.size))
        return LinkMeasurement(bandwidth: Double(rate), latency: best / 2, bytes: Int(received), seconds: seconds(ContinuousClock.now - started))
    }

    /// The receiving end of ``probeLink(to:options:)``, on the accepting thread.
    func serveLinkProbe(_ socket: any SocketLink, from peer: UInt64) {
        defer { socket.close() }
        let deadline = ContinuousClock.now + .seconds(10)
        var marks: [(bytes: Int, at: ContinuousClock.Instant)] = []
        var total = 0
        var budget: (bytes: Int, seconds: Double) = (4 << 20, 0.8)
        func answer() throws {
            try socket.sendFrame(.collectiveControl, aux: ProbeFrame.result, bytes: be64(UInt64(total)) + be64(Self.probeRate(marks)))
        }
        do {
            while true {
                let (header, payload) = try socket.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
                if header.type == .data {
                    total += payload.count
                    marks.append((total, ContinuousClock.now))
                    guard marks.count <= 1 << 16 else { return }
                    if total >= budget.bytes || seconds(marks.last!.at - marks[0].at) >= budget.seconds { break }
                } else if header.type == .collectiveControl && header.aux == ProbeFrame.ping {
                    try socket.sendFrame(.collectiveControl, aux: ProbeFrame.pong, bytes: payload)
                } else if header.type == .collectiveControl && header.aux == ProbeFrame.budget && payload.count == 16 {
                    let bytes = payload[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    let millis = payload[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    budget = (Int(min(bytes, 64 << 20)), Double(min(millis, 10_000)) / 1000)
                } else if header.type == .collectiveControl && header.aux == ProbeFrame.end {
                    break
                } else {
                    logger.warning("link probe from \(hex(peer)): unexpected \(header.type) frame")
                    return
                }
            }
            try answer()
            // Read on until the dialer closes (closing with unread bytes would reset the
            // connection, and the result might be lost with it).
            let drain = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < drain {
                _ = try socket.receiveFrame(limits: ProbeFrame.limits, deadline: drain)
            }
        } catch {
            logger.debug("link probe from \(hex(peer)) ended: \(error)")
        }
    }

    /// Bytes per second over the frames after the first quarter of the bytes (the start of a TCP
    /// transfer runs below the link's rate); over all of them if they are too few.
    static func probeRate(_ marks: [(bytes: Int, at: ContinuousClock.Instant)]) -> UInt64 {
        guard let last = marks.last, marks.count >= 2 else { return 0 }
        let from = marks.firstIndex { $0.bytes * 4 >= last.bytes } ?? 0
        let start = from < marks.count - 1 ? marks[from] : marks[0]
        let elapsed = Double((last.at - start.at).components.attoseconds) / 1e18 + Double((last.at - start.at).components.seconds)
        guard elapsed > 0 else { return 0 }
        return UInt64(Double(last.bytes - start.bytes) / elapsed)
    }

    private func probeError(_ peer: PeerEndpoint, _ what: String) -> CollectiveError {
        CollectiveError(code: .protocolViolation, message: "link probe to \(peer): \(what)")
    }
}

private func be64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

private func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
