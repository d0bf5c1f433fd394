/// A dense classification set (digits, mnist5k): features scaled to [0, 1], integer labels,
/// fixed train/test split (docs/datasets.md).
public struct TabularDataset: Sendable {
    public let name: String
    public let featureCount: Int
    public let classCount: Int
    /// Row-major `count × featureCount`.
    public let features: [Float]
    public let labels: [Int32]
    public let trainIndices: [Int]
    public let testIndices: [Int]

    public var count: Int { labels.count }

    public static func load(_ name: String, directory: String? = nil) throws -> TabularDataset {
        let (bytes, file) = try DataLocator.datasetBytes(name, directory: directory)
        switch name {
        case "digits": return try parseDigits(bytes, file: file)
        case "mnist5k": return try parseMNIST(bytes, file: file)
        default: throw DatasetError(.unknownDataset, file: name, "not a tabular dataset (digits, mnist5k)")
        }
    }

    /// `<split> <label> <f0> ... <f63>` per line, features 0...16.
    public static func parseDigits(_ bytes: [UInt8], file: String) throws -> TabularDataset {
        let text = try TextLines(bytes, file: file)
        var features: [Float] = [], labels: [Int32] = [], train: [Int] = [], test: [Int] = []
        try text.forEach { ln, f in
            guard f.count == 66 else {
                throw DatasetError(.corrupt, file: file, line: ln, "expected 66 fields (split, label, 64 pixels), found \(f.count)")
            }
            switch f[0] {
            case "train": train.append(labels.count)
            case "test": test.append(labels.count)
            default: throw DatasetError(.corrupt, file: file, line: ln, "unknown split '\(f[0].prefix(20))'")
            }
            let y = try text.int(f[1], line: ln, what: "label")
            guard (0..<10).contains(y) else { throw DatasetError(.corrupt, file: file, line: ln, "label \(y) outside 0..<10") }
            labels.append(Int32(y))
            for k in 2..<66 {
                let v = try text.int(f[k], line: ln, what: "pixel")
                guard (0...16).contains(v) else { throw DatasetError(.corrupt, file: file, line: ln, "pixel \(v) outside 0...16") }
                features.append(Float(v) / 16)
            }
        }
        guard !train.isEmpty, !test.isEmpty else { throw DatasetError(.truncated, file: file, "needs train and test rows") }
        return TabularDataset(name: "digits", featureCount: 64, classCount: 10, features: features, labels: labels,
                              trainIndices: train, testIndices: test)
    }

    /// 5000 records of 785 bytes (label, 28×28 pixels); records 0..<4000 train, the rest test.
    public static func parseMNIST(_ bytes: [UInt8], file: String) throws -> TabularDataset {
        let record = 785, n = 5000
        guard bytes.count == record * n else {
            let kind: DatasetError.Kind = bytes.count < record * n ? .truncated : .corrupt
            throw DatasetError(kind, file: file, "\(bytes.count) bytes, expected \(record * n) (5000 records of 785)")
        }
        var features = [Float](repeating: 0, count: n * 784), labels = [Int32](repeating: 0, count: n)
        for i in 0..<n {
            let y = bytes[i * record]
            guard y < 10 else { throw DatasetError(.corrupt, file: file, "record \(i): label byte \(y) outside 0..<10") }
            labels[i] = Int32(y)
            for j in 0..<784 { features[i * 784 + j] = Float(bytes[i * record + 1 + j]) / 255 }
        }
        return TabularDataset(name: "mnist5k", featureCount: 784, classCount: 10, features: features, labels: labels,
                              trainIndices: Array(0..<4000), testIndices: Array(4000..<5000))
    }
}
