/* server.c - the /rpc_http API server: HTTP/1.1 in, remote_api calls out.
 *
 * Two layers:
 *
 *  - The protocol engine (api_conn): a per-connection state machine fed raw
 *    bytes. It parses request heads with http.h, frames bodies
 *    (Content-Length or chunked), discards bodies over max_request without
 *    buffering them, decodes the remote_api Request, verifies the ticket,
 *    dispatches to the registered method and appends the encoded HTTP
 *    response to an output buffer. It never touches a socket, so the unit
 *    tests and the fuzzer drive exactly the code the server runs.
 *
 *  - The socket layer: one accept thread and a pool of worker threads that
 *    all wait on one epoll set. Every connection is registered EPOLLONESHOT,
 *    so exactly one worker owns a ready connection at a time: it reads what
 *    is there, feeds the engine (running any complete call inline), writes
 *    the response, and re-arms the connection for reading (or for writing,
 *    when the client is slow to take its response). Idle keep-alive
 *    connections cost one small struct and no thread or buffer, so thousands
 *    can stay open. The accept thread also sweeps, once a second, for
 *    connections idle longer than idle_timeout_s and shuts them down (the
 *    owning worker then closes them); connections are freed only under the
 *    list lock, so the sweep never touches a closed descriptor.
 *
 * API errors travel as remote_api Responses in HTTP 200, as Google's service
 * bridge does; the SDKs turn any other status into a generic failure. */
#include "api/api.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "api/ticket.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "proto/remote_api.h"

#define DEFAULT_THREADS      16
#define DEFAULT_MAX_REQUEST  (32u << 20)
#define DEFAULT_IDLE_S       120
#define DEFAULT_DEADLINE_S   60.0
#define MAX_DEADLINE_S       86400.0
#define DISCARD_LIMIT        ((int64_t)1 << 32)  /* bodies beyond this are not drained */
#define NBUCKETS             256
#define MAX_NAME             128                 /* longest service or method name */
#define RPC_PATH             "/rpc_http"
#define MAX_EXTRA            512                 /* workers beyond `threads` for blocked calls */
#define RESPONSE_SLACK       (1u << 20)          /* framing allowed above max_request in responses */

/* ---- registry ---- */

typedef struct method {
    char *service, *name;
    api_method_fn fn;
    void *data;
    struct method *next;
} method;

typedef struct sconn sconn;

typedef struct cleanup {
    void (*fn)(void *);
    void *data;
    struct cleanup *next;
} cleanup;

typedef struct shared {
    char *name;
    void *p;
    struct shared *next;
} shared;

struct api_server {
    char *home, *host, *app_id;
    int port_wanted, nthreads, idle_timeout_s;
    size_t max_request;
    http_limits limits;
    ticket_key key;
    method *buckets[NBUCKETS];

    /* socket layer */
    int started;
    int lfd, epfd, wakefd, port;
    atomic_int stopping;
    pthread_t acceptor;
    pthread_t *workers;
    int nworkers, capworkers;
    int nblocked;                /* calls inside api_blocking_begin/end; guarded by lock */
    pthread_mutex_t lock;        /* guards the connection list */
    sconn *conns;
    long nconns;
    cleanup *cleanups;           /* api_on_stop: run newest first */
    shared *shares;              /* api_share: named pointers between services */
    api_http_fn http_fn;         /* api_set_http_get: plain GETs (metadata server) */
    void *http_data;
};

static uint32_t name_hash(const char *s, size_t sn, const char *m, size_t mn)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sn; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    h = (h ^ '.') * 16777619u;
    for (size_t i = 0; i < mn; i++) h = (h ^ (uint8_t)m[i]) * 16777619u;
    return h % NBUCKETS;
}

static method *lookup(api_server *srv, const char *s, size_t sn, const char *m, size_t mn, int *service_known)
{
    for (method *x = srv->buckets[name_hash(s, sn, m, mn)]; x; x = x->next)
        if (strlen(x->service) == sn && !memcmp(x->service, s, sn) &&
            strlen(x->name) == mn && !memcmp(x->name, m, mn))
            return x;
    *service_known = 0;
    for (int b = 0; b < NBUCKETS && !*service_known; b++)
        for (method *x = srv->buckets[b]; x; x = x->next)
            if (strlen(x->service) == sn && !memcmp(x->service, s, sn)) { *service_known = 1; break; }
    return NULL;
}

