import Collectives
import DiLoCo
import Foundation
import Models
import Transport

/// What the status port shows: the daemon reports each outer step here and hands over providers
/// for what changes between steps (membership, traffic), so it needs one call per step and no
/// knowledge of HTTP, JSON or Prometheus.
///
/// Read by the HTTP server's threads while the training loop writes, hence the lock. The history
/// is bounded (`capacity` steps) so a node that runs for weeks keeps a flat memory profile.
final class StatusRecorder: @unchecked Sendable {
    /// What does not change while the daemon runs.
    struct Identity: Sendable {
        var nodeId: UInt64
        var model: String
        var dataset: String
        /// How this node's links are protected: `psk`, `certificate` or `off`.
        var tls = "psk"
    }

    /// Read on every request, so the answer is live even while a step is running.
    typealias MembershipProvider = @Sendable () -> MembershipStatus
    typealias TrafficProvider = @Sendable () -> (sent: UInt64, received: UInt64)

    let identity: Identity
    let capacity: Int
    private let membership: MembershipProvider
    private let traffic: TrafficProvider
    private let started: Date
    private let startedUptime: ContinuousClock.Instant

    private let lock = NSLock()
    private var steps: [StatusReport.Step] = []
    private var metricName: String?
    private var higherIsBetter: Bool?
    private var stopping: String?
    private var membershipLog: [StatusReport.MembershipLogEntry] = []
    static let membershipLogCapacity = 64

    init(identity: Identity, capacity: Int = 500, membership: @escaping MembershipProvider,
         traffic: @escaping TrafficProvider) {
        precondition(capacity > 0)
        self.identity = identity
        self.capacity = capacity
        self.membership = membership
        self.traffic = traffic
        started = Date()
        startedUptime = ContinuousClock.now
    }

    /// Convenience for the daemon: the trainer's report and the evaluation that followed it.
    func recordOuterStep(_ report: OuterStepReport, evaluation: Metrics) {
        recordOuterStep(revision: report.revision, loss: Double(report.meanInnerLoss), metricName: evaluation.name,
                        metric: evaluation.value, higherIsBetter: evaluation.higherIsBetter,
                        digest: report.digest.description, peers: report.peers, retries: report.retries,
                        innerSeconds: report.innerSeconds, communicationSeconds: report.communicationSeconds)
    }

    /// Records one finished outer step; traffic totals and the time are sampled now.
    func recordOuterStep(revision: UInt64, loss: Double, metricName: String, metric: Double, higherIsBetter: Bool,
                         digest: String, peers: Int, retries: Int, innerSeconds: Double, communicationSeconds: Double,
                         at time: Date = Date()) {
        let bytes = traffic()
        lock.withLock {
            let previous = steps.last
            let since = previous.map { time.timeIntervalSince1970 - $0.time } ?? time.timeIntervalSince(started)
            let seconds = max(since, 1e-6)
            let sentBefore = previous?.bytesSent ?? 0
            let receivedBefore = previous?.bytesReceived ?? 0
            steps.append(StatusReport.Step(
                revision: revision, time: time.timeIntervalSince1970, loss: loss, metric: metric, digest: digest,
                peers: peers, retries: retries, innerSeconds: innerSeconds, communicationSeconds: communicationSeconds,
                bytesSent: bytes.sent, bytesReceived: bytes.received,
                sentBytesPerSecond: Double(bytes.sent &- min(sentBefore, bytes.sent)) / seconds,
                receivedBytesPerSecond: Double(bytes.received &- min(receivedBefore, bytes.received)) / seconds))
            if steps.count > capacity { steps.removeFirst(steps.count - capacity) }
            self.metricName = metricName
            self.higherIsBetter = higherIsBetter
        }
    }

    /// Records the node's membership events until the stream ends (the node stopped) or the
    /// calling task is cancelled: the status port subscribes instead of asking the node.
    func follow(_ events: AsyncStream<MembershipEvent>) async {
        for await event in events { record(event) }
    }

    func record(_ event: MembershipEvent, at time: Date = Date()) {
        let (kind, detail): (String, String)
        switch event {
        case .viewCommitted(let view):
            kind = "view"
            detail = "epoch \(view.epoch) line \(hex(view.line)) coordinator \(hex(view.coordinator)) members \(view.nodes.count)"
        case .roleChanged(let role, let reason):
            kind = "role"
            detail = role.rawValue + (reason.map { ": \($0)" } ?? "")
        case .joinersWaiting(let count):
            kind = "joiners-waiting"
            detail = "\(count)"
        case .noQuorum(let epoch):
            kind = "no-quorum"
            detail = "epoch \(epoch)"
        }
        lock.withLock {
            membershipLog.append(.init(time: time.timeIntervalSince1970, kind: kind, detail: detail))
            if membershipLog.count > Self.membershipLogCapacity { membershipLog.removeFirst(membershipLog.count - Self.membershipLogCapacity) }
        }
    }

