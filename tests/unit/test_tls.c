/* test_tls.c - the router's TLS module (certificate names, SNI choice,
 * self-signed certificates, non-blocking handshakes and I/O over a socket
 * pair) and host routing (custom domains, secure-redirect URLs). */
#include "test.h"
#include "tmpdir.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/buf.h"
#include "core/util.h"
#include "router/hostroute.h"
#include "router/tls.h"

static int served(const hostroute *h, const char *host) { return hostroute_served(h, host, strlen(host)); }

TEST(hostroute_default_service)
{
    hostroute h = {.domain = "example.com", .app = "shop", .version = "v2", .service = "default"};
    CHECK(served(&h, "example.com"));
    CHECK(served(&h, "example.com:8080"));
    CHECK(served(&h, "EXAMPLE.com."));
    CHECK(served(&h, "shop.example.com"));
    CHECK(served(&h, "Shop.Example.Com:443"));
    CHECK(served(&h, "v2-dot-shop.example.com"));
    CHECK(served(&h, "v2-dot-default-dot-shop.example.com"));
    CHECK(served(&h, "127.0.0.1:8080"));
    CHECK(served(&h, "localhost"));
    CHECK(served(&h, "[::1]:8080"));
    CHECK(served(&h, "notexample.com"));          /* not under the domain */
    CHECK(served(&h, "other.org"));
    CHECK(!served(&h, "blog.example.com"));
    CHECK(!served(&h, "v3-dot-shop.example.com"));
    CHECK(!served(&h, "v2-dot-blog.example.com"));
    CHECK(!served(&h, "a.shop.example.com"));
    CHECK(!served(&h, "x-dot-v2-dot-default-dot-shop.example.com"));
    CHECK(!served(&h, "api-dot-shop.example.com"));   /* no such service */
    CHECK(!served(&h, "-dot-shop.example.com"));
    CHECK(!served(&h, ".example.com"));
    hostroute none = {.domain = NULL, .app = "shop", .version = "1"};
    CHECK(served(&none, "blog.example.com"));
}

TEST(hostroute_named_service)
{
    hostroute h = {.domain = "example.com", .app = "shop", .version = "v2", .service = "api"};
    CHECK(served(&h, "shop.example.com"));
    CHECK(served(&h, "api-dot-shop.example.com"));
    CHECK(served(&h, "v2-dot-shop.example.com"));
    CHECK(served(&h, "v2-dot-api-dot-shop.example.com"));
    CHECK(!served(&h, "v2-dot-web-dot-shop.example.com"));
    CHECK(!served(&h, "web-dot-shop.example.com"));
}

TEST(hostroute_names_and_redirects)
{
    size_t n;
    const char *s = hostroute_name("[::1]:8080", 10, &n);
    CHECK(n == 5 && memcmp(s, "[::1]", 5) == 0);
    hostroute_name("a.b:1", 5, &n);
    CHECK_INT(n, 3);
    buf b = BUF_INIT;
    hostroute_redirect_url("shop.example.com:8080", 21, 1, 8443, "/a?b=1", 6, &b);
    CHECK_STR(buf_cstr(&b), "https://shop.example.com:8443/a?b=1");
    buf_reset(&b);
    hostroute_redirect_url("shop.example.com", 16, 1, 443, "/", 1, &b);
    CHECK_STR(buf_cstr(&b), "https://shop.example.com/");
    buf_reset(&b);
    hostroute_redirect_url("[::1]:8443", 10, 0, 80, "/x", 2, &b);
    CHECK_STR(buf_cstr(&b), "http://[::1]/x");
    buf_reset(&b);
    hostroute_redirect_url("h:443", 5, 0, 8080, "/x", 2, &b);
    CHECK_STR(buf_cstr(&b), "http://h:8080/x");
    buf_free(&b);
}

