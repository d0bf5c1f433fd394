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
