/* fuzz_tls - libFuzzer target for the router's TLS server side and host
 * routing.
 *
 * The input is used twice: as a Host header value for hostroute_served()
 * and hostroute_redirect_url() under a custom domain, and as the bytes a
 * client sends to a TLS listener: written into one end of a socket pair,
 * then the server end (a tls_conn with a self-signed certificate made once
 * under /tmp) is driven with tls_handshake()/tls_read() until it fails,
 * ends or would block, exactly as the router's loop drives it. Seeds: a
 * real ClientHello, Host names. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "router/hostroute.h"
#include "router/tls.h"

static tls_ctx *ctx;

static void setup(void)
{
    char dir[64], crt[512], key[512], err[512];
    snprintf(dir, sizeof dir, "/tmp/cz-fuzz-tls-%d", (int)getuid());
    const char *names[] = {"localhost", "*.example.com", NULL};
    int created;
    if (tls_selfsigned(dir, names, crt, sizeof crt, key, sizeof key, &created, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    tls_config c = {.cert = {crt}, .key = {key}, .n = 1};
    ctx = tls_ctx_new(&c, err, sizeof err);
    if (!ctx) { fprintf(stderr, "%s\n", err); abort(); }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) setup();
    hostroute h = {.domain = "example.com", .app = "shop", .version = "v1", .service = "api"};
    (void)hostroute_served(&h, (const char *)data, size);
    buf b = BUF_INIT;
    hostroute_redirect_url((const char *)data, size, 1, 8443, "/x", 2, &b);
    buf_free(&b);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) return 0;
    size_t n = size > 100000 ? 100000 : size;
    ssize_t w = write(sv[1], data, n);
    (void)w;
    shutdown(sv[1], SHUT_WR);
    tls_conn *c = tls_conn_new(ctx, sv[0]);
    int done = 0;
    for (int i = 0; i < 64 && c; i++) {
        if (!done) {
            int r = tls_handshake(c);
            if (r == TLS_OK) done = 1;
            else break;
        } else {
            char tmp[4096];
            ssize_t r = tls_read(c, tmp, sizeof tmp);
            if (r <= 0) break;
        }
    }
    tls_conn_free(c, 1);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
