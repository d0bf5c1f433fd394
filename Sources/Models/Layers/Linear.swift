/// Fully connected layer, y = x·W + b, with W stored `in × out` (row-major, as x is).
///
/// Both products of the backward pass go to sgemm with a transpose flag, so no transposed copy
/// of x or W is ever made.
public final class Linear {
    public let store: ParameterStore
    public let weight: Param
    public let bias: Param?
    public let inFeatures: Int
    public let outFeatures: Int
    private var input: Matrix?
    public let output = Tensor()
    public let inputGradient = Tensor()

    /// How weights and bias start out.
    public enum Initialization: Sendable {
        /// Glorot-uniform weights, zero bias (the GCN and MoE references).
        case glorot
        /// Weights and bias U(−1/√in, 1/√in): PyTorch's `nn.Linear` default, which the GIN
        /// reference uses. Its outputs start about 2x smaller than Glorot's for square layers,
        /// which matters before an unnormalised sum readout.
        case torchDefault
    }

    public init(_ store: ParameterStore, name: String, inFeatures: Int, outFeatures: Int, bias: Bool = true,
                initialization: Initialization = .glorot) {
        self.store = store
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        switch initialization {
        case .glorot:
            weight = store.add("\(name).weight", shape: [inFeatures, outFeatures],
                               initializer: .glorotUniform(fanIn: inFeatures, fanOut: outFeatures))
            self.bias = bias ? store.add("\(name).bias", shape: [outFeatures], initializer: .zeros) : nil
        case .torchDefault:
            weight = store.add("\(name).weight", shape: [inFeatures, outFeatures], initializer: .uniform(bound: bound))
            self.bias = bias ? store.add("\(name).bias", shape: [outFeatures], initializer: .uniform(bound: bound)) : nil
        }
    }

    /// Keeps a view of `x`: its memory must stay untouched until `backward`.
    public func forward(_ x: Matrix) -> Matrix {
        precondition(x.cols == inFeatures, "Linear expects \(inFeatures) features, got \(x.cols)")
        input = x
        let y = output.resize(rows: x.rows, cols: outFeatures)
        BLAS.gemm(x, store.value(weight), into: y)
        if let bias { Kernels.addRowVector(store.value(bias).base, to: y) }
        return y
    }

    /// Accumulates dW += xᵀ·dy and db += Σ dy; returns dx = dy·Wᵀ when asked (else an empty view).
    @discardableResult
    public func backward(_ dy: Matrix, computeInputGradient: Bool = true) -> Matrix {
        guard let x = input else { preconditionFailure("Linear.backward before forward") }
        precondition(dy.rows == x.rows && dy.cols == outFeatures, "Linear.backward: bad dy shape")
        BLAS.gemm(x, transposeA: true, dy, into: store.gradient(weight), beta: 1)
        if let bias { Kernels.accumulateColumnSums(dy, into: store.gradient(bias).base) }
        guard computeInputGradient else { return inputGradient.resize(rows: 0, cols: inFeatures) }
        let dx = inputGradient.resize(rows: x.rows, cols: inFeatures)
        BLAS.gemm(dy, store.value(weight), transposeB: true, into: dx)
        return dx
    }
}
