import Foundation

/// A citation graph in the Planetoid text layout (Cora, CiteSeer; docs/datasets.md):
/// `features.txt` (one line of ascending non-zero column indices per node, binary bag of
/// words), `labels.txt` (class id or −1), `split.txt` (train/val/test/none), `edges.txt`
/// (`u v`, undirected, u < v).
///
/// Cora and CiteSeer ship inside the module as one packed file each (`PlanetoidPack`); the same
/// four files in a directory the user names are read the same way, so a user's own citation
/// graph in this layout needs no conversion.
public struct PlanetoidDataset {
    public let name: String
    public let nodeCount: Int
    public let featureCount: Int
    public let classCount: Int
    /// Node features: binary (values 1) for Cora and CiteSeer, any finite values for a user's
    /// own graph (`NodeTableDataset`).
    public let features: CSRMatrix
    public let labels: [Int32]
    /// Node ids per split, ascending.
    public let splits: [DataSplit: [Int32]]
    /// Undirected edges, each once.
    public let edgeSources: [Int32]
    public let edgeTargets: [Int32]

    /// The datasets shipped in this layout.
    public static let shippedNames = ["cora", "citeseer"]

    /// Dataset `name`: from `directory` when given (see `directory(for:in:)`), else shipped.
    public static func load(_ name: String, directory: String? = nil) throws -> PlanetoidDataset {
        if let directory {
            return try load(directory: Self.directory(for: name, in: directory), name: name)
        }
        let files = try shippedFiles(name)
        let packed = "\(name).planetoid.zst"
        func lines(_ f: String) throws -> TextLines { try TextLines(files[f]!, file: "\(packed)[\(f)]") }
        return try parse(name: name, features: lines("features.txt"), labels: lines("labels.txt"),
                         split: lines("split.txt"), edges: lines("edges.txt"))
    }

    /// The four text files of a shipped dataset, byte for byte as they were packed.
    public static func shippedFiles(_ name: String) throws -> [String: [UInt8]] {
        guard shippedNames.contains(name) else {
            throw DatasetError(.unknownDataset, file: name, "not a citation graph (\(shippedNames.joined(separator: ", ")))")
        }
        let file = "\(name).planetoid"
        return try PlanetoidPack.sections(DataLocator.shippedBytes(file), file: file + ".zst")
    }

    /// Reads `features.txt`, `labels.txt`, `split.txt` and `edges.txt` from `directory`.
    public static func load(directory: String, name: String? = nil) throws -> PlanetoidDataset {
        let dir = URL(fileURLWithPath: directory)
        func lines(_ f: String) throws -> TextLines {
            let url = dir.appendingPathComponent(f)
            return try TextLines(DataLocator.readFile(url), file: url.path)
        }
        return try parse(name: name ?? dir.lastPathComponent, features: lines("features.txt"), labels: lines("labels.txt"),
                         split: lines("split.txt"), edges: lines("edges.txt"))
    }

    /// Checks and assembles the four files; every problem names its file and line.
    static func parse(name: String, features featureLines: TextLines, labels labelLines: TextLines,
                      split splitLines: TextLines, edges edgeLines: TextLines) throws -> PlanetoidDataset {
        var labels: [Int32] = []
        try labelLines.forEach { ln, fields in
            guard fields.count == 1 else {
                throw DatasetError(.corrupt, file: labelLines.file, line: ln, "expected one class id, found \(fields.count) fields")
            }
            let v = try labelLines.int(fields[0], line: ln, what: "class id")
            guard v >= -1 && v < 10_000 else { throw DatasetError(.corrupt, file: labelLines.file, line: ln, "class id \(v) out of range") }
            labels.append(Int32(v))
        }
        let n = labels.count
        guard n > 0 else { throw DatasetError(.truncated, file: labelLines.file, "no nodes") }
        let classCount = Int(labels.max()!) + 1
        guard classCount >= 2 else {
            throw DatasetError(.corrupt, file: labelLines.file, "fewer than two classes among the labelled nodes")
        }

        var rowPointers: [Int32] = [0], columns: [Int32] = []
        var maxColumn = -1
        try featureLines.forEach { ln, fields in
            guard ln <= n else {
                throw DatasetError(.corrupt, file: featureLines.file, line: ln, "more feature lines than the \(n) nodes of labels.txt")
            }
            var previous = -1
            for f in fields {
                let c = try featureLines.int(f, line: ln, what: "feature index")
                guard c > previous, c < 1_000_000 else {
                    throw DatasetError(.corrupt, file: featureLines.file, line: ln, "feature indices must be ascending, non-negative and below 1e6 (\(c))")
                }
                previous = c
                columns.append(Int32(c))
            }
            maxColumn = max(maxColumn, previous)
            rowPointers.append(Int32(columns.count))
        }
        guard rowPointers.count - 1 == n else {
            throw DatasetError(.truncated, file: featureLines.file, line: rowPointers.count,
                               "\(rowPointers.count - 1) feature lines for \(n) nodes")
        }
        let featureCount = maxColumn + 1
        let features = CSRMatrix(rows: n, cols: max(featureCount, 1), rowPointers: rowPointers, columnIndices: columns,
                                 values: [Float](repeating: 1, count: columns.count))

        var splits: [DataSplit: [Int32]] = [.train: [], .validation: [], .test: []]
        var splitCount = 0
        try splitLines.forEach { ln, fields in
            guard ln <= n else { throw DatasetError(.corrupt, file: splitLines.file, line: ln, "more lines than the \(n) nodes") }
            guard fields.count == 1 else { throw DatasetError(.corrupt, file: splitLines.file, line: ln, "expected one word") }
            splitCount = ln
            if fields[0] == "none" { return }
            guard let s = DataSplit(rawValue: String(fields[0])) else {
                throw DatasetError(.corrupt, file: splitLines.file, line: ln, "unknown split '\(fields[0].prefix(20))'")
            }
            guard labels[ln - 1] >= 0 else {
                throw DatasetError(.corrupt, file: splitLines.file, line: ln, "node in \(s.rawValue) split has no label")
            }
            splits[s, default: []].append(Int32(ln - 1))
        }
        guard splitCount == n else {
            throw DatasetError(.truncated, file: splitLines.file, line: splitCount + 1, "\(splitCount) lines for \(n) nodes")
        }

        var src: [Int32] = [], dst: [Int32] = []
        try edgeLines.forEach { ln, fields in
            guard fields.count == 2 else { throw DatasetError(.corrupt, file: edgeLines.file, line: ln, "expected 'u v'") }
            let u = try edgeLines.int(fields[0], line: ln, what: "node id")
            let v = try edgeLines.int(fields[1], line: ln, what: "node id")
            guard u >= 0, v >= 0, u < n, v < n else {
                throw DatasetError(.corrupt, file: edgeLines.file, line: ln, "node id out of range 0..<\(n)")
            }
            src.append(Int32(u)); dst.append(Int32(v))
        }
        return PlanetoidDataset(name: name, nodeCount: n, featureCount: featureCount,
                                classCount: classCount, features: features, labels: labels, splits: splits,
                                edgeSources: src, edgeTargets: dst)
    }

    /// Where the files of dataset `name` are under a user's `directory`: its sub-folder `name`
    /// when that holds a `labels.txt`, else the directory itself.
    public static func directory(for name: String, in directory: String) -> String {
        let sub = URL(fileURLWithPath: directory).appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: sub.appendingPathComponent("labels.txt").path) {
            return sub.path
        }
        return directory
    }
}
