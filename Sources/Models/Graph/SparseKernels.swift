/// Sparse-dense products, row gathers and scatter-adds: the message-passing primitives.
///
/// Each output row is a sum of scaled dense rows, so the inner loop is an axpy over the feature
/// width (a plain pointer loop that LLVM vectorizes, see `Kernels`); rows are processed in
/// order, so results are deterministic (no atomics).
public enum SparseKernels {
    /// c (= or +=) a · b, with a sparse (CSR) and b dense: c[i] = Σ_k a[i,k] · b[k].
    @inline(never)
    public static func multiply(_ a: CSRMatrix, _ b: Matrix, into c: Matrix, accumulate: Bool = false) {
        precondition(a.cols == b.rows && c.rows == a.rows && c.cols == b.cols, "spmm shape mismatch")
        if !accumulate { c.zero() }
        let d = b.cols
        a.rowPointers.withUnsafeBufferPointer { rp in
            a.columnIndices.withUnsafeBufferPointer { ci in
                a.values.withUnsafeBufferPointer { vv in
                    for i in 0..<a.rows {
                        let out = c.row(i)
                        var k = Int(rp[i])
                        let end = Int(rp[i &+ 1])
                        while k < end {
                            rowAXPY(vv[k], b.row(Int(ci[k])), out, d)
                            k &+= 1
                        }
                    }
                }
            }
        }
    }

    /// c += aᵀ · b with a sparse (CSR): the weight gradient of a sparse-input linear layer
    /// (Xᵀ·dY) without building Xᵀ.
    @inline(never)
    public static func multiplyTransposed(_ a: CSRMatrix, _ b: Matrix, accumulateInto c: Matrix) {
        precondition(a.rows == b.rows && c.rows == a.cols && c.cols == b.cols, "spmmᵀ shape mismatch")
        let d = b.cols
        a.rowPointers.withUnsafeBufferPointer { rp in
            a.columnIndices.withUnsafeBufferPointer { ci in
                a.values.withUnsafeBufferPointer { vv in
                    for i in 0..<a.rows {
                        let src = b.row(i)
                        var k = Int(rp[i])
                        let end = Int(rp[i &+ 1])
                        while k < end {
                            rowAXPY(vv[k], src, c.row(Int(ci[k])), d)
                            k &+= 1
                        }
                    }
                }
            }
        }
    }

    /// out[i] = src[indices[i]].
    @inline(never)
    public static func gatherRows(_ src: Matrix, indices: UnsafeBufferPointer<Int32>, into out: Matrix) {
        precondition(out.rows == indices.count && out.cols == src.cols, "gather shape mismatch")
        for i in 0..<indices.count { Kernels.copy(src.row(Int(indices[i])), out.row(i), src.cols) }
    }

    /// out[indices[i]] += scale[i] · src[i] (scale 1 when nil).
    @inline(never)
    public static func scatterAddRows(_ src: Matrix, indices: UnsafeBufferPointer<Int32>,
                                      scales: UnsafePointer<Float>? = nil, into out: Matrix) {
        precondition(src.rows == indices.count && out.cols == src.cols, "scatter shape mismatch")
        for i in 0..<indices.count {
            rowAXPY(scales?[i] ?? 1, src.row(i), out.row(Int(indices[i])), src.cols)
        }
    }

    @inline(__always)
    static func rowAXPY(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var j = 0
        while j < n { y[j] += alpha * x[j]; j &+= 1 }
    }
}
