import COpenSSL
import Foundation

/// The shared secret every member proves on every connection (control and data alike), and
/// the protection of those connections (``security``): TLS 1.3 keyed by this secret unless
/// the operator chose certificates or plaintext.
///
/// It is read from a file or an environment variable, never from a command-line argument,
/// because arguments are visible to every user of the machine through /proc.
public struct ClusterKey: Sendable {
    /// A key shorter than this is refused: it would be guessable.
    public static let minimumLength = 16
    public static let environmentVariable = "PEERNODE_CLUSTER_KEY"

    let bytes: [UInt8]
    /// How every link this key authenticates is protected; TLS with a pre-shared key derived
    /// from the key by default (docs/protocol.md §2 "Link security").
    public private(set) var security: LinkSecurity

    public enum LoadError: Error, CustomStringConvertible {
        case tooShort(source: String, length: Int)
        case unreadable(path: String, reason: String)
        case missing

        public var description: String {
            switch self {
            case .tooShort(let source, let length):
                "cluster key from \(source) is \(length) bytes; at least \(ClusterKey.minimumLength) are required"
            case .unreadable(let path, let reason):
                "cannot read cluster key file \(path): \(reason)"
            case .missing:
                "no cluster key: pass --cluster-key-file PATH or set \(ClusterKey.environmentVariable)"
            }
        }
    }

    public init(bytes: [UInt8], source: String = "memory") throws {
        guard bytes.count >= Self.minimumLength else { throw LoadError.tooShort(source: source, length: bytes.count) }
        self.bytes = bytes
        security = .plaintext
        security = .tls(try TLSContext(clusterKey: self))
    }

    /// The TLS configuration, nil for plaintext.
    public var tlsContext: TLSContext? {
        if case .tls(let context) = security { return context }
        return nil
    }

    /// A fresh node id for a process of this cluster: random, and with certificates beginning
    /// with the certificate's four bytes, which peers check.
    public func newNodeId() -> UInt64 {
        let random = UInt64.random(in: 1...UInt64.max)
        return tlsContext?.nodeId(random: random) ?? random
    }

    /// The same key with links protected as given (plaintext, or TLS with certificates).
    public func with(security: LinkSecurity) -> ClusterKey {
        var copy = self
        copy.security = security
        return copy
    }

    /// Surrounding whitespace (a trailing newline from `echo`) is not part of the key.
    public init(string: String, source: String = "memory") throws {
        try self.init(bytes: Array(string.trimmingCharacters(in: .whitespacesAndNewlines).utf8), source: source)
    }

    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LoadError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            try self.init(bytes: Array(data), source: path)
            return
        }
        try self.init(string: text, source: path)
    }

    /// The file wins over the environment when both are given.
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClusterKey {
        if let file { return try ClusterKey(contentsOf: file) }
        if let value = environment[environmentVariable] {
            return try ClusterKey(string: value, source: "$\(environmentVariable)")
        }
        throw LoadError.missing
    }

    /// HMAC-SHA-256 of the concatenated parts under this key.
    func mac(_ parts: [UInt8]...) -> [UInt8] {
        CryptoLibrary.ensureInitialized()
        var message: [UInt8] = []
        for p in parts { message += p }
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 32
        let ok = bytes.withUnsafeBufferPointer { key in
            message.withUnsafeBufferPointer { msg in
                out.withUnsafeMutableBufferPointer { o in
                    HMAC(EVP_sha256(), key.baseAddress, Int32(key.count), msg.baseAddress, msg.count,
                         o.baseAddress, &outLength)
                }
            }
        }
        precondition(ok != nil && outLength == 32, "HMAC-SHA-256 failed in libcrypto")
        return out
    }
}

/// Compares MACs in time independent of where they differ, so timing does not leak the key.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in a.indices { diff |= a[i] ^ b[i] }
    return diff == 0
}

/// Cryptographically secure random bytes (getrandom on Linux).
func randomBytes(_ n: Int) -> [UInt8] {
    var g = SystemRandomNumberGenerator()
    return (0..<n).map { _ in UInt8.random(in: .min ... .max, using: &g) }
}
