import Testing
@testable import Models

/// Whole models: the gradients a training step leaves in the flat buffer against finite
/// differences of the step's loss (small configurations, dropout off, fixed batches).
@Suite struct ModelGradientTests {
    /// A 7-node graph with 5 bag-of-words features and 3 classes.
    static func tinyGraph() -> PlanetoidDataset {
        let features = CSRMatrix(rows: 7, cols: 5, rowIndices: [0, 0, 1, 2, 2, 3, 4, 4, 5, 6],
                                 columnIndices: [0, 3, 1, 2, 4, 0, 1, 3, 4, 2], values: Array(repeating: 1, count: 10))
        return PlanetoidDataset(name: "tiny", nodeCount: 7, featureCount: 5, classCount: 3, features: features,
                                labels: [0, 1, 2, 0, 1, 2, 0],
                                splits: [.train: [0, 1, 2, 4], .validation: [3, 5], .test: [6]],
                                edgeSources: [0, 1, 2, 3, 4, 5, 0], edgeTargets: [1, 2, 3, 4, 5, 6, 6])
    }

    @Test func gcn() {
        var config = GCNConfig()
        config.hidden = 4
        config.dropout = 0
        let model = GCN(dataset: Self.tinyGraph(), config: config, seed: 3)
        let store = model.parameters
        let noise = randomValues(store.count, seed: 30, scale: 0.2)
        for i in 0..<store.count { store.values[i] += noise[i] }
        _ = model.trainStep()
        expectGradientsMatch([.parameters(store)]) { Double(model.trainStep()) }
    }

    @Test(arguments: [GraphPooling.Mode.sum, .mean])
    func gin(pooling: GraphPooling.Mode) throws {
        let data = try MoleculeDataset.load("esol")
        var config = GINConfig()
        config.hidden = 6
        config.layers = 2
        config.pooling = pooling
        let model = GIN(dataset: data, config: config, seed: 4)
        let store = model.parameters
        // Non-zero ε and shifts so that every term of the backward pass matters.
        let noise = randomValues(store.count, seed: 31, scale: 0.2)
        for i in 0..<store.count { store.values[i] += noise[i] }
        let batch = MoleculeBatch()
        batch.build([3, 10, 42], from: data.molecules.map(MoleculeGraph.init), mean: model.targetMean, std: model.targetStd)
        #expect(batch.graphCount == 3 && batch.adjacencyMatrix.nonZeroCount > 0)
        _ = model.lossAndGradients(batch)
        let eps = store.info(named: "gin.eps")!
        #expect(store.gradients[eps.offset] != 0, "ε must receive a gradient")
        // Batch norm over 3 small molecules makes the loss steep: Float rounding alone moves the
        // quotient by ~5e-3 (the fc1 biases, whose true gradient is 0 under batch norm, show it).
        expectGradientsMatch([.parameters(store)], absolute: 1.5e-2, relative: 2e-2, outliers: 2) {
            Double(model.lossAndGradients(batch))
        }
    }

    @Test func moeClassifier() throws {
        let data = try TabularDataset.load("digits")
        var config = MoEClassifierConfig()
        config.moe.dModel = 5
        config.moe.hidden = 4
        config.moe.experts = 4
        config.moe.auxCoefficient = 0.1
        config.blocks = 2
        let model = MoEClassifier(dataset: data, config: config, seed: 5)
        let store = model.parameters
        let x = Tensor(rows: 6, cols: 64, values: Array(data.features[0..<(6 * 64)]))
        let labels = Array(data.labels[0..<6])
        let loss = { labels.withUnsafeBufferPointer { model.lossAndGradients(x.matrix, labels: $0) } }
        _ = loss()
        expectGradientsMatch([.parameters(store)]) { Double(loss()) }
    }
}
