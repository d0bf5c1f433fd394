import COpenBLAS

/// Element-wise kernels over raw pointers.
///
/// Each kernel is a separate non-inlined function over pointers and a count with `&+` index
/// arithmetic, the shape the project's performance notes found fast. The loops are written as plain
/// scalar pointer loops on purpose: in release builds LLVM vectorizes them (measured on the
/// build machine: an axpy over 64 floats runs as fast as a hand-written `SIMD16<Float>` loop),
/// and in debug builds, where the test suite runs, they stay about 20x faster than explicit
/// SIMD types, whose generic operators are not specialised without optimisation. Reductions,
/// which LLVM may not vectorize without reassociating, go to OpenBLAS (`sdot`), which is
/// vectorized C in every build. Nothing here must match another peer bit for bit (the parity
/// math lives in `SGDNesterov`).
public enum Kernels {
    /// y += alpha * x
    @inline(never)
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n { y[i] += alpha * x[i]; i &+= 1 }
    }

    /// y += x
    @inline(never)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n { y[i] += x[i]; i &+= 1 }
    }

    /// out = a * b (element-wise)
    @inline(never)
    public static func mul(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n { out[i] = a[i] * b[i]; i &+= 1 }
    }

    /// x *= s
    @inline(never)
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        var i = 0
        while i < n { x[i] *= s; i &+= 1 }
    }

    /// out = s * x
    @inline(never)
    public static func scaled(_ x: UnsafePointer<Float>, _ s: Float, into out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n { out[i] = s * x[i]; i &+= 1 }
    }

    /// Sum of a * b (OpenBLAS sdot, chunked so that any count fits its 32-bit length).
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var total: Float = 0
        var i = 0
        while i < n {
            let m = min(n - i, 1 << 30)
            total += cblas_sdot(Int32(m), a + i, 1, b + i, 1)
            i += m
        }
        return total
    }

    /// Sum of x * x.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float { dot(x, x, n) }

    /// out = max(x, 0)
    @inline(never)
    public static func relu(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n { let v = x[i]; out[i] = v > 0 ? v : 0; i &+= 1 }
    }

    /// dx = dy where y > 0, else 0 (y is the ReLU output).
    @inline(never)
    public static func reluBackward(_ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        // Both loads unconditional: a conditional load of dy keeps LLVM from vectorizing.
        while i < n { let g = dy[i], v = y[i]; dx[i] = v > 0 ? g : 0; i &+= 1 }
    }

    /// Adds `bias` (length m.cols) to every row of m.
    @inline(never)
    public static func addRowVector(_ bias: UnsafePointer<Float>, to m: Matrix) {
        for r in 0..<m.rows { add(bias, into: m.row(r), m.cols) }
    }

    /// out += column sums of m (out has m.cols elements): the gradient of a broadcast bias.
    @inline(never)
    public static func accumulateColumnSums(_ m: Matrix, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<m.rows { add(m.row(r), into: out, m.cols) }
    }

    /// Copies n floats.
    @inline(__always)
    public static func copy(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        dst.update(from: src, count: n)
    }
}