    /// The daemon is on its way out (leaving, or failed): `/healthz` answers 503 from now on.
    func markStopping(_ reason: String) {
        lock.withLock { stopping = reason }
    }

    var uptime: Duration { ContinuousClock.now - startedUptime }

    /// The `/status` document as of now; `since` keeps only the steps after that revision.
    func report(since: UInt64? = nil) -> StatusReport {
        let status = membership()
        let bytes = traffic()
        let uptime = max(Self.seconds(self.uptime), 1e-6)
        let (steps, metricName, higherIsBetter, stopping, membershipLog) = lock.withLock {
            (self.steps, self.metricName, self.higherIsBetter, self.stopping, self.membershipLog)
        }
        let facts = Self.viewFacts(status)
        let nodes = facts.nodes, coordinatorId = facts.coordinator, ringCount = facts.ringCount
        let selfId = identity.nodeId
        var members: [StatusReport.Member] = []
        members.reserveCapacity(nodes.count)
        for node in nodes {
            members.append(StatusReport.Member(id: hex(node.id), control: Self.address(node.controlHost, node.controlPort),
                                               data: Self.address(node.dataHost, node.dataPort), inRing: node.inRing,
                                               isCoordinator: node.id == coordinatorId, isSelf: node.id == selfId))
        }
        let last = steps.last
        let (healthy, health) = Self.health(role: status.role, rejoinReason: status.rejoinReason, stopping: stopping)
        return StatusReport(
            id: hex(identity.nodeId), version: StatusReport.version, role: status.role.rawValue,
            healthy: healthy, health: health, tls: identity.tls, epoch: facts.epoch, line: hex(status.line), coordinator: coordinatorId.map { hex($0) },
            members: members, revision: last?.revision ?? 0, digest: last?.digest, model: identity.model,
            dataset: identity.dataset, metricName: metricName, higherIsBetter: higherIsBetter,
            peers: last?.peers ?? ringCount, uptimeSeconds: uptime,
            bytesSent: bytes.sent, bytesReceived: bytes.received,
            throughput: StatusReport.Throughput(
                lastStepSentBytesPerSecond: last?.sentBytesPerSecond ?? 0,
                lastStepReceivedBytesPerSecond: last?.receivedBytesPerSecond ?? 0,
                overallSentBytesPerSecond: Double(bytes.sent) / uptime,
                overallReceivedBytesPerSecond: Double(bytes.received) / uptime),
            events: StatusReport.Events(joins: status.joins, leaves: status.leaves, deaths: status.deaths,
                                        aborts: status.aborts, retries: status.retries),
            membershipLog: membershipLog,
            history: since.map { since in steps.filter { $0.revision > since } } ?? steps,
            historyCapacity: capacity)
    }

    private struct ViewFacts {
        var nodes: [NodeInfo]
        var coordinator: UInt64?
        var ringCount: Int
        var epoch: UInt64
    }

    /// What the report needs of the view, read outside `report(since:)`: Swift 6.3.1's release
    /// optimizer (CopyPropagation) crashes on optional chains through `status.view` inlined there.
    @inline(never)
    private static func viewFacts(_ status: MembershipStatus) -> ViewFacts {
        guard let view = status.view else { return ViewFacts(nodes: [], coordinator: nil, ringCount: 0, epoch: 0) }
        return ViewFacts(nodes: view.nodes, coordinator: view.coordinator, ringCount: view.ringIds.count, epoch: view.epoch)
    }

    /// Healthy means useful to the cluster: running and in the view. A joiner not yet admitted, a
    /// node electing a new coordinator, or one that left is alive but not (yet) a member.
    static func health(role: MembershipStatus.Role, rejoinReason: String? = nil, stopping: String?) -> (Bool, String) {
        if let stopping { return (false, "stopping: \(stopping)") }
        switch role {
        case .member, .coordinator: return (true, "ok")
        case .rejoining: return (false, "rejoining: \(rejoinReason ?? "out of the view")")
        default: return (false, "not a member (role \(role.rawValue))")
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    static func address(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