void api_register(api_server *srv, const char *service, const char *name,
                  api_method_fn fn, void *service_data)
{
    if (srv->started) {
        log_error("api", "msg=\"method registered after the server started; ignored\" call=%s.%s", service, name);
        return;
    }
    uint32_t h = name_hash(service, strlen(service), name, strlen(name));
    for (method *x = srv->buckets[h]; x; x = x->next)
        if (!strcmp(x->service, service) && !strcmp(x->name, name)) {
            log_warn("api", "msg=\"method registered twice; the later one wins\" call=%s.%s", service, name);
            x->fn = fn;
            x->data = service_data;
            return;
        }
    method *x = xcalloc(1, sizeof *x);
    x->service = xstrdup(service);
    x->name = xstrdup(name);
    x->fn = fn;
    x->data = service_data;
    x->next = srv->buckets[h];
    srv->buckets[h] = x;
}

void api_share(api_server *srv, const char *name, void *p)
{
    for (shared *s = srv->shares; s; s = s->next)
        if (!strcmp(s->name, name)) { s->p = p; return; }
    shared *s = xcalloc(1, sizeof *s);
    s->name = xstrdup(name);
    s->p = p;
    s->next = srv->shares;
    srv->shares = s;
}

void api_set_http_get(api_server *srv, api_http_fn fn, void *data)
{
    srv->http_fn = fn;
    srv->http_data = data;
}

void *api_shared(api_server *srv, const char *name)
{
    for (shared *s = srv->shares; s; s = s->next)
        if (!strcmp(s->name, name)) return s->p;
    return NULL;
}

void api_on_stop(api_server *srv, void (*fn)(void *), void *data)
{
    cleanup *c = xcalloc(1, sizeof *c);
    c->fn = fn;
    c->data = data;
    c->next = srv->cleanups;
    srv->cleanups = c;
}

void api_app_error(api_reply *r, int code, const char *fmt, ...)
{
    va_list ap;
    r->kind = API_REPLY_APP_ERROR;
    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

void api_rpc_error(api_reply *r, int code, const char *fmt, ...)
{
    va_list ap;
    r->kind = API_REPLY_RPC_ERROR;
    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

static const char *rpc_code_name(int code)
{
    static const char *names[] = {
        "UNKNOWN", "CALL_NOT_FOUND", "PARSE_ERROR", "SECURITY_VIOLATION", "OVER_QUOTA",
        "REQUEST_TOO_LARGE", "CAPABILITY_DISABLED", "FEATURE_DISABLED", "BAD_REQUEST",
        "RESPONSE_TOO_LARGE", "CANCELLED", "REPLAY_ERROR", "DEADLINE_EXCEEDED",
    };
    return code >= 0 && code <= RPC_DEADLINE_EXCEEDED ? names[code] : "UNKNOWN";
}

/* ---- the protocol engine ---- */

enum { ST_HEAD, ST_BODY, ST_CHUNKED, ST_CLOSED };
enum { DISP_CALL, DISP_NOT_FOUND, DISP_BAD_METHOD, DISP_TOO_LARGE, DISP_HTTP };

struct api_conn {
    api_server *srv;
    buf in;                /* received, not yet consumed */
    buf body;              /* chunked body being assembled */
    http_chunked chunk;
    int state, disp;
    int64_t remaining;     /* Content-Length bytes still to come */
    int64_t seen;          /* body bytes seen (for discards) */
    int keep_alive, minor;
    double deadline_s;     /* < 0: none given */
    int64_t start_us;      /* when the head arrived */
    char *target;          /* DISP_HTTP: the request target */
};

api_conn *api_conn_new(api_server *srv)
{
    api_conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->state = ST_HEAD;
    return c;
}

void api_conn_free(api_conn *c)
{
    if (!c) return;
    buf_free(&c->in);
    buf_free(&c->body);
    free(c->target);
    free(c);
}

static void http_respond(buf *out, int status, const char *extra, const char *ctype,
                         const void *body, size_t n, int keep_alive, int minor)
{
    buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
               status, http_reason(status), ctype, n, extra ? extra : "",
               !keep_alive ? "Connection: close\r\n" : minor == 0 ? "Connection: keep-alive\r\n" : "");
    buf_append(out, body, n);
}

static void http_error(buf *out, int status, const char *extra, int keep_alive, int minor)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "%d %s\n", status, http_reason(status));
    http_respond(out, status, extra, "text/plain; charset=utf-8", msg, (size_t)n, keep_alive, minor);
}

