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
    static let limits: FrameLimits = {
        var l = FrameLimits()
        l.maxControlPayload = 64
        l.maxDataPayload = 1 << 20
        return l
    }()
}

extension Communicator {
    /// Measures the link from this peer to `peer`'s data port: `pings` round trips of a small
    /// frame, then bulk data for at most `maxBytes` or 80 % of `maxSeconds`; the receiver reports
    /// the rate it saw. Blocking; throws on any I/O error or a peer that breaks the protocol.
    public func probeLink(to peer: PeerEndpoint, options: LinkProbeOptions = LinkProbeOptions()) throws -> LinkMeasurement {
        let started = ContinuousClock.now
        let deadline = started + .seconds(options.maxSeconds * 3 + 2)
        let (socket, _) = try BlockingSocket.dial(host: peer.host, port: peer.port, localId: localId, key: key,
                                                  purpose: .linkProbe, info: [], timeout: max(1, options.maxSeconds))
        defer { socket.close() }
        var best = Double.infinity
        for i in 0..<max(1, options.pings) {
            let t = ContinuousClock.now
            try socket.sendFrame(.collectiveControl, aux: ProbeFrame.ping, bytes: withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) })
            let (header, _) = try socket.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
            guard header.type == .collectiveControl, header.aux == ProbeFrame.pong else { throw probeError(peer, "expected a pong") }
            best = min(best, seconds(ContinuousClock.now - t))
        }
        let bulk = [UInt8](repeating: 0x5A, count: max(1024, options.frameBytes))
        let bulkStart = ContinuousClock.now
        var sent = 0
        while sent < options.maxBytes && seconds(ContinuousClock.now - bulkStart) < options.maxSeconds * 0.8 {
            try socket.sendFrame(.data, bytes: bulk)
            sent += bulk.count
        }
        try socket.sendFrame(.collectiveControl, aux: ProbeFrame.end, bytes: withUnsafeBytes(of: UInt64(sent).bigEndian) { Array($0) })
        let (header, payload) = try socket.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
        guard header.type == .collectiveControl, header.aux == ProbeFrame.result, payload.count == 16 else {
            throw probeError(peer, "expected the probe's result")
        }
        let received = payload[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let rate = payload[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard received == UInt64(sent), rate > 0 else { throw probeError(peer, "the peer received \(received) of \(sent) bytes") }
        return LinkMeasurement(bandwidth: Double(rate), latency: best / 2, bytes: sent, seconds: seconds(ContinuousClock.now - started))
    }

    /// The receiving end of ``probeLink(to:options:)``, on the accepting thread.
    func serveLinkProbe(_ socket: BlockingSocket, from peer: UInt64) {
        defer { socket.close() }
        let deadline = ContinuousClock.now + .seconds(10)
        var marks: [(bytes: Int, at: ContinuousClock.Instant)] = []
        var total = 0
        do {
            while true {
                let (header, payload) = try socket.receiveFrame(limits: ProbeFrame.limits, deadline: deadline)
                if header.type == .data {
                    total += payload.count
                    marks.append((total, ContinuousClock.now))
                    guard marks.count <= 1 << 16 else { return }
                } else if header.type == .collectiveControl && header.aux == ProbeFrame.ping {
                    try socket.sendFrame(.collectiveControl, aux: ProbeFrame.pong, bytes: payload)
                } else if header.type == .collectiveControl && header.aux == ProbeFrame.end {
                    try socket.sendFrame(.collectiveControl, aux: ProbeFrame.result,
                                         bytes: withUnsafeBytes(of: UInt64(total).bigEndian) { Array($0) }
                                            + withUnsafeBytes(of: Self.probeRate(marks).bigEndian) { Array($0) })
                    return
                } else {
                    logger.warning("link probe from \(hex(peer)): unexpected \(header.type) frame")
                    return
                }
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

private func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
