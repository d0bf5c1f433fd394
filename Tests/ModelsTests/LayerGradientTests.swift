import Foundation
import Testing
@testable import Models

/// Every layer's backward pass against central finite differences on seeded random inputs.
@Suite struct LayerGradientTests {
    @Test func linear() {
        let store = ParameterStore()
        let layer = Linear(store, name: "fc", inFeatures: 5, outFeatures: 4)
        store.seal(seed: 1)
        randomValues(4, seed: 9).withUnsafeBufferPointer { store.value(layer.bias!).base.update(from: $0.baseAddress!, count: 4) }
        let x = Tensor(rows: 3, cols: 5, values: randomValues(15, seed: 2))
        let r = randomValues(12, seed: 3)
        store.zeroGradients()
        _ = layer.forward(x.matrix)
        let dx = withMatrix(3, 4, r) { layer.backward($0) }
        expectGradientsMatch([.input("x", x, gradient: dx), .parameters(store)]) {
            weightedSum(layer.forward(x.matrix), r)
        }
    }

    @Test func relu() {
        let layer = ReLU()
        let x = Tensor(rows: 4, cols: 5, values: randomValues(20, seed: 4, margin: 0.05))
        let r = randomValues(20, seed: 5)
        _ = layer.forward(x.matrix)
        let dx = withMatrix(4, 5, r) { layer.backward($0) }
        #expect(dx.toArray().contains(0), "some inputs are negative, so some gradients must be zero")
        expectGradientsMatch([.input("x", x, gradient: dx)]) { weightedSum(layer.forward(x.matrix), r) }
    }

    @Test func gelu() {
        let layer = GELU()
        let x = Tensor(rows: 3, cols: 7, values: randomValues(21, seed: 6, scale: 3))
        let r = randomValues(21, seed: 7)
        _ = layer.forward(x.matrix)
        let dx = withMatrix(3, 7, r) { layer.backward($0) }
        expectGradientsMatch([.input("x", x, gradient: dx)]) { weightedSum(layer.forward(x.matrix), r) }
        // Known values: GELU(0) = 0, GELU(x) ≈ x for large x, ≈ 0 for very negative x.
        let probe = withMatrix(1, 3, [0, 6, -6]) { layer.forward($0).toArray() }
        #expect(probe[0] == 0 && abs(probe[1] - 6) < 1e-4 && abs(probe[2]) < 1e-4)
    }

    @Test func layerNorm() {
        let store = ParameterStore()
        let layer = LayerNorm(store, name: "ln", features: 6)
        store.seal(seed: 1)
        let p = store.values
        for i in 0..<p.count { p[i] += randomValues(p.count, seed: 8, scale: 0.5)[i] }
        let x = Tensor(rows: 4, cols: 6, values: randomValues(24, seed: 10, scale: 2))
        let r = randomValues(24, seed: 11)
        store.zeroGradients()
        _ = layer.forward(x.matrix)
        let dx = withMatrix(4, 6, r) { layer.backward($0) }
        expectGradientsMatch([.input("x", x, gradient: dx), .parameters(store)]) {
            weightedSum(layer.forward(x.matrix), r)
        }
    }

    @Test func batchNormTrainingMode() {
        let store = ParameterStore()
        let layer = BatchNorm(store, name: "bn", features: 5)
        store.seal(seed: 1)
        let p = store.values
        let noise = randomValues(p.count, seed: 12, scale: 0.5)
        for i in 0..<p.count { p[i] += noise[i] }
        let x = Tensor(rows: 6, cols: 5, values: randomValues(30, seed: 13, scale: 2))
        let r = randomValues(30, seed: 14)
        store.zeroGradients()
        _ = layer.forward(x.matrix, training: true)
        let dx = withMatrix(6, 5, r) { layer.backward($0) }
        expectGradientsMatch([.input("x", x, gradient: dx), .parameters(store)]) {
            weightedSum(layer.forward(x.matrix, training: true), r)
        }
    }

    @Test func batchNormEvaluationUsesRunningStatistics() {
        let store = ParameterStore()
        let layer = BatchNorm(store, name: "bn", features: 2, momentum: 1)  // running = last batch
        store.seal(seed: 1)
        let x = Tensor(rows: 3, cols: 2, values: [1, 10, 2, 20, 3, 30])
        _ = layer.forward(x.matrix, training: true)
        #expect(layer.runningMean == [2, 20])
        #expect(layer.runningVariance == [1, 100])  // unbiased
        let y = withMatrix(1, 2, [3, 30]) { layer.forward($0, training: false).toArray() }
        #expect(abs(y[0] - 1) < 1e-4 && abs(y[1] - 1) < 1e-4)
    }

