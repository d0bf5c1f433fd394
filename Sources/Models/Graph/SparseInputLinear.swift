/// Linear layer whose input is a sparse CSR matrix (bag-of-words node features): y = X·W, no
/// bias (GCN adds it after aggregation). Backward computes only dW = Xᵀ·dY: the input is data.
public final class SparseInputLinear {
    public let store: ParameterStore
    public let weight: Param
    public let inFeatures: Int
    public let outFeatures: Int
    public let output = Tensor()
    private var input: CSRMatrix?

    public init(_ store: ParameterStore, name: String, inFeatures: Int, outFeatures: Int) {
        self.store = store
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = store.add("\(name).weight", shape: [inFeatures, outFeatures],
                           initializer: .glorotUniform(fanIn: inFeatures, fanOut: outFeatures))
    }

    public func forward(_ x: CSRMatrix) -> Matrix {
        precondition(x.cols == inFeatures, "SparseInputLinear expects \(inFeatures) features")
        input = x
        let y = output.resize(rows: x.rows, cols: outFeatures)
        SparseKernels.multiply(x, store.value(weight), into: y)
        return y
    }

    public func backward(_ dy: Matrix) {
        guard let x = input else { preconditionFailure("SparseInputLinear.backward before forward") }
        SparseKernels.multiplyTransposed(x, dy, accumulateInto: store.gradient(weight))
    }
}