/* Copy a length-delimited name for logging and messages: printable ASCII
 * only, truncated, never containing '%'. */
static void safe_name(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[o++] = ch >= 0x20 && ch < 0x7f && ch != '%' ? (char)ch : '?';
    }
    dst[o] = 0;
}

/* Run one remote_api call whose body is body[0, n); append the HTTP reply. */
static void handle_call(api_conn *c, const uint8_t *body, size_t n, int too_large, buf *out)
{
    api_server *srv = c->srv;
    api_reply reply = { .kind = API_REPLY_OK };
    ticket_claims claims;
    memset(&claims, 0, sizeof claims);
    char svc[MAX_NAME + 1] = "", meth[MAX_NAME + 1] = "", err[256];
    int64_t deadline_us = c->start_us + (int64_t)((c->deadline_s < 0 ? DEFAULT_DEADLINE_S : c->deadline_s) * 1e6);
    remote_api_request rq;

    if (too_large) {
        api_rpc_error(&reply, RPC_REQUEST_TOO_LARGE, "The request of %lld bytes is larger than this API server's limit of %zu bytes.",
                      (long long)c->seen, srv->max_request);
        goto done;
    }
    if (remote_api_request_decode(body, n, &rq, err, sizeof err) < 0) {
        api_rpc_error(&reply, RPC_PARSE_ERROR, "%s.", err);
        goto done;
    }
    safe_name(svc, sizeof svc, rq.service, rq.service_len);
    safe_name(meth, sizeof meth, rq.method, rq.method_len);
    ticket_status ts = ticket_verify(&srv->key, rq.request_id, rq.request_id ? rq.request_id_len : 0,
                                     ticket_now_ms(), srv->app_id, &claims, err, sizeof err);
    if (ts != TICKET_OK) {
        api_rpc_error(&reply, RPC_SECURITY_VIOLATION, "%s", err);
        goto done;
    }
    int service_known = 1;
    method *m = lookup(srv, rq.service, rq.service_len, rq.method, rq.method_len, &service_known);
    if (!m) {
        if (service_known)
            api_rpc_error(&reply, RPC_CALL_NOT_FOUND, "The API service %s has no method %s.", svc, meth);
        else
            api_rpc_error(&reply, RPC_CALL_NOT_FOUND, "Cyclozzo provides no API service named %s.", svc);
        goto done;
    }
    if (now_us() >= deadline_us) {
        api_rpc_error(&reply, RPC_DEADLINE_EXCEEDED, "The call's deadline passed before it could start.");
        goto done;
    }
    api_ctx ctx = {
        .app_id = claims.app_id, .version = claims.version, .ns = claims.ns,
        .user_email = claims.user_email, .user_id = claims.user_id,
        .user_is_admin = claims.user_is_admin, .request_id = claims.request_id,
        .deadline_us = deadline_us, .server = srv, .service_data = m->data,
    };
    m->fn(&ctx, rq.request, rq.request_len, &reply);
    if (now_us() > deadline_us) {
        buf_free(&reply.response);
        reply.kind = API_REPLY_OK;
        api_rpc_error(&reply, RPC_DEADLINE_EXCEEDED, "The call ran past its deadline of %.3f s.",
                      (double)(deadline_us - c->start_us) / 1e6);
    } else if (reply.kind == API_REPLY_OK && reply.response.len > srv->max_request + RESPONSE_SLACK) {
        size_t len = reply.response.len;
        buf_free(&reply.response);
        api_rpc_error(&reply, RPC_RESPONSE_TOO_LARGE, "The response of %zu bytes is larger than the limit of %zu bytes.",
                      len, srv->max_request);
    }

done:;
    remote_api_response resp = {0};
    if (reply.kind == API_REPLY_OK) {
        resp.kind = REMOTE_API_OK;
        resp.response = (const uint8_t *)(reply.response.data ? reply.response.data : "");
        resp.response_len = reply.response.len;
    } else {
        resp.kind = reply.kind == API_REPLY_APP_ERROR ? REMOTE_API_APP_ERROR : REMOTE_API_RPC_ERROR;
        resp.code = reply.code;
        resp.detail = reply.detail;
        resp.detail_len = strnlen(reply.detail, sizeof reply.detail);
    }
    buf enc = BUF_INIT;
    remote_api_response_encode(&enc, &resp);
    http_respond(out, 200, NULL, "application/octet-stream", enc.data, enc.len, c->keep_alive, c->minor);
    buf_free(&enc);
    buf_free(&reply.response);

    int64_t latency = now_us() - c->start_us;
    const char *app = claims.app_id[0] ? claims.app_id : "-";
    char call[2 * MAX_NAME + 2];
    if (svc[0] || meth[0]) snprintf(call, sizeof call, "%s.%s", svc, meth);
    else snprintf(call, sizeof call, "-");
    if (reply.kind == API_REPLY_OK)
        log_debug("api", "app=%s call=%s status=ok latency_us=%lld request_id=%s",
                  log_q(app), log_q(call), (long long)latency, log_q(claims.request_id));
    else if (reply.kind == API_REPLY_APP_ERROR)
        log_warn("api", "app=%s call=%s status=app_error code=%d latency_us=%lld request_id=%s detail=%s",
                 log_q(app), log_q(call), reply.code, (long long)latency,
                 log_q(claims.request_id), log_q(reply.detail));
    else
        log_warn("api", "app=%s call=%s status=%s latency_us=%lld request_id=%s detail=%s",
                 log_q(app), log_q(call), rpc_code_name(reply.code), (long long)latency,
                 log_q(claims.request_id), log_q(reply.detail));
}

