/* proxy.c - sends a script handler's request to an instance and relays the
 * response back to the client.
 *
 * Each router thread keeps idle keep-alive connections to instances (tagged
 * with the instance's generation, so connections to a restarted instance are
 * dropped). A request takes a concurrency slot on an instance
 * (instmgr_acquire); when none is free it waits in the thread's queue. The
 * response head is rewritten (hop-by-hop headers dropped, Connection set for
 * the client) and the body is relayed by its framing: Content-Length bodies
 * byte for byte, chunked or until-close bodies decoded and re-chunked for
 * HTTP/1.1 clients (HTTP/1.0 clients get the raw body and a close). Relaying
 * pauses while the client's output buffer is full. A connection that fails
 * before any response byte arrives is retried once on a fresh connection when
 * it was a reused idle one; otherwise the client gets 502 (no hang). */
#include "router/router_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "core/log.h"
#include "core/util.h"

#define OUT_HIGH_WATER (1 << 20)
#define UP_IDLE_US (30LL * 1000000)

static void up_close(upconn *u)
{
    rthread *t = u->t;
    if (u->fd >= 0) {
        epoll_ctl(t->epfd, EPOLL_CTL_DEL, u->fd, NULL);
        close(u->fd);
    }
    buf_free(&u->in);
    buf_free(&u->sink);
    /* Freed at the end of the loop turn: an event for u may be pending. */
    u->dead = 1;
    u->fd = -1;
    u->next_idle = t->dead_ups;
    t->dead_ups = u;
}

void proxy_reap_dead(rthread *t)
{
    while (t->dead_ups) {
        upconn *u = t->dead_ups;
        t->dead_ups = u->next_idle;
        free(u);
    }
}

static upconn *up_connect(rthread *t, instance *in)
{
    int fd;
    int r;
    if (in->is_unix) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", in->sock_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return NULL;
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)in->tcp_port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return NULL;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (r < 0 && errno != EINPROGRESS && errno != EAGAIN) { close(fd); return NULL; }
    upconn *u = xcalloc(1, sizeof *u);
    u->kind = EV_UP;
    u->fd = fd;
    u->t = t;
    u->inst = in;
    u->generation = atomic_load(&in->generation);
    u->connected = r == 0;
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = u};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) { close(fd); free(u); return NULL; }
    return u;
}

/* An idle connection to this instance, or a new one. */
static upconn *up_get(rthread *t, instance *in, int *reused)
{
    unsigned gen = atomic_load(&in->generation);
    upconn **pp = &t->idle;
    while (*pp) {
        upconn *u = *pp;
        if (u->inst == in) {
            *pp = u->next_idle;
            u->next_idle = NULL;
            if (u->generation == gen) { *reused = 1; return u; }
            up_close(u);
            continue;
        }
        pp = &u->next_idle;
    }
    *reused = 0;
    return up_connect(t, in);
}

static void up_release_idle(upconn *u)
{
    rthread *t = u->t;
    u->c = NULL;
    buf_reset(&u->in);
    u->sent = 0;
    u->head_done = 0;
    u->idle_since_us = now_us();
    u->next_idle = t->idle;
    t->idle = u;
}

static const char *conn_header_for(const rconn *c)
{
    if (c->close_after || !c->keep_alive) return "Connection: close\r\n";
    if (c->version_minor == 0) return "Connection: keep-alive\r\n";
    return "";
}

/* The request has finished on its upstream (complete, or failed). */
static void finish_upstream(rconn *c, int reusable)
{
    upconn *u = c->up;
    c->up = NULL;
    instmgr_release(c->t->r->c.im, u->inst);
    /* A slot freed: threads holding queued requests should look now, not at
     * their next timeout. */
    if (atomic_load(&c->t->r->queued) > 0) router_wake_all(c->t->r);
    if (reusable && atomic_load(&u->inst->generation) == u->generation) up_release_idle(u);
    else up_close(u);
}

static void fail_request(rconn *c, int status, const char *why)
{
    upconn *u = c->up;
    if (u) {
        instance *in = u->inst;
        log_warn("router", "app=%s request_id=%s instance=%d msg=%s", c->t->r->c.app_id, c->log_id, in->id, log_q(why));
        finish_upstream(c, 0);
    }
    if (c->status == 0) {
        conn_send_error(c, status, why);
    } else {
        /* Part of the response already went out: all we can do is close. */
        c->close_after = 1;
        c->state = CS_SEND;
    }
}

static void up_progress(upconn *u);

