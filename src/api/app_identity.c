/* app_identity.c - the app_identity_service API: who the app is, and
 * signatures and tokens only it can make. See app_identity.h for the key
 * file and the token format, docs/app-identity.md for the answers.
 *
 * Messages (google/appengine/api/app_identity/app_identity_service.proto):
 *   SignForAppRequest 1 bytes_to_sign        -> 1 key_name, 2 signature_bytes
 *   GetPublicCertificateForAppRequest {}     -> 1 PublicCertificate{1 key_name,
 *                                               2 x509_certificate_pem} (rep),
 *                                               2 max_client_cache_time_in_second
 *   GetServiceAccountNameRequest {}          -> 1 service_account_name
 *   GetAccessTokenRequest 1 scope (rep), 2 service_account_id, 3 _name
 *                                            -> 1 access_token, 2 expiration_time
 *   GetDefaultGcsBucketNameRequest {}        -> 1 default_gcs_bucket_name
 * Errors: UNKNOWN_SCOPE 9 (no scope asked), BLOB_TOO_LARGE 1000 (more than
 * 8000 bytes to sign, App Engine's limit), NOT_A_VALID_APP 1002 (a service
 * account other than the app's own), UNKNOWN_ERROR 1003 (key trouble).
 *
 * Keys are loaded once per app and kept in the service's list (mutex);
 * creation is race-free across processes: the PEM is written to a private
 * temporary file and link()ed into place, so a concurrent creator's key wins
 * and everyone reads the same file. */
#include "api/app_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "proto/pb.h"

enum {
    AI_UNKNOWN_SCOPE = 9, AI_BLOB_TOO_LARGE = 1000, AI_NOT_A_VALID_APP = 1002, AI_UNKNOWN_ERROR = 1003,
};
#define MAX_SIGN_BYTES 8000
#define CERT_CACHE_S   3600

typedef struct appkey {
    char project[101];
    EVP_PKEY *key;
    char *cert_pem;
    char key_name[41];
    struct appkey *next;
} appkey;

typedef struct {
    char *home;
    pthread_mutex_t lock;
    appkey *keys;
    char *md_app;               /* metadata server: the app it answers for */
    char md_secret[33];         /* ... and the path segment that guards it */
} ai_service;

static const char *project_of(const char *app_id)
{
    const char *t = strchr(app_id, '~');
    return t ? t + 1 : app_id;
}

void appid_service_account(const char *app_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s@appspot.gserviceaccount.com", project_of(app_id));
}

/* ---- base64url ---- */

static void b64url(buf *out, const uint8_t *p, size_t n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char c[4] = {al[v >> 18], al[v >> 12 & 63], al[v >> 6 & 63], al[v & 63]};
        buf_append(out, c, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char c[2] = {al[v >> 18], al[v >> 12 & 63]};
        buf_append(out, c, 2);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char c[3] = {al[v >> 18], al[v >> 12 & 63], al[v >> 6 & 63]};
        buf_append(out, c, 3);
    }
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

static int unb64url(buf *out, const char *s, size_t n)
{
    uint32_t acc = 0;
    int bits = 0;
    if (n % 4 == 1) return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) { bits -= 8; buf_putc(out, (char)(acc >> bits & 255)); }
    }
    return 0;
}

/* ---- the key file ---- */

static char *key_path(const char *home, const char *project)
{
    return xasprintf("%s/secrets/app-identity-%s.pem", home, project);
}

static int valid_project(const char *p)
{
    if (!*p || strlen(p) > 100) return 0;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == ':'))
            return 0;
    return *p == 0;
}

