/// Layer normalisation over each row (Ba et al. 2016) with a learned gain and shift.
///
/// Keeps the normalised input x̂ and 1/σ per row; backward is then
/// dx = (1/σ)·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ.
public final class LayerNorm {
    public let store: ParameterStore
    public let gain: Param
    public let shift: Param
    public let features: Int
    public let epsilon: Float
    public let output = Tensor()
    public let inputGradient = Tensor()
    private let normalized = Tensor()
    private let inverseStd = Tensor()
    private let scratch = Tensor()

    public init(_ store: ParameterStore, name: String, features: Int, epsilon: Float = 1e-5) {
        self.store = store
        self.features = features
        self.epsilon = epsilon
        gain = store.add("\(name).gain", shape: [features], initializer: .ones, decays: false)
        shift = store.add("\(name).shift", shape: [features], initializer: .zeros, decays: false)
    }

    public func forward(_ x: Matrix) -> Matrix {
        precondition(x.cols == features, "LayerNorm expects \(features) features")
        let y = output.resize(rows: x.rows, cols: features)
        let xh = normalized.resize(rows: x.rows, cols: features)
        let inv = inverseStd.resize(rows: x.rows, cols: 1)
        let g = store.value(gain).base, b = store.value(shift).base
        let n = Float(features)
        for r in 0..<x.rows {
            let xr = x.row(r), hr = xh.row(r), yr = y.row(r)
            var mean: Float = 0
            for j in 0..<features { mean += xr[j] }
            mean /= n
            var variance: Float = 0
            for j in 0..<features { let d = xr[j] - mean; variance += d * d }
            variance /= n
            let s = 1 / (variance + epsilon).squareRoot()
            inv.base[r] = s
            for j in 0..<features {
                let h = (xr[j] - mean) * s
                hr[j] = h
                yr[j] = h * g[j] + b[j]
            }
        }
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        precondition(dy.rows == normalized.rows && dy.cols == features, "LayerNorm.backward: bad dy shape")
        let dx = inputGradient.resize(rows: dy.rows, cols: features)
        let gr = scratch.resize(rows: 1, cols: features).base
        let g = store.value(gain).base
        let dg = store.gradient(gain).base, db = store.gradient(shift).base
        let n = Float(features)
        for r in 0..<dy.rows {
            let dyr = dy.row(r), hr = normalized.matrix.row(r), dxr = dx.row(r)
            var meanG: Float = 0, meanGH: Float = 0
            for j in 0..<features {
                dg[j] += dyr[j] * hr[j]
                db[j] += dyr[j]
                let v = dyr[j] * g[j]
                gr[j] = v
                meanG += v
                meanGH += v * hr[j]
            }
            meanG /= n
            meanGH /= n
            let s = inverseStd.base[r]
            for j in 0..<features { dxr[j] = s * (gr[j] - meanG - hr[j] * meanGH) }
        }
        return dx
    }
}