TEST(name_match)
{
    CHECK(tls_name_match("example.com", "EXAMPLE.com", 11));
    CHECK(tls_name_match("example.com", "example.com.", 12));
    CHECK(!tls_name_match("example.com", "www.example.com", 15));
    CHECK(tls_name_match("*.example.com", "www.example.com", 15));
    CHECK(!tls_name_match("*.example.com", "example.com", 11));
    CHECK(!tls_name_match("*.example.com", "a.b.example.com", 15));
    CHECK(!tls_name_match("*.example.com", ".example.com", 12));
    CHECK(!tls_name_match("*.example.com", "wwwexample.com", 14));
}

static char dir[256];

/* A second, distinct certificate made by tls_selfsigned in a sub-directory. */
static int make_pair(const char *sub, const char *const *names, char *crt, char *key)
{
    char d[512];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    int created;
    char err[256];
    return tls_selfsigned(d, names, crt, 512, key, 512, &created, err, sizeof err);
}

TEST(selfsigned_made_then_reused_then_remade_for_new_names)
{
    char crt[512], key[512], err[256] = "";
    int created = -1;
    const char *names[] = {"localhost", "*.example.com", "127.0.0.1", NULL};
    char d[512];
    snprintf(d, sizeof d, "%s/tls", dir);
    CHECK_INT(tls_selfsigned(d, names, crt, sizeof crt, key, sizeof key, &created, err, sizeof err), 0);
    CHECK_INT(created, 1);
    struct stat st;
    CHECK(stat(key, &st) == 0 && (st.st_mode & 077) == 0);
    size_t l1;
    char *first = read_file(crt, &l1);
    CHECK(first != NULL);
    CHECK_INT(tls_selfsigned(d, names, crt, sizeof crt, key, sizeof key, &created, err, sizeof err), 0);
    CHECK_INT(created, 0);
    size_t l2;
    char *second = read_file(crt, &l2);
    CHECK(second && l1 == l2 && memcmp(first, second, l1) == 0);
    const char *more[] = {"localhost", "other.test", NULL};
    CHECK_INT(tls_selfsigned(d, more, crt, sizeof crt, key, sizeof key, &created, err, sizeof err), 0);
    CHECK_INT(created, 1);
    free(first);
    free(second);
}

TEST(ctx_errors_are_sentences)
{
    char err[512] = "";
    tls_config c = {.cert = {"/nonexistent/x.crt"}, .key = {"/nonexistent/x.key"}, .n = 1};
    CHECK(tls_ctx_new(&c, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/x.crt") != NULL);
    char a_crt[512], a_key[512], b_crt[512], b_key[512];
    const char *an[] = {"alpha.test", NULL}, *bn[] = {"beta.test", NULL};
    CHECK(make_pair("a", an, a_crt, a_key) == 0 && make_pair("b", bn, b_crt, b_key) == 0);
    tls_config mix = {.cert = {a_crt}, .key = {b_key}, .n = 1};
    CHECK(tls_ctx_new(&mix, err, sizeof err) == NULL);
    CHECK(strstr(err, "does not belong") != NULL);
    tls_config swapped = {.cert = {a_key}, .key = {a_crt}, .n = 1};
    CHECK(tls_ctx_new(&swapped, err, sizeof err) == NULL);
    CHECK(strstr(err, "is not a PEM certificate") != NULL);
    tls_config none = {.n = 0};
    CHECK(tls_ctx_new(&none, err, sizeof err) == NULL);
}

/* Handshake a client (SNI = sni, or none) against the server context over a
 * socket pair, both sides non-blocking, then echo a message each way.
 * Returns the CN of the certificate the client saw, or "" on failure. */
static void handshake(tls_ctx *t, const char *sni, char *cn, size_t cnlen, const char *max_proto)
{
    cn[0] = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) return;
    tls_conn *s = tls_conn_new(t, sv[0]);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (max_proto && !strcmp(max_proto, "1.1")) {
        SSL_CTX_set_security_level(cctx, 0);
        SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(cctx, TLS1_1_VERSION);
    }
    SSL *cl = SSL_new(cctx);
    SSL_set_fd(cl, sv[1]);
    if (sni) SSL_set_tlsext_host_name(cl, sni);
    SSL_set_connect_state(cl);
    int sdone = 0, cdone = 0, failed = 0;
    for (int i = 0; i < 100 && !(sdone && cdone) && !failed; i++) {
        if (!cdone) {
            int r = SSL_do_handshake(cl);
            if (r == 1) cdone = 1;
            else if (SSL_get_error(cl, r) != SSL_ERROR_WANT_READ) failed = 1;
        }
        if (!sdone) {
            int r = tls_handshake(s);
            if (r == TLS_OK) sdone = 1;
            else if (r == TLS_ERR) failed = 1;
        }
    }
    ERR_clear_error();
    if (sdone && cdone) {
        char b[64] = "";
        ssize_t w = tls_write(s, "hello", 5);
        int r = SSL_read(cl, b, sizeof b);
        int ok = w == 5 && r == 5 && memcmp(b, "hello", 5) == 0;
        ssize_t rr = tls_read(s, b, sizeof b);
        ok = ok && rr == TLS_WANT_READ;            /* nothing sent yet: would block */
        SSL_write(cl, "ping", 4);
        rr = tls_read(s, b, sizeof b);
        ok = ok && rr == 4 && memcmp(b, "ping", 4) == 0;
        SSL_shutdown(cl);
        rr = tls_read(s, b, sizeof b);
        ok = ok && rr == TLS_EOF;
        X509 *peer = SSL_get1_peer_certificate(cl);
        if (ok && peer) X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, (int)cnlen);
        X509_free(peer);
    }
    ERR_clear_error();
    SSL_free(cl);
    SSL_CTX_free(cctx);
    tls_conn_free(s, 1);
    close(sv[0]);
    close(sv[1]);
}

