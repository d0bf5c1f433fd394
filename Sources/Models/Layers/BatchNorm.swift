/// Batch normalisation over the rows of a batch (Ioffe & Szegedy 2015), per feature column,
/// with running statistics for evaluation (momentum 0.1, unbiased running variance, as in
/// PyTorch's BatchNorm1d, which the GIN reference uses).
///
/// The running statistics are buffers, not parameters: they are not trained and not in the
/// flat parameter buffer, so each peer keeps its own.
public final class BatchNorm {
    public let store: ParameterStore
    public let gain: Param
    public let shift: Param
    public let features: Int
    public let epsilon: Float
    public let momentum: Float
    public private(set) var runningMean: [Float]
    public private(set) var runningVariance: [Float]
    public let output = Tensor()
    public let inputGradient = Tensor()
    private let normalized = Tensor()
    private let stats = Tensor()  // row 0: mean, row 1: 1/σ, rows 2, 3: backward sums

    public init(_ store: ParameterStore, name: String, features: Int, epsilon: Float = 1e-5, momentum: Float = 0.1) {
        self.store = store
        self.features = features
        self.epsilon = epsilon
        self.momentum = momentum
        gain = store.add("\(name).gain", shape: [features], initializer: .ones, decays: false)
        shift = store.add("\(name).shift", shape: [features], initializer: .zeros, decays: false)
        runningMean = Array(repeating: 0, count: features)
        runningVariance = Array(repeating: 1, count: features)
    }

    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        precondition(x.cols == features, "BatchNorm expects \(features) features")
        let y = output.resize(rows: x.rows, cols: features)
        let xh = normalized.resize(rows: x.rows, cols: features)
        let st = stats.resize(rows: 4, cols: features)
        let mean = st.row(0), inv = st.row(1)
        let f = features
        if training {
            precondition(x.rows > 1, "BatchNorm needs at least 2 rows in training")
            mean.update(repeating: 0, count: f)
            Kernels.accumulateColumnSums(x, into: mean)
            let n = Float(x.rows)
            for j in 0..<f { mean[j] /= n }
            let varSum = st.row(2)
            varSum.update(repeating: 0, count: f)
            for r in 0..<x.rows {
                let xr = x.row(r)
                for j in 0..<f { let d = xr[j] - mean[j]; varSum[j] += d * d }
            }
            runningMean.withUnsafeMutableBufferPointer { rm in
                runningVariance.withUnsafeMutableBufferPointer { rv in
                    for j in 0..<f {
                        let biased = varSum[j] / n
                        inv[j] = 1 / (biased + epsilon).squareRoot()
                        rm[j] = (1 - momentum) * rm[j] + momentum * mean[j]
                        rv[j] = (1 - momentum) * rv[j] + momentum * varSum[j] / (n - 1)
                    }
                }
            }
        } else {
            for j in 0..<f {
                mean[j] = runningMean[j]
                inv[j] = 1 / (runningVariance[j] + epsilon).squareRoot()
            }
        }
        let g = store.value(gain).base, b = store.value(shift).base
        for r in 0..<x.rows {
            let xr = x.row(r), hr = xh.row(r), yr = y.row(r)
            for j in 0..<f {
                let h = (xr[j] - mean[j]) * inv[j]
                hr[j] = h
                yr[j] = h * g[j] + b[j]
            }
        }
        return y
    }

    /// Backward of the training-mode forward (batch statistics).
    public func backward(_ dy: Matrix) -> Matrix {
        precondition(dy.rows == normalized.rows && dy.cols == features, "BatchNorm.backward: bad dy shape")
        let f = features
        let dx = inputGradient.resize(rows: dy.rows, cols: f)
        let st = stats.matrix
        let inv = st.row(1), sumDy = st.row(2), sumDyH = st.row(3)
        sumDy.update(repeating: 0, count: f)
        sumDyH.update(repeating: 0, count: f)
        let xh = normalized.matrix
        for r in 0..<dy.rows {
            let dyr = dy.row(r), hr = xh.row(r)
            for j in 0..<f {
                sumDy[j] += dyr[j]
                sumDyH[j] += dyr[j] * hr[j]
            }
        }
        let g = store.value(gain).base
        let dg = store.gradient(gain).base, db = store.gradient(shift).base
        Kernels.add(sumDyH, into: dg, f)
        Kernels.add(sumDy, into: db, f)
        let n = Float(dy.rows)
        for r in 0..<dy.rows {
            let dyr = dy.row(r), hr = xh.row(r), dxr = dx.row(r)
            for j in 0..<f {
                dxr[j] = g[j] * inv[j] * (dyr[j] - sumDy[j] / n - hr[j] * sumDyH[j] / n)
            }
        }
        return dx
    }
}