/* The body (or its absence) is complete: answer according to the head. */
static void finish_request(api_conn *c, const uint8_t *body, size_t n, buf *out)
{
    switch (c->disp) {
    case DISP_CALL:
    case DISP_TOO_LARGE:
        handle_call(c, body, n, c->disp == DISP_TOO_LARGE, out);
        break;
    case DISP_NOT_FOUND:
        http_error(out, 404, NULL, c->keep_alive, c->minor);
        break;
    case DISP_BAD_METHOD:
        http_error(out, 405, "Allow: POST\r\n", c->keep_alive, c->minor);
        break;
    case DISP_HTTP: {
        buf b = BUF_INIT;
        int st = c->srv->http_fn(c->srv->http_data, c->target, strlen(c->target), &b);
        http_respond(out, st, "Metadata-Flavor: Google\r\n", st == 200 ? "application/json" : "text/plain; charset=utf-8",
                     b.data ? b.data : "", b.len, c->keep_alive, c->minor);
        buf_free(&b);
        free(c->target);
        c->target = NULL;
        break;
    }
    }
    c->state = c->keep_alive ? ST_HEAD : ST_CLOSED;
    buf_free(&c->body);
}

static int fail_http(api_conn *c, int status, buf *out)
{
    log_warn("api", "msg=\"malformed HTTP request; closing the connection\" status=%d", status);
    http_error(out, status, NULL, 0, 1);
    c->state = ST_CLOSED;
    return 1;
}

static double parse_deadline(const http_request *req)
{
    const http_header *h = http_find_header(req->headers, req->nheaders, "X-Google-RPC-Service-Deadline");
    if (!h || h->value_len == 0 || h->value_len > 40) return -1;
    char tmp[48];
    memcpy(tmp, h->value, h->value_len);
    tmp[h->value_len] = 0;
    char *end;
    double d = strtod(tmp, &end);
    if (*end || !isfinite(d)) return -1;         /* unreadable: use the default */
    if (d <= 0) return 0;                         /* already past */
    return d > MAX_DEADLINE_S ? MAX_DEADLINE_S : d;
}