/* A new key and self-signed certificate as PEM text in out. */
static int make_pem(const char *project, buf *out, char *err, size_t errlen)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    BIO *b = BIO_new(BIO_s_mem());
    int ok = 0;
    if (!k || !x || !b) goto done;
    char cn[200];
    snprintf(cn, sizeof cn, "%s@appspot.gserviceaccount.com", project);
    uint8_t serial[8];
    if (RAND_bytes(serial, sizeof serial) != 1) goto done;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    int sok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    if (!sok) goto done;
    X509_NAME *name = X509_get_subject_name(x);
    if (X509_set_version(x, 2) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400) ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, k) != 1 ||
        X509_sign(x, k, EVP_sha256()) <= 0)
        goto done;
    if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1 || PEM_write_bio_X509(b, x) != 1) goto done;
    char *p;
    long n = BIO_get_mem_data(b, &p);
    buf_append(out, p, (size_t)n);
    ok = 1;
done:
    if (!ok) set_err(err, errlen, "cannot create the key pair for app %s with OpenSSL", project);
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(b);
    return ok ? 0 : -1;
}

/* Read the PEM file: 0 loaded, -1 err set, -2 missing. */
static int read_pem(const char *path, EVP_PKEY **key, X509 **cert, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return -2;
        set_err(err, errlen, "cannot open the app key %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        close(fd);
        set_err(err, errlen, "the app key %s is not a private regular file (it must be mode 600)", path);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) { close(fd); set_err(err, errlen, "cannot read the app key %s", path); return -1; }
    *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    *cert = *key ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    fclose(f);
    if (!*key || !*cert) {
        EVP_PKEY_free(*key);
        *key = NULL;
        set_err(err, errlen, "the app key %s does not hold a PEM private key followed by its certificate", path);
        return -1;
    }
    return 0;
}

static int create_pem(const char *home, const char *project, const char *path, char *err, size_t errlen)
{
    char *dir = xasprintf("%s/secrets", home);
    int rc = -1;
    buf pem = BUF_INIT;
    char *tmp = NULL;
    if (mkdir_p(dir, 0700) < 0) { set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno)); goto out; }
    if (make_pem(project, &pem, err, errlen) < 0) goto out;
    uint32_t salt = 0;
    random_bytes(&salt, sizeof salt);
    tmp = xasprintf("%s/.app-identity-%s.%d.%08x", dir, project, (int)getpid(), salt);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) { set_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno)); goto out; }
    int ok = write(fd, pem.data, pem.len) == (ssize_t)pem.len && fsync(fd) == 0;
    if (close(fd) < 0) ok = 0;
    if (!ok) { unlink(tmp); set_err(err, errlen, "cannot write %s", tmp); goto out; }
    int linked = link(tmp, path), e = errno;
    unlink(tmp);
    if (linked < 0 && e != EEXIST) { set_err(err, errlen, "cannot create the app key %s: %s", path, strerror(e)); goto out; }
    log_info("app_identity", "app=%s msg=\"created the app's key pair\" path=%s", log_q(project), log_q(path));
    rc = 0;
out:
    if (pem.data) OPENSSL_cleanse(pem.data, pem.len);
    buf_free(&pem);
    free(tmp);
    free(dir);
    return rc;
}

/* Load (creating when missing) the app's key and certificate. */
static int load_key(const char *home, const char *project, int create, EVP_PKEY **key, X509 **cert,
                    char *err, size_t errlen)
{
    if (!valid_project(project)) { set_err(err, errlen, "\"%s\" is not a valid app id", project); return -1; }
    char *path = key_path(home, project);
    int r = read_pem(path, key, cert, err, errlen);
    if (r == -2 && !create) set_err(err, errlen, "app %s has no key (%s does not exist)", project, path);
    if (r == -2 && create && create_pem(home, project, path, err, errlen) == 0) {
        r = read_pem(path, key, cert, err, errlen);
        if (r == -2) set_err(err, errlen, "the app key %s vanished after it was created", path);
    }
    free(path);
    return r == 0 ? 0 : -1;
}

