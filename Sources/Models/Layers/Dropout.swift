/// Inverted dropout with its own seeded stream: kept values are scaled by 1/(1-p) in training,
/// so evaluation is the identity.
///
/// The mask is one byte per element (1 = kept) and is drawn and applied in the same pass: a
/// float mask written in one pass and read in another cost as much as the rest of a GCN layer,
/// because 2708 × 64 floats no longer fit in L2.
public final class Dropout {
    public let rate: Float
    private var rng: Xoshiro256
    public let output = Tensor()
    public let inputGradient = Tensor()
    private let mask = ByteMask()

    public init(rate: Float, seed: UInt64) {
        precondition(rate >= 0 && rate < 1, "dropout rate must be in [0, 1)")
        self.rate = rate
        rng = Xoshiro256(seed: seed)
    }

    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        let y = output.resize(rows: x.rows, cols: x.cols)
        let m = mask.resize(x.count)
        if !training || rate == 0 {
            m.update(repeating: 1, count: x.count)
            Kernels.copy(x.base, y.base, x.count)
        } else {
            DropoutKernels.drawAndApply(x.base, y.base, m, x.count, rate: rate, rng: &rng)
        }
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        precondition(dy.count == mask.count, "Dropout.backward: bad dy shape")
        let dx = inputGradient.resize(rows: dy.rows, cols: dy.cols)
        DropoutKernels.apply(dy.base, dx.base, mask.base, dy.count, scale: training ? 1 / (1 - rate) : 1)
        return dx
    }

    private var training: Bool { mask.drawn }
}

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

/// A reusable byte buffer for dropout masks (grows only).
final class ByteMask {
    private(set) var base = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
    private var capacity = 16
    private(set) var count = 0
    /// Whether the last fill was a random draw (training) rather than all-ones: recorded in
    /// the byte after the mask by `DropoutKernels.drawAndApply`.
    var drawn: Bool { base[count] == 1 }

    deinit { base.deallocate() }

    /// Resizes to `n` bytes; the byte after the mask records whether it was drawn.
    func resize(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if n + 1 > capacity {
            base.deallocate()
            capacity = max(n + 1, capacity * 3 / 2)
            base = .allocate(capacity: capacity)
        }
        count = n
        base[n] = 0
        return base
    }
}

/// Branch-free mask kernels: a data-dependent branch would mispredict half the time at rate 0.5.
enum DropoutKernels {
    /// Draws keep bits (probability 1 − rate, four 16-bit uniforms per 64-bit draw, so the rate
    /// has a resolution of 1/65536) into `mask` and writes y = x · keep / (1 − rate).
    @inline(never)
    static func drawAndApply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ mask: UnsafeMutablePointer<UInt8>,
                             _ n: Int, rate: Float, rng: inout Xoshiro256) {
        let keepBits = (1 / (1 - rate)).bitPattern
        let threshold = UInt64(min((Double(rate) * 65536).rounded(), 65536))
        // The wrapping difference has its top bit set exactly when the draw is below the
        // threshold (dropped); `kept` is then 0, and 0 &- kept selects all or no bits of the scale.
        @inline(__always) func one(_ i: Int, _ r: UInt64) {
            let kept = UInt32(truncatingIfNeeded: (((r & 0xFFFF) &- threshold) >> 63) ^ 1)
            mask[i] = UInt8(truncatingIfNeeded: kept)
            y[i] = x[i] * Float(bitPattern: keepBits & (0 &- kept))
        }
        var i = 0
        while i &+ 4 <= n {
            let r = rng.next()
            one(i, r); one(i &+ 1, r >> 16); one(i &+ 2, r >> 32); one(i &+ 3, r >> 48)
            i &+= 4
        }
        if i < n {
            var r = rng.next()
            while i < n { one(i, r); r >>= 16; i &+= 1 }
        }
        mask[n] = 1
    }

    /// dx = dy · mask · scale.
    @inline(never)
    static func apply(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ mask: UnsafePointer<UInt8>,
                      _ n: Int, scale: Float) {
        let bits = scale.bitPattern
        var i = 0
        while i < n {
            dx[i] = dy[i] * Float(bitPattern: bits & (0 &- UInt32(mask[i])))
            i &+= 1
        }
    }
}
