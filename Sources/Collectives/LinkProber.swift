import Foundation
import Logging
import Transport

/// Measures this member's links to the other ring members and reports them to the coordinator
/// (docs/membership.md, "Ring order"): the links to new members as soon as a view that admits
/// them is committed, all links again every `refresh`, one link at a time (each probe bounded by
/// ``LinkProbeOptions``). The latest measurements go to the coordinator after every round and
/// whenever the coordinator changes.
public final class LinkProber: @unchecked Sendable {
    private let node: MembershipNode
    private let communicator: Communicator
    private let options: LinkProbeOptions
    private let refresh: Duration
    private let logger: Logger
    private let lock = NSLock()
    private var measured: [UInt64: (link: LinkMeasurement, at: ContinuousClock.Instant)] = [:]
    /// When a probe of a peer last failed: tried again only after `retry` (a peer whose data port
    /// cannot be reached is not dialled four times a second).
    private var failed: [UInt64: ContinuousClock.Instant] = [:]
    private var retry: Duration { min(refresh, .seconds(10)) }

    public init(node: MembershipNode, communicator: Communicator, options: LinkProbeOptions = LinkProbeOptions(),
                refresh: Duration = .seconds(60), logger: Logger) {
        self.node = node
        self.communicator = communicator
        self.options = options
        self.refresh = refresh
        var logger = logger
        logger[metadataKey: "node.id"] = "\(hex(node.localId))"
        self.logger = logger
    }

    /// The latest measurement of the link to each peer.
    public var measurements: [UInt64: LinkMeasurement] { lock.withLock { measured.mapValues(\.link) } }

    /// Runs until cancelled.
    public func run() async {
        var reportedTo: UInt64?
        var reportedEpoch: UInt64 = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            guard let view = node.view, view.ringIds.contains(node.localId) else { continue }
            let me = node.localId
            let ring = view.ringView.members
            guard let mine = ring.firstIndex(where: { $0.id == me }) else { continue }
            // Peers in ring order after this one: members probe different peers at the same time.
            let peers = (1..<ring.count).map { ring[(mine + $0) % ring.count] }
            let now = ContinuousClock.now
            let due = lock.withLock {
                peers.filter { peer in
                    (measured[peer.id].map { now - $0.at >= refresh } ?? true) && (failed[peer.id].map { now - $0 >= retry } ?? true)
                }
            }
            if !due.isEmpty {
                await probe(due)
            }
            let current = Set(peers.map(\.id))
            let reports = lock.withLock {
                measured.filter { current.contains($0.key) }.sorted { $0.key < $1.key }
                    .map { (peer: $0.key, bandwidth: $0.value.link.bandwidth, latency: $0.value.link.latency) }
            }
            guard !reports.isEmpty else { continue }
            if !due.isEmpty || reportedTo != view.coordinator || reportedEpoch != view.epoch {
                node.reportLinks(reports)
                reportedTo = view.coordinator
                reportedEpoch = view.epoch
            }
        }
    }

    private func probe(_ peers: [PeerEndpoint]) async {
        let started = ContinuousClock.now
        var bytes = 0
        var lines: [String] = []
        for peer in peers where !Task.isCancelled {
            let communicator = self.communicator
            let options = self.options
            do {
                let link = try await runBlocking { try communicator.probeLink(to: peer, options: options) }
                lock.withLock {
                    measured[peer.id] = (link, .now)
                    failed[peer.id] = nil
                }
                bytes += link.bytes
                lines.append(String(format: "%@ %.0f Mbit/s %.2f ms", hex(peer.id), link.bandwidth * 8 / 1e6, link.latency * 1e3))
            } catch {
                lock.withLock { failed[peer.id] = .now }
                logger.info("link probe to \(hex(peer.id)) failed (next try in \(retry)): \(error)")
            }
        }
        let elapsed = ContinuousClock.now - started
        guard !lines.isEmpty else { return }
        logger.info("link probe: \(lines.count) peer(s) in \(String(format: "%.2f", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)) s, \(bytes) bytes: \(lines.joined(separator: ", "))")
    }
}