static int start_on(rconn *c, instance *in)
{
    rthread *t = c->t;
    int reused;
    upconn *u = up_get(t, in, &reused);
    if (!u) { instmgr_release(t->r->c.im, in); return -1; }
    u->reused = reused;
    u->c = c;
    u->sent = 0;
    u->head_done = 0;
    buf_reset(&u->in);
    c->up = u;
    c->instance_id = in->id;
    c->state = CS_PROXY;
    if (reused) u->can_write = 1;
    up_progress(u);
    return 0;
}

void proxy_dispatch(rconn *c)
{
    rthread *t = c->t;
    instmgr *im = t->r->c.im;
    /* First come, first served: with requests already waiting, join them. */
    if (!t->q_head) {
        instance *in = instmgr_acquire(im);
        if (in && start_on(c, in) == 0) return;
    }
    /* Wait for a slot (or for a restarting instance); the retry loop answers
     * 503 if none comes within the deadline. */
    c->state = CS_QUEUED;
    c->qnext = NULL;
    if (t->q_tail) t->q_tail->qnext = c; else t->q_head = c;
    t->q_tail = c;
    atomic_fetch_add(&t->r->queued, 1);
}

void proxy_retry_queue(rthread *t)
{
    instmgr *im = t->r->c.im;
    int64_t now = now_us();
    while (t->q_head) {
        rconn *c = t->q_head;
        instance *in = instmgr_acquire(im);
        if (!in) {
            /* Requests that waited too long for an instance get 503. */
            rconn **pp = &t->q_head, *prev = NULL;
            while (*pp) {
                rconn *q = *pp;
                if (now - q->req_start_us > (int64_t)t->r->c.deadline_s * 1000000) {
                    *pp = q->qnext;
                    if (t->q_tail == q) t->q_tail = prev;
                    atomic_fetch_sub(&t->r->queued, 1);
                    conn_send_error(q, 503, "No instance became available to serve this request.");
                    conn_kick(q);
                    continue;
                }
                prev = q;
                pp = &q->qnext;
            }
            return;
        }
        t->q_head = c->qnext;
        atomic_fetch_sub(&t->r->queued, 1);
        if (!t->q_head) t->q_tail = NULL;
        c->qnext = NULL;
        if (start_on(c, in) < 0) conn_send_error(c, 502, "The app's instance could not be reached.");
        conn_kick(c);
    }
}

/* Write the request (head then body) to the upstream. 1 done, 0 blocked, -1 error. */
static int up_write(upconn *u)
{
    rconn *c = u->c;
    size_t hl = buf_unread(&c->upreq), bl = buf_unread(&c->upbody);
    while (u->sent < hl + bl) {
        if (!u->can_write) return 0;
        struct iovec iov[2];
        int n = 0;
        if (u->sent < hl) { iov[n].iov_base = buf_rp(&c->upreq) + u->sent; iov[n++].iov_len = hl - u->sent; }
        size_t boff = u->sent > hl ? u->sent - hl : 0;
        if (bl > boff) { iov[n].iov_base = buf_rp(&c->upbody) + boff; iov[n++].iov_len = bl - boff; }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(u->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { u->can_write = 0; return 0; }
            if (errno == EINTR) continue;
            return -1;
        }
        u->sent += (size_t)w;
    }
    return 1;
}

