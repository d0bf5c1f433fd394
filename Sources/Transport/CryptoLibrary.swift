import COpenSSL

/// libcrypto set up without its exit-time cleanup.
///
/// By default OpenSSL 3 registers `OPENSSL_cleanup` with atexit(3) at its first use. That handler
/// frees the library's global tables while other threads may still be running; a thread that
/// called into libcrypto (an event-loop thread that ran a handshake, a ring thread that hashed)
/// and exits at that moment runs libcrypto's thread-exit destructor over the same tables. The
/// result was heap corruption at process exit (`malloc_consolidate(): unaligned fastbin chunk`,
/// or a segfault in `OPENSSL_sk_delete`), seen as an exit status of 6 or 11 from a run that had
/// finished its work. Skipping the atexit cleanup is what OpenSSL offers for this
/// (`OPENSSL_INIT_NO_ATEXIT`); the OS reclaims the memory anyway. The first init call decides,
/// so every entry point into libcrypto here goes through ``ensureInitialized()``.
public enum CryptoLibrary {
    private static let initialized: Bool = OPENSSL_init_crypto(UInt64(OPENSSL_INIT_NO_ATEXIT), nil) == 1

    /// Initializes libcrypto once, without the exit handler; cheap after the first call.
    @discardableResult
    public static func ensureInitialized() -> Bool { initialized }
}
