/// Why a dataset could not be loaded, with the file and (for text formats) the 1-based line.
///
/// Loaders never trap on bad input: a missing, truncated or corrupt file is an ordinary error
/// a user can act on, so every check that depends on file content throws one of these.
public struct DatasetError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case missingFile = "missing file"
        case truncated = "truncated file"
        case corrupt = "corrupt file"
        case unknownDataset = "unknown dataset"
    }

    public let kind: Kind
    public let file: String
    public let line: Int?
    public let message: String

    public init(_ kind: Kind, file: String, line: Int? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        return "\(kind.rawValue) \(place): \(message)"
    }
}
