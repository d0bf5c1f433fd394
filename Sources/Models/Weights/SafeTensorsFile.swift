import Foundation

/// The safetensors container (Hugging Face's format for weights), written and read here without
/// a dependency: an 8-byte little-endian header length N, N bytes of JSON (padded with spaces to a
/// multiple of 8, so the data that follows stays aligned), then the raw little-endian tensor
/// data. The header maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`
/// (offsets into the data section) and may hold `"__metadata__"`, a string-to-string map.
///
/// Other tools read and write weights in this format, so a file from elsewhere is untrusted
/// input: the header length is bounded before anything is allocated, every tensor's byte range
/// must match its dtype and shape, and the ranges must tile the data section exactly (no holes,
/// no overlaps, nothing after the last), as the format's specification requires.
public enum SafeTensorsFile {
    /// The largest header accepted (the reference implementation's limit too): a header is a
    /// few bytes per tensor, and a damaged length must not allocate gigabytes.
    public static let maximumHeaderBytes = 100_000_000

    /// One tensor: its name, dtype as the format spells it (`F32`, `BF16`, ...), shape and
    /// raw little-endian bytes.
    public struct Tensor: Equatable, Sendable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: [UInt8]

        public init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }
    }

    /// Bytes per element of the format's dtypes.
    static let elementSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4,
        "I64": 8, "U64": 8, "F64": 8,
    ]

    /// The whole file: tensors sorted by name and laid out contiguously in that order.
    public static func encode(_ tensors: [Tensor], metadata: [String: String] = [:]) throws -> [UInt8] {
        var header = "{"
        var fields: [String] = []
        if !metadata.isEmpty {
            let entries = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(entries.joined(separator: ","))}")
        }
        let sorted = tensors.sorted { $0.name < $1.name }
        var offset = 0
        for (i, t) in sorted.enumerated() {
            guard t.name != "__metadata__", !t.name.isEmpty else { throw WeightsError("a tensor cannot be named '\(t.name)'") }
            guard i == 0 || sorted[i - 1].name != t.name else { throw WeightsError("tensor '\(t.name)' appears twice") }
            guard let size = elementSizes[t.dtype] else { throw WeightsError("tensor '\(t.name)': unknown dtype \(t.dtype)") }
            guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.reduce(size, *) == t.bytes.count else {
                throw WeightsError("tensor '\(t.name)': \(t.bytes.count) bytes do not fit shape \(t.shape) of \(t.dtype)")
            }
            let shape = t.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(t.name)):{\"dtype\":\"\(t.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
            offset += t.bytes.count
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out += $0 }
        out += headerBytes
        for t in sorted { out += t.bytes }
        return out
    }

    /// Reads and checks a file. `check` sees the header's entries before any tensor data is
    /// read, so a caller that knows what it expects can name the first mismatch; then
    /// `maximumDataBytes` bounds the data section, so a wrong path to a huge file is refused unread.
    public static func read(_ path: String, maximumDataBytes: Int,
                            check: ([Entry]) throws -> Void = { _ in }) throws -> (tensors: [Tensor], metadata: [String: String]) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw WeightsError("\(path): cannot open") }
        defer { try? handle.close() }
        let fileSize: Int
        do {
            fileSize = Int(try handle.seekToEnd())
            try handle.seek(toOffset: 0)
        } catch {
            throw WeightsError("\(path): cannot read (\(error.localizedDescription))")
        }
        func readExactly(_ count: Int, _ what: String) throws -> [UInt8] {
            let data = (try? handle.read(upToCount: count)) ?? nil
            guard let data, data.count == count else { throw WeightsError("\(path): truncated file (ends inside the \(what))") }
            return [UInt8](data)
        }
        let lengthBytes = try readExactly(8, "8-byte header length")
        let headerLength = lengthBytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength >= 2, headerLength <= UInt64(maximumHeaderBytes) else {
            throw WeightsError("\(path): header length \(headerLength) is outside 2...\(maximumHeaderBytes) (not a safetensors file?)")
        }
        guard Int(headerLength) <= fileSize - 8 else {
            throw WeightsError("\(path): truncated file (header of \(headerLength) bytes, file of \(fileSize))")
        }
        let dataLength = fileSize - 8 - Int(headerLength)
        let header = try readExactly(Int(headerLength), "header")
        let (entries, metadata) = try parseHeader(header, path: path)
        // The byte ranges must tile the data section: sorted by start, each begins where the
        // previous ended, and the last ends at the end of the file.
        var end = 0
        for e in entries.sorted(by: { $0.begin < $1.begin }) {
            guard e.begin == end else {
                throw WeightsError("\(path): tensor '\(e.name)' starts at \(e.begin), expected \(end) (holes or overlaps)")
            }
            end = e.end
        }
        guard end == dataLength else {
            throw WeightsError(end < dataLength ? "\(path): \(dataLength - end) bytes after the last tensor"
                                                : "\(path): truncated file (tensor data ends at \(dataLength), header says \(end))")
        }
        try check(entries.sorted { $0.name < $1.name })
        guard dataLength <= maximumDataBytes else {
            throw WeightsError("\(path): \(dataLength) bytes of tensor data, expected at most \(maximumDataBytes)")
        }
        let data = try readExactly(dataLength, "tensor data")
        let tensors = entries.map { Tensor(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: Array(data[$0.begin..<$0.end])) }
        return (tensors.sorted { $0.name < $1.name }, metadata)
    }

    /// A tensor as the header describes it; `begin..<end` is its byte range in the data section.
    public struct Entry: Sendable {
        public var name: String, dtype: String, shape: [Int], begin: Int, end: Int
    }

    /// The header's entries, each checked on its own (dtype known, shape and byte range agree).
    static func parseHeader(_ header: [UInt8], path: String) throws -> ([Entry], [String: String]) {
        guard header.first == UInt8(ascii: "{") else { throw WeightsError("\(path): bad header JSON (does not start with '{')") }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(header))
        } catch {
            throw WeightsError("\(path): bad header JSON (\((error as NSError).userInfo["NSDebugDescription"] ?? "unparsable"))")
        }
        guard let map = object as? [String: Any] else { throw WeightsError("\(path): bad header JSON (not an object)") }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in map {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw WeightsError("\(path): __metadata__ must be an object of strings") }
                for (k, v) in m {
                    guard let s = v as? String else { throw WeightsError("\(path): __metadata__ value of '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            func bad(_ why: String) -> WeightsError { WeightsError("\(path): tensor '\(name.prefix(80))': \(why)") }
            guard let info = value as? [String: Any] else { throw bad("entry is not an object") }
            guard let dtype = info["dtype"] as? String else { throw bad("missing dtype") }
            guard let size = elementSizes[dtype] else { throw bad("unknown dtype \(dtype.prefix(20))") }
            guard let shapeValues = info["shape"] as? [NSNumber] else { throw bad("missing or non-numeric shape") }
            guard let offsets = info["data_offsets"] as? [NSNumber], offsets.count == 2 else { throw bad("data_offsets must be [begin, end]") }
            let shape = shapeValues.map(\.intValue)
            guard zip(shapeValues, shape).allSatisfy({ $0.doubleValue == Double($1) }), shape.allSatisfy({ $0 >= 0 }) else {
                throw bad("shape \(shapeValues) must hold non-negative integers")
            }
            var elements = 1
            for d in shape {
                let (p, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, p <= Int(Int32.max) else { throw bad("shape \(shape) is too large") }
                elements = p
            }
            let begin = offsets[0].intValue, end = offsets[1].intValue
            guard offsets[0].doubleValue == Double(begin), offsets[1].doubleValue == Double(end), begin >= 0, end >= begin else {
                throw bad("data_offsets [\(offsets[0]), \(offsets[1])] are not a byte range")
            }
            guard end - begin == elements * size else {
                throw bad("data_offsets span \(end - begin) bytes, shape \(shape) of \(dtype) needs \(elements * size)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        return (entries, metadata)
    }

    /// A JSON string literal (quotes, backslashes and control characters escaped).
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
