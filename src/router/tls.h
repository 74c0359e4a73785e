/* tls.h - the router's TLS: certificates, SNI, and non-blocking TLS I/O.
 *
 * tls_ctx_new() builds one server SSL_CTX (TLS 1.2 and 1.3 only, ECDHE with
 * AEAD ciphers) from one or more PEM certificate/key pairs. The first pair is
 * the default; a client's SNI name picks the pair whose certificate names it
 * (subjectAltName DNS names, else the subject CN; "*.example.com" covers one
 * label). The context is shared by every router thread; each connection gets
 * its own SSL object with tls_conn_new() and is driven with the non-blocking
 * calls below from the thread's epoll loop.
 *
 * tls_selfsigned() makes (or reuses) a self-signed certificate under
 * DIR for the given host names, for when no --cert is given. */
#ifndef CZ_TLS_H
#define CZ_TLS_H

#include <stddef.h>
#include <sys/types.h>

#define TLS_MAX_CERTS 16

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

typedef struct {
    const char *cert[TLS_MAX_CERTS];   /* PEM files: certificate (then chain) */
    const char *key[TLS_MAX_CERTS];    /* PEM private keys, same order */
    int n;
} tls_config;

/* NULL with one sentence in err (which file, what is wrong). */
tls_ctx *tls_ctx_new(const tls_config *c, char *err, size_t errlen);
void tls_ctx_free(tls_ctx *t);
/* The names the i-th certificate answers for, comma-separated (for logs). */
const char *tls_ctx_names(const tls_ctx *t, int i);
int tls_ctx_count(const tls_ctx *t);

/* Results of the I/O calls. */
enum { TLS_OK = 1, TLS_WANT_READ = -2, TLS_WANT_WRITE = -3, TLS_EOF = 0, TLS_ERR = -1 };

tls_conn *tls_conn_new(tls_ctx *t, int fd);
/* TLS_OK when the handshake is complete, TLS_WANT_*, or TLS_ERR. */
int tls_handshake(tls_conn *c);
/* Bytes read (> 0), TLS_EOF on close_notify or TCP EOF, TLS_WANT_*, TLS_ERR. */
ssize_t tls_read(tls_conn *c, void *buf, size_t len);
/* Bytes written (> 0; a partial write is possible), TLS_WANT_*, TLS_ERR. A
 * write that returned TLS_WANT_* must be retried with the same bytes. */
ssize_t tls_write(tls_conn *c, const void *buf, size_t len);
/* Sends close_notify (best effort, never blocks) and frees c. */
void tls_conn_free(tls_conn *c, int send_close_notify);

/* Ensures DIR/selfsigned.crt and DIR/selfsigned.key exist and cover every
 * name in names (NULL-terminated; DNS names or IP addresses). An existing
 * pair that covers them is reused (*created = 0); otherwise a new ECDSA
 * P-256 pair valid for 10 years is written (*created = 1). The paths are
 * written to cert_out/key_out. 0, or -1 with a sentence in err. */
int tls_selfsigned(const char *dir, const char *const *names, char *cert_out, size_t cert_len,
                   char *key_out, size_t key_len, int *created, char *err, size_t errlen);

/* 1 if pattern (a certificate name, maybe "*.example.com") matches host. */
int tls_name_match(const char *pattern, const char *host, size_t host_len);

#endif