/* Parse a head at the front of c->in. Returns 0 (go on), 1 (need more
 * bytes) or 2 (connection must close). */
static int take_head(api_conn *c, buf *out)
{
    api_server *srv = c->srv;
    http_request req;
    int r = http_parse_request(buf_rp(&c->in), buf_unread(&c->in), &req, &srv->limits);
    if (r == HTTP_INCOMPLETE) {
        if (buf_unread(&c->in) <= srv->limits.max_head) return 1;
        fail_http(c, 431, out);
        return 2;
    }
    if (r != HTTP_OK) {
        int status = -r;
        if (status != 414 && status != 431 && status != 501 && status != 505) status = 400;
        fail_http(c, status, out);
        return 2;
    }
    c->start_us = now_us();
    c->keep_alive = req.keep_alive;
    c->minor = req.version_minor;
    c->deadline_s = parse_deadline(&req);
    int is_post = req.method_len == 4 && !memcmp(req.method, "POST", 4);
    int is_rpc = req.path_len == strlen(RPC_PATH) && !memcmp(req.path, RPC_PATH, req.path_len);
    c->disp = !is_rpc ? DISP_NOT_FOUND : !is_post ? DISP_BAD_METHOD : DISP_CALL;
    if (!is_rpc && srv->http_fn && req.method_len == 3 && !memcmp(req.method, "GET", 3)) {
        c->disp = DISP_HTTP;
        free(c->target);
        c->target = xstrndup(req.target, req.target_len);
    }
    int64_t cl = req.chunked ? -1 : req.content_length < 0 ? 0 : req.content_length;
    c->seen = cl > 0 ? cl : 0;      /* body size for messages; chunked bodies count up */
    if (cl > (int64_t)srv->max_request && c->disp == DISP_CALL) c->disp = DISP_TOO_LARGE;
    if (cl > DISCARD_LIMIT) {
        /* Not worth draining: answer now and close. */
        c->keep_alive = 0;
        buf_consume(&c->in, req.head_len);
        finish_request(c, NULL, 0, out);
        return 2;
    }
    int expect = req.expect_continue && (req.chunked || cl > 0);
    buf_consume(&c->in, req.head_len);
    if (expect && c->disp != DISP_CALL) {
        /* Refuse the body before it is sent (RFC 9110 10.1.1), then close. */
        c->keep_alive = 0;
        finish_request(c, NULL, 0, out);
        return 2;
    }
    if (expect) buf_puts(out, "HTTP/1.1 100 Continue\r\n\r\n");
    if (req.chunked) {
        memset(&c->chunk, 0, sizeof c->chunk);
        buf_reset(&c->body);
        c->state = ST_CHUNKED;
    } else {
        c->remaining = cl;
        c->state = ST_BODY;
    }
    return 0;
}

int api_conn_feed(api_conn *c, const void *data, size_t len, buf *out)
{
    if (c->state == ST_CLOSED) return 1;
    if (len) buf_append(&c->in, data, len);
    for (;;) {
        if (c->state == ST_CLOSED) break;
        if (c->state == ST_HEAD) {
            if (!buf_unread(&c->in)) break;
            int r = take_head(c, out);
            if (r == 1) break;
            if (r == 2) { c->state = ST_CLOSED; break; }
        } else if (c->state == ST_BODY) {
            size_t have = buf_unread(&c->in);
            if (c->disp != DISP_CALL) {
                /* Drain without keeping it. */
                size_t take = (int64_t)have < c->remaining ? have : (size_t)c->remaining;
                buf_consume(&c->in, take);
                c->remaining -= (int64_t)take;
                if (c->remaining) break;
                finish_request(c, NULL, 0, out);
            } else {
                if ((int64_t)have < c->remaining) break;
                size_t n = (size_t)c->remaining;
                finish_request(c, (const uint8_t *)buf_rp(&c->in), n, out);
                buf_consume(&c->in, n);
            }
        } else { /* ST_CHUNKED */
            size_t used;
            const char *d;
            size_t dn;
            int r = http_chunked_feed(&c->chunk, buf_rp(&c->in), buf_unread(&c->in), &used, &d, &dn);
            if (r == HTTP_CHUNK_DATA) {
                c->seen += (int64_t)dn;
                if (c->disp == DISP_CALL && c->body.len + dn > c->srv->max_request) {
                    c->disp = DISP_TOO_LARGE;
                    buf_free(&c->body);
                }
                if (c->disp == DISP_CALL) buf_append(&c->body, d, dn);
                buf_consume(&c->in, used);
                if (c->seen > DISCARD_LIMIT) {
                    c->keep_alive = 0;
                    finish_request(c, NULL, 0, out);
                    break;
                }
            } else if (r == HTTP_INCOMPLETE) {
                buf_consume(&c->in, used);
                break;
            } else if (r == HTTP_CHUNK_DONE) {
                buf_consume(&c->in, used);
                finish_request(c, (const uint8_t *)(c->body.data ? buf_rp(&c->body) : ""),
                               buf_unread(&c->body), out);
            } else {
                fail_http(c, 400, out);
                break;
            }
        }
    }
    if (!buf_unread(&c->in)) buf_free(&c->in);   /* idle connections hold no buffer */
    else if (c->in.off > 65536) buf_compact(&c->in);
    return c->state == ST_CLOSED;
}

