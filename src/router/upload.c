/* upload.c - the router's half of the Blobstore: uploads to upload URLs
 * (POST /_ah/upload/SESSION) and blob responses (send_blob).
 *
 * Upload: the session (api/blobstore.h) names the app's success path and the
 * size limits. The multipart/form-data body is parsed as it arrives
 * (http/multipart.h): each file part streams into a new blob (blob store
 * writer plus an MD5) so no file is ever held in memory and the router's
 * body limit does not apply; other fields are copied into the request the
 * app will see. When the body is complete, the blobs' __BlobInfo__ entities
 * are written, the session is used up, and the app's success path gets the
 * form rewritten as App Engine rewrites it: each file part replaced by a
 * message/external-body part carrying blob-key, whose content is the blob's
 * headers (Content-Type, Content-Length, content-md5,
 * X-AppEngine-Upload-Creation, Content-Disposition), which is what the SDK's
 * get_uploads / parse_blob_info read. A limit exceeded answers 413, a
 * malformed body 400, an unknown or used session 404; the rest of the body
 * is then read and dropped, the blobs already written are deleted, and the
 * connection closes. Blobs not handed to the app (client gone, error) are
 * deleted in upload_free.
 *
 * send_blob: a script response with X-AppEngine-BlobKey is replaced by the
 * blob itself, sent with sendfile from the store: X-AppEngine-BlobRange (or
 * else the client's Range) gives 206 or 416; Content-Type is the app's, else
 * the blob's. */
#include "router/router_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api/blobstore.h"
#include "core/log.h"
#include "core/util.h"
#include "http/multipart.h"
#include "http/range.h"

typedef struct upload {
    rconn *c;
    blob_service *svc;
    char sid[BLOB_KEY_MAX + 1];
    blob_session sess;
    mp_parser *mp;
    int mp_done;
    char boundary[MP_MAX_BOUNDARY + 1];
    int status;                    /* error to answer when the parser stopped (413, 500) */
    char why[300];
    /* the file part being written */
    blob_writer *w;
    EVP_MD_CTX *md5;
    int in_file;                   /* current part is a file */
    char *name, *filename, *ctype;
    uint64_t total;                /* file bytes, all parts */
    size_t field_bytes;
    /* blobs written so far */
    blob_info *infos;
    size_t ninfos;
    int handed_over;               /* BlobInfos written: the blobs are the app's */
} upload;

int upload_is_path(const http_request *req)
{
    size_t pl = strlen(BLOBSTORE_UPLOAD_PREFIX);
    return req->path_len > pl && !memcmp(req->path, BLOBSTORE_UPLOAD_PREFIX, pl);
}

static void up_fail(upload *u, int status, const char *why)
{
    if (u->status) return;
    u->status = status;
    snprintf(u->why, sizeof u->why, "%s", why);
}

static void drop_blobs(upload *u)
{
    blob_store *bs = blobsvc_store(u->svc);
    const char *app = u->c->t->r->c.app_id;
    char err[256];
    for (size_t i = 0; i < u->ninfos; i++) {
        if (!u->handed_over) blob_delete(bs, app, u->infos[i].key, err, sizeof err);
        blob_info_clear(&u->infos[i]);
    }
    free(u->infos);
    u->infos = NULL;
    u->ninfos = 0;
}

static void end_file(upload *u)
{
    blob_abort(u->w);
    u->w = NULL;
    if (u->md5) EVP_MD_CTX_free(u->md5);
    u->md5 = NULL;
}

void upload_free(rconn *c)
{
    upload *u = c->upload;
    if (!u) return;
    end_file(u);
    drop_blobs(u);
    mp_free(u->mp);
    free(u->name); free(u->filename); free(u->ctype);
    free(u);
    c->upload = NULL;
}

/* name="..." with quotes and backslashes escaped. */
static void put_quoted(buf *b, const char *s)
{
    buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_putc(b, '\\');
        if (*s == '\r' || *s == '\n') continue;
        buf_putc(b, *s);
    }
    buf_putc(b, '"');
}

