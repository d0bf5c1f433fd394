import Collectives
import Foundation
import Logging
import Models
import PeerTestSupport
import Transport
@testable import DiLoCo

/// One DiLoCo peer with real membership, ring and state transfer on loopback.
final class Peer: @unchecked Sendable {
    let index: Int
    let node: MembershipNode
    let communicator: Communicator
    let session: MembershipSession
    let trainer: DiLoCoTrainer
    var controlPort = 0

    /// `task`: MoE on a quarter of digits unless given. `configure`: changes to the DiLoCo
    /// options (H = 5, int8). `wrap`: the session the trainer talks to, around the real one (to
    /// inject faults).
    init(index: Int, mode: DiLoCoOptions.Mode = .sync, task: TrainingTask? = nil,
         configure: ((inout DiLoCoOptions) -> Void)? = nil,
         membershipOptions: ((inout MembershipOptions) -> Void)? = nil,
         wrap: ((MembershipSession) -> any ClusterSession)? = nil) throws {
        self.index = index
        var logger = Logger(label: "test")
        logger.logLevel = ProcessInfo.processInfo.environment["PEERNODE_TEST_LOG"] == nil ? .critical : .info
        logger[metadataKey: "peer"] = "\(index)"
        var membership = MembershipOptions()
        membership.heartbeatInterval = .milliseconds(100)
        membership.heartbeatTimeout = .seconds(2)
        membershipOptions?(&membership)
        let id = UInt64(0xD000 + index)
        node = MembershipNode(localId: id, key: testKey, options: membership, logger: logger)
        var options = CommunicatorOptions()
        options.ringFormationTimeout = .seconds(10)
        communicator = Communicator(localId: id, key: testKey, options: options, logger: logger)
        let task = try task ?? TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", shard: Shard(index: index % 4, count: 4), seed: 3))
        let state = try DiLoCoTrainer.sharedState(for: task)
        let server = StateServer(state: state, logger: logger)
        var downloader = StateDownloader(localId: id, key: testKey, logger: logger)
        downloader.chunkSize = 64 << 10
        session = MembershipSession(node: node, communicator: communicator, server: server, downloader: downloader,
                                    logger: logger)
        var diloco = DiLoCoOptions()
        diloco.innerSteps = 5
        diloco.allReduceTimeout = .seconds(20)
        diloco.mode = mode
        configure?(&diloco)
        trainer = try DiLoCoTrainer(task: task, state: state, session: wrap?(session) ?? session, options: diloco, logger: logger)
    }

    func start(seed: Int?) async throws {
        let dataPort = try await communicator.listen(host: "127.0.0.1", port: 0)
        controlPort = try await node.start(dataPort: dataPort, seed: seed.map { ("127.0.0.1", $0) })
    }

    /// Outer steps until the shared revision reaches `target`; the digest at each revision.
    func train(until target: UInt64) async throws -> [UInt64: String] {
        var digests: [UInt64: String] = [:]
        while trainer.revision < target {
            let report = try await trainer.outerStep()
            digests[report.revision] = report.digest.description
            record(report)
        }
        return digests
    }

    private func record(_ report: OuterStepReport) {
        let head = trainer.state.floats("theta")![0]
        lock.withLock {
            reached = report.revision
            reports.append(report)
            thetaHeads[report.revision] = head
        }
    }

    /// The last revision this peer completed (readable from other tasks).
    var revision: UInt64 { lock.withLock { reached } }
    /// Every report this peer's trainer returned, in order.
    var history: [OuterStepReport] { lock.withLock { reports } }
    private let lock = NSLock()
    private var reached: UInt64 = 0
    private var reports: [OuterStepReport] = []
    private var thetaHeads: [UInt64: Float] = [:]
    /// θ[0] after each revision this peer completed.
    var thetaHead: [UInt64: Float] { lock.withLock { thetaHeads } }

