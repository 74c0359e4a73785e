/* router.c - the router's threads, event loop, client connections and
 * request dispatch. See router.h.
 *
 * Each thread owns an epoll instance (edge-triggered), one SO_REUSEPORT
 * listening socket, its client connections and its idle upstream
 * connections, so threads share nothing but the instance manager's atomics.
 * A client connection moves through CS_HEAD -> (CS_BODY) -> CS_SEND or
 * CS_QUEUED/CS_PROXY -> back to CS_HEAD (keep-alive, pipelined input is
 * parsed from what is already buffered) or closed. can_read/can_write
 * remember edge-triggered readiness, so reading pauses while a response is
 * in flight (bounded buffering) and resumes without a new event. A
 * connection from a thread's TLS listener carries a tls_conn: its handshake
 * runs first, then the same states with send/recv/sendfile replaced by the
 * hooks of tlsconn.c. */
#include "router/router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/util.h"
#include "users/session.h"

#define HEAD_TIMEOUT_US   (20LL * 1000000)
#define IDLE_TIMEOUT_US   (60LL * 1000000)
#define BODY_TIMEOUT_US   (30LL * 1000000)
#define READ_CHUNK        16384
#define USERS_BODY_MAX    (64 * 1024)   /* a sign-in form is tiny */

static int conn_progress(rconn *c);

void thread_date(rthread *t)
{
    int64_t s = wall_us() / 1000000;
    if (s == t->date_sec) return;
    t->date_sec = s;
    char d[32];
    http_format_date(s, d);
    snprintf(t->date, sizeof t->date, "Date: %s\r\n", d);
}

static void reset_request(rconn *c)
{
    free(c->path);
    c->path = NULL;
    c->method[0] = 0;
    c->is_head = 0;
    c->handler = -1;
    c->status = 0;
    c->bytes_out = 0;
    c->instance_id = 0;
    c->trusted = 0;
    c->discard_body = 0;
    c->body_chunked = 0;
    c->body_left = 0;
    memset(&c->ck, 0, sizeof c->ck);
    c->body_len = 0;
    c->expect_continue = 0;
    c->retried = 0;
    buf_reset(&c->upreq);
    buf_reset(&c->upbody);
    if (c->file_fd >= 0) { close(c->file_fd); c->file_fd = -1; }
    c->file_off = c->file_end = 0;
    c->head_start_us = 0;
    c->has_user = 0;
    c->users_page = 0;
    free(c->u_query); free(c->u_host); free(c->u_origin);
    c->u_query = c->u_host = c->u_origin = NULL;
    if (c->upload) upload_free(c);
    free(c->range);
    c->range = NULL;
}

void conn_close(rconn *c)
{
    rthread *t = c->t;
    if (c->up) proxy_abort(c);
    if (c->state == CS_QUEUED) {
        rconn **pp = &t->q_head, *prev = NULL;
        while (*pp && *pp != c) { prev = *pp; pp = &(*pp)->qnext; }
        if (*pp) {
            *pp = c->qnext;
            if (t->q_tail == c) t->q_tail = prev;
            atomic_fetch_sub(&t->r->queued, 1);
        }
    }
    if (c->prev) c->prev->next = c->next; else t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    t->nconns--;
    /* Deregister explicitly: a child forked by the instance manager may hold
     * a copy of this socket until its exec, and epoll would keep reporting
     * it after close(). */
    epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->tls) { tls_conn_free(c->tls, !c->eof); c->tls = NULL; }   /* close_notify unless the peer left */
    close(c->fd);
    reset_request(c);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->upreq);
    buf_free(&c->upbody);
    buf_free(&c->rlinfo);
    /* Events for c may still be pending in this epoll batch: free it only
     * when the turn ends. */
    c->dead = 1;
    c->qnext = t->dead_conns;
    t->dead_conns = c;
}

static void reap_dead(rthread *t)
{
    while (t->dead_conns) {
        rconn *c = t->dead_conns;
        t->dead_conns = c->qnext;
        free(c);
    }
    proxy_reap_dead(t);
}

void router_wake_all(router *r)
{
    for (int i = 0; i < r->nthreads; i++) {
        uint64_t one = 1;
        ssize_t w = write(r->threads[i].wake_fd, &one, sizeof one);
        (void)w;
    }
}

