import COpenSSL

/// Why a TLS link failed; every case is one clear line for the log on this side.
public struct TLSError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable {
        /// The pre-shared key did not match: the peer holds another cluster key.
        case badKey
        /// A certificate was refused: expired, not signed by the CA, missing, or not matching
        /// the node id it came with.
        case badCertificate
        /// The peer spoke plaintext peernode frames where TLS was due.
        case plaintextPeer
        /// Both ends speak TLS but authenticate differently (the cluster key's PSK on one end,
        /// certificates on the other).
        case securityMismatch
        /// A record failed its integrity check: the bytes were altered on the way.
        case integrity
        /// The peer closed the link.
        case closed
        /// Anything else the TLS library refused.
        case protocolError
    }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// One TLS 1.3 connection's state machine, on OpenSSL with memory BIOs: bytes from the network
/// go in, bytes for the network come out, and this type does no I/O of its own.
///
/// The same engine serves the blocking data links (``TLSLink``) and the event-loop control
/// links (``TLSChannelHandler``), so that both speak one protocol by one implementation. Not
/// thread-safe: the owner serializes calls.
final class TLSSession {
    enum Role { case client, server }

    let role: Role
    let context: TLSContext
    private let ssl: OpaquePointer
    private let input: OpaquePointer
    private let output: OpaquePointer
    private(set) var established = false
    private var sawFirstBytes = false

    init(context: TLSContext, role: Role) throws {
        self.context = context
        self.role = role
        guard let ssl = SSL_new(role == .client ? context.client : context.server) else {
            throw TLSError(code: .protocolError, message: "cannot create a TLS connection: \(TLSContext.drainErrors())")
        }
        guard let input = peernode_memory_bio(), let output = peernode_memory_bio() else {
            SSL_free(ssl)
            throw TLSError(code: .protocolError, message: "cannot create TLS buffers")
        }
        SSL_set_bio(ssl, input, output)
        if role == .client { SSL_set_connect_state(ssl) } else { SSL_set_accept_state(ssl) }
        self.ssl = ssl
        self.input = input
        self.output = output
    }

    deinit { SSL_free(ssl) }

    /// Bytes waiting to go to the peer (the handshake's flights, sealed records, alerts).
    var pendingOutput: Int { Int(BIO_ctrl_pending(output)) }

    /// Moves the bytes waiting for the peer to the end of `out`.
    func drainOutput(into out: inout [UInt8]) {
        var data: UnsafeMutablePointer<CChar>?
        let count = peernode_bio_contents(output, &data)
        guard count > 0, let data else { return }
        // One memcpy (also in debug builds, where an element-wise fill cost more than the cipher).
        out.append(contentsOf: UnsafeRawBufferPointer(start: data, count: count))
        _ = peernode_bio_empty(output)
    }

    /// Hands bytes received from the peer to the engine. Before the first TLS record, checks
    /// that the peer speaks TLS at all: a peernode frame (magic `PNOD`) means a plaintext peer.
    func feed(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        if !sawFirstBytes {
            sawFirstBytes = true
            // TLS records begin with 22 (handshake) or 21 (alert); a peernode frame with 'P'.
            if bytes[0] == UInt8(ascii: "P") {
                throw TLSError(code: .plaintextPeer, message: role == .client
                    ? "the peer answered in plaintext: it runs with --plaintext and this node with TLS (\(context.mode)); both ends must agree"
                    : "the peer spoke plaintext: it runs with --plaintext and this node with TLS (\(context.mode)); both ends must agree")
            }
        }
        var offset = 0
        while offset < bytes.count {
            let n = BIO_write(input, bytes.baseAddress! + offset, Int32(min(bytes.count - offset, Int(Int32.max))))
            guard n > 0 else { throw TLSError(code: .protocolError, message: "cannot buffer received TLS bytes") }
            offset += Int(n)
        }
    }