static appkey *get_key(ai_service *s, const char *app_id, char *err, size_t errlen)
{
    const char *project = project_of(app_id);
    pthread_mutex_lock(&s->lock);
    appkey *k = s->keys;
    while (k && strcmp(k->project, project)) k = k->next;
    if (!k) {
        EVP_PKEY *key = NULL;
        X509 *cert = NULL;
        if (load_key(s->home, project, 1, &key, &cert, err, errlen) == 0) {
            k = xcalloc(1, sizeof *k);
            snprintf(k->project, sizeof k->project, "%s", project);
            k->key = key;
            BIO *b = BIO_new(BIO_s_mem());
            char *p;
            PEM_write_bio_X509(b, cert);
            long n = BIO_get_mem_data(b, &p);
            k->cert_pem = xstrndup(p, (size_t)n);
            BIO_free(b);
            /* Key name: the first 20 bytes of the SHA-256 of the public key, in hex. */
            unsigned char *der = NULL;
            int dl = i2d_PUBKEY(key, &der);
            uint8_t md[32];
            unsigned int mdl = 0;
            EVP_Digest(der, dl > 0 ? (size_t)dl : 0, md, &mdl, EVP_sha256(), NULL);
            OPENSSL_free(der);
            hex_encode(md, 20, k->key_name);
            X509_free(cert);
            k->next = s->keys;
            s->keys = k;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return k;
}

static int rsa_sign(EVP_PKEY *key, const void *data, size_t n, buf *sig)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t sl = 0;
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, NULL, &sl, data, n) == 1;
    if (ok) {
        buf_reserve(sig, sl);
        ok = EVP_DigestSign(md, (unsigned char *)sig->data + sig->len, &sl, data, n) == 1;
        if (ok) sig->len += sl;
    }
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

/* ---- methods ---- */

static int empty_request(const uint8_t *in, size_t len)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0)
        if (pb_skip(&r, wt, f) < 0) return -1;
    return rc < 0 || r.err ? -1 : 0;
}

static void m_service_account(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    if (empty_request(in, len) < 0) { api_rpc_error(reply, RPC_PARSE_ERROR, "The GetServiceAccountName request could not be parsed."); return; }
    char name[200];
    appid_service_account(ctx->app_id, name, sizeof name);
    pb_put_str(&reply->response, 1, name);
}

static void m_bucket(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    if (empty_request(in, len) < 0) { api_rpc_error(reply, RPC_PARSE_ERROR, "The GetDefaultGcsBucketName request could not be parsed."); return; }
    char name[200];
    snprintf(name, sizeof name, "%s.appspot.com", project_of(ctx->app_id));
    pb_put_str(&reply->response, 1, name);
}

static void m_sign(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    ai_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, in, len);
    const uint8_t *data = (const uint8_t *)"";
    size_t n = 0;
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) rc = pb_bytes(&r, wt, &data, &n);
        else rc = pb_skip(&r, wt, f);
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { api_rpc_error(reply, RPC_PARSE_ERROR, "The SignForApp request could not be parsed."); return; }
    if (n > MAX_SIGN_BYTES) {
        api_app_error(reply, AI_BLOB_TOO_LARGE, "SignForApp signs at most %d bytes, not %zu.", MAX_SIGN_BYTES, n);
        return;
    }
    char err[512];
    appkey *k = get_key(s, ctx->app_id, err, sizeof err);
    if (!k) { api_app_error(reply, AI_UNKNOWN_ERROR, "%s.", err); return; }
    buf sig = BUF_INIT;
    if (rsa_sign(k->key, data, n, &sig) < 0) {
        buf_free(&sig);
        api_app_error(reply, AI_UNKNOWN_ERROR, "OpenSSL could not sign with the app's key.");
        return;
    }
    pb_put_str(&reply->response, 1, k->key_name);
    pb_put_bytes(&reply->response, 2, sig.data, sig.len);
    buf_free(&sig);
}

static void m_certs(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    ai_service *s = ctx->service_data;
    if (empty_request(in, len) < 0) { api_rpc_error(reply, RPC_PARSE_ERROR, "The GetPublicCertificatesForApp request could not be parsed."); return; }
    char err[512];
    appkey *k = get_key(s, ctx->app_id, err, sizeof err);
    if (!k) { api_app_error(reply, AI_UNKNOWN_ERROR, "%s.", err); return; }
    size_t m = pb_begin(&reply->response, 1);
    pb_put_str(&reply->response, 1, k->key_name);
    pb_put_str(&reply->response, 2, k->cert_pem);
    pb_end(&reply->response, m);
    pb_put_int(&reply->response, 2, CERT_CACHE_S);
}