static void access_log(rconn *c)
{
    rthread *t = c->t;
    if (!c->method[0]) return;
    reqlog_emit(c);
    int64_t lat_us = now_us() - c->req_start_us;
    const char *tilde = strchr(t->r->c.app_id, '~');
    /* Same shape as log.h lines; buffered per thread and flushed each loop
     * turn. Built without printf (one line per request): the timestamp up to
     * the second is formatted once per second. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != t->alog_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        t->alog_sec = now.tv_sec;
        snprintf(t->alog_ts, sizeof t->alog_ts, "ts=%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    }
    buf *b = &t->alog;
    int ms = (int)(now.tv_nsec / 1000000);
    char msd[4] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 0};
    buf_cat(b, t->alog_ts, msd, "Z level=info comp=access app=", tilde ? tilde + 1 : t->r->c.app_id,
            " request_id=", c->log_id, " method=", c->method, " path=", log_q(c->path), " status=", NULL);
    buf_put_dec(b, (uint64_t)c->status);
    buf_puts(b, " bytes=");
    buf_put_dec(b, c->bytes_out);
    buf_puts(b, " latency_ms=");
    buf_put_dec(b, (uint64_t)(lat_us / 1000));
    char frac[5] = {'.', (char)('0' + lat_us % 1000 / 100), (char)('0' + lat_us % 100 / 10), (char)('0' + lat_us % 10), 0};
    buf_cat(b, frac, " instance=", NULL);
    buf_put_dec(b, (uint64_t)c->instance_id);
    buf_putc(b, '\n');
    if (buf_unread(b) > 32768) {
        ssize_t w = write(2, buf_rp(b), buf_unread(b));
        (void)w;
        buf_reset(b);
    }
}

static void flush_access_log(rthread *t)
{
    if (!buf_unread(&t->alog)) return;
    ssize_t w = write(2, buf_rp(&t->alog), buf_unread(&t->alog));
    (void)w;
    buf_reset(&t->alog);
}

/* A response (static, error or proxied) was completely written.
 * Returns -1 when the connection was closed (c is freed). */
static int conn_response_done(rconn *c)
{
    access_log(c);
    int close_it = c->close_after || !c->keep_alive;
    reset_request(c);
    c->state = CS_HEAD;
    if (close_it) {
        if (!c->tls) shutdown(c->fd, SHUT_WR);
        conn_close(c);
        return -1;
    }
    /* Between requests, give back buffers that grew for a large message. */
    if (!buf_unread(&c->in) && c->in.cap > 4096) buf_free(&c->in); else buf_compact(&c->in);
    if (c->out.cap > 65536) buf_free(&c->out);
    if (c->upbody.cap > 65536) buf_free(&c->upbody);
    return 0;
}

void conn_send_error(rconn *c, int status, const char *detail)
{
    rthread *t = c->t;
    thread_date(t);
    c->status = status;
    char body[512];
    int bl = snprintf(body, sizeof body,
                      "<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body><h1>%d %s</h1>%s%s%s</body></html>\n",
                      status, http_reason(status), status, http_reason(status),
                      detail ? "<p>" : "", detail ? detail : "", detail ? "</p>" : "");
    if (status >= 400 && status != 404 && status != 401 && status != 403 && status != 405) c->close_after = 1;
    buf_reset(&c->out);
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: Cyclozzo\r\n%sContent-Type: text/html; charset=utf-8\r\n"
               "Content-Length: %d\r\n%s\r\n", status, http_reason(status), t->date, bl,
               c->close_after || !c->keep_alive ? "Connection: close\r\n" : "");
    if (!c->is_head) buf_append(&c->out, body, (size_t)bl);
    c->bytes_out = buf_unread(&c->out);
    if (c->file_fd >= 0) { close(c->file_fd); c->file_fd = -1; }
    c->state = CS_SEND;
}


/* Write what is pending: out buffer, then the static file. 1 = all written,
 * 0 = would block, -1 = connection failed (closed by caller). */
static int conn_flush(rconn *c)
{
again:
    while (buf_unread(&c->out)) {
        if (!c->can_write) return 0;
        ssize_t w = c->tls ? tlsconn_send(c, buf_rp(&c->out), buf_unread(&c->out))
                           : send(c->fd, buf_rp(&c->out), buf_unread(&c->out), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { if (!c->tls) c->can_write = 0; return 0; }   /* TLS set its flag */
            if (errno == EINTR) continue;
            return -1;
        }
        buf_consume(&c->out, (size_t)w);
        c->last_io_us = now_us();
    }
    while (c->file_fd >= 0 && c->file_off < c->file_end) {
        if (!c->can_write) return 0;
        if (c->tls) {   /* no sendfile through TLS: a slice of the file via c->out */
            if (tlsconn_fill_from_file(c) < 0) return -1;
            goto again;
        }
        size_t n = (size_t)(c->file_end - c->file_off);
        if (n > (1 << 20)) n = 1 << 20;
        ssize_t w = sendfile(c->fd, c->file_fd, &c->file_off, n);
        if (w < 0) {
            if (errno == EAGAIN) { c->can_write = 0; return 0; }
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) return -1;   /* file shrank under us */
        c->last_io_us = now_us();
    }
    return 1;
}

/* Read more from the client into c->in. 1 = got bytes, 0 = would block,
 * -1 = EOF or error. */