    /// Advances the handshake with what was fed so far; ``established`` once it is done. The
    /// caller sends ``drainOutput(into:)`` after each call (also after a throw: the alert).
    func handshake() throws {
        guard !established else { return }
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            if case .clusterKey = context.mode, SSL_session_reused(ssl) != 1 {
                throw TLSError(code: .securityMismatch,
                               message: "the peer did not use the cluster key's pre-shared key (it runs with --tls-cert certificates?); both ends must agree")
            }
            established = true
            return
        }
        let error = SSL_get_error(ssl, rc)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return }
        throw failure(error)
    }

    /// Encrypts `plaintext` into records appended to `out`.
    func seal(_ plaintext: UnsafeRawBufferPointer, into out: inout [UInt8]) throws {
        var offset = 0
        while offset < plaintext.count {
            ERR_clear_error()
            let n = SSL_write(ssl, plaintext.baseAddress! + offset, Int32(min(plaintext.count - offset, 1 << 20)))
            guard n > 0 else { throw failure(SSL_get_error(ssl, n)) }
            offset += Int(n)
            drainOutput(into: &out)
        }
    }

    /// Decrypts into `buffer` up to `count` bytes of what was fed; 0 when a whole record has
    /// not arrived yet (feed more). Throws when the peer closed or a record was altered.
    func open(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        ERR_clear_error()
        let n = SSL_read(ssl, buffer, Int32(min(count, Int(Int32.max))))
        if n > 0 { return Int(n) }
        let error = SSL_get_error(ssl, n)
        if error == SSL_ERROR_WANT_READ { return 0 }
        if error == SSL_ERROR_ZERO_RETURN { throw TLSError(code: .closed, message: "the peer closed the TLS link") }
        throw failure(error)
    }

    /// 32 bytes both ends derive from this TLS session alone (RFC 8446 exporter, label
    /// `EXPORTER-peernode-handshake`): the peernode handshake MACs them, which binds the node
    /// ids it proves to this channel.
    func channelBinding() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let label = Array("EXPORTER-peernode-handshake".utf8)
        let ok = label.withUnsafeBufferPointer { l in
            SSL_export_keying_material(ssl, &out, 32, UnsafePointer<CChar>(OpaquePointer(l.baseAddress!)), l.count, nil, 0, 0)
        }
        guard ok == 1 else { throw TLSError(code: .protocolError, message: "TLS exporter failed: \(TLSContext.drainErrors())") }
        return out
    }

    /// With certificates: the first four bytes of SHA-256 over the peer's public key, which its
    /// node id must begin with; nil with the cluster key's PSK (no certificates, no such rule).
    func peerIdentityPrefix() -> UInt32? {
        guard case .certificates = context.mode else { return nil }
        var digest = [UInt8](repeating: 0, count: 32)
        guard peernode_peer_spki_sha256(ssl, &digest) == 1 else { return nil }
        return digest.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// The negotiated cipher suite's standard name (for logs and benchmarks).
    var cipher: String {
        guard let c = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_standard_name(c) else { return "none" }
        return String(cString: name)
    }

    /// One line from OpenSSL's error queue, with the common cases named in peernode's terms.
    private func failure(_ sslError: Int32) -> TLSError {
        let code = ERR_peek_last_error()
        let reason = Int32(ERR_GET_REASON(code))
        let verify = SSL_get_verify_result(ssl)
        let detail = TLSContext.drainErrors()
        switch reason {
        case SSL_R_BINDER_DOES_NOT_VERIFY, SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
            return TLSError(code: .badKey, message: "TLS handshake failed: the peer holds a different cluster key (pre-shared key mismatch)")
        case SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER where !established:
            // OpenSSL 3.0 answers a PSK binder that does not verify with this alert; with one
            // fixed PSK identity, a different key is what makes the binder fail.
            if case .clusterKey = context.mode {
                return TLSError(code: .badKey, message: "TLS handshake refused by the peer (illegal parameter): it holds a different cluster key (pre-shared key mismatch)")
            }
            return TLSError(code: .protocolError, message: "TLS handshake refused by the peer: illegal parameter")
        case SSL_R_CERTIFICATE_VERIFY_FAILED where verify != Int(X509_V_OK):
            let why = String(cString: X509_verify_cert_error_string(verify))
            return TLSError(code: .badCertificate, message: "TLS handshake failed: the peer's certificate was refused: \(why)")
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED, SSL_R_TLSV1_ALERT_UNKNOWN_CA, SSL_R_SSLV3_ALERT_BAD_CERTIFICATE,
             SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED, SSL_R_TLSV1_ALERT_ACCESS_DENIED,
             SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE, SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
            let alert = ERR_reason_error_string(code).map { String(cString: $0) } ?? "certificate refused"
            return TLSError(code: .badCertificate, message: "TLS handshake failed: the peer refused this node's certificate (\(alert))")
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return TLSError(code: .badCertificate, message: "TLS handshake failed: the peer sent no certificate (it runs without --tls-cert?)")
        case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
            return TLSError(code: .integrity, message: "a TLS record failed its integrity check: the bytes were altered on the way")
        case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM, SSL_R_NO_SHARED_CIPHER:
            return TLSError(code: .securityMismatch,
                            message: "TLS handshake failed: the peer offers neither the cluster key's pre-shared key nor a certificate this node accepts (one end runs with --tls-cert, the other without?)")
        default:
            if sslError == SSL_ERROR_SYSCALL || sslError == SSL_ERROR_ZERO_RETURN {
                return TLSError(code: .closed, message: "the peer closed the TLS link")
            }
            return TLSError(code: .protocolError, message: "TLS failed: \(detail)")
        }
    }
}
