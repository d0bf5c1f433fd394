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