static int conn_read(rconn *c)
{
    if (!c->can_read) return 0;
    /* Read into the thread's scratch buffer, keep only what arrived: an idle
     * or slow connection then costs a few hundred bytes, not a whole chunk. */
    static __thread char scratch[READ_CHUNK];
    ssize_t r = c->tls ? tlsconn_recv(c, scratch, sizeof scratch) : recv(c->fd, scratch, sizeof scratch, 0);
    if (r > 0) { buf_append(&c->in, scratch, (size_t)r); c->last_io_us = now_us(); return 1; }
    if (r == 0) { c->eof = 1; return -1; }
    if (errno == EAGAIN) { if (!c->tls) c->can_read = 0; return 0; }   /* TLS set its flag */
    if (errno == EINTR) return 1;
    return -1;
}

/* X-AppEngine-* headers the scheduler may set on a trusted request. */
static int is_task_header(const http_header *h)
{
    static const char *ok[] = {"x-appengine-queuename", "x-appengine-taskname", "x-appengine-taskretrycount",
                               "x-appengine-taskexecutioncount", "x-appengine-tasketa", "x-appengine-cron",
                               "x-appengine-user-ip", "x-appengine-current-namespace",
                               "x-appengine-default-namespace", "x-appengine-failfast",
                               "x-appengine-taskpreviousresponse", NULL};
    for (int i = 0; ok[i]; i++)
        if (strn_case_eq(h->name, h->name_len, ok[i])) return 1;
    return 0;
}

static int is_stripped_header(const http_header *h)
{
    if (h->name_len >= 11 && strncasecmp(h->name, "x-appengine", 11) == 0) return 1;
    if (h->name_len >= 10 && strncasecmp(h->name, "x-cyclozzo", 10) == 0) return 1;
    static const char *hop[] = {"connection", "keep-alive", "te", "transfer-encoding", "upgrade",
                                "proxy-connection", "content-length", "expect", "x-google-apps-metadata",
                                "x-cloud-trace-context", "x-forwarded-for", "x-forwarded-proto", NULL};
    for (int i = 0; hop[i]; i++)
        if (strn_case_eq(h->name, h->name_len, hop[i])) return 1;
    return 0;
}

/* Build the head the instance sees: the client's request without hop-by-hop
 * and X-AppEngine-* headers, plus App Engine's headers. */
int build_upstream_head(rconn *c, const http_request *req, const app_handler *h, const char *target, size_t target_len)
{
    rthread *t = c->t;
    router *r = t->r;
    buf *b = &c->upreq;
    buf_reset(b);
    buf_append(b, req->method, req->method_len);
    buf_putc(b, ' ');
    if (target) buf_append(b, target, target_len);
    else buf_append(b, req->target, req->target_len);
    buf_puts(b, " HTTP/1.1\r\n");
    const char *xff = NULL;
    size_t xff_len = 0;
    int user_ip = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *hd = &req->headers[i];
        if (strn_case_eq(hd->name, hd->name_len, "x-forwarded-for")) { xff = hd->value; xff_len = hd->value_len; }
        if (is_stripped_header(hd) && !(c->trusted && is_task_header(hd))) continue;
        if (c->trusted && strn_case_eq(hd->name, hd->name_len, "x-appengine-user-ip")) user_ip = 1;
        if (r->c.users && strn_case_eq(hd->name, hd->name_len, "cookie")) {
            /* The session cookie is the router's: the app never sees it. */
            char *rest = xmalloc(2 * hd->value_len + 1);
            size_t rl = users_cookie_without(hd->value, hd->value_len, USERS_COOKIE_NAME, rest);
            if (rl) buf_printf(b, "Cookie: %s\r\n", rest);
            free(rest);
            continue;
        }
        buf_append(b, hd->name, hd->name_len);
        buf_puts(b, ": ");
        buf_append(b, hd->value, hd->value_len);
        buf_puts(b, "\r\n");
    }
    if (!req->host) buf_printf(b, "Host: %s\r\n", r->c.default_hostname);

    char ip[64] = "127.0.0.1";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
        else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
    }
    if (xff) buf_printf(b, "X-Forwarded-For: %.*s, %s\r\n", (int)xff_len, xff, ip);
    else buf_printf(b, "X-Forwarded-For: %s\r\n", ip);
    buf_puts(b, c->tls ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    buf_printf(b, "X-AppEngine-Request-Log-Id: %s\r\n", c->log_id);
    buf_printf(b, "X-AppEngine-Default-Version-Hostname: %s\r\n", r->c.default_hostname);
    buf_puts(b, "X-AppEngine-Country: ZZ\r\nX-AppEngine-Region: zz\r\nX-AppEngine-City: ?\r\n");
    buf_puts(b, c->tls ? "X-AppEngine-Https: on\r\n" : "X-AppEngine-Https: off\r\n");
    if (!user_ip) buf_printf(b, "X-AppEngine-User-IP: %s\r\n", ip);
    buf_puts(b, "X-AppEngine-Auth-Domain: " USERS_AUTH_DOMAIN "\r\n");
    if (c->has_user)
        buf_printf(b, "X-AppEngine-User-Email: %s\r\nX-AppEngine-User-Id: %s\r\nX-AppEngine-User-Nickname: %s\r\n"
                   "X-AppEngine-User-Is-Admin: %d\r\n", c->user.email, c->user.id, c->user.nickname, c->user.admin);
    if (r->c.mint_ticket) {
        router_reqinfo ri = {.request_log_id = c->log_id, .user_email = c->has_user ? c->user.email : "",
                             .user_id = c->has_user ? c->user.id : "",
                             .user_is_admin = c->has_user && c->user.admin, .deadline_s = r->c.deadline_s};
        char ticket[1024];
        if (r->c.mint_ticket(r->c.mint_arg, &ri, ticket, sizeof ticket) == 0)
            buf_printf(b, "X-AppEngine-Api-Ticket: %s\r\n", ticket);
    }
    const char *script = h && h->script ? h->script : "auto";
    buf_printf(b, "X-Cyclozzo-Script: %s\r\nX-Cyclozzo-Deadline: %d\r\n", script, r->c.deadline_s);
    return 0;
}

