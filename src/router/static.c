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
 * single byte ranges (src/http/range.h). Small files are sent from the
 * thread's open-file cache together with the head; large ones by sendfile. */
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

/* The open-file cache: per router thread, direct-mapped on (handler, path).
 * An entry holds the open file, its stat, ETag and Last-Modified, and for
 * files up to FC_MAX_DATA bytes their content, so serving a hot small file
 * costs no file system call at all. Only paths that passed every check above
 * are cached, and an entry lives FC_TTL_US: a changed or removed file is
 * seen within a second. */
#define FC_SLOTS 128
#define FC_TTL_US 1000000
#define FC_MAX_DATA 32768

typedef struct {
    char *rel;
    int handler;
    uint32_t hash;
    int fd;
    struct stat st;
    int64_t born_us;
    char *data;                 /* whole content when small, else NULL */
    char etag[HTTP_ETAG_MAX];
    char lm[32];
} fentry;

struct fcache { fentry e[FC_SLOTS]; };

static uint32_t fc_hash(const char *s, int handler)
{
    uint32_t h = 2166136261u ^ (uint32_t)handler;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void fc_drop(fentry *e)
{
    if (!e->rel) return;
    free(e->rel);
    free(e->data);
    if (e->fd >= 0) close(e->fd);
    memset(e, 0, sizeof *e);
    e->fd = -1;
}

void static_cache_free(rthread *t)
{
    if (!t->fcache) return;
    for (int i = 0; i < FC_SLOTS; i++) fc_drop(&t->fcache->e[i]);
    free(t->fcache);
    t->fcache = NULL;
}

static fentry *fc_lookup(rthread *t, const char *rel, int handler, uint32_t hash)
{
    if (!t->fcache) return NULL;
    fentry *e = &t->fcache->e[hash % FC_SLOTS];
    if (!e->rel || e->hash != hash || e->handler != handler || strcmp(e->rel, rel)) return NULL;
    if (now_us() - e->born_us > FC_TTL_US) { fc_drop(e); return NULL; }
    return e;
}

/* Takes ownership of fd. Returns the filled entry (NULL on a read error). */
static fentry *fc_insert(rthread *t, const char *rel, int handler, uint32_t hash, int fd, const struct stat *st)
{
    if (!t->fcache) {
        t->fcache = xcalloc(1, sizeof *t->fcache);
        for (int i = 0; i < FC_SLOTS; i++) t->fcache->e[i].fd = -1;
    }
    fentry *e = &t->fcache->e[hash % FC_SLOTS];
    fc_drop(e);
    e->rel = xstrdup(rel);
    e->handler = handler;
    e->hash = hash;
    e->fd = fd;
    e->st = *st;
    e->born_us = now_us();
    http_etag(e->etag, (uint64_t)st->st_ino, (uint64_t)st->st_size,
              (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec);
    http_format_date((int64_t)st->st_mtime, e->lm);
    if (st->st_size <= FC_MAX_DATA) {
        e->data = xmalloc((size_t)st->st_size + 1);
        ssize_t got = st->st_size ? pread(fd, e->data, (size_t)st->st_size, 0) : 0;
        if (got != (ssize_t)st->st_size) { fc_drop(e); return NULL; }
    }
    return e;
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
    uint32_t hash = fc_hash(p, m->index);
    fentry *fe = fc_lookup(t, p, m->index, hash);
    if (!fe) {
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
        fe = fc_insert(t, p, m->index, hash, fd, &st);
        if (!fe) {
            free(rel);
            conn_send_error(c, 500, "The file could not be read.");
            return;
        }
    }
    const struct stat *stp = &fe->st;
    const char *etag = fe->etag;
    uint64_t first = 0, last = 0;
    int status = http_static_status(req->method, req->method_len, req->headers, req->nheaders, etag,
                                    (int64_t)stp->st_mtime, (uint64_t)stp->st_size, &first, &last);
    thread_date(t);
    /* The head is assembled without printf: this is the router's hottest
     * path. Dates come from the cache entry and a per-thread Expires cache. */
    buf *o = &c->out;
    buf_reset(o);
    c->status = status;
    buf_puts(o, "HTTP/1.1 ");
    buf_put_dec(o, (uint64_t)status);
    buf_cat(o, " ", http_reason(status), "\r\nServer: Cyclozzo\r\n", t->date,
            "ETag: ", etag, "\r\nLast-Modified: ", fe->lm, "\r\n", NULL);
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
        free(rel);
        c->bytes_out = buf_unread(o);
        c->state = CS_SEND;
        return;
    }
    const char *mime = h->mime_type ? h->mime_type : mime_type_for(p);
    uint64_t size = (uint64_t)stp->st_size;
    if (status == 416) {
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, HTTP_RANGE_UNSATISFIABLE, 0, 0, size);
        buf_cat(o, "Content-Range: ", cr, "\r\nContent-Length: 0\r\n", conn, "\r\n", NULL);
        free(rel);
        c->bytes_out = buf_unread(o);
        c->state = CS_SEND;
        return;
    }
    if (status != 206) { first = 0; last = size ? size - 1 : 0; }
    uint64_t len = size ? last - first + 1 : 0;
    if (status == 206) {
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, HTTP_RANGE_PARTIAL, first, last, size);
        buf_cat(o, "Content-Range: ", cr, "\r\n", NULL);
    }
    buf_cat(o, "Content-Type: ", mime, "\r\nAccept-Ranges: bytes\r\nContent-Length: ", NULL);
    buf_put_dec(o, len);
    buf_cat(o, "\r\n", conn, "\r\n", NULL);
    c->bytes_out = buf_unread(o) + (c->is_head ? 0 : len);
    if (!c->is_head && len) {
        if (fe->data) {
            buf_append(o, fe->data + first, (size_t)len);      /* one send for head and body */
        } else {
            /* The cache may close its descriptor while this response is
             * still going out: the connection sends from its own copy. */
            c->file_fd = fcntl(fe->fd, F_DUPFD_CLOEXEC, 0);
            if (c->file_fd < 0) { free(rel); conn_send_error(c, 500, "The file could not be read."); return; }
            c->file_off = (off_t)first;
            c->file_end = (off_t)(first + len);
        }
    }
    free(rel);
    c->state = CS_SEND;
}
