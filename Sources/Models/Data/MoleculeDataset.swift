import Foundation

/// MoleculeNet regression sets (ESOL, FreeSolv, Lipophilicity) in the JSON-lines layout of
/// docs/datasets.md, shipped zstd-compressed inside this module.
public struct MoleculeDataset: Sendable {
    public let name: String
    public let molecules: [Molecule]

    public static func load(_ name: String, directory: String? = nil) throws -> MoleculeDataset {
        let (bytes, file) = try DataLocator.datasetBytes(name, directory: directory)
        return try parse(bytes, name: name, file: file)
    }

    /// Parses JSON lines; every structural problem is a `DatasetError` with the line number.
    /// With `classLimit`, every `y` must be a class id in `0..<classLimit` (graph classification).
    public static func parse(_ bytes: [UInt8], name: String, file: String, classLimit: Int? = nil) throws -> MoleculeDataset {
        let text = try TextLines(bytes, file: file)
        var molecules: [Molecule] = []
        let vocab = CategoricalEmbeddingSum.atomVocabularies
        var start = 0, line = 0
        while start < bytes.count {
            var end = start
            while bytes[end] != UInt8(ascii: "\n") { end += 1 }
            line += 1
            defer { start = end + 1 }
            if end == start { continue }
            func corrupt(_ m: String) -> DatasetError { DatasetError(.corrupt, file: text.file, line: line, m) }
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: Data(bytes[start..<end]))
            } catch {
                throw corrupt("invalid JSON")
            }
            guard let record = object as? [String: Any] else { throw corrupt("expected a JSON object") }
            guard let y = (record["y"] as? NSNumber)?.floatValue, y.isFinite else { throw corrupt("missing or non-numeric 'y'") }
            if let classLimit {
                guard y == y.rounded() else { throw corrupt("field 'y': \(y) is not a class id (an integer)") }
                guard y >= 0, y < Float(classLimit) else { throw corrupt("field 'y': label \(Int(y)) out of range 0..<\(classLimit)") }
            }
            guard let n = (record["num_atoms"] as? NSNumber)?.intValue, n > 0, n < 100_000 else {
                throw corrupt("missing or bad 'num_atoms'")
            }
            guard let atomRows = record["atoms"] as? [[NSNumber]], atomRows.count == n else {
                throw corrupt("'atoms' must be \(n) rows")
            }
            var atoms: [Int32] = []
            atoms.reserveCapacity(n * 9)
            for row in atomRows {
                guard row.count == vocab.count else { throw corrupt("atom rows must have \(vocab.count) codes") }
                for (c, v) in row.enumerated() {
                    let code = v.intValue
                    guard code >= 0 && code < vocab[c] else { throw corrupt("atom feature \(c) = \(code) outside 0..<\(vocab[c])") }
                    atoms.append(Int32(code))
                }
            }
            guard let bondRows = record["bonds"] as? [[NSNumber]] else { throw corrupt("missing 'bonds'") }
            var bonds: [Int32] = []
            for b in bondRows {
                guard b.count == 2 else { throw corrupt("bonds must be pairs") }
                let u = b[0].intValue, v = b[1].intValue
                guard u >= 0, v >= 0, u < n, v < n else { throw corrupt("bond (\(u), \(v)) outside 0..<\(n)") }
                bonds.append(Int32(u)); bonds.append(Int32(v))
            }
            func split(_ key: String) -> DataSplit? { (record[key] as? String).flatMap(DataSplit.init(rawValue:)) }
            guard split("split") != nil else { throw corrupt("missing or unknown 'split'") }
            molecules.append(Molecule(target: y, atomCount: n, atoms: atoms, bonds: bonds,
                                      split: split("split"), scaffoldSplit: split("scaffold_split")))
        }
        guard !molecules.isEmpty else { throw DatasetError(.truncated, file: file, "no molecules") }
        return MoleculeDataset(name: name, molecules: molecules)
    }

    /// Indices of the molecules in a split (`scaffold` selects the scaffold split).
    public func indices(_ split: DataSplit, scaffold: Bool = false) -> [Int] {
        molecules.indices.filter { (scaffold ? molecules[$0].scaffoldSplit : molecules[$0].split) == split }
    }
}