/* An access token for app_id with the space-separated scopes. */
static int mint_token(ai_service *s, const char *app_id, const char *scopes, size_t slen,
                      buf *tok, int64_t *exp, char *err, size_t errlen)
{
    appkey *k = get_key(s, app_id, err, errlen);
    if (!k) return -1;
    *exp = wall_us() / 1000000 + APPID_TOKEN_TTL_S;
    buf payload = BUF_INIT, sig = BUF_INIT;
    buf_printf(&payload, "app=%s\nexp=%lld\nscope=%.*s\n", k->project, (long long)*exp, (int)slen, scopes);
    buf_puts(tok, "cz1at.");
    b64url(tok, (const uint8_t *)payload.data, payload.len);
    int rc = rsa_sign(k->key, tok->data, tok->len, &sig);
    if (rc < 0) set_err(err, errlen, "OpenSSL could not sign the access token");
    else {
        buf_putc(tok, '.');
        b64url(tok, (const uint8_t *)sig.data, sig.len);
    }
    buf_free(&payload);
    buf_free(&sig);
    return rc;
}

static void m_token(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    ai_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, in, len);
    buf scopes = BUF_INIT;
    const uint8_t *acct = NULL;
    size_t acct_len = 0;
    int64_t acct_id = 0;
    int nscopes = 0, bad = 0;
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t n;
        if (f == 1) {
            rc = pb_bytes(&r, wt, &p, &n);
            if (rc < 0) break;
            for (size_t i = 0; i < n; i++) if (p[i] <= ' ' || p[i] >= 0x7f) bad = 1;
            if (n == 0) bad = 1;
            if (nscopes++) buf_putc(&scopes, ' ');
            buf_append(&scopes, p, n);
        } else if (f == 2) rc = pb_int64(&r, wt, &acct_id);
        else if (f == 3) rc = pb_bytes(&r, wt, &acct, &acct_len);
        else rc = pb_skip(&r, wt, f);
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { buf_free(&scopes); api_rpc_error(reply, RPC_PARSE_ERROR, "The GetAccessToken request could not be parsed."); return; }
    if (!nscopes || bad || scopes.len > 1500) {
        buf_free(&scopes);
        api_app_error(reply, AI_UNKNOWN_SCOPE, "GetAccessToken needs at least one scope, each a non-empty printable word.");
        return;
    }
    char own[200];
    appid_service_account(ctx->app_id, own, sizeof own);
    if ((acct && (acct_len != strlen(own) || memcmp(acct, own, acct_len))) || acct_id) {
        buf_free(&scopes);
        api_app_error(reply, AI_NOT_A_VALID_APP, "This app can only get tokens for its own service account %s.", own);
        return;
    }
    char err[512];
    buf tok = BUF_INIT;
    int64_t exp;
    if (mint_token(s, ctx->app_id, scopes.data, scopes.len, &tok, &exp, err, sizeof err) < 0) {
        api_app_error(reply, AI_UNKNOWN_ERROR, "%s.", err);
    } else {
        pb_put_bytes(&reply->response, 1, tok.data, tok.len);
        pb_put_int(&reply->response, 2, exp);
    }
    buf_free(&tok);
    buf_free(&scopes);
}

/* ---- verification (for the CLI and tests) ---- */

static const char *payload_field(const char *p, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && p[e] != '\n') e++;
        if (e - i > nl && !memcmp(p + i, name, nl) && p[i + nl] == '=') {
            *vlen = e - i - nl - 1;
            return p + i + nl + 1;
        }
        i = e + 1;
    }
    return NULL;
}

