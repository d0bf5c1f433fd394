// OpenSSL (Debian: libssl-dev): libcrypto for SHA-256 and HMAC, libssl for TLS 1.3 on every link.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

// What Swift cannot reach by itself: OpenSSL macros, and the C callbacks of TLS 1.3 external
// pre-shared keys (docs/protocol.md §2 "Link security"). The key lives in memory the Swift
// TLSContext owns and frees after the SSL_CTX; the context's application data points at it.

/// The PSK's identity on the wire: names the scheme, not the key (one key per cluster).
static const char peernode_psk_identity[] = "peernode cluster key v1";

/// A TLS 1.3 session that carries the 32-byte PSK for TLS_AES_128_GCM_SHA256.
static inline SSL_SESSION *peernode_psk_session(SSL *ssl) {
    const unsigned char *psk = (const unsigned char *)SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), 0);
    if (psk == NULL) return NULL;
    const unsigned char suite[2] = {0x13, 0x01};
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, suite);
    if (cipher == NULL) return NULL;
    SSL_SESSION *session = SSL_SESSION_new();
    if (session == NULL) return NULL;
    if (!SSL_SESSION_set1_master_key(session, psk, 32) || !SSL_SESSION_set_cipher(session, cipher)
        || !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION)) {
        SSL_SESSION_free(session);
        return NULL;
    }
    return session;
}

static inline int peernode_psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                                   SSL_SESSION **out) {
    SSL_SESSION *session = peernode_psk_session(ssl);
    if (session == NULL) return 0;
    if (md != NULL && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(session))) {
        SSL_SESSION_free(session);
        *out = NULL;
        return 1;
    }
    *id = (const unsigned char *)peernode_psk_identity;
    *idlen = sizeof peernode_psk_identity - 1;
    *out = session;
    return 1;
}

static inline int peernode_psk_find(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **out) {
    if (idlen != sizeof peernode_psk_identity - 1 || memcmp(id, peernode_psk_identity, idlen) != 0) {
        *out = NULL;
        return 1;
    }
    *out = peernode_psk_session(ssl);
    return *out != NULL;
}

/// TLS 1.3 only, no session tickets (nothing is resumed; a link lives as long as its socket),
/// partial writes off, and, with `psk` non-NULL, the cluster's pre-shared key.
static inline int peernode_ctx_setup(SSL_CTX *ctx, const unsigned char *psk) {
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) return 0;
    if (!SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) return 0;
    if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")) return 0;
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (psk != NULL) {
        if (!SSL_CTX_set_ex_data(ctx, 0, (void *)psk)) return 0;
        SSL_CTX_set_psk_use_session_callback(ctx, peernode_psk_use);
        SSL_CTX_set_psk_find_session_callback(ctx, peernode_psk_find);
    }
    return 1;
}

/// A memory BIO that reports "retry" (not end of file) when empty: the bytes come from the link.
static inline BIO *peernode_memory_bio(void) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL) BIO_set_mem_eof_return(bio, -1);
    return bio;
}

/// The bytes a memory BIO holds (pointer and count), and emptying it: for taking its contents
/// with one copy.
static inline long peernode_bio_contents(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }
static inline int peernode_bio_empty(BIO *bio) { return (int)BIO_reset(bio); }

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER); 1 on success.
static inline int peernode_spki_sha256(X509 *cert, unsigned char out[32]) {
    if (cert == NULL) return 0;
    unsigned char *der = NULL;
    int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (length <= 0) return 0;
    SHA256(der, (size_t)length, out);
    OPENSSL_free(der);
    return 1;
}

static inline int peernode_peer_spki_sha256(SSL *ssl, unsigned char out[32]) {
    X509 *cert = SSL_get1_peer_certificate(ssl);
    int ok = peernode_spki_sha256(cert, out);
    X509_free(cert);
    return ok;
}

static inline int peernode_own_spki_sha256(SSL_CTX *ctx, unsigned char out[32]) {
    return peernode_spki_sha256(SSL_CTX_get0_certificate(ctx), out);
}
