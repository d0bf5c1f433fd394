/// Hyper-parameters of `MoEClassifier`, defaulting to the project's reference MoE classifier
/// (docs/models.md).
public struct MoEClassifierConfig: Sendable {
    public var moe = MixtureOfExpertsConfig()
    /// Number of stacked MoE blocks (the reference uses one).
    public var blocks = 1
    public var batchSize = 128
    public var learningRate: Float = 1e-3

    public init() {}
}

/// Image classifier around mixture-of-experts blocks, as the reference:
///
///     h = ReLU(x·W_in + b_in);  h = MoE(h) (per block, residual inside);  logits = h·W_out + b_out
///     loss = CE + aux_coef · Σ aux
///
/// Batches of 128, the last partial batch of an epoch dropped.
public final class MoEClassifier: TrainableModel {
    public let config: MoEClassifierConfig
    public let parameters = ParameterStore()
    public let dataset: TabularDataset
    let inputProjection: Linear
    let inputActivation = ReLU()
    public let blocks: [MixtureOfExperts]
    let head: Linear
    let loss = SoftmaxCrossEntropy()
    var sampler: BatchSampler
    let batchFeatures = Tensor()
    var batchLabels: [Int32] = []
    let evalFeatures = Tensor()

    public var trainingExampleCount: Int { sampler.indices.count }
    public var stepsPerEpoch: Int { sampler.batchesPerEpoch }

    /// `seed` fixes the initial parameters; `streamSeed` (default `seed`) the batch order.
    public init(dataset: TabularDataset, config: MoEClassifierConfig = MoEClassifierConfig(), seed: UInt64,
                streamSeed: UInt64? = nil, trainIndices: [Int]? = nil) {
        self.config = config
        self.dataset = dataset
        let d = config.moe.dModel
        inputProjection = Linear(parameters, name: "moe.input", inFeatures: dataset.featureCount, outFeatures: d)
        let store = parameters
        blocks = (0..<config.blocks).map { MixtureOfExperts(store, name: "moe.block\($0)", config: config.moe) }
        head = Linear(parameters, name: "moe.head", inFeatures: d, outFeatures: dataset.classCount)
        sampler = BatchSampler(indices: trainIndices ?? dataset.trainIndices, batchSize: config.batchSize,
                               dropLast: true, seed: streamSeed ?? seed)
        parameters.seal(seed: seed)
    }

    private func forward(_ x: Matrix) -> Matrix {
        var h = inputActivation.forward(inputProjection.forward(x))
        for b in blocks { h = b.forward(h) }
        return head.forward(h)
    }

    private var auxLoss: Float { blocks.reduce(0) { $0 + $1.auxLoss } }

    public func trainStep() -> Float {
        let batch = sampler.next()
        let f = dataset.featureCount
        let x = batchFeatures.resize(rows: batch.count, cols: f)
        batchLabels.removeAll(keepingCapacity: true)
        dataset.features.withUnsafeBufferPointer { src in
            for (r, i) in batch.enumerated() {
                Kernels.copy(src.baseAddress! + i * f, x.row(r), f)
                batchLabels.append(dataset.labels[i])
            }
        }
        return batchLabels.withUnsafeBufferPointer { lossAndGradients(x, labels: $0) }
    }

    /// Zeroes the gradients, then fills them with those of CE + aux on one batch.
    func lossAndGradients(_ x: Matrix, labels: UnsafeBufferPointer<Int32>) -> Float {
        parameters.zeroGradients()
        let logits = forward(x)
        let ce = loss.forward(logits, labels: labels)
        var dh = head.backward(loss.logitsGradient.matrix)
        for b in blocks.reversed() { dh = b.backward(dh) }
        inputProjection.backward(inputActivation.backward(dh), computeInputGradient: false)
        return ce + config.moe.auxCoefficient * auxLoss
    }

    public func evaluate(_ split: DataSplit) -> Metrics {
        let indices = split == .train ? dataset.trainIndices : dataset.testIndices
        let f = dataset.featureCount
        let x = evalFeatures.resize(rows: indices.count, cols: f)
        var labels = [Int32]()
        labels.reserveCapacity(indices.count)
        dataset.features.withUnsafeBufferPointer { src in
            for (r, i) in indices.enumerated() {
                Kernels.copy(src.baseAddress! + i * f, x.row(r), f)
                labels.append(dataset.labels[i])
            }
        }
        let logits = forward(x)
        let ce = labels.withUnsafeBufferPointer { loss.forward(logits, labels: $0, computeGradient: false) }
        return Metrics(name: "accuracy", value: loss.accuracy, loss: Double(ce + config.moe.auxCoefficient * auxLoss),
                       higherIsBetter: true)
    }
}