static void make_log_id(rconn *c)
{
    /* 13 hex digits of wall-clock microseconds, 2 of the thread, 8 of a
     * per-thread counter: unique, and sorting by time. */
    static const char hx[] = "0123456789abcdef";
    rthread *t = c->t;
    t->seq++;
    uint64_t us = (uint64_t)wall_us(), seq = t->seq & 0xffffffffULL;
    char *o = c->log_id;
    for (int i = 12; i >= 0; i--) o[12 - i] = hx[(us >> (4 * i)) & 15];
    o[13] = hx[(t->idx >> 4) & 15];
    o[14] = hx[t->idx & 15];
    for (int i = 7; i >= 0; i--) o[15 + 7 - i] = hx[(seq >> (4 * i)) & 15];
    o[23] = 0;
}

/* The absolute URL of the request into url; 0, or -1 when it does not fit. */
static int request_url(rconn *c, const http_request *req, char *url, size_t len)
{
    rthread *t = c->t;
    int n = snprintf(url, len, "%s://%.*s%.*s", c->tls ? "https" : "http", req->host ? (int)req->host_len : (int)strlen(t->r->c.default_hostname),
                     req->host ? req->host : t->r->c.default_hostname, (int)req->target_len, req->target);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* A page the router made: status, extra head lines (CRLF-terminated), HTML body. */
static void conn_send_page(rconn *c, int status, const char *head, size_t head_len, const char *body, size_t body_len)
{
    rthread *t = c->t;
    thread_date(t);
    c->status = status;
    buf_reset(&c->out);
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: Cyclozzo\r\n%s", status, http_reason(status), t->date);
    buf_append(&c->out, head, head_len);
    if (body_len) buf_puts(&c->out, "Content-Type: text/html; charset=utf-8\r\n");
    buf_printf(&c->out, "Content-Length: %zu\r\n%s\r\n", body_len, c->close_after || !c->keep_alive ? "Connection: close\r\n" : "");
    if (!c->is_head) buf_append(&c->out, body, body_len);
    c->bytes_out = buf_unread(&c->out);
    c->state = CS_SEND;
}

/* A signed-in user who is not an administrator asked for a login: admin URL. */
static void refuse_non_admin(rconn *c, const http_request *req)
{
    char url[8192];
    if (request_url(c, req, url, sizeof url) < 0) { conn_send_error(c, 414, NULL); return; }
    buf body = BUF_INIT;
    users_forbidden_page(&c->user, url, &body);
    static const char head[] = "Cache-Control: no-store\r\n";
    conn_send_page(c, 403, head, sizeof head - 1, buf_rp(&body), buf_unread(&body));
    buf_free(&body);
}

/* /_ah/login or /_ah/logout, once its body (if any) is in c->upbody. */
static void users_respond(rconn *c)
{
    router *r = c->t->r;
    users_req rq = {
        .method = c->method, .method_len = strlen(c->method),
        .query = c->u_query, .query_len = c->u_query ? strlen(c->u_query) : 0,
        .host = c->u_host, .host_len = c->u_host ? strlen(c->u_host) : 0,
        .origin = c->u_origin, .origin_len = c->u_origin ? strlen(c->u_origin) : 0,
        .body = buf_rp(&c->upbody), .body_len = buf_unread(&c->upbody),
        .user = c->has_user ? &c->user : NULL,
    };
    users_resp resp;
    memset(&resp, 0, sizeof resp);
    users_handle(r->c.users, c->users_page, &rq, &resp);
    conn_send_page(c, resp.status, buf_rp(&resp.head), buf_unread(&resp.head), buf_rp(&resp.body), buf_unread(&resp.body));
    users_resp_free(&resp);
    OPENSSL_cleanse(buf_rp(&c->upbody), buf_unread(&c->upbody));   /* the password */
    buf_reset(&c->upbody);
}

/* The user the request's session cookie names, if it is valid. */
static void find_user(rconn *c, const http_request *req)
{
    router *r = c->t->r;
    c->has_user = 0;
    if (!r->c.users) return;
    int64_t now = wall_us() / 1000000;
    for (size_t i = 0; i < req->nheaders && !c->has_user; i++) {
        const http_header *hd = &req->headers[i];
        if (strn_case_eq(hd->name, hd->name_len, "cookie"))
            c->has_user = users_from_cookie(r->c.users, hd->value, hd->value_len, now, &c->user);
    }
}

static void redirect_login(rconn *c, const http_request *req, const app_handler *h)
{
    rthread *t = c->t;
    if (h->auth_fail == AUTH_FAIL_UNAUTHORIZED) {
        conn_send_error(c, 401, "Login required to view this page.");
        return;
    }
    /* continue=<absolute URL of this request>, percent-encoded. */
    char url[8192];
    if (request_url(c, req, url, sizeof url) < 0) { conn_send_error(c, 414, NULL); return; }
    buf loc = BUF_INIT;
    buf_puts(&loc, "/_ah/login?continue=");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~", *p))
            buf_putc(&loc, (char)*p);
        else { buf_putc(&loc, '%'); buf_putc(&loc, hex[*p >> 4]); buf_putc(&loc, hex[*p & 15]); }
    }
    thread_date(t);
    c->status = 302;
    buf_reset(&c->out);
    buf_printf(&c->out, "HTTP/1.1 302 Found\r\nServer: Cyclozzo\r\n%sLocation: %s\r\nContent-Length: 0\r\n%s\r\n",
               t->date, buf_cstr(&loc), c->keep_alive ? "" : "Connection: close\r\n");
    c->bytes_out = buf_unread(&c->out);
    buf_free(&loc);
    c->state = CS_SEND;
}