/* ---- the socket layer ---- */

struct sconn {
    api_conn *proto;
    int fd;
    buf out;
    int closing;                 /* close once out is flushed */
    atomic_int busy;             /* a worker owns it right now */
    atomic_llong last_ms;        /* last activity, for the idle sweep */
    int swept;
    sconn *prev, *next;
};

static void conn_close(api_server *srv, sconn *c)
{
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    pthread_mutex_lock(&srv->lock);
    if (c->prev) c->prev->next = c->next; else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    close(c->fd);
    pthread_mutex_unlock(&srv->lock);
    api_conn_free(c->proto);
    buf_free(&c->out);
    free(c);
}

/* Write what we can. 0 all sent, 1 would block, -1 error. */
static int conn_flush(sconn *c)
{
    while (buf_unread(&c->out)) {
        ssize_t w = send(c->fd, buf_rp(&c->out), buf_unread(&c->out), MSG_NOSIGNAL);
        if (w > 0) { buf_consume(&c->out, (size_t)w); continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        return -1;
    }
    buf_free(&c->out);
    return 0;
}

/* Serve a ready connection. Returns the epoll events to re-arm with, or 0
 * when the connection is finished. */
static uint32_t conn_serve(sconn *c, char *tmp, size_t tmpcap)
{
    int f = conn_flush(c);
    if (f < 0) return 0;
    if (f == 1) return EPOLLOUT;
    if (c->closing) {
        shutdown(c->fd, SHUT_WR);
        return 0;
    }
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t r = recv(c->fd, tmp, tmpcap, 0);
        if (r == 0) return 0;
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return EPOLLIN | EPOLLRDHUP;
            return 0;
        }
        c->closing = api_conn_feed(c->proto, tmp, (size_t)r, &c->out);
        f = conn_flush(c);
        if (f < 0) return 0;
        if (f == 1) return EPOLLOUT;
        if (c->closing) {
            shutdown(c->fd, SHUT_WR);
            return 0;
        }
    }
    return EPOLLIN | EPOLLRDHUP;
}

static void *worker_main(void *arg)
{
    api_server *srv = arg;
    size_t cap = 64 * 1024;
    char *tmp = xmalloc(cap);
    for (;;) {
        struct epoll_event ev;
        int n = epoll_wait(srv->epfd, &ev, 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { log_error("api", "msg=\"epoll_wait failed\" err=%s", log_q(strerror(errno))); break; }
        if (n == 0) continue;
        if (ev.data.ptr == NULL) {          /* the wake-up eventfd */
            if (atomic_load(&srv->stopping)) break;
            continue;
        }
        sconn *c = ev.data.ptr;
        atomic_store(&c->busy, 1);
        uint32_t want = (ev.events & (EPOLLERR)) ? 0 : conn_serve(c, tmp, cap);
        if (!want) { conn_close(srv, c); continue; }
        atomic_store(&c->last_ms, now_ms());
        atomic_store(&c->busy, 0);
        struct epoll_event re = { .events = want | EPOLLONESHOT, .data.ptr = c };
        if (epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &re) < 0) conn_close(srv, c);
    }
    free(tmp);
    return NULL;
}

