/// A user's own tabular classification set as one CSV file (`--data-format table-csv`,
/// docs/datasets.md), turned into the `TabularDataset` the MoE classifier trains on:
/// `table.csv` with a `label` column (class id `0..<1000`), a `split` column (`train` or
/// `test`) and any number of numeric feature columns.
///
/// Features are scaled to [0, 1] with the training rows' minimum and maximum per column, the
/// range the shipped image sets have, so the reference hyper-parameters stay sensible; test
/// values outside the training range fall outside [0, 1], as they would for any model.
enum TabularTableDataset {
    static func load(directory: String, name: String) throws -> TabularDataset {
        let table = try CSVTable(directory: directory, name: "table.csv", required: ["label", "split"])
        let labelColumn = table.column("label")!, splitColumn = table.column("split")!
        let featureColumns = table.header.indices.filter { $0 != labelColumn && $0 != splitColumn }
        guard !featureColumns.isEmpty else {
            throw DatasetError(.corrupt, file: table.file, line: 1, "bad header: no feature column besides 'label' and 'split'")
        }
        let f = featureColumns.count
        var features: [Float] = [], labels: [Int32] = [], train: [Int] = [], test: [Int] = []
        features.reserveCapacity(table.rows.count * f)
        for row in table.rows {
            switch row.fields[splitColumn] {
            case "train": train.append(labels.count)
            case "test": test.append(labels.count)
            case let other:
                throw table.error(row.line, splitColumn, "unknown split '\(other.prefix(20))' (train or test)")
            }
            labels.append(try table.classId(row, labelColumn, limit: NodeTableDataset.maximumClasses))
            for c in featureColumns { features.append(try table.number(row, c)) }
        }
        guard !train.isEmpty else { throw DatasetError(.corrupt, file: table.file, "missing split: no row in 'train'") }
        guard !test.isEmpty else { throw DatasetError(.corrupt, file: table.file, "missing split: no row in 'test'") }
        let classCount = Int(labels.max()!) + 1
        guard classCount >= 2 else { throw DatasetError(.corrupt, file: table.file, "fewer than two classes among the labels") }
        for j in 0..<f {
            var lo = Float.infinity, hi = -Float.infinity
            for i in train { lo = min(lo, features[i * f + j]); hi = max(hi, features[i * f + j]) }
            let scale: Float = hi > lo ? 1 / (hi - lo) : 0
            for i in 0..<labels.count { features[i * f + j] = (features[i * f + j] - lo) * scale }
        }
        return TabularDataset(name: name, featureCount: f, classCount: classCount, features: features, labels: labels,
                              trainIndices: train, testIndices: test)
    }
}
