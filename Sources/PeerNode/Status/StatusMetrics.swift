import CoreMetrics
import Foundation
import Prometheus
import Transport

/// The `/metrics` exposition: the `/status` numbers as swift-metrics instruments written into a
/// Prometheus registry this node owns.
///
/// The registry is private rather than the global `MetricsSystem` one: bootstrapping is once per
/// process, which tests and several daemons in one process (the demo) cannot share. Values are
/// pulled from a fresh ``StatusReport`` at each scrape instead of pushed by the training loop,
/// so the loop stays unaware of Prometheus and a scrape is never staler than `/status`.
/// Counters only move forward: each scrape adds what grew since the previous one.
final class StatusMetrics: @unchecked Sendable {
    private let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    private let info: CoreMetrics.Gauge
    private let up: CoreMetrics.Gauge
    private let revision: CoreMetrics.Gauge
    private let epoch: CoreMetrics.Gauge
    private let peers: CoreMetrics.Gauge
    private let viewMembers: CoreMetrics.Gauge
    private let isCoordinator: CoreMetrics.Gauge
    private let innerLoss: CoreMetrics.Gauge
    private let innerSeconds: CoreMetrics.Gauge
    private let communicationSeconds: CoreMetrics.Gauge
    private let uptime: CoreMetrics.Gauge
    private let sentRate: CoreMetrics.Gauge
    private let receivedRate: CoreMetrics.Gauge
    private let bytesSent: CoreMetrics.Counter
    private let bytesReceived: CoreMetrics.Counter
    private let events: [(kind: String, value: KeyPath<StatusReport.Events, Int>, counter: CoreMetrics.Counter)]

    private let lock = NSLock()
    /// Created at the first step, when the metric's name (one label value for the process) is known.
    private var evaluation: CoreMetrics.Gauge?
    private var exported: [String: UInt64] = [:]

    init(identity: StatusRecorder.Identity) {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        self.registry = registry
        self.factory = factory
        func gauge(_ name: String, _ labels: [(String, String)] = []) -> CoreMetrics.Gauge {
            CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory)
        }
        func counter(_ name: String, _ labels: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: name, dimensions: labels, factory: factory)
        }
        info = gauge("peernode_info", [("id", hex(identity.nodeId)), ("version", StatusReport.version),
                                        ("model", identity.model), ("dataset", identity.dataset)])
        up = gauge("peernode_healthy")
        revision = gauge("peernode_outer_revision")
        epoch = gauge("peernode_view_epoch")
        peers = gauge("peernode_peers")
        viewMembers = gauge("peernode_view_members")
        isCoordinator = gauge("peernode_is_coordinator")
        innerLoss = gauge("peernode_inner_loss")
        innerSeconds = gauge("peernode_inner_seconds")
        communicationSeconds = gauge("peernode_communication_seconds")
        uptime = gauge("peernode_uptime_seconds")
        sentRate = gauge("peernode_last_step_throughput_bytes_per_second", [("direction", "sent")])
        receivedRate = gauge("peernode_last_step_throughput_bytes_per_second", [("direction", "received")])
        bytesSent = counter("peernode_bytes_sent_total")
        bytesReceived = counter("peernode_bytes_received_total")
        events = [("join", \.joins), ("leave", \.leaves), ("death", \.deaths), ("abort", \.aborts), ("retry", \.retries)]
            .map { (kind: $0.0, value: $0.1, counter: counter("peernode_membership_events_total", [("kind", $0.0)])) }
        info.record(1)
    }

    /// The Prometheus text exposition (format 0.0.4) for this report.
    func exposition(for report: StatusReport) -> String {
        lock.withLock {
            up.record(report.healthy ? 1 : 0)
            revision.record(Double(report.revision))
            epoch.record(Double(report.epoch))
            peers.record(Double(report.peers))
            viewMembers.record(Double(report.members.count))
            isCoordinator.record(report.role == "coordinator" ? 1 : 0)
            uptime.record(report.uptimeSeconds)
            sentRate.record(report.throughput.lastStepSentBytesPerSecond)
            receivedRate.record(report.throughput.lastStepReceivedBytesPerSecond)
            if let last = report.history.last {
                innerLoss.record(last.loss)
                innerSeconds.record(last.innerSeconds)
                communicationSeconds.record(last.communicationSeconds)
                if let name = report.metricName {
                    if evaluation == nil {
                        evaluation = CoreMetrics.Gauge(label: "peernode_eval_metric", dimensions: [("metric", name)],
                                                       factory: factory)
                    }
                    evaluation?.record(last.metric)
                }
            }
            advance(bytesSent, "sent", to: report.bytesSent)
            advance(bytesReceived, "received", to: report.bytesReceived)
            for event in events {
                advance(event.counter, event.kind, to: UInt64(max(0, report.events[keyPath: event.value])))
            }
            return registry.emitToString()
        }
    }

    private func advance(_ counter: CoreMetrics.Counter, _ key: String, to total: UInt64) {
        let before = exported[key] ?? 0
        guard total > before else { return }
        counter.increment(by: Int64(clamping: total - before))
        exported[key] = total
    }
}
