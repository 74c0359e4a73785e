/* Unit tests for the API server (src/api/server.c): the protocol engine is
 * driven through api_conn_feed exactly as the socket layer drives it, with
 * test services registered alongside the real capability_service; one test
 * runs the real threaded server over loopback sockets. */
#include "api/api.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "api/ticket.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "proto/pb.h"
#include "proto/remote_api.h"

static char home[256];
static int sleep_calls;

/* test.Echo: replies with "app|version|ns|email|id|admin|reqid|request". */
static void echo(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *r)
{
    buf_printf(&r->response, "%s|%s|%s|%s|%s|%d|%s|", ctx->app_id, ctx->version, ctx->ns,
               ctx->user_email, ctx->user_id, ctx->user_is_admin, ctx->request_id);
    buf_append(&r->response, req, len);
}

/* test.Sleep: sleeps the milliseconds given as the request text. */
static void slow(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *r)
{
    char tmp[16] = "";
    memcpy(tmp, req, len < 15 ? len : 15);
    sleep_calls++;
    usleep((useconds_t)atoi(tmp) * 1000);
    buf_puts(&r->response, "slept");
}

static void app_err(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *r)
{
    api_app_error(r, 2, "collision on %s", "entity group");
}

static api_server *new_server(const char *only_app, size_t max_request)
{
    api_server_config cfg = { .home = home, .max_request = max_request, .app_id = only_app, .threads = 4 };
    char err[256];
    api_server *srv = api_server_new(&cfg, err, sizeof err);
    if (!srv) { printf("api_server_new: %s\n", err); exit(1); }
    api_register_all(srv, home);
    api_register(srv, "test", "Echo", echo, NULL);
    api_register(srv, "test", "Sleep", slow, NULL);
    api_register(srv, "test", "AppErr", app_err, NULL);
    return srv;
}

static char *ticket_for(const char *app, int64_t ttl_s, int64_t now_ms)
{
    ticket_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.app_id, sizeof c.app_id, "%s", app);
    snprintf(c.version, sizeof c.version, "v1.123");
    snprintf(c.ns, sizeof c.ns, "ns1");
    snprintf(c.user_email, sizeof c.user_email, "bob@example.com");
    snprintf(c.user_id, sizeof c.user_id, "42");
    snprintf(c.request_id, sizeof c.request_id, "req-9");
    ticket_key key;
    char err[256];
    if (ticket_key_load(home, &key, err, sizeof err) < 0) { printf("%s\n", err); exit(1); }
    char *t = ticket_mint(&key, &c, now_ms, ttl_s, err, sizeof err);
    if (!t) { printf("%s\n", err); exit(1); }
    return t;
}

/* An HTTP POST of a remote_api Request. extra: more header lines. */
static void rpc_request(buf *out, const char *svc, const char *meth, const char *payload,
                        const char *ticket, const char *extra)
{
    buf body = BUF_INIT;
    remote_api_request r = {
        .service = svc, .service_len = strlen(svc), .method = meth, .method_len = strlen(meth),
        .request = (const uint8_t *)payload, .request_len = strlen(payload),
        .request_id = ticket, .request_id_len = ticket ? strlen(ticket) : 0,
    };
    remote_api_request_encode(&body, &r);
    buf_printf(out, "POST /rpc_http HTTP/1.1\r\nHost: api\r\nContent-Type: application/octet-stream\r\n"
               "X-Google-RPC-Service-Endpoint: app-engine-apis\r\n"
               "X-Google-RPC-Service-Method: /VMRemoteAPI.CallRemoteAPI\r\n%sContent-Length: %zu\r\n\r\n",
               extra ? extra : "", body.len);
    buf_append(out, body.data, body.len);
    buf_free(&body);
}

typedef struct {
    int status;
    int closes;
    remote_api_response resp;   /* valid when status == 200 */
    char body[4096];
    size_t body_len;
} reply;

/* Take one HTTP response off the front of out. 0, or -1 if none is there. */
static int next_reply(buf *out, reply *rp)
{
    http_response h;
    memset(rp, 0, sizeof *rp);
    rp->resp.kind = (remote_api_kind)-1;   /* matches nothing until decoded */
    if (http_parse_response(buf_rp(out), buf_unread(out), &h, NULL) != HTTP_OK) return -1;
    if (h.content_length < 0 || buf_unread(out) < h.head_len + (size_t)h.content_length) return -1;
    rp->status = h.status;
    rp->closes = !h.keep_alive;
    rp->body_len = (size_t)h.content_length < sizeof rp->body ? (size_t)h.content_length : sizeof rp->body;
    memcpy(rp->body, buf_rp(out) + h.head_len, rp->body_len);
    buf_consume(out, h.head_len + (size_t)h.content_length);
    if (h.status == 200) {
        char err[128];
        if (remote_api_response_decode(rp->body, rp->body_len, &rp->resp, err, sizeof err) < 0) return -1;
    }
    return 0;
}

