import ArgumentParser
import Collectives
import DiLoCo
import Foundation
import Logging
import Models

/// One peer of `peernode demo` (started by it; not for direct use): trains its shard with
/// DiLoCo and reports every outer step on stdout.
struct DemoWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-worker", abstract: "One peer of `peernode demo`.", shouldDisplay: false)

    @Option var rank: Int
    @Option var peers: Int
    @Option var model: ModelKind
    @Option var data: String
    @Option(name: .customLong("outer-steps")) var outerSteps: Int
    @Option(name: .customLong("inner-steps")) var innerSteps: Int
    @Option var quant: PseudoGradientEncoding
    @Option var seed: UInt64
    @Option var mode: DiLoCoOptions.Mode = .sync
    @Option(name: .customLong("async-start")) var asyncStart: DiLoCoOptions.AsyncStart = .rebase
    /// Benchmarks: every pseudo-gradient all-reduce takes this much longer (a slow link, emulated).
    @Option(name: .customLong("emulate-allreduce-ms")) var emulateAllReduceMs = 0

    func run() async throws {
        var logger = Logger(label: "peernode.demo")
        logger.logLevel = .warning
        logger[metadataKey: "peer.rank"] = "\(rank)"
        let task = try TrainingTask.make(TaskSpec(model: model, dataset: data, shard: Shard(index: rank, count: peers), seed: seed))
        let (communicator, view) = try await joinLocalCluster(rank: rank, logger: logger)
        var options = DiLoCoOptions()
        options.innerSteps = innerSteps
        options.quantization = quant.quantization
        options.mode = mode
        options.asyncStart = asyncStart
        let ring = FixedRingSession(communicator: communicator, size: view.count)
        let session: any ClusterSession = emulateAllReduceMs > 0 ? SlowLinkSession(ring, delayMs: emulateAllReduceMs) : ring
        let trainer = try DiLoCoTrainer(task: task, session: session, options: options, logger: logger)
        print("ready parameters=\(task.parameters.count) examples=\(task.model.trainingExampleCount)")
        fflush(nil)
        for _ in 0..<outerSteps {
            let report = try await trainer.outerStep()
            let metrics = trainer.evaluate()
            print("step rev=\(report.revision) loss=\(report.meanInnerLoss) metric=\(metrics.name.replacingOccurrences(of: " ", with: "_")) "
                  + "value=\(metrics.value) digest=\(report.digest) bytes=\(report.bytesSent) "
                  + "inner_s=\(report.innerSeconds) comm_s=\(report.communicationSeconds) peers=\(report.peers)")
            fflush(nil)
        }
        await communicator.shutdown()
    }
}

/// A fixed ring whose pseudo-gradient all-reduce starts `delayMs` late: on loopback, the time a
/// slower link would add to it (benchmarks only; the syncs are not delayed).
final class SlowLinkSession: ClusterSession {
    let ring: FixedRingSession
    let delayMs: Int

    init(_ ring: FixedRingSession, delayMs: Int) {
        self.ring = ring
        self.delayMs = delayMs
    }

    func updateTopology() async throws -> Int { try await ring.updateTopology() }
    func recover() async throws -> Int { try await ring.recover() }
    var line: UInt64 { ring.line }
    func syncSharedState(_ state: SharedState) async throws { try await ring.syncSharedState(state) }
    func syncSharedState(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        try await ring.syncSharedState(state, contributing: contributing)
    }

    func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                   options: AllReduceOptions) async throws {
        try await Task.sleep(for: .milliseconds(delayMs))
        try await ring.allReduce(input: input, output: output, type: type, options: options)
    }
}