    @Test func softmaxCrossEntropyOnARowSubset() {
        let loss = SoftmaxCrossEntropy()
        let logits = Tensor(rows: 5, cols: 4, values: randomValues(20, seed: 15, scale: 3))
        let labels: [Int32] = [0, 3, 1, 2, 2]
        let rows: [Int32] = [1, 3, 4]
        let value = { labels.withUnsafeBufferPointer { l in rows.withUnsafeBufferPointer { loss.forward(logits.matrix, labels: l, rows: $0) } } }
        _ = value()
        let grad = loss.logitsGradient.matrix
        for c in 0..<4 { #expect(grad[0, c] == 0 && grad[2, c] == 0, "rows outside the subset get no gradient") }
        expectGradientsMatch([.input("logits", logits, gradient: grad)]) { Double(value()) }
        // Uniform logits: loss = log(C).
        let flat = Tensor(rows: 2, cols: 4)
        let l = labels.prefix(2).withUnsafeBufferPointer { loss.forward(flat.matrix, labels: $0) }
        #expect(abs(l - logf(4)) < 1e-6)
    }

    @Test func meanSquaredError() {
        let loss = MeanSquaredError()
        let p = Tensor(rows: 6, cols: 1, values: randomValues(6, seed: 16))
        let t = randomValues(6, seed: 17)
        let value = { t.withUnsafeBufferPointer { loss.forward(p.matrix, targets: $0) } }
        _ = value()
        expectGradientsMatch([.input("prediction", p, gradient: loss.predictionGradient.matrix)]) { Double(value()) }
    }

    @Test func embeddingSumOfCategoricalTables() {
        let store = ParameterStore()
        let layer = CategoricalEmbeddingSum(store, name: "atoms", vocabularies: [4, 3, 2], dimension: 5)
        store.seal(seed: 3)
        let codes: [Int32] = [0, 2, 1, 3, 0, 0, 3, 2, 1, 1, 1, 0]  // 4 rows × 3 tables; row 0 and 2 share codes
        let r = randomValues(20, seed: 18)
        store.zeroGradients()
        codes.withUnsafeBufferPointer { _ = layer.forward($0) }
        withMatrix(4, 5, r) { layer.backward($0) }
        expectGradientsMatch([.parameters(store)]) {
            codes.withUnsafeBufferPointer { weightedSum(layer.forward($0), r) }
        }
    }

    @Test func graphAggregationOnADirectedWeightedGraph() {
        // Directed edges (not symmetric), self loops and symmetric normalisation: backward must
        // use the transpose, not the forward operator.
        let adjacency = Adjacency(nodeCount: 5, sources: [0, 1, 1, 2, 4, 3], targets: [1, 2, 3, 0, 0, 4],
                                  selfLoops: true, normalization: .symmetric)
        let layer = GraphAggregation(adjacency)
        let h = Tensor(rows: 5, cols: 3, values: randomValues(15, seed: 19))
        let r = randomValues(15, seed: 20)
        _ = layer.forward(h.matrix)
        let dh = withMatrix(5, 3, r) { layer.backward($0) }
        expectGradientsMatch([.input("h", h, gradient: dh)]) { weightedSum(layer.forward(h.matrix), r) }
    }

    @Test func symmetricNormalisationWeights() {
        // Path 0-1-2 with self loops: degrees 2, 3, 2.
        let a = Adjacency(nodeCount: 3, sources: [0, 1, 1, 2], targets: [1, 0, 2, 1], selfLoops: true, normalization: .symmetric)
        let d = a.forwardOperator.dense()
        let expected: [Float] = [1.0 / 2, 1 / Float(6).squareRoot(), 0,
                                 1 / Float(6).squareRoot(), 1.0 / 3, 1 / Float(6).squareRoot(),
                                 0, 1 / Float(6).squareRoot(), 1.0 / 2]
        for i in 0..<9 { #expect(abs(d[i] - expected[i]) < 1e-6, "entry \(i)") }
    }

    @Test func sparseInputLinear() {
        let store = ParameterStore()
        let x = CSRMatrix(rows: 4, cols: 6, rowIndices: [0, 0, 1, 3, 3, 3], columnIndices: [1, 4, 0, 2, 3, 5],
                          values: randomValues(6, seed: 21))
        let layer = SparseInputLinear(store, name: "xw", inFeatures: 6, outFeatures: 3)
        store.seal(seed: 4)
        let r = randomValues(12, seed: 22)
        store.zeroGradients()
        _ = layer.forward(x)
        withMatrix(4, 3, r) { layer.backward($0) }
        expectGradientsMatch([.parameters(store)]) { weightedSum(layer.forward(x), r) }
        // Forward equals the dense product.
        let dense = x.dense(), w = store.value(layer.weight), y = layer.forward(x)
        for i in 0..<4 {
            for j in 0..<3 {
                var s: Float = 0
                for k in 0..<6 { s += dense[i * 6 + k] * w[k, j] }
                #expect(abs(y[i, j] - s) < 1e-5)
            }
        }
    }

    @Test(arguments: [GraphPooling.Mode.sum, .mean])
    func graphPooling(mode: GraphPooling.Mode) {
        let layer = GraphPooling(mode: mode)
        let graphOf: [Int32] = [0, 0, 1, 2, 2, 2]
        let h = Tensor(rows: 6, cols: 4, values: randomValues(24, seed: 23))
        let r = randomValues(12, seed: 24)
        let run = { graphOf.withUnsafeBufferPointer { layer.forward(h.matrix, graphOfNode: $0, graphCount: 3) } }
        _ = run()
        let dh = withMatrix(3, 4, r) { layer.backward($0) }
        expectGradientsMatch([.input("h", h, gradient: dh)]) { weightedSum(run(), r) }
    }

    @Test(arguments: [(2, nil), (1, nil), (2, Float(0.5))] as [(Int, Float?)])
    func mixtureOfExperts(topK: Int, capacityFactor: Float?) {
        var config = MixtureOfExpertsConfig()
        config.experts = 4
        config.topK = topK
        config.dModel = 6
        config.hidden = 5
        config.capacityFactor = capacityFactor
        config.auxCoefficient = 0.3  // large, so a wrong aux gradient shows
        let store = ParameterStore()
        let moe = MixtureOfExperts(store, name: "moe", config: config)
        store.seal(seed: 5)
        let biasNoise = randomValues(store.count, seed: 25, scale: 0.1)
        for info in store.infos where !info.decays {
            for i in 0..<info.count { store.values[info.offset + i] = biasNoise[info.offset + i] }
        }
        let h = Tensor(rows: 8, cols: 6, values: randomValues(48, seed: 26, scale: 2))
        let r = randomValues(48, seed: 27)
        // Loss = Σ r ⊙ y + coef · aux, the combination the classifier trains on.
        let total = { weightedSum(moe.forward(h.matrix), r) + Double(config.auxCoefficient * moe.auxLoss) }
        store.zeroGradients()
        _ = moe.forward(h.matrix)
        if capacityFactor != nil { #expect(moe.droppedFraction > 0, "capacity 0.5 must drop assignments") }
        let dh = withMatrix(8, 6, r) { moe.backward($0) }
        expectGradientsMatch([.input("h", h, gradient: dh), .parameters(store)]) { total() }
    }

    /// A NaN token (say, a diverged input) used to index expert −1 and crash the process; now it
    /// routes to the lowest experts with NaN gates, its output row is NaN, and the other tokens
    /// are routed and computed exactly as without it.
    @Test func mixtureOfExpertsRoutesNaNTokensWithoutCrashing() {
        var config = MixtureOfExpertsConfig()
        config.experts = 4
        config.topK = 2
        config.dModel = 3
        config.hidden = 4
        let store = ParameterStore()
        let moe = MixtureOfExperts(store, name: "moe", config: config)
        store.seal(seed: 7)
        var values = randomValues(12, seed: 8)
        // The tensor must outlive the forward pass: `matrix` is a view of its storage.
        let cleanInput = Tensor(rows: 4, cols: 3, values: values)
        let clean = moe.forward(cleanInput.matrix)
        let cleanRows = withExtendedLifetime(cleanInput) { (1..<4).map { t in (0..<3).map { clean[t, $0] } } }
        let cleanLoad = moe.expertLoad
        values[0] = .nan  // token 0
        let h = Tensor(rows: 4, cols: 3, values: values)
        let y = withExtendedLifetime(h) { moe.forward(h.matrix) }
        #expect((0..<3).allSatisfy { y[0, $0].isNaN })
        // Not bit-equal: an expert's sgemm over a different row count may sum in another order.
        for t in 1..<4 {
            for c in 0..<3 { #expect(abs(y[t, c] - cleanRows[t - 1][c]) <= 1e-5, "token \(t) changed") }
        }
        #expect(moe.expertLoad.reduce(0, +) == cleanLoad.reduce(0, +), "every token still takes k experts")
        let gradient = Tensor(rows: 4, cols: 3, values: randomValues(12, seed: 9))
        let dh = withExtendedLifetime((h, gradient)) { moe.backward(gradient.matrix) }
        #expect(dh.rows == 4)
    }
}
