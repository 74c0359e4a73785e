/* static.c - serves app.yaml static handlers (static_files, static_dir)
 * from the app directory.
 *
 * The file path comes from the handler (static_files with \N groups
 * expanded, or static_dir plus the rest of the URL) and is opened with
 * openat2(RESOLVE_BENEATH) relative to the app directory, so no path, `..`
 * or symlink can reach outside it. Files excluded by skip_files, and for
 * static_files handlers files outside the `upload` pattern, are not served
 * (App Engine never uploads them as static files). The response carries the MIME type
 * (handler mime_type or by extension), ETag and Last-Modified, Cache-Control
 * and Expires from expiration/default_expiration (App Engine's default is 10
 * minutes), the handler's http_headers, and honours conditional requests and
 * single byte ranges (src/http/range.h). The body goes out by sendfile. */
#include "router/router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "core/util.h"
#include "http/mime.h"
#include "http/range.h"

#define DEFAULT_EXPIRATION_S 600

static int open_beneath(int dirfd, const char *rel)
{
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return fd;
    /* Kernels before 5.6: refuse any `..` component and absolute paths. */
    if (rel[0] == '/' || !strcmp(rel, "..") || !strncmp(rel, "../", 3) || strstr(rel, "/../") ||
        (strlen(rel) >= 3 && !strcmp(rel + strlen(rel) - 3, "/.."))) { errno = EACCES; return -1; }
    return openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

/* 1 if any '/'-separated segment of p is "..": such paths are never served,
 * so a URL cannot climb from a handler's directory to other app files. */
static int has_dotdot(const char *p)
{
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') return 1;
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

static char *file_for(const app_handler *h, const app_match *m)
{
    if (h->kind == HANDLER_STATIC_FILES) return appcfg_expand(h->static_files, m);
    /* static_dir: the part of the path below the handler's url prefix is the
     * last capture group. */
    const char *rest = "";
    size_t rl = 0;
    if (m->ngroups >= 2) {
        int g = m->ngroups - 1;
        if (m->ovec[2 * g] != (size_t)-1) {
            rest = m->subject + m->ovec[2 * g];
            rl = m->ovec[2 * g + 1] - m->ovec[2 * g];
        }
    }
    return xasprintf("%s/%.*s", h->static_dir, (int)rl, rest);
}

static int has_header(const app_handler *h, const char *name)
{
    for (size_t i = 0; i < h->n_http_headers; i++)
        if (!strcasecmp(h->http_headers[i].name, name)) return 1;
    return 0;
}

void static_serve(rconn *c, const app_match *m, const http_request *req)
{
    rthread *t = c->t;
    router *r = t->r;
    const app_handler *h = m->handler;
    if (!c->is_head && !strn_case_eq(req->method, req->method_len, "GET")) {
        conn_send_error(c, 405, "Static files answer GET and HEAD only.");
        return;
    }
    char *rel = file_for(h, m);
    char *p = rel;
    while (*p == '/') p++;
    if (!*p || has_dotdot(p) || appcfg_skipped(r->c.cfg, p) ||
        (h->kind == HANDLER_STATIC_FILES && !appcfg_static_uploaded(h, p))) {
        free(rel);
        conn_send_error(c, 404, "The requested URL was not found on this server.");
        return;
    }
    int fd = open_beneath(r->appdir_fd, p);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        free(rel);
        conn_send_error(c, 404, "The requested URL was not found on this server.");
        return;
    }
    char etag[HTTP_ETAG_MAX];
    http_etag(etag, (uint64_t)st.st_ino, (uint64_t)st.st_size,
              (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
    uint64_t first = 0, last = 0;
    int status = http_static_status(req->method, req->method_len, req->headers, req->nheaders, etag,
                                    (int64_t)st.st_mtime, (uint64_t)st.st_size, &first, &last);
    thread_date(t);
    /* The head is assembled without printf: this is the router's hottest
     * path. Dates are cached per thread (one file's mtime, one expiry). */
    if (t->lm_mtime != (int64_t)st.st_mtime || !t->lm_str[0]) {
        t->lm_mtime = (int64_t)st.st_mtime;
        http_format_date(t->lm_mtime, t->lm_str);
    }
    buf *o = &c->out;
    buf_reset(o);
    c->status = status;
    buf_puts(o, "HTTP/1.1 ");
    buf_put_dec(o, (uint64_t)status);
    buf_cat(o, " ", http_reason(status), "\r\nServer: Cyclozzo\r\n", t->date,
            "ETag: ", etag, "\r\nLast-Modified: ", t->lm_str, "\r\n", NULL);
    int64_t exp = h->expiration_s >= 0 ? h->expiration_s
                : r->c.cfg->default_expiration_s >= 0 ? r->c.cfg->default_expiration_s : DEFAULT_EXPIRATION_S;
    if (!has_header(h, "Cache-Control")) {
        buf_puts(o, "Cache-Control: public, max-age=");
        buf_put_dec(o, (uint64_t)exp);
        buf_puts(o, "\r\n");
    }
    if (!has_header(h, "Expires")) {
        int64_t at = t->date_sec + exp;
        if (at != t->exp_at || !t->exp_str[0]) { t->exp_at = at; http_format_date(at, t->exp_str); }
        buf_cat(o, "Expires: ", t->exp_str, "\r\n", NULL);
    }
    for (size_t i = 0; i < h->n_http_headers; i++)
        buf_cat(o, h->http_headers[i].name, ": ", h->http_headers[i].value, "\r\n", NULL);
    const char *conn = c->close_after || !c->keep_alive ? "Connection: close\r\n"
                     : c->version_minor == 0 ? "Connection: keep-alive\r\n" : "";
    if (status == 304 || status == 412) {
        buf_cat(o, conn, "\r\n", NULL);
        close(fd);
        free(rel);
        c->bytes_out = buf_unread(o);
        c->state = CS_SEND;
        return;
    }
    const char *mime = h->mime_type ? h->mime_type : mime_type_for(p);
    if (status == 416) {
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, HTTP_RANGE_UNSATISFIABLE, 0, 0, (uint64_t)st.st_size);
        buf_cat(o, "Content-Range: ", cr, "\r\nContent-Length: 0\r\n", conn, "\r\n", NULL);
        close(fd);
        free(rel);
        c->bytes_out = buf_unread(o);
        c->state = CS_SEND;
        return;
    }
    if (status != 206) { first = 0; last = st.st_size ? (uint64_t)st.st_size - 1 : 0; }
    uint64_t len = st.st_size ? last - first + 1 : 0;
    if (status == 206) {
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, HTTP_RANGE_PARTIAL, first, last, (uint64_t)st.st_size);
        buf_cat(o, "Content-Range: ", cr, "\r\n", NULL);
    }
    buf_cat(o, "Content-Type: ", mime, "\r\nAccept-Ranges: bytes\r\nContent-Length: ", NULL);
    buf_put_dec(o, len);
    buf_cat(o, "\r\n", conn, "\r\n", NULL);
    c->bytes_out = buf_unread(o) + (c->is_head ? 0 : len);
    if (c->is_head || len == 0) {
        close(fd);
    } else {
        c->file_fd = fd;
        c->file_off = (off_t)first;
        c->file_end = (off_t)(first + len);
    }
    free(rel);
    c->state = CS_SEND;
}