/* A complete head is in c->in: route it. */
static void on_head(rconn *c, const http_request *req)
{
    router *r = c->t->r;
    size_t ml = req->method_len < sizeof c->method - 1 ? req->method_len : sizeof c->method - 1;
    memcpy(c->method, req->method, ml);
    c->method[ml] = 0;
    c->path = xstrndup(req->target, req->target_len);
    c->is_head = strn_case_eq(req->method, req->method_len, "HEAD");
    c->version_minor = req->version_minor;
    c->keep_alive = req->keep_alive;
    c->req_start_us = now_us();
    make_log_id(c);
    reqlog_capture(c, req);

    if (req->chunked) { c->body_chunked = 1; memset(&c->ck, 0, sizeof c->ck); }
    else c->body_left = req->content_length > 0 ? req->content_length : 0;

    if (req->version_minor == 1 && !req->host) { c->discard_body = 1; conn_send_error(c, 400, "Missing Host header."); return; }
    if (req->host && !hostroute_served(&r->hosts, req->host, req->host_len)) {
        c->discard_body = 1;
        tlsconn_host_refused(c, req);
        return;
    }
    int upload = r->c.blob && upload_is_path(req);    /* streamed: not held to max_body */
    if (!upload && (size_t)(req->content_length > 0 ? req->content_length : 0) > r->c.max_body) {
        c->close_after = 1;
        conn_send_error(c, 413, "The request body is larger than 32 MiB.");
        return;
    }
    char *dpath = xmalloc(req->path_len + 1);
    long dl = http_url_decode(req->path, req->path_len, dpath);
    if (dl < 0 || req->path_len == 0 || req->path[0] != '/') {
        free(dpath);
        c->close_after = 1;
        conn_send_error(c, 400, "Malformed request path.");
        return;
    }
    find_user(c, req);
    if (upload) { free(dpath); upload_begin(c, req); return; }
    int page = r->c.users ? users_page(dpath, (size_t)dl) : USERS_PAGE_NONE;
    if (page != USERS_PAGE_NONE) {
        /* Served here, before the app's handlers; a POST's form is read first. */
        free(dpath);
        if (req->content_length > USERS_BODY_MAX) {
            c->close_after = 1;
            conn_send_error(c, 413, "A sign-in form is never this large.");
            return;
        }
        c->users_page = page;
        if (req->query) c->u_query = xstrndup(req->query, req->query_len);
        if (req->host) c->u_host = xstrndup(req->host, req->host_len);
        const http_header *og = http_find_header(req->headers, req->nheaders, "origin");
        if (og) c->u_origin = xstrndup(og->value, og->value_len);
        c->expect_continue = req->expect_continue;
        if (c->expect_continue && (c->body_chunked || c->body_left > 0))
            buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        c->state = CS_BODY;
        return;
    }
    if (img_route(c, req, dpath, (size_t)dl)) { free(dpath); return; }   /* /_ah/img/ */
    app_match m;
    if (!appcfg_match(r->c.cfg, dpath, (size_t)dl, &m)) {
        free(dpath);
        c->discard_body = 1;
        conn_send_error(c, 404, "The requested URL was not found on this server.");
        return;
    }
    const app_handler *h = m.handler;
    c->handler = m.index;
    if (r->c.verify_internal) {
        for (size_t i = 0; i < req->nheaders; i++) {
            const http_header *hd = &req->headers[i];
            if (strn_case_eq(hd->name, hd->name_len, "x-cyclozzo-internal")) {
                c->trusted = r->c.verify_internal(r->c.internal_arg, hd->value, hd->value_len);
                break;
            }
        }
    }
    if (h->secure != SECURE_DEFAULT && h->secure != SECURE_OPTIONAL && !c->trusted &&
        tlsconn_secure_redirect(c, req, h)) {
        free(dpath);
        c->discard_body = 1;
        return;
    }
    if (h->login != LOGIN_OPTIONAL && !c->trusted && (!c->has_user || (h->login == LOGIN_ADMIN && !c->user.admin))) {
        free(dpath);
        c->discard_body = 1;
        if (c->has_user) refuse_non_admin(c, req);
        else redirect_login(c, req, h);
        return;
    }
    if (h->kind != HANDLER_SCRIPT) {
        static_serve(c, &m, req);
        free(dpath);
        c->discard_body = 1;
        return;
    }
    free(dpath);
    if (r->c.blob) upload_note_range(c, req);
    build_upstream_head(c, req, h, NULL, 0);
    c->expect_continue = req->expect_continue;
    if (c->expect_continue && (c->body_chunked || c->body_left > 0))
        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    c->state = CS_BODY;
}

