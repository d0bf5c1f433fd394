import Foundation

/// A comma-separated file with a header row, as users write them: no quoting (a field holds no
/// comma), `\n` or `\r\n` line ends, blank lines ignored, surrounding spaces trimmed.
///
/// Users' own files are the least trusted input the daemon reads, so every error names the
/// file, the 1-based line and the column, and the file is bounded before it is read whole.
struct CSVTable {
    /// Files larger than this are refused unread (a wrong path, not a dataset for this daemon).
    static let maximumBytes = 1 << 30

    let file: String
    let header: [String]
    /// Data rows (header excluded), each with exactly `header.count` fields, and its line number.
    let rows: [(line: Int, fields: [Substring])]

    /// Reads `directory/name`; `required` columns must be in the header (in any order).
    init(directory: String, name: String, required: [String]) throws {
        let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
        let path = url.path
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > Self.maximumBytes {
            throw DatasetError(.corrupt, file: path, "\(size) bytes, above the \(Self.maximumBytes)-byte limit")
        }
        let bytes = try DataLocator.readFile(url)
        guard let text = String(bytes: bytes, encoding: .utf8) else {
            throw DatasetError(.corrupt, file: path, "not UTF-8 text")
        }
        var header: [String]?
        var rows: [(line: Int, fields: [Substring])] = []
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so it is a separator of its own.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces)[...] }
            if let header {
                guard fields.count == header.count else {
                    throw DatasetError(.corrupt, file: path, line: lineNumber,
                                       "ragged row: \(fields.count) fields, the header has \(header.count) (\(header.joined(separator: ",").prefix(80)))")
                }
                rows.append((lineNumber, fields.map { Substring($0) }))
            } else {
                let names = fields.map(String.init)
                for (i, n) in names.enumerated() {
                    guard !n.isEmpty, n.allSatisfy({ !$0.isNumber }) || n.contains(where: { $0.isLetter || $0 == "_" }) else {
                        throw DatasetError(.corrupt, file: path, line: lineNumber,
                                           "bad header: column \(i + 1) is '\(n.prefix(20))'; the first line must name the columns")
                    }
                    guard !names[..<i].contains(n) else {
                        throw DatasetError(.corrupt, file: path, line: lineNumber, "bad header: column '\(n.prefix(20))' appears twice")
                    }
                }
                for r in required where !names.contains(r) {
                    throw DatasetError(.corrupt, file: path, line: lineNumber,
                                       "bad header: no column '\(r)' (found \(names.joined(separator: ",").prefix(80)))")
                }
                header = names
            }
        }
        guard let header else { throw DatasetError(.truncated, file: path, "empty file (no header)") }
        guard !rows.isEmpty else { throw DatasetError(.truncated, file: path, line: lineNumber, "no rows after the header") }
        self.file = path
        self.header = header
        self.rows = rows
    }

    func column(_ name: String) -> Int? { header.firstIndex(of: name) }

    func error(_ line: Int, _ column: Int, _ message: String) -> DatasetError {
        DatasetError(.corrupt, file: file, line: line, "field '\(header[column])': \(message)")
    }

    /// A finite number.
    func number(_ row: (line: Int, fields: [Substring]), _ column: Int) throws -> Float {
        let s = row.fields[column]
        guard let v = Float(s), v.isFinite else { throw error(row.line, column, "'\(s.prefix(20))' is not a finite number") }
        return v
    }

    /// A class id in `0..<limit`.
    func classId(_ row: (line: Int, fields: [Substring]), _ column: Int, limit: Int) throws -> Int32 {
        let s = row.fields[column]
        guard let v = Int(s) else { throw error(row.line, column, "'\(s.prefix(20))' is not a class id (an integer)") }
        guard (0..<limit).contains(v) else { throw error(row.line, column, "label \(v) out of range 0..<\(limit)") }
        return Int32(v)
    }
}
