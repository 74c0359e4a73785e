/* tls.c - the router's TLS (OpenSSL): certificates chosen by SNI,
 * non-blocking handshakes and record I/O, self-signed certificates.
 *
 * One SSL_CTX per certificate, all configured alike (TLS 1.2 minimum,
 * ECDHE + AES-GCM/ChaCha20-Poly1305 only, no compression, no
 * renegotiation, partial writes). The first is the default context every
 * connection starts in; its servername callback looks the client's SNI name
 * up in the certificates' names (exact names first, then wildcards) and
 * moves the connection to the matching context with SSL_set_SSL_CTX. The
 * contexts are read-only after tls_ctx_new(), so all router threads share
 * them; OpenSSL locks its session cache itself.
 *
 * The I/O calls map SSL_get_error() to "would block reading/writing", EOF
 * and fatal error, so router.c drives TLS connections from its
 * edge-triggered epoll loop exactly like plain ones. A fatal error marks the
 * connection so that no close_notify is attempted on it. */
#include "router/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/buf.h"
#include "core/util.h"

#define TLS12_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define MAX_NAMES 64

typedef struct {
    SSL_CTX *ctx;
    char *names[MAX_NAMES];       /* lower-case DNS names (SAN, else CN) */
    int nnames;
    char *joined;                 /* "a.example, *.b.example" for logs */
} tls_cert;

struct tls_ctx {
    tls_cert certs[TLS_MAX_CERTS];
    int n;
};

struct tls_conn {
    SSL *ssl;
    int fatal;                    /* a fatal error happened: no close_notify */
};

/* The last OpenSSL error as text (and the queue cleared). */
static const char *ossl_reason(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) snprintf(out, len, "unknown OpenSSL error");
    else {
        const char *r = ERR_reason_error_string(e);
        if (r) snprintf(out, len, "%s", r);
        else ERR_error_string_n(e, out, len);
    }
    ERR_clear_error();
    return out;
}

int tls_name_match(const char *pattern, const char *host, size_t host_len)
{
    while (host_len && host[host_len - 1] == '.') host_len--;
    size_t pl = strlen(pattern);
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com": exactly one more label in front. */
        const char *dot = memchr(host, '.', host_len);
        if (!dot || dot == host) return 0;
        size_t rest = host_len - (size_t)(dot - host);
        return rest == pl - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
    }
    return pl == host_len && strncasecmp(pattern, host, host_len) == 0;
}

static void add_name(tls_cert *c, const char *s, size_t n)
{
    if (c->nnames >= MAX_NAMES || n == 0) return;
    char *v = xstrndup(s, n);
    for (char *p = v; *p; p++) if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    c->names[c->nnames++] = v;
}

/* The DNS names of a certificate: subjectAltName dNSName entries, or the
 * subject's CN when there are none (as clients check). */
