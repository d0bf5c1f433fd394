import COpenBLAS

/// Dense matrix products through OpenBLAS `cblas_sgemm` (row-major).
public enum BLAS {
    /// c = alpha * op(a) * op(b) + beta * c, where op transposes when asked.
    ///
    /// Transposes are passed to OpenBLAS rather than materialised: the backward passes need
    /// `Xᵀ·dY` and `dY·Wᵀ` every step, and a copy would cost as much as the product.
    public static func gemm(_ a: Matrix, transposeA: Bool = false,
                            _ b: Matrix, transposeB: Bool = false,
                            into c: Matrix, alpha: Float = 1, beta: Float = 0) {
        let m = transposeA ? a.cols : a.rows
        let k = transposeA ? a.rows : a.cols
        let kb = transposeB ? b.cols : b.rows
        let n = transposeB ? b.rows : b.cols
        precondition(k == kb && c.rows == m && c.cols == n,
                     "gemm shape mismatch: op(a) \(m)x\(k), op(b) \(kb)x\(n), c \(c.rows)x\(c.cols)")
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { c.zero() } else if beta != 1 { Kernels.scale(c.base, beta, c.count) }
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k),
                    alpha, a.base, Int32(max(a.cols, 1)),
                    b.base, Int32(max(b.cols, 1)),
                    beta, c.base, Int32(max(c.cols, 1)))
    }

    /// Sets the number of OpenBLAS threads for this process.
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(max(1, n)))
    }
}
