import Foundation

/// The layouts of a user's own dataset in a directory (docs/datasets.md, "Your own data").
///
/// The model says which kind of task a directory must hold, and a marker file says that it holds
/// one (`features.csv`, `graphs.jsonl`, `table.csv`), so the format is usually told from the
/// files; it must be named only where the files cannot tell: whether `graphs.jsonl`'s targets
/// are values to regress or class ids.
public enum DataFormat: String, CaseIterable, Sendable {
    case nodesCSV = "nodes-csv"
    case graphRegression = "graph-regression"
    case graphClassification = "graph-classification"
    case tableCSV = "table-csv"

    /// The model that trains on this format.
    public var model: ModelKind {
        switch self {
        case .nodesCSV: .gcn
        case .graphRegression, .graphClassification: .gin
        case .tableCSV: .moe
        }
    }

    /// The file whose presence identifies the format.
    public var markerFile: String {
        switch self {
        case .nodesCSV: "features.csv"
        case .graphRegression, .graphClassification: "graphs.jsonl"
        case .tableCSV: "table.csv"
        }
    }

    /// The format of `directory` for `model`: `explicit` if given (checked against the model and
    /// the files), else the one whose marker file is there, else nil (the directory holds a
    /// shipped dataset's files instead).
    public static func resolve(_ explicit: DataFormat?, directory: String, model: ModelKind) throws -> DataFormat? {
        if let explicit {
            guard explicit.model == model else {
                throw TaskError(description: "--data-format \(explicit.rawValue) is for --model \(explicit.model.rawValue), not \(model.rawValue)")
            }
            let marker = URL(fileURLWithPath: directory).appendingPathComponent(explicit.markerFile).path
            guard FileManager.default.fileExists(atPath: marker) else {
                throw DatasetError(.missingFile, file: marker, "--data-format \(explicit.rawValue) reads \(explicit.markerFile) from \(directory)")
            }
            return explicit
        }
        let detected = allCases.first { $0.model == model && $0 != .graphClassification
            && FileManager.default.fileExists(atPath: URL(fileURLWithPath: directory).appendingPathComponent($0.markerFile).path) }
        return detected
    }
}
