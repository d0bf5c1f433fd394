import Dispatch

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