/* Start one more worker; called with srv->lock held. */
static int spawn_worker_locked(api_server *srv)
{
    if (srv->nworkers == srv->capworkers) {
        int cap = srv->capworkers ? srv->capworkers * 2 : 16;
        srv->workers = xrealloc(srv->workers, (size_t)cap * sizeof *srv->workers);
        srv->capworkers = cap;
    }
    if (pthread_create(&srv->workers[srv->nworkers], NULL, worker_main, srv) != 0) return -1;
    srv->nworkers++;
    return 0;
}

void api_blocking_begin(api_ctx *ctx)
{
    api_server *srv = ctx->server;
    if (!srv) return;
    pthread_mutex_lock(&srv->lock);
    srv->nblocked++;
    if (srv->started == 2 && !atomic_load(&srv->stopping) &&
        srv->nworkers - srv->nblocked < srv->nthreads && srv->nworkers < srv->nthreads + MAX_EXTRA) {
        if (spawn_worker_locked(srv) < 0)
            log_warn("api", "msg=\"cannot start another worker for a blocked call\" err=%s", log_q(strerror(errno)));
        else
            log_debug("api", "msg=\"worker added for blocked calls\" workers=%d blocked=%d", srv->nworkers, srv->nblocked);
    }
    pthread_mutex_unlock(&srv->lock);
}

void api_blocking_end(api_ctx *ctx)
{
    api_server *srv = ctx->server;
    if (!srv) return;
    pthread_mutex_lock(&srv->lock);
    srv->nblocked--;
    pthread_mutex_unlock(&srv->lock);
}

int api_server_stopping(const api_server *srv)
{
    return srv && atomic_load(&srv->stopping);
}

static void sweep_idle(api_server *srv)
{
    int64_t now = now_ms(), limit = (int64_t)srv->idle_timeout_s * 1000;
    pthread_mutex_lock(&srv->lock);
    for (sconn *c = srv->conns; c; c = c->next)
        if (!c->swept && !atomic_load(&c->busy) && now - atomic_load(&c->last_ms) > limit) {
            c->swept = 1;
            shutdown(c->fd, SHUT_RDWR);     /* its worker sees EOF and closes it */
        }
    pthread_mutex_unlock(&srv->lock);
}

static void *accept_main(void *arg)
{
    api_server *srv = arg;
    int64_t last_sweep = now_ms(), last_emfile = 0;
    while (!atomic_load(&srv->stopping)) {
        struct pollfd p = { .fd = srv->lfd, .events = POLLIN };
        int pr = poll(&p, 1, 1000);
        if (now_ms() - last_sweep >= 1000) { sweep_idle(srv); last_sweep = now_ms(); }
        if (pr <= 0) continue;
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (now_ms() - last_emfile > 5000) {
                    log_warn("api", "msg=\"cannot accept a connection\" err=%s", log_q(strerror(errno)));
                    last_emfile = now_ms();
                }
                usleep(10000);
            }
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sconn *c = xcalloc(1, sizeof *c);
        c->fd = fd;
        c->proto = api_conn_new(srv);
        atomic_store(&c->last_ms, now_ms());
        pthread_mutex_lock(&srv->lock);
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        pthread_mutex_unlock(&srv->lock);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c };
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            log_warn("api", "msg=\"cannot watch a connection\" err=%s", log_q(strerror(errno)));
            conn_close(srv, c);
        }
    }
    return NULL;
}

/* ---- lifecycle ---- */

