import COpenSSL
import Transport

/// A SHA-256 digest (OpenSSL libcrypto), used to compare buffers across peers.
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let bytes: [UInt8]

    /// Wraps 32 digest bytes.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes, got \(bytes.count)")
        self.bytes = bytes
    }

    /// Lower-case hex, 64 characters.
    public var description: String {
        var s = ""
        s.reserveCapacity(64)
        for b in bytes {
            s.append(Self.hexDigits[Int(b >> 4)])
            s.append(Self.hexDigits[Int(b & 0x0F)])
        }
        return s
    }

    /// The first 12 hex characters, for logs.
    public var short: String { String(description.prefix(12)) }

    private static let hexDigits: [Character] = Array("0123456789abcdef")

    /// SHA-256 of a byte buffer.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> Digest {
        CryptoLibrary.ensureInitialized()
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBufferPointer { o in
            EVP_Digest(bytes.baseAddress, bytes.count, o.baseAddress, &length, EVP_sha256(), nil)
        }
        precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed")
        return Digest(bytes: out)
    }

    /// SHA-256 of the in-memory bytes of an array of plain values (host byte order, which is
    /// little-endian on every supported platform), e.g. `[Float]`, `[Double]`, `[Int32]`, `[UInt8]`.
    public static func of<T: BitwiseCopyable>(_ array: [T]) -> Digest {
        array.withUnsafeBytes { of($0) }
    }

    /// SHA-256 of the UTF-8 bytes of a string (no length prefix).
    public static func of(_ string: String) -> Digest {
        var s = string
        return s.withUTF8 { of(UnsafeRawBufferPointer($0)) }
    }
}

/// Streaming SHA-256. Integers are hashed as fixed-width little-endian bytes; strings as a
/// UInt64 little-endian byte count followed by their UTF-8 bytes (so that ("ab","c") and
/// ("a","bc") differ).
public struct DigestBuilder: ~Copyable {
    private let context: OpaquePointer

    public init() {
        CryptoLibrary.ensureInitialized()
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed") }
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else { fatalError("EVP_DigestInit_ex failed") }
        context = ctx
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds raw bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let ok = EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
        precondition(ok == 1, "EVP_DigestUpdate failed")
    }

    /// Adds the little-endian bytes of a fixed-width integer.
    public mutating func update<I: FixedWidthInteger>(_ value: I) {
        var le = value.littleEndian
        withUnsafeBytes(of: &le) { update($0) }
    }

    /// Adds a UInt64 little-endian UTF-8 byte count, then the UTF-8 bytes.
    public mutating func update(_ string: String) {
        var s = string
        s.withUTF8 { utf8 in
            update(UInt64(utf8.count))
            update(UnsafeRawBufferPointer(utf8))
        }
    }

    /// Adds the in-memory bytes of an array of plain values.
    public mutating func update<T: BitwiseCopyable>(_ array: [T]) {
        array.withUnsafeBytes { update($0) }
    }

    /// The digest of everything added.
    public consuming func finish() -> Digest {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
        precondition(ok == 1 && length == 32, "EVP_DigestFinal_ex failed")
        return Digest(bytes: out)
    }
}
