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