TEST(sni_chooses_certificate_and_io_works)
{
    char a_crt[512], a_key[512], b_crt[512], b_key[512], c_crt[512], c_key[512], err[512] = "";
    const char *an[] = {"alpha.test", NULL}, *bn[] = {"*.beta.test", NULL}, *cn_[] = {"exact.beta.test", NULL};
    CHECK(make_pair("a", an, a_crt, a_key) == 0);
    CHECK(make_pair("wb", bn, b_crt, b_key) == 0);
    CHECK(make_pair("xb", cn_, c_crt, c_key) == 0);
    /* The wildcard comes before the exact name: the exact name still wins. */
    tls_config c = {.cert = {a_crt, b_crt, c_crt}, .key = {a_key, b_key, c_key}, .n = 3};
    tls_ctx *t = tls_ctx_new(&c, err, sizeof err);
    CHECK(t != NULL);
    if (!t) { printf("  %s\n", err); return; }
    CHECK_INT(tls_ctx_count(t), 3);
    CHECK_STR(tls_ctx_names(t, 1), "*.beta.test");
    char cn[128];
    handshake(t, "alpha.test", cn, sizeof cn, NULL);
    CHECK_STR(cn, "alpha.test");
    handshake(t, "shop.beta.test", cn, sizeof cn, NULL);
    CHECK_STR(cn, "*.beta.test");
    handshake(t, "exact.beta.test", cn, sizeof cn, NULL);
    CHECK_STR(cn, "exact.beta.test");
    handshake(t, "unknown.test", cn, sizeof cn, NULL);
    CHECK_STR(cn, "alpha.test");
    handshake(t, NULL, cn, sizeof cn, NULL);
    CHECK_STR(cn, "alpha.test");
    handshake(t, "alpha.test", cn, sizeof cn, "1.1");
    CHECK_STR(cn, "");                              /* TLS 1.1 is refused */
    tls_ctx_free(t);
}

int main(void)
{
    if (!test_mkdtemp(dir, sizeof dir)) { perror("mkdtemp"); return 1; }
    RUN(hostroute_default_service);
    RUN(hostroute_named_service);
    RUN(hostroute_names_and_redirects);
    RUN(name_match);
    RUN(selfsigned_made_then_reused_then_remade_for_new_names);
    RUN(ctx_errors_are_sentences);
    RUN(sni_chooses_certificate_and_io_works);
    test_rmtree(dir);
    return test_report();
}
