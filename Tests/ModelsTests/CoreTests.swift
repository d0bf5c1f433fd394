import Testing
@testable import Models

@Suite struct CoreTests {
    @Test func prngIsDeterministicAndSeedSensitive() {
        var a = Xoshiro256(seed: 7), b = Xoshiro256(seed: 7), c = Xoshiro256(seed: 8)
        let xa = (0..<8).map { _ in a.next() }, xb = (0..<8).map { _ in b.next() }, xc = (0..<8).map { _ in c.next() }
        #expect(xa == xb)
        #expect(xa != xc)
        var u = Xoshiro256(seed: 1)
        let floats = (0..<10_000).map { _ in u.nextFloat() }
        #expect(floats.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = floats.reduce(0, +) / Float(floats.count)
        #expect(abs(mean - 0.5) < 0.02)
        var p = Xoshiro256(seed: 2)
        #expect(p.permutation(100).sorted() == Array(0..<100))
    }

    @Test func parameterStoreIsOneFlatBufferWithNamedViews() {
        let s = ParameterStore()
        let a = s.add("a.weight", shape: [3, 4], initializer: .glorotUniform(fanIn: 3, fanOut: 4))
        let b = s.add("a.bias", shape: [4], initializer: .zeros)
        let c = s.add("c", shape: [2, 2], initializer: .ones)
        s.seal(seed: 11)
        #expect(s.count == 12 + 4 + 4)
        #expect(s.infos.map(\.offset) == [0, 12, 16])
        #expect(s.infos.map(\.decays) == [true, false, true])
        #expect(s.value(a).base == s.values.baseAddress!)
        #expect(s.value(c).base == s.values.baseAddress! + 16)
        #expect(s.gradient(b).base == s.gradients.baseAddress! + 12)
        #expect(Array(s.values[16..<20]) == [1, 1, 1, 1])
        let bound = Float(6.0 / 7.0).squareRoot()
        #expect(Array(s.values[0..<12]).allSatisfy { abs($0) <= bound } && Set(s.values[0..<12]).count == 12)
        let t = ParameterStore()
        t.add("a.weight", shape: [3, 4], initializer: .glorotUniform(fanIn: 3, fanOut: 4))
        t.add("a.bias", shape: [4], initializer: .zeros)
        t.add("c", shape: [2, 2], initializer: .ones)
        t.seal(seed: 11)
        #expect(Array(t.values) == Array(s.values), "same seed, same parameters")
    }

    @Test func gemmWithTransposes() {
        let a = Tensor(rows: 2, cols: 3, values: [1, 2, 3, 4, 5, 6])
        let b = Tensor(rows: 3, cols: 2, values: [7, 8, 9, 10, 11, 12])
        let c = Tensor(rows: 2, cols: 2)
        BLAS.gemm(a.matrix, b.matrix, into: c.matrix)
        #expect(c.toArray() == [58, 64, 139, 154])
        let at = Tensor(rows: 3, cols: 2, values: [1, 4, 2, 5, 3, 6])
        let bt = Tensor(rows: 2, cols: 3, values: [7, 9, 11, 8, 10, 12])
        BLAS.gemm(at.matrix, transposeA: true, bt.matrix, transposeB: true, into: c.matrix, alpha: 1, beta: 1)
        #expect(c.toArray() == [116, 128, 278, 308])
    }

    @Test func tensorResizeReusesStorage() {
        let t = Tensor(rows: 10, cols: 10)
        let base = t.base
        t.resize(rows: 5, cols: 20)
        t.resize(rows: 3, cols: 3)
        #expect(t.base == base, "shrinking or same size must not reallocate")
        t.resize(rows: 100, cols: 100)
        #expect(t.capacity >= 10_000)
    }

    @Test func kernelsMatchScalarReference() {
        let n = 37  // not a multiple of any vector width
        let x = randomValues(n, seed: 50), y0 = randomValues(n, seed: 51)
        var y = y0
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { Kernels.axpy(0.5, xp.baseAddress!, $0.baseAddress!, n) } }
        for i in 0..<n { #expect(abs(y[i] - (y0[i] + 0.5 * x[i])) < 1e-6) }
        let d = x.withUnsafeBufferPointer { xp in y0.withUnsafeBufferPointer { Kernels.dot(xp.baseAddress!, $0.baseAddress!, n) } }
        #expect(abs(d - zip(x, y0).map(*).reduce(0, +)) < 1e-5)
        var r = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { xp in r.withUnsafeMutableBufferPointer { Kernels.relu(xp.baseAddress!, $0.baseAddress!, n) } }
        #expect(r == x.map { max($0, 0) })
    }

    @Test func dropoutMaskScaleAndRate() {
        let layer = Dropout(rate: 0.3, seed: 9)
        let x = Tensor(rows: 100, cols: 100, values: Array(repeating: 1, count: 10_000))
        let y = layer.forward(x.matrix, training: true).toArray()
        let kept = y.filter { $0 != 0 }
        #expect(kept.allSatisfy { abs($0 - 1 / 0.7) < 1e-6 })
        #expect(abs(Float(kept.count) / 10_000 - 0.7) < 0.02)
        let dy = Tensor(rows: 100, cols: 100, values: Array(repeating: 2, count: 10_000))
        let dx = layer.backward(dy.matrix).toArray()
        #expect(dx == y.map { 2 * $0 }, "backward applies the same mask")
        #expect(layer.forward(x.matrix, training: false).toArray() == x.toArray(), "identity at evaluation")
    }

    @Test func sparseDropoutDrawsOnlyNonZeros() {
        let x = CSRMatrix(rows: 3, cols: 1000, rowIndices: Array(repeating: 1, count: 400),
                          columnIndices: (0..<400).map { Int32($0 * 2) }, values: Array(repeating: 1, count: 400))
        let layer = SparseDropout(rate: 0.5, seed: 3, structure: x)
        let y = layer.forward(x, training: true)
        #expect(y.columnIndices == x.columnIndices && y.rowPointers == x.rowPointers, "structure unchanged")
        let kept = y.values.filter { $0 != 0 }
        #expect(kept.allSatisfy { $0 == 2 })
        #expect(kept.count > 150 && kept.count < 250)
        #expect(x.values.allSatisfy { $0 == 1 }, "the input is not modified")
    }

    @Test func shardsAreDisjointAndCover() {
        let items = Array(0..<103)
        let parts = (0..<4).map { Shard(index: $0, count: 4).select(items, seed: 5) }
        #expect(parts.flatMap { $0 }.sorted() == items)
        #expect(parts.allSatisfy { $0.count == 25 || $0.count == 26 })
        #expect(Shard(index: 2, count: 4).select(items, seed: 5) == parts[2], "same seed, same shard")
        #expect(Shard(index: 2, count: 4).select(items, seed: 6) != parts[2])
    }

    @Test func batchSamplerCoversEachEpoch() {
        var s = BatchSampler(indices: Array(0..<10), batchSize: 4, dropLast: false, seed: 1)
        var seen: [Int] = []
        for _ in 0..<3 { seen += s.next() }
        #expect(seen.sorted() == Array(0..<10))
        var d = BatchSampler(indices: Array(0..<10), batchSize: 4, dropLast: true, seed: 1)
        #expect(d.batchesPerEpoch == 2)
        for _ in 0..<5 { #expect(d.next().count == 4) }
    }
}
