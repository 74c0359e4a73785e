/* tlsconn.c - TLS on the router's client connections, and the per-request
 * rules that depend on the scheme or the Host: app.yaml `secure:` redirects
 * and custom-domain refusals.
 *
 * router.c calls these hooks where a plain connection would call send(),
 * recv() or sendfile(). They keep router.c's readiness flags right for an
 * edge-triggered loop: OpenSSL's "want read" clears can_read and "want
 * write" clears can_write (whichever direction the record layer is waiting
 * for), and the connection goes on when epoll reports that direction
 * again. sendfile() cannot go through TLS, so a static file is read into
 * the connection's output buffer in 64 KiB slices and written from there
 * (pread, so the shared open-file cache descriptor's offset is untouched). */
#include "router/router_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

#define FILE_SLICE (64 * 1024)

/* Record what OpenSSL waits for; returns -1 with errno set like send(). */
static ssize_t would_block(rconn *c, ssize_t r)
{
    if (r == TLS_WANT_READ) c->can_read = 0;
    else if (r == TLS_WANT_WRITE) c->can_write = 0;
    else { errno = ECONNRESET; return -1; }
    errno = EAGAIN;
    return -1;
}

int tlsconn_handshake(rconn *c)
{
    int r = tls_handshake(c->tls);
    if (r == TLS_OK) {
        c->tls_ready = 1;
        c->last_io_us = now_us();
        return 1;
    }
    if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) { would_block(c, r); return 0; }
    return -1;
}

ssize_t tlsconn_send(rconn *c, const void *p, size_t n)
{
    ssize_t r = tls_write(c->tls, p, n);
    if (r > 0) return r;
    if (r == TLS_WANT_READ) {
        /* The record layer needs the peer's bytes first: wait for EPOLLIN. */
        c->can_read = 0;
        errno = EAGAIN;
        return -1;
    }
    return would_block(c, r);
}

ssize_t tlsconn_recv(rconn *c, void *p, size_t n)
{
    ssize_t r = tls_read(c->tls, p, n);
    if (r > 0) return r;
    if (r == TLS_EOF) return 0;
    if (r == TLS_WANT_WRITE) {
        c->can_write = 0;
        errno = EAGAIN;
        return -1;
    }
    return would_block(c, r);
}

int tlsconn_fill_from_file(rconn *c)
{
    size_t n = (size_t)(c->file_end - c->file_off);
    if (n > FILE_SLICE) n = FILE_SLICE;
    buf_reserve(&c->out, n);
    for (;;) {
        ssize_t r = pread(c->file_fd, buf_wp(&c->out), n, c->file_off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;            /* error, or the file shrank under us */
        c->out.len += (size_t)r;
        c->file_off += r;
        return 0;
    }
}

int tlsconn_secure_redirect(rconn *c, const http_request *req, const app_handler *h)
{
    router *r = c->t->r;
    int https = c->tls != NULL;
    int to_https;
    if (h->secure == SECURE_ALWAYS && !https && r->c.https_port > 0) to_https = 1;
    else if (h->secure == SECURE_NEVER && https) to_https = 0;
    else return 0;
    int code = h->redirect_http_response_code ? h->redirect_http_response_code : 302;
    buf loc = BUF_INIT;
    const char *host = req->host ? req->host : r->c.default_hostname;
    size_t hl = req->host ? req->host_len : strlen(r->c.default_hostname);
    hostroute_redirect_url(host, hl, to_https, to_https ? r->c.https_port : r->c.port, req->target,
                           req->target_len, &loc);
    thread_date(c->t);
    c->status = code;
    buf_reset(&c->out);
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: Cyclozzo\r\n%sLocation: %s\r\nContent-Length: 0\r\n%s\r\n",
               code, http_reason(code), c->t->date, buf_cstr(&loc),
               c->close_after || !c->keep_alive ? "Connection: close\r\n" : "");
    c->bytes_out = buf_unread(&c->out);
    buf_free(&loc);
    c->state = CS_SEND;
    return 1;
}

void tlsconn_host_refused(rconn *c, const http_request *req)
{
    router *r = c->t->r;
    size_t n;
    const char *name = hostroute_name(req->host, req->host_len, &n);
    /* Only the Host's name is echoed, and only characters a host name has. */
    char safe[256];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof safe - 1; i++) {
        char ch = name[i];
        safe[k++] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '.' ? ch : '?';
    }
    safe[k] = 0;
    char detail[512];
    snprintf(detail, sizeof detail, "The host %s is not served here: this server runs the app %s (version %s) "
             "under %s.", safe, r->hosts.app, r->hosts.version, r->hosts.domain);
    conn_send_error(c, 404, detail);
}
