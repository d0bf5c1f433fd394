/// Hyper-parameters of `GCN`, defaulting to Kipf & Welling (2017) with the hidden width of the
/// project's PyTorch reference GCN (docs/models.md).
public struct GCNConfig: Sendable {
    public var hidden = 64
    public var dropout: Float = 0.5
    /// L2 penalty on the first layer's weights, added to the loss as (λ/2)·‖W1‖² (Kipf's
    /// formulation, coupled with Adam). This is not AdamW's decoupled decay, which would give a
    /// much weaker regulariser at lr 0.01 and cost about two points of accuracy.
    public var l2: Float = 5e-4
    public var learningRate: Float = 0.01

    public init() {}
}

/// Two-layer graph convolutional network for node classification (Kipf & Welling 2017):
///
///     H = ReLU(Â · (dropout(X) · W1) + b1),  logits = Â · (dropout(H) · W2) + b2
///     Â = D^-½ (A + I) D^-½,  X row-normalised bag of words (sparse)
///
/// Full-batch: every step sees the whole graph, the loss is the cross-entropy over this peer's
/// shard of the training nodes. X stays sparse (CSR) and input dropout draws only its
/// non-zeros, so the first layer costs nnz·hidden instead of N·F·hidden.
public final class GCN: TrainableModel {
    public let config: GCNConfig
    public let parameters = ParameterStore()
    public let dataset: PlanetoidDataset
    let features: CSRMatrix
    let inputDropout: SparseDropout
    let layer1: SparseInputLinear
    let bias1: Param
    let aggregate1: GraphAggregation
    let relu = ReLU()
    let hiddenDropout: Dropout
    let layer2: Linear
    let bias2: Param
    let aggregate2: GraphAggregation
    let loss = SoftmaxCrossEntropy()
    let trainNodes: [Int32]

    public var trainingExampleCount: Int { trainNodes.count }
    public var stepsPerEpoch: Int { 1 }

    /// `trainNodes` is this peer's shard of the training split (default: all of it).
    /// `seed` fixes the initial parameters; `streamSeed` (default `seed`) the dropout masks, so
    /// peers can share initial weights but draw different masks.
    public init(dataset: PlanetoidDataset, config: GCNConfig = GCNConfig(), seed: UInt64, streamSeed: UInt64? = nil,
                trainNodes: [Int32]? = nil) {
        let stream = streamSeed ?? seed
        self.config = config
        self.dataset = dataset
        // Row-normalise the features: x_ij / Σ_j |x_ij| (Kipf's preprocessing). For the binary
        // bag of words of Cora and CiteSeer this is 1 / (non-zeros of row i), bit for bit; the
        // absolute value keeps a user's signed features from dividing by a sum near zero.
        let x = dataset.features.withSameStructure()
        for i in 0..<x.rows {
            let lo = Int(x.rowPointers[i]), hi = Int(x.rowPointers[i + 1])
            var sum: Float = 0
            for k in lo..<hi { sum += abs(dataset.features.values[k]) }
            for k in lo..<hi { x.values[k] = dataset.features.values[k] / sum }
        }
        features = x
        var src = dataset.edgeSources, dst = dataset.edgeTargets
        src += dataset.edgeTargets
        dst += dataset.edgeSources
        let adjacency = Adjacency(nodeCount: dataset.nodeCount, sources: src, targets: dst, selfLoops: true,
                                  normalization: .symmetric)
        inputDropout = SparseDropout(rate: config.dropout, seed: stream &+ 1, structure: x)
        layer1 = SparseInputLinear(parameters, name: "gcn.conv1", inFeatures: x.cols, outFeatures: config.hidden)
        bias1 = parameters.add("gcn.conv1.bias", shape: [config.hidden], initializer: .zeros)
        aggregate1 = GraphAggregation(adjacency)
        hiddenDropout = Dropout(rate: config.dropout, seed: stream &+ 2)
        layer2 = Linear(parameters, name: "gcn.conv2", inFeatures: config.hidden, outFeatures: dataset.classCount, bias: false)
        bias2 = parameters.add("gcn.conv2.bias", shape: [dataset.classCount], initializer: .zeros)
        aggregate2 = GraphAggregation(adjacency)
        self.trainNodes = trainNodes ?? dataset.splits[.train]!
        parameters.seal(seed: seed)
    }

    private func forward(training: Bool) -> Matrix {
        let xd = inputDropout.forward(features, training: training)
        let h = aggregate1.forward(layer1.forward(xd))
        Kernels.addRowVector(parameters.value(bias1).base, to: h)
        let d = hiddenDropout.forward(relu.forward(h), training: training)
        let logits = aggregate2.forward(layer2.forward(d))
        Kernels.addRowVector(parameters.value(bias2).base, to: logits)
        return logits
    }

    public func trainStep() -> Float {
        parameters.zeroGradients()
        let logits = forward(training: true)
        var l = dataset.labels.withUnsafeBufferPointer { labels in
            trainNodes.withUnsafeBufferPointer { loss.forward(logits, labels: labels, rows: $0) }
        }
        let dLogits = loss.logitsGradient.matrix
        Kernels.accumulateColumnSums(dLogits, into: parameters.gradient(bias2).base)
        let dh = layer2.backward(aggregate2.backward(dLogits))
        let dPre = relu.backward(hiddenDropout.backward(dh))
        Kernels.accumulateColumnSums(dPre, into: parameters.gradient(bias1).base)
        layer1.backward(aggregate1.backward(dPre))
        if config.l2 > 0 {
            let w = parameters.value(layer1.weight), g = parameters.gradient(layer1.weight)
            l += 0.5 * config.l2 * Kernels.sumOfSquares(w.base, w.count)
            Kernels.axpy(config.l2, w.base, g.base, w.count)
        }
        return l
    }

    public func evaluate(_ split: DataSplit) -> Metrics {
        let logits = forward(training: false)
        let nodes = dataset.splits[split] ?? []
        let l = dataset.labels.withUnsafeBufferPointer { labels in
            nodes.withUnsafeBufferPointer { loss.forward(logits, labels: labels, rows: $0, computeGradient: false) }
        }
        return Metrics(name: "accuracy", value: loss.accuracy, loss: Double(l), higherIsBetter: true)
    }
}
