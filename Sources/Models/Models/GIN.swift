import Foundation

/// Hyper-parameters of `GIN`, defaulting to the project's reference molecular GIN (docs/models.md).
public struct GINConfig: Sendable {
    public var layers = 3
    public var hidden = 64
    public var batchSize = 64
    public var pooling = GraphPooling.Mode.sum
    public var learningRate: Float = 1e-3
    /// Use the scaffold split instead of the random one.
    public var scaffoldSplit = false
    /// Graph classification into this many classes (each target a class id, softmax
    /// cross-entropy, accuracy) instead of regression; nil for regression.
    public var classes: Int?

    public init() {}
}

/// Graph isomorphism network (Xu et al. 2019) for graph-level regression on molecules, in the
/// OGB style of the reference:
///
///     h⁰ = Σ_c Emb_c(atom code c)                                  (AtomEncoder, 9 tables)
///     zˡ = (1 + εˡ)·hˡ⁻¹ + Σ_{u ∈ N(v)} hˡ⁻¹_u                      (sum aggregation)
///     hˡ = BN(Lin(ReLU(BN(Lin(zˡ)))))  then ReLU except after the last layer
///     ŷ = Lin(ReLU(Lin(pool(hᴸ))))                                 (sum or mean pooling)
///
/// trained with MSE on targets standardised by the training split's mean and standard
/// deviation (the whole split, not the shard, so that every peer trains the same function), or,
/// with `GINConfig.classes`, with softmax cross-entropy on class ids (a user's own graphs).
public final class GIN: TrainableModel {
    public let config: GINConfig
    public let parameters = ParameterStore()
    public let dataset: MoleculeDataset
    let graphs: [MoleculeGraph]
    public let targetMean: Float
    public let targetStd: Float
    let encoder: CategoricalEmbeddingSum
    let epsilon: Param
    let aggregations: [GraphAggregation]
    let combined: [Tensor]
    let lin1: [Linear], norm1: [BatchNorm], act1: [ReLU], lin2: [Linear], norm2: [BatchNorm], act2: [ReLU]
    let pooling: GraphPooling
    let head1: Linear
    let headActivation = ReLU()
    let head2: Linear
    let loss = MeanSquaredError()
    let crossEntropy = SoftmaxCrossEntropy()
    /// Classification: the batch's targets as class ids.
    var labels: [Int32] = []
    var sampler: BatchSampler
    let batch = MoleculeBatch()
    var evaluationBatches: [DataSplit: MoleculeBatch] = [:]
    var layerInputs: [Matrix] = []
    let epsilonGradientScratch = Tensor()

    public var trainingExampleCount: Int { sampler.indices.count }
    public var stepsPerEpoch: Int { sampler.batchesPerEpoch }