api_server *api_server_new(const api_server_config *cfg, char *err, size_t errlen)
{
    api_server *srv = xcalloc(1, sizeof *srv);
    srv->home = xstrdup(cfg->home ? cfg->home : cyclozzo_home());
    srv->host = xstrdup(cfg->host && *cfg->host ? cfg->host : "127.0.0.1");
    srv->app_id = cfg->app_id && *cfg->app_id ? xstrdup(cfg->app_id) : NULL;
    srv->port_wanted = cfg->port;
    srv->nthreads = cfg->threads > 0 ? cfg->threads : DEFAULT_THREADS;
    srv->max_request = cfg->max_request ? cfg->max_request : DEFAULT_MAX_REQUEST;
    srv->idle_timeout_s = cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : DEFAULT_IDLE_S;
    srv->limits.max_request_line = 8192;
    srv->limits.max_head = 65536;
    srv->lfd = srv->epfd = srv->wakefd = -1;
    pthread_mutex_init(&srv->lock, NULL);
    if (ticket_key_load(srv->home, &srv->key, err, errlen) < 0) {
        api_server_stop(srv);
        return NULL;
    }
    return srv;
}

int api_server_port(const api_server *srv) { return srv->port; }

int api_server_start(api_server *srv, char *err, size_t errlen)
{
    if (srv->started) { set_err(err, errlen, "the API server is already started"); return -1; }
    raise_fd_limit();
    char port[16];
    snprintf(port, sizeof port, "%d", srv->port_wanted);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *ai = NULL;
    int gr = getaddrinfo(srv->host, port, &hints, &ai);
    if (gr != 0 || !ai) {
        set_err(err, errlen, "cannot resolve API server address %s: %s", srv->host, gai_strerror(gr));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 65535) < 0) {
        set_err(err, errlen, "cannot listen on %s port %d: %s", srv->host, srv->port_wanted, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    srv->lfd = fd;
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    srv->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (srv->epfd < 0 || srv->wakefd < 0 || epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->wakefd, &ev) < 0) {
        set_err(err, errlen, "cannot set up the API server's event loop: %s", strerror(errno));
        return -1;
    }
    srv->started = 1;
    pthread_mutex_lock(&srv->lock);
    for (int i = 0; i < srv->nthreads; i++) {
        if (spawn_worker_locked(srv) < 0) {
            pthread_mutex_unlock(&srv->lock);
            set_err(err, errlen, "cannot start API server worker threads: %s", strerror(errno));
            return -1;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    if (pthread_create(&srv->acceptor, NULL, accept_main, srv) != 0) {
        set_err(err, errlen, "cannot start the API server accept thread");
        return -1;
    }
    srv->started = 2;
    log_info("api", "msg=\"API server listening\" host=%s port=%d threads=%d app=%s",
             log_q(srv->host), srv->port, srv->nthreads, log_q(srv->app_id ? srv->app_id : "*"));
    return 0;
}

void api_server_stop(api_server *srv)
{
    if (!srv) return;
    atomic_store(&srv->stopping, 1);
    if (srv->wakefd >= 0) { uint64_t one = 1; ssize_t w = write(srv->wakefd, &one, sizeof one); (void)w; }
    if (srv->lfd >= 0) shutdown(srv->lfd, SHUT_RDWR);
    if (srv->started == 2) pthread_join(srv->acceptor, NULL);
    /* No worker is added once stopping is set (checked under the lock). */
    pthread_mutex_lock(&srv->lock);
    int nw = srv->nworkers;
    pthread_mutex_unlock(&srv->lock);
    for (int i = 0; i < nw; i++) pthread_join(srv->workers[i], NULL);
    free(srv->workers);
    while (srv->conns) conn_close(srv, srv->conns);
    for (cleanup *c = srv->cleanups, *nx; c; c = nx) {
        nx = c->next;
        c->fn(c->data);
        free(c);
    }
    if (srv->lfd >= 0) close(srv->lfd);
    if (srv->epfd >= 0) close(srv->epfd);
    if (srv->wakefd >= 0) close(srv->wakefd);
    for (int b = 0; b < NBUCKETS; b++)
        for (method *x = srv->buckets[b], *nx; x; x = nx) {
            nx = x->next;
            free(x->service);
            free(x->name);
            free(x);
        }
    for (shared *x = srv->shares, *nx; x; x = nx) {
        nx = x->next;
        free(x->name);
        free(x);
    }
    pthread_mutex_destroy(&srv->lock);
    memset(&srv->key, 0, sizeof srv->key);
    free(srv->home);
    free(srv->host);
    free(srv->app_id);
    free(srv);
}
