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