static void collect_names(tls_cert *c, X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int dns = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS) continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        add_name(c, (const char *)d, (size_t)ASN1_STRING_length(g->d.dNSName));
        dns++;
    }
    GENERAL_NAMES_free(gens);
    if (!dns) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
        if (n > 0) add_name(c, cn, (size_t)n);
    }
    size_t total = 1;
    for (int i = 0; i < c->nnames; i++) total += strlen(c->names[i]) + 1;
    c->joined = xmalloc(total);
    c->joined[0] = 0;
    for (int i = 0; i < c->nnames; i++) {
        if (i) strcat(c->joined, ",");
        strcat(c->joined, c->names[i]);
    }
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    tls_ctx *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || t->n < 2) return SSL_TLSEXT_ERR_OK;
    size_t nl = strlen(name);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < t->n; i++)
            for (int j = 0; j < t->certs[i].nnames; j++) {
                const char *p = t->certs[i].names[j];
                if ((p[0] == '*') != pass) continue;
                if (tls_name_match(p, name, nl)) {
                    if (i) SSL_set_SSL_CTX(ssl, t->certs[i].ctx);
                    return SSL_TLSEXT_ERR_OK;
                }
            }
    return SSL_TLSEXT_ERR_OK;   /* unknown name: the default certificate */
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    (void)ssl; (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int l = in[i];
        if (i + 1 + l > inlen) break;
        if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *make_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { set_err(err, errlen, "cannot create a TLS context: %s", ossl_reason(why, sizeof why)); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                             SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1) {
        set_err(err, errlen, "cannot set the TLS ciphers: %s", ossl_reason(why, sizeof why));
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Read whole socket buffers, not a record header then its body: fewer
     * recv() calls. The router reads until OpenSSL says "want read", so
     * nothing buffered here is ever left waiting for an epoll edge. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* Resumption by session tickets only (TLS 1.2 and 1.3): no server-side
     * session store to lock, fill and expire on every full handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL_STORE |
                                        SSL_SESS_CACHE_NO_AUTO_CLEAR);
    static const unsigned char sid[] = "cyclozzo";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (access(cert, R_OK) < 0) {
        set_err(err, errlen, "cannot read the certificate %s: %s", cert, strerror(errno));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (access(key, R_OK) < 0) {
        set_err(err, errlen, "cannot read the private key %s: %s", key, strerror(errno));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        set_err(err, errlen, "%s is not a PEM certificate: %s", cert, ossl_reason(why, sizeof why));
        SSL_CTX_free(ctx);
        return NULL;
    }
    FILE *kf = fopen(key, "r");
    EVP_PKEY *pk = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    if (kf) fclose(kf);
    if (!pk) {
        set_err(err, errlen, "%s is not a PEM private key (without a passphrase): %s", key, ossl_reason(why, sizeof why));
        SSL_CTX_free(ctx);
        return NULL;
    }
    int used = SSL_CTX_use_PrivateKey(ctx, pk);
    EVP_PKEY_free(pk);
    if (used != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        set_err(err, errlen, "the private key %s does not belong to the certificate %s", key, cert);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

tls_ctx *tls_ctx_new(const tls_config *c, char *err, size_t errlen)
{
    if (c->n < 1 || c->n > TLS_MAX_CERTS) {
        set_err(err, errlen, "between 1 and %d certificates are needed, not %d", TLS_MAX_CERTS, c->n);
        return NULL;
    }
    tls_ctx *t = xcalloc(1, sizeof *t);
    for (int i = 0; i < c->n; i++) {
        tls_cert *tc = &t->certs[i];
        tc->ctx = make_ctx(c->cert[i], c->key[i], err, errlen);
        if (!tc->ctx) { tls_ctx_free(t); return NULL; }
        t->n = i + 1;
        collect_names(tc, SSL_CTX_get0_certificate(tc->ctx));
    }
    SSL_CTX_set_tlsext_servername_callback(t->certs[0].ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(t->certs[0].ctx, t);
    return t;
}

void tls_ctx_free(tls_ctx *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        SSL_CTX_free(t->certs[i].ctx);
        for (int j = 0; j < t->certs[i].nnames; j++) free(t->certs[i].names[j]);
        free(t->certs[i].joined);
    }
    free(t);
}

const char *tls_ctx_names(const tls_ctx *t, int i)
{
    return i >= 0 && i < t->n && t->certs[i].joined ? t->certs[i].joined : "";
}

int tls_ctx_count(const tls_ctx *t) { return t->n; }

tls_conn *tls_conn_new(tls_ctx *t, int fd)
{
    SSL *ssl = SSL_new(t->certs[0].ctx);
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (SSL_set_fd(ssl, fd) != 1) { ERR_clear_error(); SSL_free(ssl); return NULL; }
    SSL_set_accept_state(ssl);
    tls_conn *c = xcalloc(1, sizeof *c);
    c->ssl = ssl;
    return c;
}

/* Map the result r of an SSL call to TLS_*. */
static int map_error(tls_conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ: return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return TLS_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == EINTR) return TLS_WANT_READ;
        c->fatal = 1;
        return TLS_ERR;
    default:
        ERR_clear_error();
        c->fatal = 1;
        return TLS_ERR;
    }
}

int tls_handshake(tls_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return TLS_OK;
    int m = map_error(c, r);
    if (m == TLS_EOF) { c->fatal = 1; return TLS_ERR; }
    return m;
}

ssize_t tls_read(tls_conn *c, void *buf, size_t len)
{
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, len > 0x7fffffff ? 0x7fffffff : (int)len);
    if (n > 0) return n;
    return map_error(c, n);
}

