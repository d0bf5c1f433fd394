/// The single-file form in which Cora and CiteSeer ship (`<name>.planetoid.zst`, written by
/// scripts/pack-planetoid.sh): the four Planetoid text files one after another, each after a
/// line `file <name> <line count>`, below a first line `peernode-planetoid 1`.
///
/// One resource per dataset keeps the bundle flat and lets zstd see all four files at once;
/// the line counts let the reader cut the sections apart without guessing where one ends.
enum PlanetoidPack {
    static let magic = "peernode-planetoid 1"
    static let sectionNames = ["features.txt", "labels.txt", "split.txt", "edges.txt"]

    /// The sections of a packed file, by name, each the exact bytes of the original text file.
    static func sections(_ bytes: [UInt8], file: String) throws -> [String: [UInt8]] {
        let newline = UInt8(ascii: "\n")
        var position = 0, lineNumber = 0
        func nextLine() throws -> String {
            guard position < bytes.count, let end = bytes[position...].firstIndex(of: newline) else {
                throw DatasetError(.truncated, file: file, line: lineNumber + 1, "file ends inside its header lines")
            }
            defer { position = end + 1; lineNumber += 1 }
            return String(decoding: bytes[position..<end].prefix(200), as: UTF8.self)
        }
        guard try nextLine() == magic else {
            throw DatasetError(.corrupt, file: file, line: 1, "first line is not '\(magic)'")
        }
        var result: [String: [UInt8]] = [:]
        for name in sectionNames {
            let header = try nextLine()
            let fields = header.split(separator: " ")
            guard fields.count == 3, fields[0] == "file", fields[1] == name, let count = Int(fields[2]), count >= 0 else {
                throw DatasetError(.corrupt, file: file, line: lineNumber, "expected 'file \(name) <line count>', found '\(header.prefix(60))'")
            }
            let start = position
            var seen = 0
            while seen < count {
                guard position < bytes.count, let end = bytes[position...].firstIndex(of: newline) else {
                    throw DatasetError(.truncated, file: file, line: lineNumber + 1, "\(name) has \(seen) of its \(count) lines")
                }
                position = end + 1
                seen += 1
                lineNumber += 1
            }
            result[name] = Array(bytes[start..<position])
        }
        guard position == bytes.count else {
            throw DatasetError(.corrupt, file: file, line: lineNumber + 1, "unexpected data after the last section")
        }
        return result
    }
}