/* Feed in as one piece; expect exactly one reply. */
static int one_call(api_server *srv, buf *in, reply *rp)
{
    api_conn *c = api_conn_new(srv);
    buf out = BUF_INIT;
    int closed = api_conn_feed(c, in->data, in->len, &out);
    int r = next_reply(&out, rp);
    int extra = buf_unread(&out) != 0;
    buf_free(&out);
    api_conn_free(c);
    buf_reset(in);
    return r < 0 || extra ? -1 : closed;
}

#define RPC_CODE(rp, want) do { CHECK_INT((rp).status, 200); CHECK_INT((rp).resp.kind, REMOTE_API_RPC_ERROR); \
    CHECK_INT((rp).resp.code, want); } while (0)

TEST(call_ok_with_ticket_context)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf in = BUF_INIT;
    reply rp;
    rpc_request(&in, "test", "Echo", "payload", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.status, 200);
    CHECK_INT(rp.resp.kind, REMOTE_API_OK);
    const char *want = "dev~demo|v1.123|ns1|bob@example.com|42|0|req-9|payload";
    CHECK(rp.resp.response_len == strlen(want) && !memcmp(rp.resp.response, want, strlen(want)));
    free(t);
    buf_free(&in);
    api_server_stop(srv);
}

TEST(capability_is_enabled)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf req = BUF_INIT, in = BUF_INIT;
    pb_put_str(&req, 1, "datastore_v3");
    pb_put_str(&req, 2, "*");
    pb_put_str(&req, 2, "write");
    rpc_request(&in, "capability_service", "IsEnabled", buf_cstr(&req), t, NULL);
    reply rp;
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.resp.kind, REMOTE_API_OK);
    pb_reader r, sub;
    pb_reader_init(&r, rp.resp.response, rp.resp.response_len);
    uint32_t f; int wt, configs = 0;
    uint64_t summary = 0;
    while (pb_next(&r, &f, &wt) == 1) {
        if (f == 1) CHECK_INT(pb_varint(&r, wt, &summary), 0);
        else if (f == 3) {
            CHECK_INT(pb_sub(&r, wt, &sub), 0);
            uint32_t f2; int w2; uint64_t st = 0; const uint8_t *p; size_t n;
            while (pb_next(&sub, &f2, &w2) == 1) {
                if (f2 == 1) { CHECK_INT(pb_bytes(&sub, w2, &p, &n), 0); CHECK(n == 12 && !memcmp(p, "datastore_v3", 12)); }
                else if (f2 == 2) { CHECK_INT(pb_bytes(&sub, w2, &p, &n), 0); CHECK(n == (configs ? 5u : 1u)); }
                else if (f2 == 3) CHECK_INT(pb_varint(&sub, w2, &st), 0);
                else pb_skip(&sub, w2, f2);
            }
            CHECK_INT(st, 1);   /* ENABLED */
            configs++;
        } else pb_skip(&r, wt, f);
    }
    CHECK_INT(summary, 1);      /* ENABLED */
    CHECK_INT(configs, 2);
    /* No package: the SDK never sends that; refused as unparsable. */
    rpc_request(&in, "capability_service", "IsEnabled", "\x12\x01*", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_PARSE_ERROR);
    free(t);
    buf_free(&req);
    buf_free(&in);
    api_server_stop(srv);
}

TEST(error_kinds)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf in = BUF_INIT;
    reply rp;
    rpc_request(&in, "nosuch", "Get", "", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_CALL_NOT_FOUND);
    rpc_request(&in, "test", "Nope", "", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_CALL_NOT_FOUND);
    CHECK(memchr(rp.resp.detail, '%', rp.resp.detail_len) == NULL);
    rpc_request(&in, "test%s%n", "Nope", "", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_CALL_NOT_FOUND);
    CHECK(memchr(rp.resp.detail, '%', rp.resp.detail_len) == NULL);
    rpc_request(&in, "test", "AppErr", "", t, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.resp.kind, REMOTE_API_APP_ERROR);
    CHECK_INT(rp.resp.code, 2);
    CHECK(rp.resp.detail_len == 25 && !memcmp(rp.resp.detail, "collision on entity group", 25));
    /* Garbage body. */
    buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n\xff\xff\xff\xff\xff");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_PARSE_ERROR);
    /* No body at all. */
    buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_PARSE_ERROR);
    free(t);
    buf_free(&in);
    api_server_stop(srv);
}