static int skip_resp_header(const http_header *h)
{
    static const char *hop[] = {"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                                "upgrade", "te", "trailer", NULL};
    for (int i = 0; hop[i]; i++)
        if (strn_case_eq(h->name, h->name_len, hop[i])) return 1;
    return 0;
}

/* Parse the response head in u->in and write the client's head into c->out.
 * 1 done, 0 need more, -1 malformed. */
static int relay_head(upconn *u)
{
    rconn *c = u->c;
    http_response resp;
    int k = http_parse_response(buf_rp(&u->in), buf_unread(&u->in), &resp, NULL);
    if (k == HTTP_INCOMPLETE) return 0;
    if (k != HTTP_OK) return -1;
    if (resp.status >= 100 && resp.status < 200) {   /* interim: drop it */
        buf_consume(&u->in, resp.head_len);
        return relay_head(u);
    }
    c->status = resp.status;
    int nobody = c->is_head || resp.status == 204 || resp.status == 304;
    if (nobody) u->framing = 3;
    else if (resp.chunked) u->framing = 1;
    else if (resp.content_length >= 0) { u->framing = 0; u->left = resp.content_length; }
    else u->framing = 2;
    memset(&u->ck, 0, sizeof u->ck);
    u->rechunk = 0;
    if (u->framing == 1 || u->framing == 2) {
        if (c->version_minor >= 1) u->rechunk = 1;
        else c->close_after = 1;
    }
    u->blob_discard = 0;
    if (c->t->r->c.blob && sendblob_head(c, &resp)) {
        /* The router serves the blob; the app's own body is read and dropped. */
        u->rechunk = 0;
        u->blob_discard = 1;
        buf_consume(&u->in, resp.head_len);
        u->head_done = 1;
        if (!resp.keep_alive) u->reused = -1;
        return 1;
    }
    thread_date(c->t);
    buf *o = &c->out;
    buf_printf(o, "HTTP/1.1 %d %.*s\r\n", resp.status, (int)resp.reason_len, resp.reason);
    int has_date = 0, has_server = 0;
    for (size_t i = 0; i < resp.nheaders; i++) {
        const http_header *h = &resp.headers[i];
        if (skip_resp_header(h)) continue;
        if (u->framing != 0 && u->framing != 3 && strn_case_eq(h->name, h->name_len, "content-length")) continue;
        if (strn_case_eq(h->name, h->name_len, "date")) has_date = 1;
        if (strn_case_eq(h->name, h->name_len, "server")) has_server = 1;
        buf_append(o, h->name, h->name_len);
        buf_puts(o, ": ");
        buf_append(o, h->value, h->value_len);
        buf_puts(o, "\r\n");
    }
    if (!has_date) buf_puts(o, c->t->date);
    if (!has_server) buf_puts(o, "Server: Cyclozzo\r\n");
    if (u->rechunk) buf_puts(o, "Transfer-Encoding: chunked\r\n");
    buf_puts(o, conn_header_for(c));
    buf_puts(o, "\r\n");
    c->bytes_out += buf_unread(o);
    buf_consume(&u->in, resp.head_len);
    u->head_done = 1;
    if (!resp.keep_alive) u->reused = -1;   /* mark: do not pool */
    return 1;
}

/* Move body bytes in[0,n) to the client. Returns 1 when the body is complete,
 * 0 when more is needed, -1 on malformed framing. *used = bytes consumed. */
static int relay_body(upconn *u, const char *in, size_t n, size_t *used)
{
    rconn *c = u->c;
    buf *o = u->blob_discard ? &u->sink : &c->out;
    *used = 0;
    if (u->framing == 3) return 1;
    if (u->framing == 0) {
        size_t take = (int64_t)n > u->left ? (size_t)u->left : n;
        buf_append(o, in, take);
        c->bytes_out += take;
        u->left -= (int64_t)take;
        *used = take;
        return u->left == 0;
    }
    if (u->framing == 2) {
        if (u->rechunk && n) buf_printf(o, "%zx\r\n", n);
        buf_append(o, in, n);
        if (u->rechunk && n) buf_puts(o, "\r\n");
        c->bytes_out += n;
        *used = n;
        return 0;
    }
    size_t off = 0;
    for (;;) {
        size_t cons = 0;
        const char *data;
        size_t dl;
        int k = http_chunked_feed(&u->ck, in + off, n - off, &cons, &data, &dl);
        off += cons;
        if (k == HTTP_CHUNK_DATA) {
            if (dl) {
                if (u->rechunk) buf_printf(o, "%zx\r\n", dl);
                buf_append(o, data, dl);
                if (u->rechunk) buf_puts(o, "\r\n");
                c->bytes_out += dl;
            }
            continue;
        }
        *used = off;
        if (k == HTTP_CHUNK_DONE) return 1;
        if (k == HTTP_INCOMPLETE) return 0;
        return -1;
    }
}

static void body_done(upconn *u)
{
    rconn *c = u->c;
    if (u->rechunk) { buf_puts(&c->out, "0\r\n\r\n"); c->bytes_out += 5; }
    int reusable = u->framing != 2 && u->reused != -1 && buf_unread(&u->in) == 0;
    finish_upstream(c, reusable);
    c->state = CS_SEND;
}

/* A pooled connection that the instance had closed failed before any
 * response byte: move the request to a fresh connection, once. Returns it,
 * or NULL with the slot released and a 502 queued for the client. */
static upconn *retry_fresh(rconn *c, upconn *u)
{
    instance *in = u->inst;
    c->retried = 1;
    c->up = NULL;
    up_close(u);
    upconn *nu = up_connect(c->t, in);
    if (!nu) {
        instmgr_release(c->t->r->c.im, in);
        conn_send_error(c, 502, "The app's instance could not be reached.");
        return NULL;
    }
    nu->c = c;
    c->up = nu;
    return nu;
}

/* Read and relay as much as the client's buffer allows. Does not call
 * conn_kick; returns -1 if the request failed (error already queued). */
static int up_read(upconn *u)
{
    rconn *c = u->c;
    for (;;) {
        if (u->head_done && buf_unread(&c->out) > OUT_HIGH_WATER) return 0;
        if (buf_unread(&u->in)) {
            if (!u->head_done) {
                int k = relay_head(u);
                if (k < 0) { fail_request(c, 502, "The app's instance sent a malformed response."); return -1; }
                if (k == 1) {
                    if (u->framing == 3) { body_done(u); return 1; }
                    continue;
                }
            } else {
                size_t used;
                uint64_t keep_bytes = c->bytes_out;
                int k = relay_body(u, buf_rp(&u->in), buf_unread(&u->in), &used);
                if (u->blob_discard) { c->bytes_out = keep_bytes; buf_reset(&u->sink); }
                buf_consume(&u->in, used);
                if (k < 0) { fail_request(c, 502, "The app's instance sent a malformed response body."); return -1; }
                if (k == 1) { body_done(u); return 1; }
            }
        }
        if (!u->can_read) return 0;
        buf_reserve(&u->in, 65536);
        ssize_t r = recv(u->fd, buf_wp(&u->in), buf_room(&u->in), 0);
        if (r > 0) { u->in.len += (size_t)r; continue; }
        if (r < 0 && errno == EAGAIN) { u->can_read = 0; return 0; }
        if (r < 0 && errno == EINTR) continue;
        /* EOF or error. */
        if (u->head_done && u->framing == 2) { body_done(u); return 1; }
        if (!u->head_done && buf_unread(&u->in) == 0 && u->reused == 1 && !c->retried) {
            return retry_fresh(c, u) ? 0 : -1;
        }
        fail_request(c, 502, u->head_done ? "The app's instance closed the connection mid-response."
                                           : "The app's instance closed the connection without answering.");
        return -1;
    }
}

/* Drop an idle pooled connection that became readable: the instance closed
 * it (or sent something unasked), so it cannot be reused. */
static void idle_event(upconn *u)
{
    if (!u->can_read) return;
    char tmp[1];
    ssize_t r = recv(u->fd, tmp, sizeof tmp, MSG_PEEK);
    if (r < 0 && errno == EAGAIN) { u->can_read = 0; return; }
    rthread *t = u->t;
    upconn **pp = &t->idle;
    while (*pp && *pp != u) pp = &(*pp)->next_idle;
    if (*pp) *pp = u->next_idle;
    up_close(u);
}

/* Write the request and relay the response as far as possible. Never calls
 * conn_kick: it runs inside the client's own processing too. */
static void up_progress(upconn *u)
{
    rconn *c = u->c;
    if (u->sent < buf_unread(&c->upreq) + buf_unread(&c->upbody)) {
        int w = up_write(u);
        if (w < 0) {
            if (u->reused == 1 && !c->retried) {
                upconn *nu = retry_fresh(c, u);
                if (nu) up_progress(nu);
                return;
            }
            instmgr_report_failure(c->t->r->c.im, u->inst, u->generation);
            fail_request(c, 502, "The app's instance could not be reached.");
            return;
        }
        if (w == 0) return;
    }
    up_read(u);
}

void proxy_on_event(upconn *u, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) u->can_read = 1;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) { u->can_write = 1; u->connected = 1; }
    rconn *c = u->c;
    if (!c) { idle_event(u); return; }
    up_progress(u);
    conn_kick(c);
}

void proxy_client_drained(rconn *c)
{
    if (c->up && c->up->head_done) up_read(c->up);
}

void proxy_abort(rconn *c)
{
    if (!c->up) return;
    finish_upstream(c, 0);
}

void proxy_reap_idle(rthread *t, int64_t now)
{
    upconn **pp = &t->idle;
    while (*pp) {
        upconn *u = *pp;
        if (now - u->idle_since_us > UP_IDLE_US ||
            atomic_load(&u->inst->generation) != u->generation) {
            *pp = u->next_idle;
            up_close(u);
            continue;
        }
        pp = &u->next_idle;
    }
}

void proxy_free_idle(rthread *t)
{
    while (t->idle) {
        upconn *u = t->idle;
        t->idle = u->next_idle;
        up_close(u);
    }
}
