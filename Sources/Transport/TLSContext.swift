import COpenSSL
import Foundation

/// How the links of a cluster are protected.
///
/// TLS 1.3 by default, keyed by the cluster key alone, so that a cluster with nothing but a key
/// is encrypted and mutually authenticated; certificates for operators who run a CA; plaintext
/// only when asked for, for trusted networks (docs/operations.md "Link security").
public enum LinkSecurity: Sendable, CustomStringConvertible {
    case plaintext
    case tls(TLSContext)

    /// `off`, `psk` or `certificate`: what the `ready` line and the status port report.
    public var description: String {
        switch self {
        case .plaintext: "off"
        case .tls(let context): context.mode.description
        }
    }
}

/// One TLS configuration, both ends of it: an OpenSSL `SSL_CTX` for dialing and one for
/// accepting, built once and shared by every link of the node.
public final class TLSContext: @unchecked Sendable {
    public enum Mode: Sendable, CustomStringConvertible {
        /// A TLS 1.3 external pre-shared key derived from the cluster key (no certificates).
        case clusterKey
        /// Mutual TLS: this node's certificate chain and key, and the CA that signs its peers'.
        case certificates(certificate: String, privateKey: String, authority: String)

        public var description: String {
            switch self {
            case .clusterKey: "psk"
            case .certificates: "certificate"
            }
        }
    }

    public let mode: Mode
    let client: OpaquePointer
    let server: OpaquePointer
    /// The pre-shared key (32 bytes), owned here; the contexts point at it until freed.
    private let psk: UnsafeMutablePointer<UInt8>?
    /// With certificates: the first four bytes of SHA-256 over this node's public key (its
    /// SubjectPublicKeyInfo), which begin its node id, so that the id is bound to the certificate.
    public let identityPrefix: UInt32?

    /// TLS keyed by the cluster key: PSK = HMAC-SHA-256(key, "peernode/1 tls psk").
    convenience init(clusterKey: ClusterKey) throws {
        try self.init(mode: .clusterKey, psk: clusterKey.mac(Array("peernode/1 tls psk".utf8)))
    }

    /// Mutual TLS with certificates (PEM files). Throws ``TLSSetupError`` naming the file and the
    /// reason when one cannot be loaded or the key does not match the certificate.
    public convenience init(certificate: String, privateKey: String, authority: String) throws {
        try self.init(mode: .certificates(certificate: certificate, privateKey: privateKey, authority: authority), psk: nil)
    }

    private init(mode: Mode, psk key: [UInt8]?) throws {
        CryptoLibrary.ensureInitialized()
        self.mode = mode
        if let key {
            let memory = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
            memory.initialize(from: key, count: 32)
            psk = memory
        } else {
            psk = nil
        }
        guard let client = SSL_CTX_new(TLS_client_method()), let server = SSL_CTX_new(TLS_server_method()) else {
            psk?.deallocate()
            throw TLSSetupError("cannot create a TLS context: \(TLSContext.drainErrors())")
        }
        self.client = client
        self.server = server
        var prefix: UInt32?
        do {
            for ctx in [client, server] {
                guard peernode_ctx_setup(ctx, psk) == 1 else { throw TLSSetupError("cannot set up TLS 1.3: \(TLSContext.drainErrors())") }
            }
            if case .certificates(let certificate, let privateKey, let authority) = mode {
                for ctx in [client, server] {
                    guard SSL_CTX_use_certificate_chain_file(ctx, certificate) == 1 else {
                        throw TLSSetupError("--tls-cert \(certificate): cannot load the certificate chain: \(TLSContext.drainErrors())")
                    }
                    guard SSL_CTX_use_PrivateKey_file(ctx, privateKey, SSL_FILETYPE_PEM) == 1 else {
                        let detail = TLSContext.drainErrors()
                        if detail.contains("key values mismatch") {
                            throw TLSSetupError("--tls-key \(privateKey) does not belong to --tls-cert \(certificate)")
                        }
                        throw TLSSetupError("--tls-key \(privateKey): cannot load the private key: \(detail)")
                    }
                    guard SSL_CTX_check_private_key(ctx) == 1 else {
                        throw TLSSetupError("--tls-key \(privateKey) does not belong to --tls-cert \(certificate)")
                    }
                    guard SSL_CTX_load_verify_locations(ctx, authority, nil) == 1 else {
                        throw TLSSetupError("--tls-ca \(authority): cannot load the CA certificates: \(TLSContext.drainErrors())")
                    }
                    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
                }
                var digest = [UInt8](repeating: 0, count: 32)
                guard peernode_own_spki_sha256(client, &digest) == 1 else {
                    throw TLSSetupError("--tls-cert \(certificate): cannot read its public key")
                }
                prefix = digest.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
            }
        } catch {
            SSL_CTX_free(client)
            SSL_CTX_free(server)
            psk?.deallocate()
            throw error
        }
        identityPrefix = prefix
    }

    deinit {
        SSL_CTX_free(client)
        SSL_CTX_free(server)
        psk?.deallocate()
    }

    /// A node id for this context: with certificates, the certificate's four prefix bytes and
    /// four random ones (a restarted node is a new incarnation); otherwise `random`.
    public func nodeId(random: UInt64) -> UInt64 {
        guard let identityPrefix else { return random }
        let low = random & 0xFFFF_FFFF
        return UInt64(identityPrefix) << 32 | (low == 0 ? 1 : low)
    }

    /// OpenSSL's queued error lines for this thread, joined; empties the queue.
    static func drainErrors() -> String {
        var lines: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var text = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &text, text.count)
            lines.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return lines.isEmpty ? "no detail from OpenSSL" : lines.joined(separator: "; ")
    }
}

/// A TLS setting that cannot work (unreadable file, key not matching its certificate): the
/// process refuses to start with this one line.
public struct TLSSetupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
