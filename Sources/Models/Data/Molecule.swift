/// One molecule as a graph: heavy atoms with 9 categorical features (OGB vocabulary), bonds.
public struct Molecule: Sendable {
    public let target: Float
    public let atomCount: Int
    /// Row-major `atomCount × 9` categorical codes.
    public let atoms: [Int32]
    /// Bonds as pairs (u, v), each chemical bond once.
    public let bonds: [Int32]
    public let split: DataSplit?
    public let scaffoldSplit: DataSplit?
}
