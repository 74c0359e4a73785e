/* reqlog.c - the router's half of the request log: what it knows of each
 * request (client address, method, resource, protocol, status, bytes sent,
 * times, User-Agent, Referer, Host, signed-in user) goes to the app's log
 * store (src/logs/store.h) when the response is done.
 *
 * Cheap on the hot path: the headers are copied, at the head, into one
 * per-connection buffer that is reused from request to request; the peer
 * address is looked up once per connection; the record itself is queued for
 * the store's writer thread (one allocation, one short lock). */
#include "router/router_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/util.h"
#include "logs/store.h"

/* Append a header value (or nothing) and a NUL; returns its offset. */
static size_t keep(buf *b, const http_request *req, const char *name)
{
    size_t off = b->len;
    const http_header *h = http_find_header(req->headers, req->nheaders, name);
    if (h) buf_append(b, h->value, h->value_len < 1024 ? h->value_len : 1024);
    buf_putc(b, 0);
    return off;
}

void reqlog_capture(rconn *c, const http_request *req)
{
    if (!c->t->r->c.logs) return;
    if (!c->peer[0]) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof c->peer);
            else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer, sizeof c->peer);
        }
        if (!c->peer[0]) snprintf(c->peer, sizeof c->peer, "-");
    }
    buf_reset(&c->rlinfo);
    c->rl_ua = keep(&c->rlinfo, req, "user-agent");
    c->rl_ref = keep(&c->rlinfo, req, "referer");
    c->rl_host = keep(&c->rlinfo, req, "host");
    c->rl_minor = req->version_minor;
    c->rl_start_wall = wall_us();
}

void reqlog_emit(rconn *c)
{
    router *r = c->t->r;
    if (!r->c.logs || !c->method[0] || !c->rlinfo.len) return;
    const char *info = c->rlinfo.data;
    int64_t end = wall_us();
    logrec rec = {
        .app_id = r->c.app_id, .module = r->c.service ? r->c.service : "default", .version = r->c.version,
        .request_id = c->log_id, .ip = c->peer, .method = c->method, .resource = c->path,
        .http_version = c->rl_minor ? "HTTP/1.1" : "HTTP/1.0",
        .user_agent = info + c->rl_ua, .referrer = info + c->rl_ref, .host = info + c->rl_host,
        .nickname = c->has_user ? c->user.nickname : NULL,
        .status = c->status, .response_size = (int64_t)c->bytes_out,
        .start_us = c->rl_start_wall ? c->rl_start_wall : end, .end_us = end,
    };
    logstore_add_request(r->c.logs, &rec);
    buf_reset(&c->rlinfo);
}
