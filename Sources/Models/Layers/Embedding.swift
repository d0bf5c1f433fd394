/// A lookup table: row i of the output is row `index[i]` of the table.
/// Backward scatter-adds the output gradient into the table rows that were read.
public final class Embedding {
    public let store: ParameterStore
    public let table: Param
    public let vocabulary: Int
    public let dimension: Int
    public let output = Tensor()
    private var indices: UnsafeBufferPointer<Int32>?
    private var stride = 1
    private var column = 0

    /// The default initialiser is N(0, 1), PyTorch's `nn.Embedding` default (what the GIN
    /// reference uses; OGB's own AtomEncoder uses Glorot instead).
    public init(_ store: ParameterStore, name: String, vocabulary: Int, dimension: Int,
                initializer: Initializer = .normal(std: 1)) {
        self.store = store
        self.vocabulary = vocabulary
        self.dimension = dimension
        table = store.add("\(name).table", shape: [vocabulary, dimension], initializer: initializer)
    }

    /// Looks up `indices[i * stride + column]` for each output row i (stride/column let a
    /// row-major table of categorical features be read in place). The buffer must stay alive
    /// until `backward`. With `accumulate`, adds into `into` instead of writing `output`.
    @discardableResult
    public func forward(_ indices: UnsafeBufferPointer<Int32>, stride: Int = 1, column: Int = 0,
                        accumulateInto target: Matrix? = nil) -> Matrix {
        let n = indices.count / stride
        self.indices = indices
        self.stride = stride
        self.column = column
        let y = target ?? output.resize(rows: n, cols: dimension)
        precondition(y.rows == n && y.cols == dimension, "Embedding: bad target shape")
        let t = store.value(table)
        for i in 0..<n {
            let v = Int(indices[i &* stride &+ column])
            precondition(v >= 0 && v < vocabulary, "embedding index \(v) out of range 0..<\(vocabulary)")
            if target == nil {
                Kernels.copy(t.row(v), y.row(i), dimension)
            } else {
                Kernels.add(t.row(v), into: y.row(i), dimension)
            }
        }
        return y
    }

    public func backward(_ dy: Matrix) {
        guard let indices else { preconditionFailure("Embedding.backward before forward") }
        let g = store.gradient(table)
        for i in 0..<dy.rows {
            Kernels.add(dy.row(i), into: g.row(Int(indices[i &* stride &+ column])), dimension)
        }
    }
}

/// Sum of one embedding per categorical column (OGB's AtomEncoder: 9 atom features, one table
/// each, summed). Equivalent to a linear layer on the concatenated one-hot codes, without ever
/// building them.
public final class CategoricalEmbeddingSum {
    public let tables: [Embedding]
    public let dimension: Int
    public let output = Tensor()

    /// OGB `smiles2graph` atom vocabulary sizes (field by field in docs/datasets.md).
    public static let atomVocabularies = [119, 5, 12, 12, 10, 6, 6, 2, 2]

    public init(_ store: ParameterStore, name: String, vocabularies: [Int], dimension: Int) {
        self.dimension = dimension
        tables = vocabularies.enumerated().map { i, v in
            Embedding(store, name: "\(name).\(i)", vocabulary: v, dimension: dimension)
        }
    }

    /// `codes` is row-major `rows × tables.count`.
    public func forward(_ codes: UnsafeBufferPointer<Int32>) -> Matrix {
        let k = tables.count
        precondition(codes.count % k == 0, "codes must have \(k) columns")
        let y = output.resizeZeroed(rows: codes.count / k, cols: dimension)
        for (c, t) in tables.enumerated() { t.forward(codes, stride: k, column: c, accumulateInto: y) }
        return y
    }

    public func backward(_ dy: Matrix) {
        for t in tables { t.backward(dy) }
    }
}