static int on_begin(void *arg, const mp_part *p)
{
    upload *u = arg;
    rconn *c = u->c;
    free(u->name); free(u->filename); free(u->ctype);
    u->name = xstrdup(p->name);
    u->filename = p->filename ? xstrdup(p->filename) : NULL;
    u->ctype = p->content_type ? xstrdup(p->content_type) : NULL;
    /* A file input left empty sends filename="": an ordinary field. */
    u->in_file = p->filename && *p->filename;
    if (!u->in_file) {
        buf_cat(&c->upbody, "--", u->boundary, "\r\n", NULL);
        buf_append(&c->upbody, p->head, p->head_len);
        buf_puts(&c->upbody, "\r\n");
        return 0;
    }
    char key[BLOB_KEY_MAX + 1], err[300];
    blob_key_new(key);
    if (blob_create(blobsvc_store(u->svc), c->t->r->c.app_id, key, &u->w, err, sizeof err) < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot store an upload\" err=%s", c->t->r->c.app_id, c->log_id, log_q(err));
        up_fail(u, 500, "The upload could not be stored.");
        return -1;
    }
    u->md5 = EVP_MD_CTX_new();
    if (!u->md5 || EVP_DigestInit_ex(u->md5, EVP_md5(), NULL) != 1) {
        up_fail(u, 500, "The upload could not be hashed.");
        return -1;
    }
    u->infos = xrealloc(u->infos, (u->ninfos + 1) * sizeof *u->infos);
    blob_info *bi = &u->infos[u->ninfos++];
    memset(bi, 0, sizeof *bi);
    snprintf(bi->key, sizeof bi->key, "%s", key);   /* deleted with the rest on failure */
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    upload *u = arg;
    rconn *c = u->c;
    if (!u->in_file) {
        u->field_bytes += n;
        if (u->field_bytes > c->t->r->c.max_body) {
            up_fail(u, 413, "The form's fields are larger than 32 MiB.");
            return -1;
        }
        buf_append(&c->upbody, d, n);
        return 0;
    }
    u->total += n;
    if (u->sess.max_bytes_per_blob && blob_written(u->w) + n > (uint64_t)u->sess.max_bytes_per_blob) {
        up_fail(u, 413, "A file is larger than this upload URL allows (max_bytes_per_blob).");
        return -1;
    }
    if (u->sess.max_bytes_total && u->total > (uint64_t)u->sess.max_bytes_total) {
        up_fail(u, 413, "The files are larger than this upload URL allows (max_bytes_total).");
        return -1;
    }
    char err[300];
    if (blob_write(u->w, d, n, err, sizeof err) < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot store an upload\" err=%s", c->t->r->c.app_id, c->log_id, log_q(err));
        up_fail(u, 500, "The upload could not be stored.");
        return -1;
    }
    EVP_DigestUpdate(u->md5, d, n);
    return 0;
}

static void fmt_creation(int64_t us, char *out, size_t n)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char d[32];
    strftime(d, sizeof d, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, n, "%s.%06d", d, (int)(us % 1000000));
}

static int on_end(void *arg)
{
    upload *u = arg;
    rconn *c = u->c;
    if (!u->in_file) { buf_puts(&c->upbody, "\r\n"); return 0; }
    blob_info *bi = &u->infos[u->ninfos - 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(u->md5, md, &mdlen);
    hex_encode(md, mdlen, bi->md5_hex);
    bi->size = blob_written(u->w);
    char err[300];
    int rc = blob_commit(u->w, err, sizeof err);
    u->w = NULL;
    EVP_MD_CTX_free(u->md5);
    u->md5 = NULL;
    if (rc < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot store an upload\" err=%s", c->t->r->c.app_id, c->log_id, log_q(err));
        up_fail(u, 500, "The upload could not be stored.");
        return -1;
    }
    bi->creation_us = wall_us();
    bi->filename = xstrdup(u->filename);
    bi->content_type = xstrdup(u->ctype && *u->ctype ? u->ctype : "application/octet-stream");
    /* content-md5 is the URL-safe base64 of the hex digest, as App Engine sends it. */
    unsigned char b64[64];
    int bl = EVP_EncodeBlock(b64, (const unsigned char *)bi->md5_hex, 32);
    for (int i = 0; i < bl; i++) { if (b64[i] == '+') b64[i] = '-'; else if (b64[i] == '/') b64[i] = '_'; }
    char created[48];
    fmt_creation(bi->creation_us, created, sizeof created);
    buf *b = &c->upbody;
    buf disp = BUF_INIT;
    buf_puts(&disp, "Content-Disposition: form-data; name=");
    put_quoted(&disp, u->name);
    buf_puts(&disp, "; filename=");
    put_quoted(&disp, bi->filename);
    buf_puts(&disp, "\r\n");
    buf_cat(b, "--", u->boundary, "\r\nContent-Type: message/external-body; blob-key=\"", bi->key,
            "\"; access-type=\"X-AppEngine-BlobKey\"\r\n", NULL);
    buf_append(b, buf_rp(&disp), buf_unread(&disp));
    buf_cat(b, "\r\nContent-Type: ", bi->content_type, "\r\nMIME-Version: 1.0\r\nContent-Length: ", NULL);
    buf_put_dec(b, bi->size);
    buf_printf(b, "\r\ncontent-md5: %.*s\r\nX-AppEngine-Upload-Creation: %s\r\n", bl, b64, created);
    buf_append(b, buf_rp(&disp), buf_unread(&disp));
    buf_puts(b, "\r\n\r\n");
    buf_free(&disp);
    return 0;
}

