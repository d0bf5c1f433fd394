import ArgumentParser
import Foundation
import Models

/// `peernode train`: trains one model on this machine alone, with the same tasks, data shards
/// and optimizer the cluster uses. For trying a model, checking its figures and benchmarking.
struct TrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model locally (no cluster) and report loss, metric and step time.")

    @OptionGroup(title: "Model and data") var data: DataOptions

    @Option(name: .customLong("init-from"), help: "Start from the weights in this safetensors file (names, shapes and dtypes must match the model).")
    var initFrom: String?

    @Option(help: ArgumentHelp(
        "Number of training steps (one step = one batch; GCN: the full graph).",
        discussion: "Default: the model's standard schedule, \(ModelKind.standardScheduleSummary); "
            + "the first output line says how many steps that is."))
    var steps: Int?

    @Option(help: "Seed for initial parameters, batch order and dropout.")
    var seed: UInt64 = 0

    @Option(help: "OpenBLAS threads.")
    var threads: Int = 1

    @Option(help: "Evaluate every N steps (default: every epoch, at least every 10 steps).")
    var evalEvery: Int = 0

    @Option(help: "Print a progress line every N steps when stdout is not a terminal.")
    var logEvery: Int = 10

    @Flag(help: "GIN: use the scaffold split of the molecule set instead of the random split.")
    var scaffoldSplit = false

    @Flag(help: "Benchmark: print one machine-readable line with ms/step median/min/max.")
    var bench = false

    /// The model, as `run` picks it: the one named, else the default.
    private var model: ModelKind { data.model ?? RunSettings().model }

    func validate() throws {
        if let steps, steps <= 0 { throw ValidationError("--steps must be positive") }
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
        guard logEvery > 0 else { throw ValidationError("--log-every must be positive") }
        if scaffoldSplit && model != .gin {
            throw ValidationError("--scaffold-split applies to --model gin only")
        }
    }

    func run() async throws {
        let kind = model
        BLAS.setThreads(threads)
        let spec = TaskSpec(model: kind, dataset: data.data, dataDirectory: data.dataDir, seed: seed, scaffoldSplit: scaffoldSplit,
                            dataFormat: data.dataFormat)
        // Dataset and task errors describe themselves (file, line, reason); exit status 1.
        let task = try TrainingTask.make(spec)
        let dataset = task.spec.dataset
        if let initFrom { try ModelWeights.load(initFrom, into: task.parameters) }
        let tty = isatty(STDOUT_FILENO) != 0
        let standardEpochs = kind.standardEpochs(dataset: dataset)
        let steps = self.steps ?? standardEpochs * task.model.stepsPerEpoch
        print("training \(kind.rawValue) on \(dataset): \(task.parameters.count) parameters, "
              + "\(task.model.trainingExampleCount) training examples, \(task.model.stepsPerEpoch) steps/epoch, "
              + "\(threads) thread(s)" + (initFrom.map { ", weights from \($0)" } ?? "")
              + (self.steps == nil ? "; \(steps) steps (the standard schedule: \(standardEpochs) epochs)" : ""))
        var lastMetric = "-"
        let summary = Trainer.run(task, steps: steps, evaluateEvery: evalEvery) { p in
            if let e = p.evaluation {
                lastMetric = "\(task.selectionSplit.rawValue) \(e.name) \(format(e.value, 4))"
            }
            // Build the line only when it is printed: the loop should not allocate per step.
            let last = p.step == p.totalSteps
            guard tty || p.step % logEvery == 0 || last else { return }
            let line = "step \(p.step)/\(p.totalSteps) epoch \(p.epoch) loss \(format(Double(p.loss), 4)) "
                + "\(lastMetric) \(format(p.stepMilliseconds, 2)) ms/step"
            if tty {
                print("\r\u{1B}[2K" + line, terminator: last ? "\n" : "")
                fflush(nil)  // all streams: `stdout` itself is a global var Swift 6 rejects
            } else {
                print(line)
            }
        }
        let t = summary.timing
        print("done: \(summary.steps) steps in \(format(summary.wallSeconds, 2)) s; final loss \(format(Double(summary.finalLoss), 4)); "
              + "test \(summary.finalTest.name) \(format(summary.finalTest.value, 4))")
        if let best = summary.bestSelection, let step = summary.bestStep, let test = summary.testAtBestSelection,
           task.selectionSplit != .test {
            print("best \(task.selectionSplit.rawValue) \(best.name) \(format(best.value, 4)) at step \(step): "
                  + "test \(test.name) \(format(test.value, 4))")
        }
        print("step time (first step excluded): median \(format(t.median, 3)) ms, min \(format(t.min, 3)), "
              + "max \(format(t.max, 3)), mean \(format(t.mean, 3))")
        if bench {
            var fields = "impl=peernode model=\(kind.rawValue) dataset=\(dataset) threads=\(threads) steps=\(steps) "
                + "median_ms=\(format(t.median, 3)) min_ms=\(format(t.min, 3)) max_ms=\(format(t.max, 3)) "
                + "test_\(summary.finalTest.name)=\(format(summary.finalTest.value, 4))"
            if task.selectionSplit != .test, let test = summary.testAtBestSelection {
                fields += " test_\(test.name)_at_best_\(task.selectionSplit.rawValue)=\(format(test.value, 4))"
            }
            print(fields)
        }
    }
}

private func format(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