TEST(security_violations)
{
    api_server *srv = new_server("dev~demo", 0);
    int64_t now = ticket_now_ms();
    char *good = ticket_for("dev~demo", 60, now);
    char *other = ticket_for("dev~other", 60, now);
    char *expired = ticket_for("dev~demo", 1, now - 2000);
    char forged[TICKET_MAX_LEN + 1];
    snprintf(forged, sizeof forged, "%s", good);
    forged[6] = forged[6] == 'x' ? 'y' : 'x';
    buf in = BUF_INIT;
    reply rp;
    const char *bad[] = { NULL, "", "cz1.nonsense", forged, other, expired };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rpc_request(&in, "test", "Echo", "x", bad[i], NULL);
        CHECK_INT(one_call(srv, &in, &rp), 0);
        RPC_CODE(rp, RPC_SECURITY_VIOLATION);
    }
    /* Security comes before lookup: no service enumeration without a ticket. */
    rpc_request(&in, "nosuch", "Get", "", NULL, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_SECURITY_VIOLATION);
    rpc_request(&in, "test", "Echo", "x", good, NULL);
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.resp.kind, REMOTE_API_OK);
    free(good); free(other); free(expired);
    buf_free(&in);
    api_server_stop(srv);
}

TEST(deadlines)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf in = BUF_INIT;
    reply rp;
    sleep_calls = 0;
    rpc_request(&in, "test", "Sleep", "120", t, "X-Google-RPC-Service-Deadline: 0.05\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_DEADLINE_EXCEEDED);
    CHECK_INT(sleep_calls, 1);
    /* Already past on arrival: the method is not run at all. */
    rpc_request(&in, "test", "Sleep", "1", t, "X-Google-RPC-Service-Deadline: 0\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    RPC_CODE(rp, RPC_DEADLINE_EXCEEDED);
    CHECK_INT(sleep_calls, 1);
    /* Within the deadline (the Go SDK sends fractional seconds). */
    rpc_request(&in, "test", "Sleep", "10", t, "X-Google-RPC-Service-Deadline: 4.99999\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.resp.kind, REMOTE_API_OK);
    /* Unreadable deadline: the default (60 s) applies. */
    rpc_request(&in, "test", "Sleep", "10", t, "X-Google-RPC-Service-Deadline: soon\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK_INT(rp.resp.kind, REMOTE_API_OK);
    free(t);
    buf_free(&in);
    api_server_stop(srv);
}

TEST(keepalive_pipelining_and_byte_at_a_time)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf in = BUF_INIT, out = BUF_INIT;
    rpc_request(&in, "test", "Echo", "one", t, NULL);
    rpc_request(&in, "nosuch", "X", "", t, NULL);
    buf_puts(&in, "GET /rpc_http HTTP/1.1\r\nHost: a\r\n\r\n");
    buf_puts(&in, "POST /other HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    rpc_request(&in, "test", "Echo", "two", t, NULL);
    for (int mode = 0; mode < 2; mode++) {
        api_conn *c = api_conn_new(srv);
        if (mode == 0) CHECK_INT(api_conn_feed(c, in.data, in.len, &out), 0);
        else for (size_t i = 0; i < in.len; i++) CHECK_INT(api_conn_feed(c, in.data + i, 1, &out), 0);
        reply rp;
        CHECK_INT(next_reply(&out, &rp), 0);
        CHECK(rp.resp.kind == REMOTE_API_OK && rp.resp.response_len > 3 &&
              !memcmp(rp.resp.response + rp.resp.response_len - 3, "one", 3));
        CHECK_INT(next_reply(&out, &rp), 0);
        RPC_CODE(rp, RPC_CALL_NOT_FOUND);
        CHECK_INT(next_reply(&out, &rp), 0);
        CHECK_INT(rp.status, 405);
        CHECK_INT(next_reply(&out, &rp), 0);
        CHECK_INT(rp.status, 404);
        CHECK_INT(next_reply(&out, &rp), 0);
        CHECK(rp.resp.kind == REMOTE_API_OK && !memcmp(rp.resp.response + rp.resp.response_len - 3, "two", 3));
        CHECK_INT(buf_unread(&out), 0);
        api_conn_free(c);
        buf_reset(&out);
    }
    free(t);
    buf_free(&in);
    buf_free(&out);
    api_server_stop(srv);
}

TEST(chunked_and_expect_continue)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf body = BUF_INIT, in = BUF_INIT, out = BUF_INIT;
    rpc_request(&body, "test", "Echo", "chunky", t, NULL);
    const char *p = strstr(body.data, "\r\n\r\n") + 4;
    size_t n = body.len - (size_t)(p - body.data);
    buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    buf_printf(&in, "%zx\r\n", n / 2);
    buf_append(&in, p, n / 2);
    buf_printf(&in, "\r\n%zx;ext=1\r\n", n - n / 2);
    buf_append(&in, p + n / 2, n - n / 2);
    buf_puts(&in, "\r\n0\r\nTrailer: x\r\n\r\n");
    api_conn *c = api_conn_new(srv);
    CHECK_INT(api_conn_feed(c, in.data, in.len, &out), 0);
    CHECK(!strncmp(buf_rp(&out), "HTTP/1.1 100 Continue\r\n\r\n", 25));
    buf_consume(&out, 25);
    reply rp;
    CHECK_INT(next_reply(&out, &rp), 0);
    CHECK(rp.resp.kind == REMOTE_API_OK && !memcmp(rp.resp.response + rp.resp.response_len - 6, "chunky", 6));
    /* Broken chunk framing: 400 and close. */
    buf_reset(&out);
    static const char broken[] = "POST /rpc_http HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    CHECK_INT(api_conn_feed(c, broken, sizeof broken - 1, &out), 1);
    CHECK_INT(next_reply(&out, &rp), 0);
    CHECK_INT(rp.status, 400);
    CHECK(rp.closes);
    api_conn_free(c);
    free(t);
    buf_free(&body); buf_free(&in); buf_free(&out);
    api_server_stop(srv);
}

TEST(too_large_is_drained_and_connection_survives)
{
    api_server *srv = new_server(NULL, 4096);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    char *big = xmalloc(10001);
    memset(big, 'a', 10000);
    big[10000] = 0;
    buf in = BUF_INIT, out = BUF_INIT;
    for (int chunked = 0; chunked < 2; chunked++) {
        api_conn *c = api_conn_new(srv);
        if (!chunked) rpc_request(&in, "test", "Echo", big, t, NULL);
        else {
            buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
            for (int i = 0; i < 5; i++) { buf_puts(&in, "7d0\r\n"); buf_append(&in, big, 2000); buf_puts(&in, "\r\n"); }
            buf_puts(&in, "0\r\n\r\n");
        }
        rpc_request(&in, "test", "Echo", "after", t, NULL);
        /* Arrives in 1000-byte reads, as from a socket. */
        for (size_t off = 0; off < in.len; off += 1000)
            CHECK_INT(api_conn_feed(c, in.data + off, in.len - off < 1000 ? in.len - off : 1000, &out), 0);
        reply rp;
        CHECK_INT(next_reply(&out, &rp), 0);
        RPC_CODE(rp, RPC_REQUEST_TOO_LARGE);
        CHECK(!chunked || memmem(rp.resp.detail, rp.resp.detail_len, "10000 bytes", 11) != NULL);
        CHECK_INT(next_reply(&out, &rp), 0);
        CHECK(rp.resp.kind == REMOTE_API_OK && !memcmp(rp.resp.response + rp.resp.response_len - 5, "after", 5));
        api_conn_free(c);
        buf_reset(&in);
        buf_reset(&out);
    }
    /* Too large with Expect: 100-continue: refused before the body is sent. */
    buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n");
    reply rp;
    CHECK_INT(one_call(srv, &in, &rp), 1);
    RPC_CODE(rp, RPC_REQUEST_TOO_LARGE);
    CHECK(rp.resp.detail_len > 0 && memmem(rp.resp.detail, rp.resp.detail_len, "999999 bytes", 12) != NULL);
    free(big);
    free(t);
    buf_free(&in); buf_free(&out);
    api_server_stop(srv);
}

TEST(malformed_http_and_close)
{
    api_server *srv = new_server(NULL, 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    buf in = BUF_INIT, out = BUF_INIT;
    reply rp;
    const char *bad[] = {
        "POST /rpc_http HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "BLAH\r\n\r\n",
        "POST /rpc_http HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST /rpc_http HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_puts(&in, bad[i]);
        CHECK_INT(one_call(srv, &in, &rp), 1);
        CHECK_INT(rp.status, 400);
        CHECK(rp.closes);
    }
    /* After the close, nothing more is answered. */
    api_conn *c = api_conn_new(srv);
    CHECK_INT(api_conn_feed(c, bad[1], strlen(bad[1]), &out), 1);
    buf_reset(&out);
    rpc_request(&in, "test", "Echo", "x", t, NULL);
    CHECK_INT(api_conn_feed(c, in.data, in.len, &out), 1);
    CHECK_INT(buf_unread(&out), 0);
    api_conn_free(c);
    buf_reset(&in);
    /* Oversized head: 431. */
    char *huge = xmalloc(70000);
    memset(huge, 'a', 70000);
    buf_puts(&in, "POST /rpc_http HTTP/1.1\r\nHost: a\r\nX-Pad: ");
    buf_append(&in, huge, 70000);
    CHECK_INT(one_call(srv, &in, &rp), 1);
    CHECK_INT(rp.status, 431);
    free(huge);
    /* Connection: close and HTTP/1.0 end the connection after the reply. */
    rpc_request(&in, "test", "Echo", "x", t, "Connection: close\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 1);
    CHECK(rp.closes && rp.resp.kind == REMOTE_API_OK);
    buf_puts(&in, "GET / HTTP/1.0\r\n\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 1);
    CHECK_INT(rp.status, 404);
    buf_puts(&in, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK_INT(one_call(srv, &in, &rp), 0);
    CHECK(!rp.closes);
    free(t);
    buf_free(&in); buf_free(&out);
    api_server_stop(srv);
}

TEST(real_sockets)
{
    api_server_config cfg = { .home = home, .threads = 2 };
    char err[256];
    api_server *srv = api_server_new(&cfg, err, sizeof err);
    CHECK(srv != NULL);
    if (!srv) return;
    api_register_all(srv, home);
    api_register(srv, "test", "Echo", echo, NULL);
    CHECK_INT(api_server_start(srv, err, sizeof err), 0);
    CHECK(api_server_port(srv) > 0);
    char *t = ticket_for("dev~demo", 60, ticket_now_ms());
    int fds[20];
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)api_server_port(srv)) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    buf in = BUF_INIT, out = BUF_INIT;
    rpc_request(&in, "test", "Echo", "sock", t, NULL);
    for (int round = 0; round < 2; round++)   /* the second round reuses each connection */
        for (int i = 0; i < 20; i++) {
            if (round == 0) {
                fds[i] = socket(AF_INET, SOCK_STREAM, 0);
                CHECK_INT(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
            }
            CHECK_INT(write(fds[i], in.data, in.len), in.len);
            reply rp;
            buf_reset(&out);
            for (;;) {
                char tmp[4096];
                ssize_t n = read(fds[i], tmp, sizeof tmp);
                if (n <= 0) break;
                buf_append(&out, tmp, (size_t)n);
                if (next_reply(&out, &rp) == 0) break;
            }
            CHECK(rp.status == 200 && rp.resp.kind == REMOTE_API_OK);
        }
    /* Stop with the connections still open: everything is closed and freed. */
    api_server_stop(srv);
    char tmp[16];
    for (int i = 0; i < 20; i++) { CHECK_INT(read(fds[i], tmp, sizeof tmp), 0); close(fds[i]); }
    free(t);
    buf_free(&in); buf_free(&out);
}

TEST(idle_connections_are_closed)
{
    api_server_config cfg = { .home = home, .threads = 1, .idle_timeout_s = 1 };
    char err[256];
    api_server *srv = api_server_new(&cfg, err, sizeof err);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK_INT(api_server_start(srv, err, sizeof err), 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)api_server_port(srv)) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    /* Half a request head, then silence: closed after the idle timeout. */
    CHECK_INT(write(fd, "POST /rpc_http HTTP/1.1\r\n", 25), 25);
    int64_t t0 = now_ms();
    char tmp[64];
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK_INT(read(fd, tmp, sizeof tmp), 0);
    int64_t waited = now_ms() - t0;
    CHECK(waited >= 900 && waited < 5000);
    close(fd);
    api_server_stop(srv);
}

int main(void)
{
    snprintf(home, sizeof home, "/tmp/cz-test-apiserver-XXXXXX");
    if (!mkdtemp(home)) { perror("mkdtemp"); return 1; }
    log_init(2, LOG_ERROR);
    RUN(call_ok_with_ticket_context);
    RUN(capability_is_enabled);
    RUN(error_kinds);
    RUN(security_violations);
    RUN(deadlines);
    RUN(keepalive_pipelining_and_byte_at_a_time);
    RUN(chunked_and_expect_continue);
    RUN(too_large_is_drained_and_connection_survives);
    RUN(malformed_http_and_close);
    RUN(real_sockets);
    RUN(idle_connections_are_closed);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
    if (system(cmd) != 0) printf("could not remove %s\n", home);
    return test_report();
}