static const mp_callbacks callbacks = {on_begin, on_data, on_end};

/* Answer an error now and read (and drop) the rest of the body first, so
 * the client sees the answer; the connection closes afterwards. */
static void refuse(rconn *c, int status, const char *why)
{
    if (c->upload) {
        upload *u = c->upload;
        end_file(u);
        drop_blobs(u);
    }
    c->keep_alive = 0;
    conn_send_error(c, status, why);
    c->close_after = 0;
    c->discard_body = 1;
    if (c->body_chunked || c->body_left > 0) c->state = CS_BODY;
}

void upload_begin(rconn *c, const http_request *req)
{
    router *r = c->t->r;
    size_t pl = strlen(BLOBSTORE_UPLOAD_PREFIX);
    char sid[BLOB_KEY_MAX + 1];
    size_t sl = req->path_len - pl;
    if (!strn_case_eq(req->method, req->method_len, "POST")) {
        c->discard_body = 1;
        conn_send_error(c, 405, "An upload URL takes a POST of a multipart/form-data form.");
        return;
    }
    if (sl > BLOB_KEY_MAX || !blob_key_valid(req->path + pl, sl)) {
        refuse(c, 404, "This upload URL is unknown.");
        return;
    }
    memcpy(sid, req->path + pl, sl);
    sid[sl] = 0;
    blob_session sess;
    char err[300];
    int found = blobsvc_session_get(r->c.blob, r->c.app_id, sid, &sess, err, sizeof err);
    if (found < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot read an upload session\" err=%s", r->c.app_id, c->log_id, log_q(err));
        refuse(c, 500, "The upload session could not be read.");
        return;
    }
    if (!found) { refuse(c, 404, "This upload URL is unknown, expired or already used."); return; }
    const http_header *ct = http_find_header(req->headers, req->nheaders, "content-type");
    const char *b;
    size_t bl;
    if (!ct || mp_content_type_boundary(ct->value, ct->value_len, &b, &bl) < 0) {
        refuse(c, 400, "An upload must be a multipart/form-data body with a boundary.");
        return;
    }
    /* The success path must be one of the app's script handlers. */
    const char *sp = sess.success_path;
    const char *q = strchr(sp, '?');
    size_t spl = q ? (size_t)(q - sp) : strlen(sp);
    char *dpath = xmalloc(spl + 1);
    long dl = http_url_decode(sp, spl, dpath);
    app_match m;
    int ok = dl >= 0 && appcfg_match(r->c.cfg, dpath, (size_t)dl, &m) && m.handler->kind == HANDLER_SCRIPT;
    free(dpath);
    if (!ok) {
        log_warn("router", "app=%s request_id=%s msg=\"upload success path has no script handler\" path=%s", r->c.app_id, c->log_id, log_q(sp));
        refuse(c, 500, "The upload's success path is not served by a script handler of this app.");
        return;
    }
    upload *u = xcalloc(1, sizeof *u);
    u->c = c;
    u->svc = r->c.blob;
    u->sess = sess;
    snprintf(u->sid, sizeof u->sid, "%s", sid);
    memcpy(u->boundary, b, bl);
    u->boundary[bl] = 0;
    u->mp = mp_new(b, bl, &callbacks, u);
    if (!u->mp) { free(u); refuse(c, 400, "The multipart boundary is malformed."); return; }
    c->upload = u;
    c->handler = m.index;
    build_upstream_head(c, req, m.handler, sp, strlen(sp));
    buf_reset(&c->upbody);
    c->expect_continue = req->expect_continue;
    if (c->expect_continue && (c->body_chunked || c->body_left > 0))
        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    c->state = CS_BODY;
}

