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
