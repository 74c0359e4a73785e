/* applog.c - app log lines of a request, sent to the logservice.
 *
 * While a request runs, every record the app writes through Python's
 * logging (and print(), which the runtime turns into log records) is also
 * kept, with its App Engine level (0 debug .. 4 critical) and the time it
 * was written, in a per-thread buffer as UserAppLogLine messages. When the
 * request is over, the worker sends them in one logservice.Flush call
 * (FlushRequest 1 logs = UserAppLogGroup{2 log_line: 1 timestamp_usec,
 * 2 level, 3 message}) to the API server at $API_HOST:$API_PORT, carrying
 * the request's ticket, which tells the API server which request the lines
 * belong to. A request that logs nothing costs nothing. Lines beyond
 * APPLOG_MAX_BYTES per request are dropped (one line says how many). */
#include "runtime/applog.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"
#include "proto/remote_api.h"

#define APPLOG_MAX_BYTES (1u << 20)
#define APPLOG_MAX_MSG   16384

static __thread char t_ticket[2100];
static __thread int t_active;
static __thread buf t_lines;
static __thread long t_dropped;

void applog_begin(const char *ticket, size_t n)
{
    t_active = n > 0 && n < sizeof t_ticket;
    if (!t_active) return;
    memcpy(t_ticket, ticket, n);
    t_ticket[n] = 0;
    buf_reset(&t_lines);
    t_dropped = 0;
}

static int ae_level(int levelno)
{
    if (levelno >= 50) return 4;
    if (levelno >= 40) return 3;
    if (levelno >= 30) return 2;
    if (levelno >= 20) return 1;
    return 0;
}

void applog_add(int levelno, const char *msg, size_t len)
{
    if (!t_active) return;
    if (len > APPLOG_MAX_MSG) len = APPLOG_MAX_MSG;
    if (t_lines.len + len + 32 > APPLOG_MAX_BYTES) { t_dropped++; return; }
    size_t m = pb_begin(&t_lines, 2);
    pb_put_int(&t_lines, 1, wall_us());
    pb_put_int(&t_lines, 2, ae_level(levelno));
    pb_put_bytes(&t_lines, 3, msg, len);
    pb_end(&t_lines, m);
}

/* Send body to the API server and read its reply; 0 when it said OK. */
static int post(const char *host, const char *port, const buf *body, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) { set_err(err, errlen, "cannot resolve %s", host); return -1; }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = -1;
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        set_err(err, errlen, "cannot connect to the API server %s:%s: %s", host, port, strerror(errno));
        goto out;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    buf req = BUF_INIT;
    buf_printf(&req, "POST /rpc_http HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/octet-stream\r\n"
                     "X-Google-RPC-Service-Deadline: 5\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
               host, port, body->len);
    buf_append(&req, body->data, body->len);
    size_t off = 0;
    while (off < req.len) {
        ssize_t w = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    int sent_all = off == req.len;
    buf_free(&req);
    if (!sent_all) { set_err(err, errlen, "cannot send to the API server"); goto out; }
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
        if (got == sizeof resp - 1) break;
    }
    resp[got] = 0;
    char *bodyp = strstr(resp, "\r\n\r\n");
    if (strncmp(resp, "HTTP/1.1 200", 12) || !bodyp) { set_err(err, errlen, "the API server did not answer"); goto out; }
    remote_api_response ar;
    char derr[128];
    bodyp += 4;
    if (remote_api_response_decode(bodyp, got - (size_t)(bodyp - resp), &ar, derr, sizeof derr) < 0) {
        set_err(err, errlen, "the API server's answer is not a remote_api Response");
        goto out;
    }
    if (ar.kind != REMOTE_API_OK) {
        set_err(err, errlen, "logservice.Flush failed: %.*s", (int)(ar.detail_len > 200 ? 200 : ar.detail_len),
                ar.detail ? ar.detail : "");
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return rc;
}

void applog_end(const char *app_id, const char *rid)
{
    if (!t_active) return;
    t_active = 0;
    if (!t_lines.len && !t_dropped) return;
    if (t_dropped) {
        char note[96];
        int n = snprintf(note, sizeof note, "(%ld more log lines of this request were dropped)", t_dropped);
        size_t m = pb_begin(&t_lines, 2);
        pb_put_int(&t_lines, 1, wall_us());
        pb_put_int(&t_lines, 2, 2);
        pb_put_bytes(&t_lines, 3, note, (size_t)n);
        pb_end(&t_lines, m);
    }
    const char *host = getenv("API_HOST"), *port = getenv("API_PORT");
    if (!host || !port) { buf_free(&t_lines); return; }
    buf flush = BUF_INIT, body = BUF_INIT;
    pb_put_bytes(&flush, 1, t_lines.data, t_lines.len);
    remote_api_request rq = {
        .service = "logservice", .service_len = 10, .method = "Flush", .method_len = 5,
        .request = (const uint8_t *)flush.data, .request_len = flush.len,
        .request_id = t_ticket, .request_id_len = strlen(t_ticket),
    };
    remote_api_request_encode(&body, &rq);
    char err[256];
    if (post(host, port, &body, err, sizeof err) < 0)
        log_warn("pyrt", "app=%s rid=%s msg=\"cannot store the request's app log lines\" err=%s",
                 log_q(app_id), log_q(rid), log_q(err));
    buf_free(&flush);
    buf_free(&body);
    buf_free(&t_lines);          /* never left behind in a thread that ends */
}