/* Feed body bytes to the parser; -1 when it stopped (error answered). */
static int feed(rconn *c, const char *d, size_t n)
{
    upload *u = c->upload;
    if (u->mp_done || !n) return 0;
    int k = mp_feed(u->mp, d, n);
    if (k == MP_DONE) { u->mp_done = 1; return 0; }
    if (k == MP_OK) return 0;
    if (u->status) refuse(c, u->status, u->why);
    else {
        char why[300];
        snprintf(why, sizeof why, "The upload is not a well-formed multipart/form-data body: %s", mp_error(u->mp));
        refuse(c, 400, why);
    }
    return -1;
}

int upload_read_body(rconn *c)
{
    if (!c->body_chunked) {
        size_t n = buf_unread(&c->in);
        if ((int64_t)n > c->body_left) n = (size_t)c->body_left;
        int k = feed(c, buf_rp(&c->in), n);
        buf_consume(&c->in, n);
        c->body_left -= (int64_t)n;
        if (k < 0) return c->body_left == 0 ? (c->state = CS_SEND, -1) : -1;
        return c->body_left == 0;
    }
    for (;;) {
        size_t used = 0;
        const char *data;
        size_t dlen;
        int k = http_chunked_feed(&c->ck, buf_rp(&c->in), buf_unread(&c->in), &used, &data, &dlen);
        if (k == HTTP_CHUNK_DATA) {
            int f = feed(c, data, dlen);
            buf_consume(&c->in, used);
            if (f < 0) return -1;
            continue;
        }
        buf_consume(&c->in, used);
        if (k == HTTP_CHUNK_DONE) return 1;
        if (k == HTTP_INCOMPLETE) return 0;
        refuse(c, 400, "Malformed chunked request body.");
        c->close_after = 1;
        c->state = CS_SEND;
        return -1;
    }
}

void upload_complete(rconn *c)
{
    upload *u = c->upload;
    router *r = c->t->r;
    if (!u->mp_done) {
        mp_finish(u->mp);
        char why[300];
        snprintf(why, sizeof why, "The upload is not a well-formed multipart/form-data body: %s", mp_error(u->mp));
        refuse(c, 400, why);
        c->state = CS_SEND;
        return;
    }
    char err[300];
    if (blobsvc_put_infos(u->svc, r->c.app_id, u->infos, u->ninfos, err, sizeof err) < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot store blob metadata\" err=%s", r->c.app_id, c->log_id, log_q(err));
        refuse(c, 500, "The upload's metadata could not be stored.");
        c->state = CS_SEND;
        return;
    }
    u->handed_over = 1;
    if (blobsvc_session_delete(u->svc, r->c.app_id, u->sid, err, sizeof err) < 0)
        log_warn("router", "app=%s request_id=%s msg=\"cannot delete an upload session\" err=%s", r->c.app_id, c->log_id, log_q(err));
    log_info("router", "app=%s request_id=%s msg=\"upload stored\" blobs=%zu bytes=%llu", strchr(r->c.app_id, '~') ? strchr(r->c.app_id, '~') + 1 : r->c.app_id,
             c->log_id, u->ninfos, (unsigned long long)u->total);
    buf_cat(&c->upbody, "--", u->boundary, "--\r\n", NULL);
    upload_free(c);
    buf_printf(&c->upreq, "Content-Length: %zu\r\n\r\n", buf_unread(&c->upbody));
    proxy_dispatch(c);
}

void upload_note_range(rconn *c, const http_request *req)
{
    const http_header *h = http_find_header(req->headers, req->nheaders, "range");
    free(c->range);
    c->range = h ? xstrndup(h->value, h->value_len) : NULL;
}

static int skip_blob_header(const http_header *h)
{
    static const char *drop[] = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te",
                                 "trailer", "content-length", "content-range", "x-appengine-blobkey",
                                 "x-appengine-blobrange", "accept-ranges", NULL};
    for (int i = 0; drop[i]; i++)
        if (strn_case_eq(h->name, h->name_len, drop[i])) return 1;
    return 0;
}

