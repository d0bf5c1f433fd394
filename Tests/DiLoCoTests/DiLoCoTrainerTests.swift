import Collectives
import Logging
import Models
import PeerTestSupport
import Testing
@testable import DiLoCo

private struct StepSummary: Sendable, Equatable {
    var digests: [String]
    var accuracy: Double
    var retries: Int
}

/// Three peers train the MoE classifier on their own shards of digits with DiLoCo over a real
/// ring on loopback: after every outer step all peers hold bit-identical θ and momentum.
@Test(arguments: [Quantization.int8MinMax, .none])
func peersStayInBitParityAndLearn(quantization: Quantization) async throws {
    let outerSteps = 4
    let results = try await withCluster(size: 3) { peers in
        try await onEveryPeer(peers) { rank, peer -> StepSummary in
            var logger = Logger(label: "test")
            logger.logLevel = .warning
            let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", shard: Shard(index: rank, count: 3), seed: 7))
            var options = DiLoCoOptions()
            options.innerSteps = 8
            options.quantization = quantization
            let trainer = try DiLoCoTrainer(task: task, session: FixedRingSession(communicator: peer, size: 3),
                                            options: options, logger: logger)
            let before = trainer.evaluate().value
            var digests: [String] = []
            var retries = 0
            for _ in 0..<outerSteps {
                let report = try await trainer.outerStep()
                digests.append(report.digest.description)
                retries += report.retries
            }
            #expect(trainer.revision == UInt64(outerSteps))
            let after = trainer.evaluate().value
            #expect(after > before + 0.2, "accuracy \(before) -> \(after)")
            return StepSummary(digests: digests, accuracy: after, retries: retries)
        }
    }
    #expect(results[0].digests.count == outerSteps)
    for r in 1..<3 { #expect(results[r].digests == results[0].digests, "peer \(r) drifted from peer 0") }
    #expect(Set(results[0].digests).count == outerSteps, "θ must change every step")
    #expect(results.allSatisfy { $0.retries == 0 })
}

@Test func aPeerWithAnotherStateIsCaughtAtSync() async throws {
    let outcomes = try await withCluster(size: 2) { peers in
        try await onEveryPeer(peers) { rank, peer -> Bool in
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            // Different seeds: different initial θ, which sync must refuse rather than average.
            let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", shard: Shard(index: rank, count: 2),
                                                      seed: UInt64(rank)))
            let trainer = try DiLoCoTrainer(task: task, session: FixedRingSession(communicator: peer, size: 2), logger: logger)
            do {
                _ = try await trainer.outerStep()
                return false
            } catch let error as CollectiveError {
                return error.code == .protocolViolation
            }
        }
    }
    #expect(outcomes == [true, true])
}
