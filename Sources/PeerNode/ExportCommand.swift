import ArgumentParser
import DiLoCo
import Foundation
import Models

/// `peernode export`: θ of a checkpoint as a safetensors file other tools can load.
///
/// A checkpoint holds θ as one flat vector without names; the names and shapes come from the
/// model, so the command builds the task the checkpoint was trained on (`--model`, `--data`) and
/// refuses a checkpoint whose θ does not have that model's parameter count. The model and
/// dataset are options rather than fields of the checkpoint so that every checkpoint already
/// written can be exported (docs/weights.md).
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write θ of a checkpoint as a safetensors file (one named tensor per model parameter).")

    @Option(help: "Checkpoint written by `peernode run --checkpoint`.") var checkpoint: String
    @Option(help: "Output file (conventionally *.safetensors); replaced atomically.") var out: String
    @Option(help: "Model the checkpoint was trained with: \(ModelKind.allCases.map(\.rawValue).joined(separator: "|")).")
    var model: String
    @Option(help: "Dataset it was trained on (default: the model's); fixes input and output sizes.") var data: String?
    @Option(name: .customLong("data-dir"), help: "Directory the dataset was read from, if not the shipped copy.") var dataDir: String?
    @Option(name: .customLong("data-format"), help: "Layout of your own data in --data-dir, as given to run.") var dataFormat: String?

    func validate() throws {
        guard ModelKind(rawValue: model) != nil else {
            throw ValidationError("--model must be one of \(ModelKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let dataFormat, DataFormat(rawValue: dataFormat) == nil {
            throw ValidationError("--data-format must be one of \(DataFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let spec = TaskSpec(model: ModelKind(rawValue: model)!, dataset: data, dataDirectory: dataDir,
                            dataFormat: dataFormat.flatMap(DataFormat.init(rawValue:)))
        let task: TrainingTask
        do {
            task = try TrainingTask.make(spec)
        } catch {
            throw RunError("cannot build model \(model) on \(spec.dataset): \(error)")
        }
        let dataset = task.spec.dataset
        let state = try DiLoCoTrainer.sharedState(for: task)
        do {
            _ = try Checkpoint.readAnyVersion(checkpoint, into: state)
        } catch {
            throw RunError("cannot export \(checkpoint) as model \(model) on \(dataset) "
                           + "(\(task.parameters.count) parameters): \(error)")
        }
        let metadata = ["model": model, "dataset": dataset, "revision": "\(state.revision)"]
        let bytes = try ModelWeights.encode(UnsafeBufferPointer(state.floats("theta")!), infos: task.parameters.infos,
                                            metadata: metadata)
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw RunError("cannot write \(out): \((error as NSError).localizedDescription)")
        }
        print("wrote \(out): \(task.parameters.infos.count) tensors, \(task.parameters.count) parameters, "
              + "model \(model), dataset \(dataset), revision \(state.revision)")
    }
}