int sendblob_head(rconn *c, const http_response *resp)
{
    const http_header *kh = http_find_header(resp->headers, resp->nheaders, "x-appengine-blobkey");
    if (!kh) return 0;
    router *r = c->t->r;
    char key[BLOB_KEY_MAX + 1];
    blob_reader *br = NULL;
    char err[300];
    int rc = BLOB_NOT_FOUND;
    if (kh->value_len <= BLOB_KEY_MAX && blob_key_valid(kh->value, kh->value_len)) {
        memcpy(key, kh->value, kh->value_len);
        key[kh->value_len] = 0;
        rc = blob_open(blobsvc_store(r->c.blob), r->c.app_id, key, &br, err, sizeof err);
    }
    if (rc == BLOB_NOT_FOUND) { conn_send_error(c, 404, "The blob was not found."); c->state = CS_PROXY; return 1; }
    int fd = rc == BLOB_OK ? blob_reader_fd(br) : -1;
    if (rc == BLOB_OK && fd >= 0) fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    uint64_t size = rc == BLOB_OK ? blob_reader_size(br) : 0;
    if (br) blob_close(br);
    if (fd < 0) {
        log_error("router", "app=%s request_id=%s msg=\"cannot serve a blob\" err=%s", r->c.app_id, c->log_id,
                  log_q(rc == BLOB_OK ? "this blob store cannot stream to clients" : err));
        conn_send_error(c, 500, "The blob could not be read.");
        c->state = CS_PROXY;
        return 1;
    }
    /* The range: the app's X-AppEngine-BlobRange, else the client's Range. */
    const http_header *rh = http_find_header(resp->headers, resp->nheaders, "x-appengine-blobrange");
    const char *rv = rh ? rh->value : c->range;
    size_t rl = rh ? rh->value_len : c->range ? strlen(c->range) : 0;
    uint64_t first = 0, last = size ? size - 1 : 0;
    int rk = rv && !c->is_head ? http_range_parse(rv, rl, size, &first, &last) : HTTP_RANGE_FULL;
    if (rk == HTTP_RANGE_UNSATISFIABLE) {
        close(fd);
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, rk, 0, 0, size);
        thread_date(c->t);
        c->status = 416;
        buf_printf(&c->out, "HTTP/1.1 416 Range Not Satisfiable\r\nServer: Cyclozzo\r\n%sContent-Range: %s\r\nContent-Length: 0\r\n%s\r\n",
                   c->t->date, cr, c->close_after || !c->keep_alive ? "Connection: close\r\n" : "");
        c->bytes_out += buf_unread(&c->out);
        return 1;
    }
    if (rk != HTTP_RANGE_PARTIAL) { first = 0; last = size ? size - 1 : 0; }
    uint64_t len = size ? last - first + 1 : 0;
    int status = rk == HTTP_RANGE_PARTIAL ? 206 : 200;
    c->status = status;
    thread_date(c->t);
    buf *o = &c->out;
    buf_printf(o, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
    int has_ct = 0, has_date = 0, has_server = 0;
    for (size_t i = 0; i < resp->nheaders; i++) {
        const http_header *h = &resp->headers[i];
        if (skip_blob_header(h)) continue;
        if (strn_case_eq(h->name, h->name_len, "content-type")) { if (!h->value_len) continue; has_ct = 1; }
        if (strn_case_eq(h->name, h->name_len, "date")) has_date = 1;
        if (strn_case_eq(h->name, h->name_len, "server")) has_server = 1;
        buf_append(o, h->name, h->name_len);
        buf_puts(o, ": ");
        buf_append(o, h->value, h->value_len);
        buf_puts(o, "\r\n");
    }
    if (!has_ct) {
        blob_info bi;
        int got = blobsvc_get_info(r->c.blob, r->c.app_id, key, &bi, err, sizeof err);
        buf_cat(o, "Content-Type: ", got == 1 && bi.content_type && *bi.content_type ? bi.content_type : "application/octet-stream", "\r\n", NULL);
        if (got == 1) blob_info_clear(&bi);
    }
    if (!has_date) buf_puts(o, c->t->date);
    if (!has_server) buf_puts(o, "Server: Cyclozzo\r\n");
    if (status == 206) {
        char cr[HTTP_CONTENT_RANGE_MAX];
        http_content_range(cr, rk, first, last, size);
        buf_cat(o, "Content-Range: ", cr, "\r\n", NULL);
    }
    buf_puts(o, "Accept-Ranges: bytes\r\nContent-Length: ");
    buf_put_dec(o, len);
    buf_puts(o, "\r\n");
    if (c->close_after || !c->keep_alive) buf_puts(o, "Connection: close\r\n");
    else if (c->version_minor == 0) buf_puts(o, "Connection: keep-alive\r\n");
    buf_puts(o, "\r\n");
    c->bytes_out += buf_unread(o) + (c->is_head ? 0 : len);
    if (c->is_head || !len) { close(fd); return 1; }
    if (c->file_fd >= 0) close(c->file_fd);
    c->file_fd = fd;
    c->file_off = (off_t)first;
    c->file_end = (off_t)(first + len);
    return 1;
}
