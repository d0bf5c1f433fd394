/// A molecule pre-digested for collation: neighbour lists in local CSR form.
public struct MoleculeGraph: Sendable {
    public let atomCount: Int
    public let atoms: [Int32]
    public let rowPointers: [Int32]
    public let neighbours: [Int32]
    public let target: Float

    public init(_ m: Molecule) {
        atomCount = m.atomCount
        atoms = m.atoms
        target = m.target
        var lists = [[Int32]](repeating: [], count: m.atomCount)
        for b in stride(from: 0, to: m.bonds.count, by: 2) {
            let u = m.bonds[b], v = m.bonds[b + 1]
            lists[Int(u)].append(v)
            lists[Int(v)].append(u)
        }
        var rp: [Int32] = [0], nb: [Int32] = []
        for l in lists { nb += l; rp.append(Int32(nb.count)) }
        rowPointers = rp
        neighbours = nb
    }
}
