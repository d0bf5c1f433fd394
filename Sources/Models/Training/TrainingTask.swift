import Foundation

/// A model with its data shard and its AdamW optimizer: what one peer trains.
public final class TrainingTask {
    public let spec: TaskSpec
    public let model: any TrainableModel
    public let optimizer: AdamW
    /// The split used to pick the best step (validation where the dataset has one).
    public let selectionSplit: DataSplit

    public init(spec: TaskSpec, model: any TrainableModel, optimizer: AdamW, selectionSplit: DataSplit) {
        self.spec = spec
        self.model = model
        self.optimizer = optimizer
        self.selectionSplit = selectionSplit
    }

    /// Builds model, data shard and optimizer with the reference hyper-parameters. A user's own
    /// data (`DataFormat`) is named after its directory in the returned task's `spec`.
    public static func make(_ spec: TaskSpec) throws -> TrainingTask {
        var spec = spec
        var format: DataFormat?
        if let directory = spec.dataDirectory {
            format = try DataFormat.resolve(spec.dataFormat, directory: directory, model: spec.model)
        } else if let explicit = spec.dataFormat {
            throw TaskError(description: "--data-format \(explicit.rawValue) needs --data-dir (the directory holding the files)")
        }
        spec.dataFormat = format
        if format != nil {
            spec.dataset = URL(fileURLWithPath: spec.dataDirectory!).standardizedFileURL.lastPathComponent
        } else if !spec.model.datasets.contains(spec.dataset) {
            throw TaskError(description: "model \(spec.model.rawValue) trains on \(spec.model.datasets.joined(separator: ", ")), not '\(spec.dataset)'")
        }
        switch spec.model {
        case .gcn:
            let data = format == .nodesCSV
                ? try NodeTableDataset.load(directory: spec.dataDirectory!, name: spec.dataset)
                : try PlanetoidDataset.load(spec.dataset, directory: spec.dataDirectory)
            let config = GCNConfig()
            let nodes = spec.shard.select(data.splits[.train] ?? [], seed: spec.seed)
            guard !nodes.isEmpty else { throw TaskError(description: "shard \(spec.shard.index) of \(spec.shard.count) has no training nodes") }
            let model = GCN(dataset: data, config: config, seed: spec.seed, streamSeed: spec.streamSeed, trainNodes: nodes)
            return TrainingTask(spec: spec, model: model,
                                optimizer: AdamW(model.parameters, config: AdamWConfig(learningRate: config.learningRate)),
                                selectionSplit: .validation)
        case .gin:
            var config = GINConfig()
            config.scaffoldSplit = spec.scaffoldSplit
            let data: MoleculeDataset
            if let format {
                data = try userGraphs(directory: spec.dataDirectory!, name: spec.dataset, format: format, config: &config)
            } else {
                data = try MoleculeDataset.load(spec.dataset, directory: spec.dataDirectory)
            }
            let train = spec.shard.select(data.indices(.train, scaffold: config.scaffoldSplit), seed: spec.seed)
            guard train.count >= 2 else { throw TaskError(description: "shard \(spec.shard.index) of \(spec.shard.count) has fewer than 2 molecules") }
            let model = GIN(dataset: data, config: config, seed: spec.seed, streamSeed: spec.streamSeed, trainIndices: train)
            return TrainingTask(spec: spec, model: model,
                                optimizer: AdamW(model.parameters, config: AdamWConfig(learningRate: config.learningRate)),
                                selectionSplit: data.indices(.validation, scaffold: config.scaffoldSplit).isEmpty ? .test : .validation)
        case .moe:
            let data = format == .tableCSV
                ? try TabularTableDataset.load(directory: spec.dataDirectory!, name: spec.dataset)
                : try TabularDataset.load(spec.dataset, directory: spec.dataDirectory)
            let config = MoEClassifierConfig()
            let train = spec.shard.select(data.trainIndices, seed: spec.seed)
            guard !train.isEmpty else { throw TaskError(description: "shard \(spec.shard.index) of \(spec.shard.count) is empty") }
            let model = MoEClassifier(dataset: data, config: config, seed: spec.seed, streamSeed: spec.streamSeed,
                                      trainIndices: train)
            return TrainingTask(spec: spec, model: model,
                                optimizer: AdamW(model.parameters, config: AdamWConfig(learningRate: config.learningRate)),
                                selectionSplit: .test)
        }
    }

    /// `graphs.jsonl` of a user's directory; for classification, sizes `config.classes` from
    /// the largest class id. Both need training graphs and some to evaluate on.
    static func userGraphs(directory: String, name: String, format: DataFormat, config: inout GINConfig) throws -> MoleculeDataset {
        let url = URL(fileURLWithPath: directory).appendingPathComponent(format.markerFile)
        let classification = format == .graphClassification
        let data = try MoleculeDataset.parse(DataLocator.readFile(url), name: name, file: url.path,
                                             classLimit: classification ? NodeTableDataset.maximumClasses : nil)
        guard data.indices(.train, scaffold: config.scaffoldSplit).count >= 2 else {
            throw DatasetError(.corrupt, file: url.path, "missing split: fewer than 2 graphs in 'train'")
        }
        guard !data.indices(.validation, scaffold: config.scaffoldSplit).isEmpty || !data.indices(.test, scaffold: config.scaffoldSplit).isEmpty else {
            throw DatasetError(.corrupt, file: url.path, "missing split: no graph in 'val' or 'test' to evaluate on")
        }
        if classification {
            let classes = Int(data.molecules.map(\.target).max()!) + 1
            guard classes >= 2 else { throw DatasetError(.corrupt, file: url.path, "fewer than two classes among the targets") }
            config.classes = classes
        }
        return data
    }

    public var parameters: ParameterStore { model.parameters }

    /// One inner step: loss and gradients on the next local batch, then AdamW.
    @discardableResult
    public func step() -> Float {
        let loss = model.trainStep()
        optimizer.update()
        return loss
    }

    /// The task's metric on a split (test by default).
    public func evaluate(_ split: DataSplit = .test) -> Metrics { model.evaluate(split) }
}