ssize_t tls_write(tls_conn *c, const void *buf, size_t len)
{
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, len > 0x7fffffff ? 0x7fffffff : (int)len);
    if (n > 0) return n;
    return map_error(c, n);
}

void tls_conn_free(tls_conn *c, int send_close_notify)
{
    if (!c) return;
    if (send_close_notify && !c->fatal && SSL_is_init_finished(c->ssl)) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);     /* non-blocking socket: one try */
        ERR_clear_error();
    }
    SSL_free(c->ssl);
    free(c);
}

/* ---- self-signed certificates ---- */

static int is_ip(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* 1 if the PEM certificate at path is valid now and covers every name. */
static int covers(const char *path, const char *const *names)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) { ERR_clear_error(); return 0; }
    int ok = X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
    tls_cert tc;
    memset(&tc, 0, sizeof tc);
    collect_names(&tc, x);
    for (int i = 0; ok && names[i]; i++) {
        if (is_ip(names[i])) { ok = X509_check_ip_asc(x, names[i], 0) == 1; continue; }
        ok = 0;   /* DNS names (wildcards too) must be listed as they are */
        for (int j = 0; j < tc.nnames && !ok; j++) ok = strcasecmp(tc.names[j], names[i]) == 0;
    }
    for (int j = 0; j < tc.nnames; j++) free(tc.names[j]);
    free(tc.joined);
    X509_free(x);
    ERR_clear_error();
    return ok;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!e) return -1;
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok == 1 ? 0 : -1;
}

/* Write PEM output to path atomically (temp file, then rename), mode 0600. */
static int write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    char *tmp = xasprintf("%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { free(tmp); return -1; }
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); unlink(tmp); free(tmp); return -1; }
    int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0) ok = 0;
    if (ok != 1 || rename(tmp, path) < 0) { unlink(tmp); free(tmp); return -1; }
    free(tmp);
    return 0;
}

int tls_selfsigned(const char *dir, const char *const *names, char *cert_out, size_t cert_len,
                   char *key_out, size_t key_len, int *created, char *err, size_t errlen)
{
    *created = 0;
    if (mkdir_p(dir, 0700) < 0) { set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno)); return -1; }
    snprintf(cert_out, cert_len, "%s/selfsigned.crt", dir);
    snprintf(key_out, key_len, "%s/selfsigned.key", dir);
    if (access(key_out, R_OK) == 0 && covers(cert_out, names)) return 0;

    char why[256];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int ok = k && x;
    if (ok) {
        unsigned char serial[16];
        ok = RAND_bytes(serial, sizeof serial) == 1;
        serial[0] &= 0x7f;
        BIGNUM *bn = ok ? BN_bin2bn(serial, sizeof serial, NULL) : NULL;
        ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
    }
    if (ok) {
        X509_set_version(x, 2);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
        X509_NAME *nm = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8, (const unsigned char *)"Cyclozzo self-signed", -1, -1, 0);
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)(names[0] ? names[0] : "localhost"), -1, -1, 0);
        X509_set_issuer_name(x, nm);
        X509_set_pubkey(x, k);
        buf san = BUF_INIT;
        for (int i = 0; names[i]; i++) buf_printf(&san, "%s%s:%s", i ? "," : "", is_ip(names[i]) ? "IP" : "DNS", names[i]);
        ok = add_ext(x, NID_subject_alt_name, buf_cstr(&san)) == 0 &&
             add_ext(x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, NID_key_usage, "critical,digitalSignature") == 0 &&
             add_ext(x, NID_ext_key_usage, "serverAuth") == 0 &&
             X509_sign(x, k, EVP_sha256()) > 0;
        buf_free(&san);
    }
    if (!ok) {
        set_err(err, errlen, "cannot make a self-signed certificate: %s", ossl_reason(why, sizeof why));
    } else if (write_pem(key_out, NULL, k) < 0) {
        set_err(err, errlen, "cannot write %s: %s", key_out, strerror(errno));
        ok = 0;
    } else if (write_pem(cert_out, x, NULL) < 0) {
        set_err(err, errlen, "cannot write %s: %s", cert_out, strerror(errno));
        ok = 0;
    }
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    if (!ok) return -1;
    *created = 1;
    return 0;
}
