/// Vectorized element-wise kernels over raw pointers.
///
/// Each kernel is a separate non-inlined function over pointers and a count, loads and stores
/// `SIMD16<Float>` unaligned and finishes with a scalar tail: the shape that measured fastest on
/// the build machines (see ../shared/PERFORMANCE.md). Array subscripts in hot loops cost ~10x.
/// These kernels are local to one peer, so the compiler may contract or reorder nothing here
/// that another peer must reproduce bit for bit (the parity math lives in `SGDNesterov`).
public enum Kernels {
    public typealias V = SIMD16<Float>
    @usableFromInline static let width = 16
    @usableFromInline static let stride = 16 * MemoryLayout<Float>.stride

    @inline(__always) @usableFromInline
    static func load(_ p: UnsafePointer<Float>, _ i: Int) -> V {
        UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
    }

    @inline(__always) @usableFromInline
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: V.self)
    }

    /// y += alpha * x
    @inline(never)
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let a = V(repeating: alpha)
        while i &+ 16 <= n {
            store(load(y, i) + a * load(x, i), y, i)
            i &+= 16
        }
        while i < n { y[i] += alpha * x[i]; i &+= 1 }
    }

    /// y += x
    @inline(never)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i &+ 16 <= n {
            store(load(y, i) + load(x, i), y, i)
            i &+= 16
        }
        while i < n { y[i] += x[i]; i &+= 1 }
    }

    /// out = a * b (element-wise)
    @inline(never)
    public static func mul(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i &+ 16 <= n {
            store(load(a, i) * load(b, i), out, i)
            i &+= 16
        }
        while i < n { out[i] = a[i] * b[i]; i &+= 1 }
    }

    /// x *= s
    @inline(never)
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        var i = 0
        let v = V(repeating: s)
        while i &+ 16 <= n {
            store(load(x, i) * v, x, i)
            i &+= 16
        }
        while i < n { x[i] *= s; i &+= 1 }
    }

    /// Sum of a * b.
    @inline(never)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = V()
        var i = 0
        while i &+ 16 <= n {
            acc += load(a, i) * load(b, i)
            i &+= 16
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i &+= 1 }
        return s
    }

    /// Sum of x * x.
    @inline(never)
    public static func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float { dot(x, x, n) }

    /// out = max(x, 0)
    @inline(never)
    public static func relu(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let zero = V()
        while i &+ 16 <= n {
            var v = load(x, i)
            v.replace(with: zero, where: v .< zero)
            store(v, out, i)
            i &+= 16
        }
        while i < n { out[i] = x[i] > 0 ? x[i] : 0; i &+= 1 }
    }

    /// dx = dy where y > 0, else 0 (y is the ReLU output).
    @inline(never)
    public static func reluBackward(_ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let zero = V()
        while i &+ 16 <= n {
            var g = load(dy, i)
            g.replace(with: zero, where: load(y, i) .<= zero)
            store(g, dx, i)
            i &+= 16
        }
        while i < n { dx[i] = y[i] > 0 ? dy[i] : 0; i &+= 1 }
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
