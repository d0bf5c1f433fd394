/// How edge weights are normalised when an adjacency operator is built.
public enum EdgeNormalization: Sendable {
    /// Weight 1 per edge: the plain neighbour sum of GIN.
    case none
    /// w_uv = 1/√(deg(u)·deg(v)), degrees counted with the self loops: GCN's D^-½ (A+I) D^-½.
    case symmetric
}

/// A graph's message-passing operator, kept both as CSR by destination (forward: each node
/// gathers from its in-neighbours) and as its transpose (backward: each node gathers the
/// gradients of the nodes it sent to). Gather-only on both sides means no write conflicts and
/// vectorized rows, instead of an edge-wise scatter.
public struct Adjacency {
    public var nodeCount: Int { forwardOperator.rows }
    public let forwardOperator: CSRMatrix
    public let backwardOperator: CSRMatrix

    /// `sources[k] → targets[k]` are directed edges; pass each undirected edge both ways.
    public init(nodeCount: Int, sources: [Int32], targets: [Int32], selfLoops: Bool,
                normalization: EdgeNormalization) {
        precondition(sources.count == targets.count, "one target per source expected")
        var src = sources, dst = targets
        if selfLoops {
            src.reserveCapacity(src.count + nodeCount)
            dst.reserveCapacity(dst.count + nodeCount)
            for i in 0..<nodeCount { src.append(Int32(i)); dst.append(Int32(i)) }
        }
        var weights = [Float](repeating: 1, count: src.count)
        if case .symmetric = normalization {
            var degree = [Float](repeating: 0, count: nodeCount)
            for v in dst { degree[Int(v)] += 1 }
            for k in 0..<src.count {
                let d = degree[Int(src[k])] * degree[Int(dst[k])]
                weights[k] = d > 0 ? 1 / d.squareRoot() : 0
            }
        }
        forwardOperator = CSRMatrix(rows: nodeCount, cols: nodeCount, rowIndices: dst, columnIndices: src, values: weights)
        backwardOperator = CSRMatrix(rows: nodeCount, cols: nodeCount, rowIndices: src, columnIndices: dst, values: weights)
    }

    /// An operator over an already built CSR. For a symmetric matrix (undirected graph with
    /// symmetric weights) pass `symmetric: true`: the transpose is then the matrix itself, and a
    /// batch builder can rewrite it in place every step.
    public init(forward: CSRMatrix, symmetric: Bool) {
        forwardOperator = forward
        backwardOperator = symmetric ? forward : forward.transposed()
    }
}

/// Message passing layer: out[v] = Σ_{u→v} w_uv · h[u]; backward dh[u] = Σ_{u→v} w_uv · dout[v].
public final class GraphAggregation {
    public private(set) var adjacency: Adjacency
    public let output = Tensor()
    public let inputGradient = Tensor()

    public init(_ adjacency: Adjacency) { self.adjacency = adjacency }

    /// Switches to another graph (the next mini-batch of molecules).
    public func setGraph(_ adjacency: Adjacency) { self.adjacency = adjacency }

    public func forward(_ h: Matrix) -> Matrix {
        precondition(h.rows == adjacency.nodeCount, "one row per node expected")
        let y = output.resize(rows: h.rows, cols: h.cols)
        SparseKernels.multiply(adjacency.forwardOperator, h, into: y)
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        let dx = inputGradient.resize(rows: dy.rows, cols: dy.cols)
        SparseKernels.multiply(adjacency.backwardOperator, dy, into: dx)
        return dx
    }
}

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

/// Graph-level readout over a batch of disjoint graphs: sum or mean of each graph's node rows.
public final class GraphPooling {
    public enum Mode: String, Sendable { case sum, mean }
    public let mode: Mode
    public let output = Tensor()
    public let inputGradient = Tensor()
    private var graphOfNode: UnsafeBufferPointer<Int32>?
    private let inverseSizes = Tensor()

    public init(mode: Mode) { self.mode = mode }

    /// `graphOfNode[i]` is the graph (0..<graphCount) of node row i; must stay alive until backward.
    public func forward(_ h: Matrix, graphOfNode: UnsafeBufferPointer<Int32>, graphCount: Int) -> Matrix {
        precondition(graphOfNode.count == h.rows, "one graph index per node expected")
        self.graphOfNode = graphOfNode
        let y = output.resizeZeroed(rows: graphCount, cols: h.cols)
        let inv = inverseSizes.resizeZeroed(rows: 1, cols: graphCount).base
        for g in graphOfNode { inv[Int(g)] += 1 }
        for g in 0..<graphCount { inv[g] = mode == .mean && inv[g] > 0 ? 1 / inv[g] : 1 }
        for i in 0..<h.rows {
            let g = Int(graphOfNode[i])
            SparseKernels.rowAXPY(inv[g], h.row(i), y.row(g), h.cols)
        }
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        guard let graphOfNode else { preconditionFailure("GraphPooling.backward before forward") }
        let dx = inputGradient.resize(rows: graphOfNode.count, cols: dy.cols)
        let inv = inverseSizes.base
        for i in 0..<graphOfNode.count {
            let g = Int(graphOfNode[i])
            let src = dy.row(g), dst = dx.row(i)
            let s = inv[g]
            for j in 0..<dy.cols { dst[j] = s * src[j] }
        }
        return dx
    }
}
