/* fuzz_remote_api.c - libFuzzer target for the API server's input handling.
 *
 * Each input is used three ways:
 *  1. as a remote_api Request (and Response) body: decode; a decoded Request
 *     must re-encode and decode to the same fields;
 *  2. as the raw bytes of one HTTP connection to the API server, fed to the
 *     protocol engine (api_conn_feed) whole and then again in pieces whose
 *     sizes come from the input, as a socket would deliver them;
 *  3. as the inner request of a correctly ticketed capability_service
 *     IsEnabled call, so the service decoder sees arbitrary bytes too.
 * The server is created once (with a throw-away CYCLOZZO_HOME) and never
 * started: no sockets or threads are involved. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/ticket.h"
#include "core/log.h"
#include "proto/remote_api.h"

static api_server *srv;
static char *ticket;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char home[] = "/tmp/cz-fuzz-remote-api-XXXXXX";
    if (!mkdtemp(home)) { perror("mkdtemp"); abort(); }
    log_init(2, LOG_ERROR);
    char err[256];
    api_server_config cfg = { .home = home, .max_request = 1 << 16 };
    srv = api_server_new(&cfg, err, sizeof err);
    if (!srv) { fprintf(stderr, "%s\n", err); abort(); }
    api_register_all(srv, home);
    ticket_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.app_id, sizeof c.app_id, "dev~fuzz");
    ticket = ticket_mint_home(home, &c, TICKET_MAX_TTL_S, err, sizeof err);
    if (!ticket) { fprintf(stderr, "%s\n", err); abort(); }
    return 0;
}

static void same(const void *a, size_t an, const void *b, size_t bn)
{
    if (an != bn || (an && memcmp(a, b, an))) abort();
}

static void check_request_roundtrip(const uint8_t *data, size_t size)
{
    remote_api_request r, r2;
    char err[256];
    if (remote_api_request_decode(data, size, &r, err, sizeof err) < 0) return;
    buf b = BUF_INIT;
    remote_api_request_encode(&b, &r);
    if (remote_api_request_decode(b.data, b.len, &r2, err, sizeof err) < 0) abort();
    same(r.service, r.service_len, r2.service, r2.service_len);
    same(r.method, r.method_len, r2.method, r2.method_len);
    same(r.request, r.request_len, r2.request, r2.request_len);
    if (!r.request_id != !r2.request_id) abort();
    if (r.request_id) same(r.request_id, r.request_id_len, r2.request_id, r2.request_id_len);
    buf_free(&b);
}

static void feed_connection(const uint8_t *data, size_t size)
{
    buf out = BUF_INIT;
    api_conn *c = api_conn_new(srv);
    api_conn_feed(c, data, size, &out);
    api_conn_free(c);
    buf_reset(&out);

    c = api_conn_new(srv);
    size_t off = 0, step = size ? (size_t)data[0] % 97 + 1 : 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        if (api_conn_feed(c, data + off, n, &out)) break;
        off += n;
        step = step * 7 % 97 + 1;
    }
    api_conn_free(c);
    buf_free(&out);
}

static void ticketed_capability_call(const uint8_t *data, size_t size)
{
    remote_api_request r = {
        .service = "capability_service", .service_len = 18, .method = "IsEnabled", .method_len = 9,
        .request = data, .request_len = size, .request_id = ticket, .request_id_len = strlen(ticket),
    };
    buf body = BUF_INIT, in = BUF_INIT, out = BUF_INIT;
    remote_api_request_encode(&body, &r);
    buf_printf(&in, "POST /rpc_http HTTP/1.1\r\nHost: api\r\nContent-Length: %zu\r\n\r\n", body.len);
    buf_append(&in, body.data, body.len);
    api_conn *c = api_conn_new(srv);
    if (api_conn_feed(c, in.data, in.len, &out) != 0 || !buf_unread(&out)) abort();
    api_conn_free(c);
    buf_free(&body); buf_free(&in); buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_request_roundtrip(data, size);
    remote_api_response resp;
    char err[256];
    remote_api_response_decode(data, size, &resp, err, sizeof err);
    feed_connection(data, size);
    ticketed_capability_call(data, size);
    return 0;
}