    /// `seed` fixes the initial parameters; `streamSeed` (default `seed`) the batch order.
    public init(dataset: MoleculeDataset, config: GINConfig = GINConfig(), seed: UInt64, streamSeed: UInt64? = nil,
                trainIndices: [Int]? = nil) {
        self.config = config
        self.dataset = dataset
        graphs = dataset.molecules.map(MoleculeGraph.init)
        let train = dataset.indices(.train, scaffold: config.scaffoldSplit)
        let ys = train.map { Double(dataset.molecules[$0].target) }
        let mean = ys.reduce(0, +) / Double(max(ys.count, 1))
        let variance = ys.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(ys.count, 1))
        // Class ids pass through unchanged (mean 0, std 1).
        targetMean = config.classes == nil ? Float(mean) : 0
        targetStd = config.classes == nil ? Float(max(variance.squareRoot(), 1e-6)) : 1
        let d = config.hidden, store = parameters
        encoder = CategoricalEmbeddingSum(store, name: "gin.atoms", vocabularies: CategoricalEmbeddingSum.atomVocabularies,
                                          dimension: d)
        epsilon = store.add("gin.eps", shape: [config.layers], initializer: .zeros, decays: false)
        let placeholder = MoleculeBatch()
        aggregations = (0..<config.layers).map { _ in GraphAggregation(placeholder.adjacency) }
        combined = (0..<config.layers).map { _ in Tensor() }
        lin1 = (0..<config.layers).map { Linear(store, name: "gin.layer\($0).mlp.fc1", inFeatures: d, outFeatures: d, initialization: .torchDefault) }
        norm1 = (0..<config.layers).map { BatchNorm(store, name: "gin.layer\($0).mlp.bn", features: d) }
        act1 = (0..<config.layers).map { _ in ReLU() }
        lin2 = (0..<config.layers).map { Linear(store, name: "gin.layer\($0).mlp.fc2", inFeatures: d, outFeatures: d, initialization: .torchDefault) }
        norm2 = (0..<config.layers).map { BatchNorm(store, name: "gin.layer\($0).bn", features: d) }
        act2 = (0..<config.layers).map { _ in ReLU() }
        pooling = GraphPooling(mode: config.pooling)
        head1 = Linear(store, name: "gin.head.fc1", inFeatures: d, outFeatures: d, initialization: .torchDefault)
        head2 = Linear(store, name: "gin.head.fc2", inFeatures: d, outFeatures: config.classes ?? 1, initialization: .torchDefault)
        sampler = BatchSampler(indices: trainIndices ?? train, batchSize: config.batchSize, dropLast: false, seed: streamSeed ?? seed)
        layerInputs = Array(repeating: Matrix(base: combined[0].base, rows: 0, cols: 0), count: config.layers)
        store.seal(seed: seed)
    }

    private func forward(_ b: MoleculeBatch, training: Bool) -> Matrix {
        let adjacency = b.adjacency
        var h = b.atoms.withUnsafeBufferPointer { encoder.forward($0) }
        let eps = parameters.value(epsilon).base
        for l in 0..<config.layers {
            layerInputs[l] = h
            aggregations[l].setGraph(adjacency)
            let a = aggregations[l].forward(h)
            let z = combined[l].resize(rows: h.rows, cols: h.cols)
            Kernels.copy(a.base, z.base, a.count)
            Kernels.axpy(1 + eps[l], h.base, z.base, h.count)
            var t = lin1[l].forward(z)
            t = norm1[l].forward(t, training: training)
            t = act1[l].forward(t)
            t = lin2[l].forward(t)
            t = norm2[l].forward(t, training: training)
            if l < config.layers - 1 { t = act2[l].forward(t) }
            h = t
        }
        let pooled = b.graphOfNode.withUnsafeBufferPointer { pooling.forward(h, graphOfNode: $0, graphCount: b.graphCount) }
        return head2.forward(headActivation.forward(head1.forward(pooled)))
    }

    public func trainStep() -> Float {
        var indices = sampler.next()
        if indices.count < 2 { indices = sampler.next() }  // batch norm needs two graphs
        batch.build(indices, from: graphs, mean: targetMean, std: targetStd)
        return lossAndGradients(batch)
    }

    /// Zeroes the gradients, then fills them with those of the MSE on `b` (training mode).
    func lossAndGradients(_ b: MoleculeBatch) -> Float {
        parameters.zeroGradients()
        let prediction = forward(b, training: true)
        let l = objective(prediction, b, computeGradient: true)
        let dOutput = config.classes == nil ? loss.predictionGradient.matrix : crossEntropy.logitsGradient.matrix
        let dPooled = head1.backward(headActivation.backward(head2.backward(dOutput)))
        var dh = pooling.backward(dPooled)
        let eps = parameters.value(epsilon).base, dEps = parameters.gradient(epsilon).base
        for l in stride(from: config.layers - 1, through: 0, by: -1) {
            if l < config.layers - 1 { dh = act2[l].backward(dh) }
            var t = norm2[l].backward(dh)
            t = lin2[l].backward(t)
            t = act1[l].backward(t)
            t = norm1[l].backward(t)
            let dz = lin1[l].backward(t)
            let input = layerInputs[l]
            dEps[l] += Kernels.dot(dz.base, input.base, dz.count)
            let dPrev = aggregations[l].backward(dz)
            Kernels.axpy(1 + eps[l], dz.base, dPrev.base, dz.count)
            dh = dPrev
        }
        encoder.backward(dh)
        return l
    }

    public func evaluate(_ split: DataSplit) -> Metrics {
        let b: MoleculeBatch
        if let cached = evaluationBatches[split] {
            b = cached
        } else {
            b = MoleculeBatch()
            b.build(dataset.indices(split, scaffold: config.scaffoldSplit), from: graphs, mean: targetMean, std: targetStd)
            evaluationBatches[split] = b
        }
        let classification = config.classes != nil
        guard b.graphCount > 0 else {
            return Metrics(name: classification ? "accuracy" : "rmse", value: .nan, loss: .nan, higherIsBetter: classification)
        }
        let prediction = forward(b, training: false)
        let l = objective(prediction, b, computeGradient: false)
        if classification {
            return Metrics(name: "accuracy", value: crossEntropy.accuracy, loss: Double(l), higherIsBetter: true)
        }
        // MSE on standardised targets → RMSE in the dataset's units.
        let rmse = Double(l).squareRoot() * Double(targetStd)
        return Metrics(name: "rmse", value: rmse, loss: Double(l), higherIsBetter: false)
    }

    /// The loss of `prediction` on `b`'s targets: MSE, or cross-entropy against class ids.
    private func objective(_ prediction: Matrix, _ b: MoleculeBatch, computeGradient: Bool) -> Float {
        guard config.classes != nil else {
            return b.targets.withUnsafeBufferPointer { loss.forward(prediction, targets: $0, computeGradient: computeGradient) }
        }
        labels.removeAll(keepingCapacity: true)
        for t in b.targets { labels.append(Int32(t)) }
        return labels.withUnsafeBufferPointer { crossEntropy.forward(prediction, labels: $0, computeGradient: computeGradient) }
    }
}