int appid_verify_token(const char *home, const char *token, int64_t now,
                       appid_token *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *dot = strrchr(token, '.');
    if (strncmp(token, "cz1at.", 6) || !dot || dot < token + 6) {
        set_err(err, errlen, "the token is not a Cyclozzo access token (it must start with cz1at.)");
        return -1;
    }
    buf payload = BUF_INIT, sig = BUF_INIT;
    int rc = -1;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    EVP_MD_CTX *md = NULL;
    if (unb64url(&payload, token + 6, (size_t)(dot - token - 6)) < 0 ||
        unb64url(&sig, dot + 1, strlen(dot + 1)) < 0) {
        set_err(err, errlen, "the token is malformed (bad base64url)");
        goto out;
    }
    size_t al, el, sl;
    const char *app = payload_field(payload.data ? payload.data : "", payload.len, "app", &al);
    const char *exps = payload_field(payload.data ? payload.data : "", payload.len, "exp", &el);
    const char *sc = payload_field(payload.data ? payload.data : "", payload.len, "scope", &sl);
    if (!app || !exps || !sc || al == 0 || al >= sizeof out->app || sl >= sizeof out->scopes || el > 20) {
        set_err(err, errlen, "the token is malformed (its payload lacks app, exp or scope)");
        goto out;
    }
    memcpy(out->app, app, al);
    char expbuf[24];
    memcpy(expbuf, exps, el);
    expbuf[el] = 0;
    char *end;
    out->expires = strtoll(expbuf, &end, 10);
    if (*end || !el) { set_err(err, errlen, "the token is malformed (bad expiry)"); goto out; }
    memcpy(out->scopes, sc, sl);
    if (load_key(home, out->app, 0, &key, &cert, err, errlen) < 0) goto out;
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestVerify(md, (const unsigned char *)sig.data, sig.len, (const unsigned char *)token,
                         (size_t)(dot - token)) != 1) {
        set_err(err, errlen, "the token's signature does not match app %s's key (forged or altered)", out->app);
        goto out;
    }
    if (out->expires <= now) {
        set_err(err, errlen, "the token for app %s expired %lld seconds ago", out->app, (long long)(now - out->expires));
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    X509_free(cert);
    buf_free(&payload);
    buf_free(&sig);
    return rc;
}

/* ---- the metadata server (Python SDK's get_access_token) ---- */

static void json_str(buf *b, const char *s, size_t n)
{
    buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { buf_putc(b, '\\'); buf_putc(b, (char)c); }
        else if (c < 0x20) buf_printf(b, "\\u%04x", c);
        else buf_putc(b, (char)c);
    }
    buf_putc(b, '"');
}

/* GET /SECRET/computeMetadata/v1/instance/service-accounts/ACCOUNT/{token?scopes=..,email}
 * and /SECRET/computeMetadata/v1/project/project-id. */