/* Consume body bytes from c->in. 1 = body complete, 0 = need more, -1 = error response queued. */
static int read_body(rconn *c)
{
    router *r = c->t->r;
    if (c->upload && !c->discard_body) return upload_read_body(c);
    buf *dst = c->discard_body ? NULL : &c->upbody;
    if (!c->body_chunked) {
        size_t n = buf_unread(&c->in);
        if ((int64_t)n > c->body_left) n = (size_t)c->body_left;
        if (dst) buf_append(dst, buf_rp(&c->in), n);
        buf_consume(&c->in, n);
        if (c->users_page && c->body_len + n > USERS_BODY_MAX) {
            c->close_after = 1;
            conn_send_error(c, 413, "A sign-in form is never this large.");
            return -1;
        }
        c->body_left -= (int64_t)n;
        c->body_len += n;
        return c->body_left == 0;
    }
    for (;;) {
        size_t used = 0;
        const char *data;
        size_t dlen;
        int k = http_chunked_feed(&c->ck, buf_rp(&c->in), buf_unread(&c->in), &used, &data, &dlen);
        if (k == HTTP_CHUNK_DATA) {
            c->body_len += dlen;
            if (c->body_len > r->c.max_body || (c->users_page && c->body_len > USERS_BODY_MAX)) {
                buf_consume(&c->in, used);
                c->close_after = 1;
                conn_send_error(c, 413, c->users_page ? "A sign-in form is never this large." : "The request body is larger than 32 MiB.");
                return -1;
            }
            if (dst) buf_append(dst, data, dlen);
            buf_consume(&c->in, used);
            continue;
        }
        buf_consume(&c->in, used);
        if (k == HTTP_CHUNK_DONE) return 1;
        if (k == HTTP_INCOMPLETE) return 0;
        c->close_after = 1;
        conn_send_error(c, 400, "Malformed chunked request body.");
        return -1;
    }
}

static void body_complete(rconn *c)
{
    if (c->discard_body) { c->state = CS_SEND; return; }
    if (c->users_page) { users_respond(c); return; }
    if (c->upload) { upload_complete(c); return; }
    buf_printf(&c->upreq, "Content-Length: %zu\r\n\r\n", buf_unread(&c->upbody));
    proxy_dispatch(c);
}

/* Drive a client connection as far as it can go without blocking.
 * Returns -1 if the connection was closed (c is freed). */
