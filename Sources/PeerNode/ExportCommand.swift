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
    @OptionGroup(title: "The model and data the checkpoint was trained with (--model is required)") var data: DataOptions

    func validate() throws {
        // No default here: a checkpoint of another model would be refused anyway, but with a
        // less helpful message (its parameter count).
        guard data.model != nil else { throw ValidationError("Missing expected argument '--model <model>'") }
    }

    func run() throws {
        let model = data.model ?? RunSettings().model
        let spec = TaskSpec(model: model, dataset: data.data, dataDirectory: data.dataDir, dataFormat: data.dataFormat)
        let task: TrainingTask
        do {
            task = try TrainingTask.make(spec)
        } catch {
            throw RunError("cannot build model \(model.rawValue) on \(spec.dataset): \(error)")
        }
        let dataset = task.spec.dataset
        let state = try DiLoCoTrainer.sharedState(for: task)
        do {
            _ = try Checkpoint.readAnyVersion(checkpoint, into: state)
        } catch {
            throw RunError("cannot export \(checkpoint) as model \(model.rawValue) on \(dataset) "
                           + "(\(task.parameters.count) parameters): \(error)")
        }
        let metadata = ["model": model.rawValue, "dataset": dataset, "revision": "\(state.revision)"]
        let bytes = try ModelWeights.encode(UnsafeBufferPointer(state.floats("theta")!), infos: task.parameters.infos,
                                            metadata: metadata)
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw RunError("cannot write \(out): \((error as NSError).localizedDescription)")
        }
        print("wrote \(out): \(task.parameters.infos.count) tensors, \(task.parameters.count) parameters, "
              + "model \(model.rawValue), dataset \(dataset), revision \(state.revision)")
    }
}
