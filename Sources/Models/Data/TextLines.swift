/// Line-by-line reading of the plain-text dataset formats (ASCII, one space between fields,
/// `\n` endings), with 1-based line numbers for error messages.
///
/// A file that does not end in `\n` was cut short (every writer of these formats ends the last
/// record with one), so it is reported as truncated rather than parsed as a short last line.
struct TextLines {
    let bytes: [UInt8]
    let file: String

    init(_ bytes: [UInt8], file: String) throws {
        if let last = bytes.last, last != UInt8(ascii: "\n") {
            var n = 1
            for b in bytes where b == UInt8(ascii: "\n") { n += 1 }
            throw DatasetError(.truncated, file: file, line: n, "last line has no newline (file cut short?)")
        }
        self.bytes = bytes
        self.file = file
    }

    /// Calls `body(lineNumber, fields)` for each line, fields split on spaces.
    func forEach(_ body: (Int, [Substring]) throws -> Void) throws {
        var start = 0
        var lineNumber = 0
        while start < bytes.count {
            var end = start
            while bytes[end] != UInt8(ascii: "\n") { end += 1 }
            lineNumber += 1
            let text = String(decoding: bytes[start..<end], as: UTF8.self)
            try body(lineNumber, text.split(separator: " ", omittingEmptySubsequences: true))
            start = end + 1
        }
    }

    var lineCount: Int { bytes.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) } }

    func int(_ s: Substring, line: Int, what: String) throws -> Int {
        guard let v = Int(s) else {
            throw DatasetError(.corrupt, file: file, line: line, "\(what): '\(s.prefix(20))' is not an integer")
        }
        return v
    }
}
