import CZstd
import Foundation

/// One-shot zstd decompression of the shipped dataset files.
public enum Zstd {
    /// Largest decompressed size accepted: the biggest shipped file is under 5 MiB, and a
    /// corrupt header must not make us allocate gigabytes.
    public static let maximumDecompressedSize = 256 << 20

    /// Decompresses a single zstd frame whose header records the content size (the `zstd` CLI
    /// always writes it). `name` is used in errors.
    public static func decompress(_ compressed: [UInt8], name: String) throws -> [UInt8] {
        let size = compressed.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        if size == ZSTD_CONTENTSIZE_ERROR {
            throw DatasetError(.corrupt, file: name, "not a zstd frame")
        }
        if size == ZSTD_CONTENTSIZE_UNKNOWN {
            throw DatasetError(.corrupt, file: name, "zstd frame without a content size")
        }
        guard size <= UInt64(maximumDecompressedSize) else {
            throw DatasetError(.corrupt, file: name, "declares \(size) bytes, above the \(maximumDecompressedSize) limit")
        }
        var out = [UInt8](repeating: 0, count: Int(size))
        let written = out.withUnsafeMutableBytes { dst in
            compressed.withUnsafeBytes { src in
                ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count)
            }
        }
        if ZSTD_isError(written) != 0 {
            let reason = String(cString: ZSTD_getErrorName(written))
            let kind: DatasetError.Kind = reason.contains("Src size") ? .truncated : .corrupt
            throw DatasetError(kind, file: name, "zstd: \(reason)")
        }
        guard written == Int(size) else {
            throw DatasetError(.truncated, file: name, "decompressed \(written) of \(size) bytes")
        }
        return out
    }

    /// Compresses (used by tests to build fixtures; the shipped files come from the zstd CLI).
    public static func compress(_ data: [UInt8], level: Int32 = 3) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(data.count))
        let n = out.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in ZSTD_compress(dst.baseAddress, dst.count, src.baseAddress, src.count, level) }
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed")
        out.removeLast(out.count - n)
        return out
    }
}
