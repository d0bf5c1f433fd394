/// Inverted dropout with its own seeded stream: kept values are scaled by 1/(1-p) in training,
/// so evaluation is the identity. The mask is kept as the per-element scale (0 or 1/(1-p)),
/// which makes backward one element-wise product.
public final class Dropout {
    public let rate: Float
    private var rng: Xoshiro256
    public let output = Tensor()
    public let inputGradient = Tensor()
    private let mask = Tensor()

    public init(rate: Float, seed: UInt64) {
        precondition(rate >= 0 && rate < 1, "dropout rate must be in [0, 1)")
        self.rate = rate
        rng = Xoshiro256(seed: seed)
    }

    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        let y = output.resize(rows: x.rows, cols: x.cols)
        let m = mask.resize(rows: x.rows, cols: x.cols)
        if !training || rate == 0 {
            m.base.update(repeating: 1, count: m.count)
            Kernels.copy(x.base, y.base, x.count)
            return y
        }
        Dropout.fillMask(m.base, m.count, rate: rate, rng: &rng)
        Kernels.mul(x.base, m.base, y.base, x.count)
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        precondition(dy.count == mask.count, "Dropout.backward: bad dy shape")
        let dx = inputGradient.resize(rows: dy.rows, cols: dy.cols)
        Kernels.mul(dy.base, mask.base, dx.base, dy.count)
        return dx
    }

    /// Fills `n` scales: 0 with probability `rate`, else 1/(1-rate). Two 24-bit uniforms per
    /// 64-bit draw keep the generator off the profile.
    @inline(never)
    static func fillMask(_ m: UnsafeMutablePointer<Float>, _ n: Int, rate: Float, rng: inout Xoshiro256) {
        let keepScale = 1 / (1 - rate)
        let threshold = UInt32(min(Double(rate) * 16_777_216.0, 16_777_216.0))
        var i = 0
        while i &+ 2 <= n {
            let r = rng.next()
            m[i] = UInt32(truncatingIfNeeded: r >> 40) < threshold ? 0 : keepScale
            m[i &+ 1] = UInt32(truncatingIfNeeded: (r >> 8) & 0xFF_FFFF) < threshold ? 0 : keepScale
            i &+= 2
        }
        if i < n { m[i] = UInt32(truncatingIfNeeded: rng.next() >> 40) < threshold ? 0 : keepScale }
    }
}

/// Dropout on the stored values of a sparse (CSR) matrix: zeros stay zeros, so only the
/// non-zeros are drawn (Kipf's `sparse_dropout`). The distribution equals dense dropout's, at
/// the cost of nnz draws instead of rows × cols (49 k instead of 3.9 M on Cora).
public final class SparseDropout {
    public let rate: Float
    private var rng: Xoshiro256
    private let mask = Tensor()
    /// Same structure as the input, values masked and scaled.
    public let output: CSRMatrix

    public init(rate: Float, seed: UInt64, structure: CSRMatrix) {
        precondition(rate >= 0 && rate < 1, "dropout rate must be in [0, 1)")
        self.rate = rate
        rng = Xoshiro256(seed: seed)
        output = structure.withSameStructure()
    }

    /// Returns a CSR matrix sharing `x`'s structure with dropped-out values. `x` must have the
    /// structure given at init (the features of a graph do not change between steps).
    public func forward(_ x: CSRMatrix, training: Bool) -> CSRMatrix {
        precondition(x.nonZeroCount == output.nonZeroCount && x.rows == output.rows, "structure changed")
        let n = x.nonZeroCount
        let m = mask.resize(rows: 1, cols: n)
        if !training || rate == 0 {
            m.base.update(repeating: 1, count: n)
        } else {
            Dropout.fillMask(m.base, n, rate: rate, rng: &rng)
        }
        x.values.withUnsafeBufferPointer { src in
            output.values.withUnsafeMutableBufferPointer { dst in
                Kernels.mul(src.baseAddress!, m.base, dst.baseAddress!, n)
            }
        }
        return output
    }
}
