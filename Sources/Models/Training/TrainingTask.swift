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

    /// Builds model, data shard and optimizer with the reference hyper-parameters.
    public static func make(_ spec: TaskSpec) throws -> TrainingTask {
        guard spec.model.datasets.contains(spec.dataset) else {
            throw TaskError(description: "model \(spec.model.rawValue) trains on \(spec.model.datasets.joined(separator: ", ")), not '\(spec.dataset)'")
        }
        switch spec.model {
        case .gcn:
            let data = try PlanetoidDataset.load(spec.dataset, directory: spec.dataDirectory)
            let config = GCNConfig()
            let nodes = spec.shard.select(data.splits[.train] ?? [], seed: spec.seed)
            guard !nodes.isEmpty else { throw TaskError(description: "shard \(spec.shard.index) of \(spec.shard.count) has no training nodes") }
            let model = GCN(dataset: data, config: config, seed: spec.seed, streamSeed: spec.streamSeed, trainNodes: nodes)
            return TrainingTask(spec: spec, model: model,
                                optimizer: AdamW(model.parameters, config: AdamWConfig(learningRate: config.learningRate)),
                                selectionSplit: .validation)
        case .gin:
            let data = try MoleculeDataset.load(spec.dataset, directory: spec.dataDirectory)
            var config = GINConfig()
            config.scaffoldSplit = spec.scaffoldSplit
            let train = spec.shard.select(data.indices(.train, scaffold: config.scaffoldSplit), seed: spec.seed)
            guard train.count >= 2 else { throw TaskError(description: "shard \(spec.shard.index) of \(spec.shard.count) has fewer than 2 molecules") }
            let model = GIN(dataset: data, config: config, seed: spec.seed, streamSeed: spec.streamSeed, trainIndices: train)
            return TrainingTask(spec: spec, model: model,
                                optimizer: AdamW(model.parameters, config: AdamWConfig(learningRate: config.learningRate)),
                                selectionSplit: .validation)
        case .moe:
            let data = try TabularDataset.load(spec.dataset, directory: spec.dataDirectory)
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
