/// Dropout on the stored values of a sparse (CSR) matrix: zeros stay zeros, so only the
/// non-zeros are drawn (Kipf's `sparse_dropout`). The distribution equals dense dropout's, at
/// the cost of nnz draws instead of rows × cols (49 k instead of 3.9 M on Cora).
public final class SparseDropout {
    public let rate: Float
    private var rng: Xoshiro256
    private let mask = ByteMask()
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
        let m = mask.resize(n)
        x.values.withUnsafeBufferPointer { src in
            output.values.withUnsafeMutableBufferPointer { dst in
                if !training || rate == 0 {
                    dst.baseAddress!.update(from: src.baseAddress!, count: n)
                } else {
                    DropoutKernels.drawAndApply(src.baseAddress!, dst.baseAddress!, m, n, rate: rate, rng: &rng)
                }
            }
        }
        return output
    }
}