    /// Outer steps until `stop` is set, as the daemon runs them: a step that fails is followed
    /// by the next after a short pause. Stop the peer (``stop()``) after setting the flag, to end
    /// a step that waits for peers that stopped.
    func trainUntil(_ stop: Flag) async {
        while !stop.isSet {
            do {
                record(try await trainer.outerStep())
            } catch {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Like ``train(until:)`` but a failure (this peer was killed) ends it with what it had.
    func trainUntilStopped(until target: UInt64) async -> [UInt64: String] {
        var digests: [UInt64: String] = [:]
        while trainer.revision < target {
            guard let report = try? await trainer.outerStep() else { break }
            digests[report.revision] = report.digest.description
            record(report)
        }
        return digests
    }

    func stop() async {
        await node.shutdown()
        await communicator.shutdown()
    }
}

/// A peer's session that crashes the peer at its `dieAt`-th pseudo-gradient all-reduce: instead
/// of taking part it shuts its node and ring down, so the others see a member die in the middle
/// of the collective (their links close, the coordinator commits a view without it).
final class DyingSession: ClusterSession, @unchecked Sendable {
    let inner: MembershipSession
    let dieAt: Int
    private let lock = NSLock()
    private var calls = 0

    init(_ inner: MembershipSession, dieAt: Int) {
        self.inner = inner
        self.dieAt = dieAt
    }

    func updateTopology() async throws -> Int { try await inner.updateTopology() }
    func recover() async throws -> Int { try await inner.recover() }
    func syncSharedState(_ state: SharedState) async throws { try await inner.syncSharedState(state) }
    func syncSharedState(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        try await inner.syncSharedState(state, contributing: contributing)
    }
    func updatingState<T>(_ body: () throws -> T) rethrows -> T { try inner.updatingState(body) }
    var line: UInt64 { inner.line }

    func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                   options: AllReduceOptions) async throws {
        if lock.withLock({ calls += 1; return calls }) == dieAt {
            await inner.node.shutdown()
            await inner.communicator.shutdown()
            throw CancellationError()
        }
        try await inner.allReduce(input: input, output: output, type: type, options: options)
    }
}

/// A flag one task sets and others poll.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

func withTimeout<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw CollectiveError(code: .timedOut, message: "test step took longer than \(seconds) s")
        }
        group.cancelAll()
        return value
    }
}

/// One parameter w. A step moves w halfway to this peer's target and leaves a zero gradient, so
/// AdamW changes nothing: a round of H inner steps from s ends at a + (s − a)/2^H exactly.
final class HalfwayModel: TrainableModel {
    let parameters = ParameterStore()
    let target: Float

    init(target: Float) {
        self.target = target
        parameters.add("w", shape: [1], initializer: .zeros)
        parameters.seal(seed: 0)
    }

    var trainingExampleCount: Int { 1 }
    var stepsPerEpoch: Int { 1 }

    func trainStep() -> Float {
        let w = parameters.values[0]
        parameters.values[0] = w + 0.5 * (target - w)
        parameters.zeroGradients()
        return 0.5 * (w - target) * (w - target)
    }

    func evaluate(_ split: DataSplit) -> Metrics {
        let d = Double(abs(parameters.values[0] - target))
        return Metrics(name: "distance", value: d, loss: d * d / 2, higherIsBetter: false)
    }

    static func task(target: Float) -> TrainingTask {
        let model = HalfwayModel(target: target)
        return TrainingTask(spec: TaskSpec(model: .moe), model: model,
                            optimizer: AdamW(model.parameters, config: AdamWConfig()), selectionSplit: .test)
    }
}

/// DiLoCo's outer update by hand (Nesterov, lr 0.7, momentum 0.9) for ``HalfwayModel`` peers.
struct ToyReference {
    var theta: Float = 0
    var momentum: Float = 0
    let h: Int

    func round(from start: Float, _ target: Float) -> Float {
        var w = start
        for _ in 0..<h { w = w + 0.5 * (target - w) }
        return w
    }

    mutating func apply(_ deltas: [Float]) {
        let g = deltas.reduce(0, +) / Float(deltas.count)
        momentum = 0.9 * momentum + g
        theta = theta - 0.7 * (g + 0.9 * momentum)
    }

    /// Sync: Δ_p = θ − round(θ), averaged and applied at once.
    mutating func syncStep(targets: [Float]) -> Float {
        apply(targets.map { theta - round(from: theta, $0) })
        return theta
    }

    /// One async (rebase) call. `pending[p]`: peer p's pseudo-gradient not yet averaged (nil: it
    /// has none, e.g. it joined at this step's update point). Peer p's round starts from
    /// θ − pending[p] (θ without one); the average of the pending ones is applied; each round's
    /// own pseudo-gradient becomes pending. The run's first call (nobody has one) first runs a
    /// round from θ on every peer.
    /// `rebase: false`: every round starts from θ (``DiLoCoOptions/AsyncStart/restart``).
    mutating func asyncStep(targets: [Float], pending: inout [Float?], rebase: Bool = true) -> Float {
        if pending.allSatisfy({ $0 == nil }) { pending = targets.map { theta - round(from: theta, $0) } }
        let next = zip(targets, pending).map { target, d -> Float? in
            let start = rebase ? d.map { theta - $0 } ?? theta : theta
            return start - round(from: start, target)
        }
        apply(pending.compactMap { $0 })
        pending = next
        return theta
    }
}