static int conn_progress(rconn *c)
{
    if (c->tls && !c->tls_ready) {
        int h = tlsconn_handshake(c);
        if (h < 0) { conn_close(c); return -1; }
        if (h == 0) return 0;
    }
    for (;;) {
        /* Output first. */
        if (buf_unread(&c->out) || c->file_fd >= 0) {
            int f = conn_flush(c);
            if (f < 0) { conn_close(c); return -1; }
            if (f == 1 && c->state == CS_PROXY) {
                /* Room again: relay more of the response, then write it. */
                proxy_client_drained(c);
                if (buf_unread(&c->out)) continue;
            }
            if (f == 0 && c->state != CS_BODY && c->state != CS_HEAD) return 0;
        }
        if (c->state == CS_SEND && !buf_unread(&c->out) && (c->file_fd < 0 || c->file_off >= c->file_end)) {
            if (conn_response_done(c) < 0) return -1;
            continue;
        }
        if (c->state == CS_PROXY || c->state == CS_QUEUED) {
            if (c->eof) { conn_close(c); return -1; }
            return 0;
        }
        if (c->state == CS_SEND) return 0;
        if (c->state == CS_HEAD) {
            if (buf_unread(&c->in)) {
                if (!c->head_start_us) c->head_start_us = now_us();
                http_request req;
                int k = http_parse_request(buf_rp(&c->in), buf_unread(&c->in), &req, NULL);
                if (k == HTTP_OK) {
                    size_t hl = req.head_len;
                    on_head(c, &req);
                    buf_consume(&c->in, hl);
                    if (c->state == CS_SEND && !c->discard_body) continue;
                    if (c->state == CS_SEND && c->discard_body) {
                        /* A response is ready; the body (if any) must still be read. */
                        if (c->body_chunked || c->body_left > 0) { c->state = CS_BODY; }
                        continue;
                    }
                    continue;
                }
                if (k < 0) {
                    int st = -k;
                    c->req_start_us = now_us();
                    make_log_id(c);
                    snprintf(c->method, sizeof c->method, "-");
                    c->path = xstrdup("-");
                    c->close_after = 1;
                    c->keep_alive = 0;
                    conn_send_error(c, st, st == 400 ? "Malformed request." : NULL);
                    buf_reset(&c->in);
                    c->can_read = 0;
                    continue;
                }
            }
            int rr = conn_read(c);
            if (rr < 0) {
                if (!buf_unread(&c->out)) { conn_close(c); return -1; }
                return 0;
            }
            if (rr == 0) return 0;
            continue;
        }
        if (c->state == CS_BODY) {
            int k = read_body(c);
            if (k < 0) continue;
            if (k == 1) {
                if (c->discard_body) {
                    /* The response was already prepared (static or error). */
                    c->state = CS_SEND;
                    continue;
                }
                body_complete(c);
                continue;
            }
            if (c->close_after && !buf_unread(&c->out)) { conn_close(c); return -1; }
            int rr = conn_read(c);
            if (rr < 0) { conn_close(c); return -1; }
            if (rr == 0) return 0;
            continue;
        }
        return 0;
    }
}

/* Entry point from the event loop and from proxy.c: -1 if c was closed. */
int conn_kick(rconn *c) { return conn_progress(c); }

static void accept_all(rthread *t, int tls)
{
    for (;;) {
        int fd = accept4(tls ? t->tls_listen_fd : t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE)
                log_warn("router", "msg=\"out of file descriptors; connection left in backlog\" conns=%d", t->nconns);
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rconn *c = xcalloc(1, sizeof *c);
        c->kind = EV_CLIENT;
        c->fd = fd;
        c->t = t;
        c->file_fd = -1;
        c->handler = -1;
        c->keep_alive = 1;
        c->last_io_us = now_us();
        if (tls && !(c->tls = tls_conn_new(t->r->c.tls, fd))) { close(fd); free(c); continue; }
        c->next = t->conns;
        if (t->conns) t->conns->prev = c;
        t->conns = c;
        t->nconns++;
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) { conn_close(c); continue; }
    }
}

static void check_timeouts(rthread *t, int64_t now)
{
    rconn *c = t->conns;
    while (c) {
        rconn *next = c->next;
        if (c->tls && !c->tls_ready) {
            if (now - c->last_io_us > HEAD_TIMEOUT_US) conn_close(c);   /* handshake too slow */
        } else if (c->state == CS_HEAD) {
            if (c->head_start_us && now - c->head_start_us > HEAD_TIMEOUT_US) {
                c->req_start_us = now;
                make_log_id(c);
                snprintf(c->method, sizeof c->method, "-");
                c->path = xstrdup("-");
                c->close_after = 1;
                conn_send_error(c, 408, NULL);
                c->can_write = 1;
                conn_kick(c);
            } else if (!c->head_start_us && !buf_unread(&c->out) && now - c->last_io_us > IDLE_TIMEOUT_US) {
                conn_close(c);
            }
        } else if (c->state == CS_BODY && now - c->last_io_us > BODY_TIMEOUT_US) {
            c->close_after = 1;
            conn_send_error(c, 408, NULL);
            c->can_write = 1;
            conn_kick(c);
        } else if (c->state == CS_SEND && now - c->last_io_us > IDLE_TIMEOUT_US) {
            conn_close(c);
        }
        c = next;
    }
    proxy_reap_idle(t, now);
    proxy_retry_queue(t);
}

static void *thread_main(void *arg)
{
    rthread *t = arg;
    router *r = t->r;
    sigset_t block;
    sigfillset(&block);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    struct epoll_event evs[256];
    int64_t last_tick = now_us();
    while (!r->stopping) {
        int n = epoll_wait(t->epfd, evs, 256, 250);
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            uint32_t ev = evs[i].events;
            if (kind == EV_LISTEN || kind == EV_LISTEN_TLS) accept_all(t, kind == EV_LISTEN_TLS);
            else if (kind == EV_WAKE) { uint64_t v; ssize_t rr = read(t->wake_fd, &v, sizeof v); (void)rr; }
            else if (kind == EV_CLIENT) {
                rconn *c = evs[i].data.ptr;
                if (c->dead) continue;
                if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->can_read = 1;
                if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->can_write = 1;
                conn_kick(c);
            } else if (kind == EV_UP) {
                upconn *u = evs[i].data.ptr;
                if (!u->dead) proxy_on_event(u, ev);
            }
        }
        int64_t now = now_us();
        if (t->q_head) proxy_retry_queue(t);
        if (now - last_tick > 1000000) { last_tick = now; check_timeouts(t, now); }
        reap_dead(t);
        flush_access_log(t);
    }
    return NULL;
}

