/// Several molecules collated into one disjoint graph: atom codes stacked, bonds offset, a
/// graph index per atom for pooling, and the symmetric neighbour-sum operator in CSR form.
///
/// The arrays are reused from batch to batch (`removeAll(keepingCapacity:)`, CSR rebuilt in
/// place), so collating allocates nothing once the largest batch has been seen.
public final class MoleculeBatch {
    public private(set) var atoms: [Int32] = []
    public private(set) var graphOfNode: [Int32] = []
    public private(set) var targets: [Float] = []
    public private(set) var graphCount = 0
    public var nodeCount: Int { graphOfNode.count }
    /// Neighbour sum, weight 1 per bond direction, no self loops (GIN adds (1+ε)·h itself).
    public let adjacencyMatrix = CSRMatrix(rows: 0, cols: 0, rowPointers: [0], columnIndices: [], values: [])
    public var adjacency: Adjacency { Adjacency(forward: adjacencyMatrix, symmetric: true) }

    public init() {}

    /// Collates `indices` of `graphs`, targets mapped through (y − mean) / std.
    public func build<S: Sequence>(_ indices: S, from graphs: [MoleculeGraph], mean: Float, std: Float) where S.Element == Int {
        atoms.removeAll(keepingCapacity: true)
        graphOfNode.removeAll(keepingCapacity: true)
        targets.removeAll(keepingCapacity: true)
        graphCount = 0
        var total = 0
        for i in indices { total += graphs[i].atomCount }
        adjacencyMatrix.clear(rows: total, cols: total)
        var offset: Int32 = 0
        for i in indices {
            let g = graphs[i]
            atoms.append(contentsOf: g.atoms)
            for a in 0..<g.atomCount {
                graphOfNode.append(Int32(graphCount))
                for k in Int(g.rowPointers[a])..<Int(g.rowPointers[a + 1]) {
                    adjacencyMatrix.columnIndices.append(g.neighbours[k] + offset)
                    adjacencyMatrix.values.append(1)
                }
                adjacencyMatrix.rowPointers.append(Int32(adjacencyMatrix.columnIndices.count))
            }
            targets.append((g.target - mean) / std)
            offset += Int32(g.atomCount)
            graphCount += 1
        }
    }
}
