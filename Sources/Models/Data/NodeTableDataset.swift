/// A user's own node-classification graph as CSV files in one directory (`--data-format
/// nodes-csv`, docs/datasets.md), turned into the same `PlanetoidDataset` the GCN trains on:
///
/// - `features.csv`: `id,<feature columns...>`, one row per node; the row order is the node order.
/// - `edges.csv`: `source,target` (node ids; undirected, duplicates and self-loops dropped).
/// - `labels.csv`: `id,label[,split]`; label a class id `0..<1000`, empty for none.
/// - `split.csv`: `id,split` (`train`, `val`, `test`, `none`), unless labels.csv has `split`.
///
/// Ids are strings, so users need not renumber their nodes; the feature and class counts come
/// from the files, and the model is sized from them.
enum NodeTableDataset {
    /// The largest number of classes: the output layer is sized from the largest class id, so a
    /// stray id must not make it huge.
    static let maximumClasses = 1000

    static func load(directory: String, name: String) throws -> PlanetoidDataset {
        let features = try CSVTable(directory: directory, name: "features.csv", required: ["id"])
        let idColumn = features.column("id")!
        let featureColumns = features.header.indices.filter { $0 != idColumn }
        guard !featureColumns.isEmpty else {
            throw DatasetError(.corrupt, file: features.file, line: 1, "bad header: no feature column besides 'id'")
        }
        var index: [Substring: Int32] = [:]
        var rowPointers: [Int32] = [0], columns: [Int32] = [], values: [Float] = []
        for row in features.rows {
            let id = row.fields[idColumn]
            guard !id.isEmpty else { throw features.error(row.line, idColumn, "empty node id") }
            guard index[id] == nil else { throw features.error(row.line, idColumn, "node id '\(id.prefix(40))' appears twice") }
            index[id] = Int32(index.count)
            for (k, c) in featureColumns.enumerated() {
                let v = try features.number(row, c)
                if v != 0 { columns.append(Int32(k)); values.append(v) }
            }
            rowPointers.append(Int32(columns.count))
        }
        let n = index.count
        func node(_ table: CSVTable, _ row: (line: Int, fields: [Substring]), _ column: Int) throws -> Int32 {
            guard let i = index[row.fields[column]] else {
                throw table.error(row.line, column, "unknown node id '\(row.fields[column].prefix(40))' (not in features.csv)")
            }
            return i
        }

        let labelTable = try CSVTable(directory: directory, name: "labels.csv", required: ["id", "label"])
        var labels = [Int32](repeating: -1, count: n)
        var listed = [Bool](repeating: false, count: n)
        var splitOf = [DataSplit?](repeating: nil, count: n)
        let splitTable: CSVTable
        if labelTable.column("split") != nil {
            splitTable = labelTable
        } else {
            do {
                splitTable = try CSVTable(directory: directory, name: "split.csv", required: ["id", "split"])
            } catch let e as DatasetError where e.kind == .missingFile {
                throw DatasetError(.missingFile, file: e.file, "missing split: no split.csv, and labels.csv has no 'split' column")
            }
        }
        let labelId = labelTable.column("id")!, labelColumn = labelTable.column("label")!
        for row in labelTable.rows {
            let i = Int(try node(labelTable, row, labelId))
            guard !listed[i] else { throw labelTable.error(row.line, labelId, "node id '\(row.fields[labelId].prefix(40))' appears twice") }
            listed[i] = true
            if !row.fields[labelColumn].isEmpty {
                labels[i] = try labelTable.classId(row, labelColumn, limit: maximumClasses)
            }
        }
        let splitId = splitTable.column("id")!, splitColumn = splitTable.column("split")!
        var seen = [Bool](repeating: false, count: n)
        for row in splitTable.rows {
            let i = Int(try node(splitTable, row, splitId))
            guard !seen[i] else { throw splitTable.error(row.line, splitId, "node id '\(row.fields[splitId].prefix(40))' appears twice") }
            seen[i] = true
            let word = row.fields[splitColumn]
            if word.isEmpty || word == "none" { continue }
            guard let s = DataSplit(rawValue: String(word)) else {
                throw splitTable.error(row.line, splitColumn, "unknown split '\(word.prefix(20))' (train, val, test or none)")
            }
            guard labels[i] >= 0 else { throw splitTable.error(row.line, splitColumn, "node in the \(s.rawValue) split has no label") }
            splitOf[i] = s
        }
        var splits: [DataSplit: [Int32]] = [.train: [], .validation: [], .test: []]
        for i in 0..<n { if let s = splitOf[i] { splits[s]!.append(Int32(i)) } }
        guard !splits[.train]!.isEmpty else { throw DatasetError(.corrupt, file: splitTable.file, "missing split: no node in 'train'") }
        guard !splits[.validation]!.isEmpty || !splits[.test]!.isEmpty else {
            throw DatasetError(.corrupt, file: splitTable.file, "missing split: no node in 'val' or 'test' to evaluate on")
        }
        let classCount = Int(labels.max()!) + 1
        guard classCount >= 2 else { throw DatasetError(.corrupt, file: labelTable.file, "fewer than two classes among the labels") }

        let edgeTable = try CSVTable(directory: directory, name: "edges.csv", required: ["source", "target"])
        let s = edgeTable.column("source")!, t = edgeTable.column("target")!
        var pairs = Set<UInt64>()
        var src: [Int32] = [], dst: [Int32] = []
        for row in edgeTable.rows {
            let u = try node(edgeTable, row, s), v = try node(edgeTable, row, t)
            if u == v { continue }
            let (a, b) = (min(u, v), max(u, v))
            if pairs.insert(UInt64(a) << 32 | UInt64(b)).inserted {
                src.append(a); dst.append(b)
            }
        }
        let x = CSRMatrix(rows: n, cols: featureColumns.count, rowPointers: rowPointers, columnIndices: columns, values: values)
        return PlanetoidDataset(name: name, nodeCount: n, featureCount: featureColumns.count, classCount: classCount,
                                features: x, labels: labels, splits: splits, edgeSources: src, edgeTargets: dst)
    }
}