/* One non-blocking SO_REUSEPORT listening socket on ss; -1 with a sentence. */
static int open_listener(const struct sockaddr_storage *ss, socklen_t sl, const char *host, int port,
                         char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, (const struct sockaddr *)ss, sl) < 0 || listen(fd, 65535) < 0) {
        set_err(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

router *router_new(const router_config *c, char *err, size_t errlen)
{
    if (c->https_port > 0 && !c->tls) {
        set_err(err, errlen, "HTTPS on port %d needs certificates", c->https_port);
        return NULL;
    }
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    router *r = xcalloc(1, sizeof *r);
    r->c = *c;
    if (!r->c.deadline_s) r->c.deadline_s = 60;
    if (!r->c.max_body) r->c.max_body = 32u << 20;
    const char *tilde = strchr(c->app_id, '~');
    r->hosts = (hostroute){.domain = c->domain, .app = tilde ? tilde + 1 : c->app_id,
                           .version = c->version ? c->version : "1", .service = c->service};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    r->nthreads = c->threads > 0 ? c->threads : (int)(cpus > 0 ? cpus : 1);
    r->threads = xcalloc((size_t)r->nthreads, sizeof *r->threads);
    r->appdir_fd = open(c->cfg->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (r->appdir_fd < 0) {
        set_err(err, errlen, "cannot open the app directory %s: %s", c->cfg->dir, strerror(errno));
        free(r->threads);
        free(r);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    const char *host = c->host && *c->host ? c->host : "127.0.0.1";
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)c->port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) { set_err(err, errlen, "bad listen address %s", host); goto fail; }
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)c->port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) { set_err(err, errlen, "bad listen address %s (use an IP address)", host); goto fail; }
        sl = sizeof *a;
    }
    for (int i = 0; i < r->nthreads; i++) {
        rthread *t = &r->threads[i];
        t->r = r;
        t->idx = i;
        t->listen_fd = t->tls_listen_fd = t->epfd = t->wake_fd = -1;
    }
    for (int i = 0; i < r->nthreads; i++) {
        rthread *t = &r->threads[i];
        t->listen_fd = open_listener(&ss, sl, host, c->port, err, errlen);
        if (t->listen_fd < 0) goto fail;
        if (c->https_port > 0) {
            /* HTTPS: the same address, the TLS port, one more listener per thread. */
            if (ss.ss_family == AF_INET6) ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)c->https_port);
            else ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)c->https_port);
            t->tls_listen_fd = open_listener(&ss, sl, host, c->https_port, err, errlen);
            if (ss.ss_family == AF_INET6) ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)c->port);
            else ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)c->port);
            if (t->tls_listen_fd < 0) goto fail;
        }
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        static int listen_tag = EV_LISTEN, wake_tag = EV_WAKE, tls_tag = EV_LISTEN_TLS;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listen_tag};
        epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->listen_fd, &e);
        if (t->tls_listen_fd >= 0) {
            struct epoll_event et = {.events = EPOLLIN, .data.ptr = &tls_tag};
            epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->tls_listen_fd, &et);
        }
        struct epoll_event w = {.events = EPOLLIN, .data.ptr = &wake_tag};
        epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wake_fd, &w);
    }
    return r;
fail:
    router_free(r);
    return NULL;
}

int router_run(router *r)
{
    for (int i = 0; i < r->nthreads; i++)
        if (pthread_create(&r->threads[i].th, NULL, thread_main, &r->threads[i]) != 0) {
            r->stopping = 1;
            for (int j = 0; j < i; j++) pthread_join(r->threads[j].th, NULL);
            return -1;
        }
    for (int i = 0; i < r->nthreads; i++) pthread_join(r->threads[i].th, NULL);
    return 0;
}

void router_stop(router *r)
{
    r->stopping = 1;
    for (int i = 0; i < r->nthreads; i++) {
        uint64_t one = 1;
        if (r->threads[i].wake_fd >= 0) { ssize_t w = write(r->threads[i].wake_fd, &one, sizeof one); (void)w; }
    }
}

void router_free(router *r)
{
    if (!r) return;
    for (int i = 0; i < r->nthreads; i++) {
        rthread *t = &r->threads[i];
        while (t->conns) conn_close(t->conns);
        proxy_free_idle(t);
        reap_dead(t);
        static_cache_free(t);
        flush_access_log(t);
        buf_free(&t->alog);
        if (t->listen_fd >= 0) close(t->listen_fd);
        if (t->tls_listen_fd >= 0) close(t->tls_listen_fd);
        if (t->epfd >= 0) close(t->epfd);
        if (t->wake_fd >= 0) close(t->wake_fd);
    }
    if (r->appdir_fd >= 0) close(r->appdir_fd);
    free(r->threads);
    free(r);
}