static int metadata_get(void *data, const char *target, size_t len, buf *body)
{
    ai_service *s = data;
    size_t sl = strlen(s->md_secret);
    const char *q = memchr(target, '?', len);
    size_t plen = q ? (size_t)(q - target) : len;
    static const char base[] = "/computeMetadata/v1/";
    if (!s->md_app || plen < sl + 1 + sizeof base - 1 || target[0] != '/' ||
        CRYPTO_memcmp(target + 1, s->md_secret, sl) != 0 || memcmp(target + 1 + sl, base, sizeof base - 1)) {
        buf_puts(body, "not found\n");
        return 404;
    }
    const char *p = target + 1 + sl + sizeof base - 1;
    size_t n = plen - (size_t)(p - target);
    char own[200];
    appid_service_account(s->md_app, own, sizeof own);
    if (n == 18 && !memcmp(p, "project/project-id", 18)) { buf_puts(body, project_of(s->md_app)); return 200; }
    static const char sa[] = "instance/service-accounts/";
    if (n < sizeof sa || memcmp(p, sa, sizeof sa - 1)) { buf_puts(body, "not found\n"); return 404; }
    p += sizeof sa - 1;
    n -= sizeof sa - 1;
    const char *slash = memchr(p, '/', n);
    if (!slash) { buf_puts(body, "not found\n"); return 404; }
    size_t al = (size_t)(slash - p);
    if (!((al == 7 && !memcmp(p, "default", 7)) || (al == strlen(own) && !memcmp(p, own, al)))) {
        buf_puts(body, "unknown service account\n");
        return 404;
    }
    const char *what = slash + 1;
    size_t wl = n - al - 1;
    if (wl == 5 && !memcmp(what, "email", 5)) { buf_puts(body, own); return 200; }
    if (wl != 5 || memcmp(what, "token", 5)) { buf_puts(body, "not found\n"); return 404; }
    /* scopes=a,b (percent-encoded) */
    buf scopes = BUF_INIT;
    if (q) {
        const char *qs = q + 1, *qe = target + len;
        while (qs < qe) {
            const char *amp = memchr(qs, '&', (size_t)(qe - qs));
            const char *pe = amp ? amp : qe;
            if (pe - qs > 7 && !memcmp(qs, "scopes=", 7)) {
                char *dec = xmalloc((size_t)(pe - qs));
                long dl = http_url_decode(qs + 7, (size_t)(pe - qs - 7), dec);
                for (long i = 0; i < dl; i++) {
                    char c = dec[i] == ',' ? ' ' : dec[i];
                    if (c == '+') c = ' ';
                    if ((unsigned char)c < ' ' || c == 0x7f) { dl = -1; break; }
                    buf_putc(&scopes, c);
                }
                free(dec);
                if (dl < 0) { buf_free(&scopes); buf_puts(body, "bad scopes\n"); return 400; }
            }
            qs = pe + 1;
        }
    }
    if (!scopes.len) { buf_free(&scopes); buf_puts(body, "no scopes were asked for\n"); return 400; }
    char err[512];
    buf tok = BUF_INIT;
    int64_t exp;
    int st = 200;
    if (mint_token(s, s->md_app, scopes.data, scopes.len, &tok, &exp, err, sizeof err) < 0) {
        buf_puts(body, err);
        st = 500;
    } else {
        buf_puts(body, "{\"access_token\":");
        json_str(body, tok.data, tok.len);
        buf_printf(body, ",\"expires_in\":%d,\"token_type\":\"Bearer\"}", APPID_TOKEN_TTL_S);
    }
    buf_free(&tok);
    buf_free(&scopes);
    return st;
}

const char *app_identity_metadata_enable(api_server *srv, const char *app_id)
{
    ai_service *s = api_shared(srv, "app_identity");
    if (!s) return NULL;
    uint8_t r[16];
    if (random_bytes(r, sizeof r) < 0) return NULL;
    hex_encode(r, sizeof r, s->md_secret);
    free(s->md_app);
    s->md_app = xstrdup(app_id);
    api_set_http_get(srv, metadata_get, s);
    return s->md_secret;
}

static void ai_free(void *p)
{
    ai_service *s = p;
    for (appkey *k = s->keys, *nx; k; k = nx) {
        nx = k->next;
        EVP_PKEY_free(k->key);
        free(k->cert_pem);
        free(k);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->md_app);
    free(s->home);
    free(s);
}

void app_identity_register(api_server *srv, const char *home)
{
    ai_service *s = xcalloc(1, sizeof *s);
    s->home = xstrdup(home ? home : cyclozzo_home());
    pthread_mutex_init(&s->lock, NULL);
    const char *svc = "app_identity_service";
    api_register(srv, svc, "SignForApp", m_sign, s);
    api_register(srv, svc, "GetPublicCertificatesForApp", m_certs, s);
    api_register(srv, svc, "GetServiceAccountName", m_service_account, s);
    api_register(srv, svc, "GetAccessToken", m_token, s);
    api_register(srv, svc, "GetDefaultGcsBucketName", m_bucket, s);
    api_share(srv, "app_identity", s);
    api_on_stop(srv, ai_free, s);
}
