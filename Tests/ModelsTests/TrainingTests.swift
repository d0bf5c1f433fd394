import Testing
@testable import Models

/// End-to-end training with fixed seeds and bounded steps: the figures the models must reach.
@Suite struct TrainingTests {
    @Test func gcnOnCoraReaches81Percent() throws {
        // Kipf & Welling's setting (hidden 64 as the reference): 200 full-graph epochs.
        let task = try TrainingTask.make(TaskSpec(model: .gcn, dataset: "cora", seed: 0))
        for _ in 0..<200 { task.step() }
        let test = task.evaluate(.test)
        #expect(test.name == "accuracy")
        #expect(test.value >= 0.81, "Cora test accuracy \(test.value)")
    }

    @Test func moeOnDigitsReaches97Percent() throws {
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: 0))
        #expect(task.model.stepsPerEpoch == 11)
        for _ in 0..<(40 * 11) { task.step() }
        let test = task.evaluate()
        #expect(test.value >= 0.97, "digits test accuracy \(test.value)")
    }

    @Test func ginOnESOLLearns() throws {
        // A short run (the full 100 epochs are a benchmark, see docs/models.md): predicting the
        // mean gives RMSE ≈ 2.1 log units; ten epochs must get well below that.
        let task = try TrainingTask.make(TaskSpec(model: .gin, dataset: "esol", seed: 0))
        let before = task.evaluate(.validation)
        for _ in 0..<(10 * task.model.stepsPerEpoch) { task.step() }
        let after = task.evaluate(.validation)
        #expect(after.name == "rmse")
        #expect(after.value < 1.2 && after.value < before.value, "ESOL validation RMSE \(before.value) → \(after.value)")
    }

    @Test func sameSeedSameBits() throws {
        func run(_ seed: UInt64) throws -> [Float] {
            let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: seed))
            for _ in 0..<5 { task.step() }
            return Array(task.parameters.values)
        }
        let a = try run(1), b = try run(1), c = try run(2)
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
        #expect(a != c)
    }

    @Test func shardedPeersTrainOnDisjointData() throws {
        let spec0 = TaskSpec(model: .gin, dataset: "esol", shard: Shard(index: 0, count: 3), seed: 9)
        var spec1 = spec0
        spec1.shard = Shard(index: 1, count: 3)
        let t0 = try TrainingTask.make(spec0), t1 = try TrainingTask.make(spec1)
        #expect(Array(t0.parameters.values) == Array(t1.parameters.values), "peers start from the same parameters")
        let g0 = t0.model as! GIN, g1 = t1.model as! GIN
        #expect(Set(g0.sampler.indices).isDisjoint(with: g1.sampler.indices))
        #expect(g0.trainingExampleCount + g1.trainingExampleCount >= 2 * 300)
    }

    @Test func rejectsAMismatchedDataset() {
        #expect(throws: TaskError.self) { _ = try TrainingTask.make(TaskSpec(model: .moe, dataset: "esol")) }
    }

    @Test func trainerReportsProgressAndTiming() throws {
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: 3))
        var reports = 0, evaluations = 0
        let summary = Trainer.run(task, steps: 12, evaluateEvery: 5) { p in
            reports += 1
            if p.evaluation != nil { evaluations += 1 }
            #expect(p.loss.isFinite && p.stepMilliseconds >= 0)
        }
        #expect(reports == 12 && evaluations == 3)  // steps 5, 10 and the last
        #expect(summary.timing.min <= summary.timing.median && summary.timing.median <= summary.timing.max)
        #expect(summary.finalTest.name == "accuracy")
    }
}
