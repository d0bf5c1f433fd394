import Dispatch

/// One progress report of `Trainer.run`.
public struct TrainingProgress: Sendable {
    public let step: Int
    public let totalSteps: Int
    public let epoch: Int
    /// Loss of this step's batch.
    public let loss: Float
    /// Wall time of this step (forward, backward, optimizer), milliseconds.
    public let stepMilliseconds: Double
    /// Evaluation on the selection split, when this step ran one.
    public let evaluation: Metrics?
}

/// Summary statistics of step times, milliseconds.
public struct TimingSummary: Sendable {
    public let median: Double
    public let min: Double
    public let max: Double
    public let mean: Double

    public init(_ samples: [Double]) {
        let s = samples.sorted()
        if s.isEmpty {
            median = 0; min = 0; max = 0; mean = 0
        } else {
            median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
            min = s[0]
            max = s[s.count - 1]
            mean = s.reduce(0, +) / Double(s.count)
        }
    }
}

/// The result of `Trainer.run`.
public struct TrainingSummary: Sendable {
    public let steps: Int
    public let finalLoss: Float
    /// Test metric after the last step.
    public let finalTest: Metrics
    /// Best evaluation on the selection split, the step it happened at, and the test metric
    /// at that step (how the GIN reference reports: test RMSE at the best validation epoch).
    public let bestSelection: Metrics?
    public let bestStep: Int?
    public let testAtBestSelection: Metrics?
    /// Step times, the first step (warm-up: buffers allocated) excluded.
    public let timing: TimingSummary
    public let wallSeconds: Double
}

/// Single-node training loop: the inner loop of a peer without the network.
public enum Trainer {
    /// Runs `steps` steps, evaluating on the selection split every `evaluateEvery` steps (0:
    /// once per epoch of the local shard, at least every 10 steps) and at the end; calls
    /// `progress` after every step. Evaluation time is not counted in step times.
    public static func run(_ task: TrainingTask, steps: Int, evaluateEvery: Int = 0,
                           progress: (TrainingProgress) -> Void = { _ in }) -> TrainingSummary {
        let every = evaluateEvery > 0 ? evaluateEvery : max(10, task.model.stepsPerEpoch)
        var times: [Double] = []
        times.reserveCapacity(steps)
        var best: Metrics?, bestStep: Int?, testAtBest: Metrics?
        var lastLoss: Float = .nan
        let wallStart = DispatchTime.now().uptimeNanoseconds
        for s in stride(from: 1, through: steps, by: 1) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            lastLoss = task.step()
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            if s > 1 { times.append(ms) }
            var evaluation: Metrics?
            if s % every == 0 || s == steps {
                let m = task.evaluate(task.selectionSplit)
                evaluation = m
                if best.map({ m.isBetter(than: $0) }) ?? true {
                    best = m
                    bestStep = s
                    testAtBest = task.selectionSplit == .test ? m : task.evaluate(.test)
                }
            }
            progress(TrainingProgress(step: s, totalSteps: steps, epoch: (s - 1) / max(task.model.stepsPerEpoch, 1),
                                      loss: lastLoss, stepMilliseconds: ms, evaluation: evaluation))
        }
        let wall = Double(DispatchTime.now().uptimeNanoseconds - wallStart) / 1e9
        return TrainingSummary(steps: steps, finalLoss: lastLoss, finalTest: task.evaluate(.test),
                               bestSelection: best, bestStep: bestStep, testAtBestSelection: testAtBest,
                               timing: TimingSummary(times.isEmpty ? [] : times), wallSeconds: wall)
    }
}
