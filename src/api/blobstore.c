/* blobstore.c - the Blobstore API service: CreateUploadURL, DeleteBlob,
 * FetchData, DecodeBlobKey and CreateEncodedGoogleStorageKey, plus the
 * session and BlobInfo helpers the router's upload and send_blob code uses
 * (see api/blobstore.h).
 *
 * Metadata goes through the datastore core on the "kv" engine datastore_v3
 * shares (so it must register after datastore_v3): entities are built and
 * read as datastore_v3 Put/Get/Delete messages, exactly the bytes the SDK
 * would send, so what BlobInfo.get and queries read back is what an App
 * Engine app expects. Blob bytes go to the blob store. */
#include "api/blobstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "datastore/datastore.h"
#include "proto/pb.h"

#define INFO_KIND "__BlobInfo__"
#define SESSION_KIND "__BlobUploadSession__"
#define DEFAULT_EXPIRY_S (24 * 3600)      /* upload URLs without url_expiry_time_seconds */

struct blob_service {
    blob_store *store;
    datastore *ds;
    char *hostname;                       /* for absolute upload URLs, may be NULL */
    char open_err[400];
};

/* ---- datastore messages ---- */

static void put_ref(buf *b, const char *app, const char *kind, const char *name)
{
    ds_elem el = {.type = {(const uint8_t *)kind, strlen(kind)}, .name = {(const uint8_t *)name, strlen(name)}, .has_name = 1};
    ds_ref r = {.app = {(const uint8_t *)app, strlen(app)}, .elems = &el, .nelems = 1};
    ds_ref_encode(b, &r);
}

static ds_prop str_prop(const char *name, const char *v, int indexed)
{
    ds_prop p = {.name = {(const uint8_t *)name, strlen(name)}, .indexed = indexed, .stashed = -1};
    p.v.type = DSV_STRING;
    p.v.s.p = (const uint8_t *)(v ? v : "");
    p.v.s.n = v ? strlen(v) : 0;
    return p;
}

static ds_prop int_prop(const char *name, int64_t v, int meaning, int indexed)
{
    ds_prop p = {.name = {(const uint8_t *)name, strlen(name)}, .indexed = indexed, .stashed = -1, .meaning = meaning};
    p.v.type = DSV_INT;
    p.v.i = v;
    return p;
}

/* One EntityProto with key (app, kind, name) and props into b as field 1 of a PutRequest. */
static void put_entity(buf *b, const char *app, const char *kind, const char *name, ds_prop *props, size_t n)
{
    ds_elem el = {.type = {(const uint8_t *)kind, strlen(kind)}, .name = {(const uint8_t *)name, strlen(name)}, .has_name = 1};
    ds_entity e = {.key = {.app = {(const uint8_t *)app, strlen(app)}, .elems = &el, .nelems = 1},
                   .group = &el, .ngroup = 1, .props = props, .nprops = n};
    size_t m = pb_begin(b, 1);
    ds_entity_encode(b, &e);
    pb_end(b, m);
}

static int ds_fail(const ds_err *e, const char *what, char *err, size_t errlen)
{
    set_err(err, errlen, "cannot %s: %s", what, e->msg);
    return -1;
}

/* Get one entity: 1 and *ent decoded from *raw (caller frees both), 0 absent, -1 error. */
static int get_entity(blob_service *s, const char *app, const char *kind, const char *name,
                      buf *raw, ds_entity *ent, char *err, size_t errlen)
{
    buf req = BUF_INIT;
    size_t m = pb_begin(&req, 1);
    put_ref(&req, app, kind, name);
    pb_end(&req, m);
    ds_err e = {0, ""};
    int rc = ds_get(s->ds, app, (const uint8_t *)buf_rp(&req), buf_unread(&req), raw, &e);
    buf_free(&req);
    if (rc < 0) return ds_fail(&e, "read blob metadata", err, errlen);
    pb_reader r, g;
    pb_reader_init(&r, buf_rp(raw), buf_unread(raw));
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f != 1 || wt != PB_SGROUP) { pb_skip(&r, wt, f); continue; }
        if (pb_group(&r, wt, 1, &g) < 0) break;
        uint32_t gf; int gwt;
        while (pb_next(&g, &gf, &gwt) > 0) {
            if (gf == 2) {
                const uint8_t *p; size_t n;
                if (pb_bytes(&g, gwt, &p, &n) < 0) break;
                if (ds_entity_decode(p, n, ent, err, errlen) < 0) return -1;
                return 1;
            }
            pb_skip(&g, gwt, gf);
        }
    }
    if (r.err) { set_err(err, errlen, "the datastore returned a malformed GetResponse"); return -1; }
    return 0;
}

static int delete_entity(blob_service *s, const char *app, const char *kind, const char *name, char *err, size_t errlen)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    size_t m = pb_begin(&req, 6);
    put_ref(&req, app, kind, name);
    pb_end(&req, m);
    ds_err e = {0, ""};
    int rc = ds_delete(s->ds, app, (const uint8_t *)buf_rp(&req), buf_unread(&req), &resp, &e);
    buf_free(&req);
    buf_free(&resp);
    return rc < 0 ? ds_fail(&e, "delete blob metadata", err, errlen) : 0;
}

static const ds_prop *find_prop(const ds_entity *e, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < e->nprops; i++)
        if (e->props[i].name.n == n && !memcmp(e->props[i].name.p, name, n)) return &e->props[i];
    return NULL;
}

static int64_t prop_int(const ds_entity *e, const char *name)
{
    const ds_prop *p = find_prop(e, name);
    return p && p->v.type == DSV_INT ? p->v.i : 0;
}

static char *prop_str(const ds_entity *e, const char *name)
{
    const ds_prop *p = find_prop(e, name);
    if (!p || p->v.type != DSV_STRING) return NULL;
    return xstrndup((const char *)p->v.s.p, p->v.s.n);
}

/* ---- helpers for the router ---- */

static int ready(blob_service *s, char *err, size_t errlen)
{
    if (s->ds && s->store) return 0;
    set_err(err, errlen, "%s", s->open_err);
    return -1;
}

blob_store *blobsvc_store(blob_service *s) { return s->store; }

int blobsvc_session_get(blob_service *s, const char *app, const char *sid, blob_session *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (ready(s, err, errlen) < 0) return -1;
    if (!blob_key_valid(sid, strlen(sid))) return 0;
    buf raw = BUF_INIT;
    ds_entity e;
    memset(&e, 0, sizeof e);
    int rc = get_entity(s, app, SESSION_KIND, sid, &raw, &e, err, errlen);
    if (rc == 1) {
        char *sp = prop_str(&e, "success_path");
        snprintf(out->success_path, sizeof out->success_path, "%s", sp ? sp : "/");
        free(sp);
        out->max_bytes_per_blob = prop_int(&e, "max_bytes_per_blob");
        out->max_bytes_total = prop_int(&e, "max_bytes_total");
        out->expires_us = prop_int(&e, "expires");
        ds_entity_free(&e);
        if (out->expires_us && out->expires_us < wall_us()) {
            /* Expired: gone for good (a failed delete is retried next time). */
            char derr[300];
            delete_entity(s, app, SESSION_KIND, sid, derr, sizeof derr);
            rc = 0;
        }
    }
    buf_free(&raw);
    return rc;
}

int blobsvc_session_delete(blob_service *s, const char *app, const char *sid, char *err, size_t errlen)
{
    if (ready(s, err, errlen) < 0) return -1;
    return delete_entity(s, app, SESSION_KIND, sid, err, errlen);
}

int blobsvc_put_infos(blob_service *s, const char *app, const blob_info *bi, size_t n, char *err, size_t errlen)
{
    if (ready(s, err, errlen) < 0) return -1;
    if (!n) return 0;
    buf req = BUF_INIT, resp = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        ds_prop props[5] = {
            str_prop("content_type", bi[i].content_type, 1),
            int_prop("creation", bi[i].creation_us, DS_MEANING_GD_WHEN, 1),
            str_prop("filename", bi[i].filename, 1),
            str_prop("md5_hash", bi[i].md5_hex, 1),
            int_prop("size", (int64_t)bi[i].size, 0, 1),
        };
        put_entity(&req, app, INFO_KIND, bi[i].key, props, 5);
    }
    ds_err e = {0, ""};
    int rc = ds_put_reserved(s->ds, app, (const uint8_t *)buf_rp(&req), buf_unread(&req), &resp, &e);
    buf_free(&req);
    buf_free(&resp);
    return rc < 0 ? ds_fail(&e, "store blob metadata", err, errlen) : 0;
}

int blobsvc_get_info(blob_service *s, const char *app, const char *key, blob_info *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (ready(s, err, errlen) < 0) return -1;
    if (!blob_key_valid(key, strlen(key))) return 0;
    buf raw = BUF_INIT;
    ds_entity e;
    memset(&e, 0, sizeof e);
    int rc = get_entity(s, app, INFO_KIND, key, &raw, &e, err, errlen);
    if (rc == 1) {
        snprintf(out->key, sizeof out->key, "%s", key);
        out->content_type = prop_str(&e, "content_type");
        out->filename = prop_str(&e, "filename");
        out->size = (uint64_t)prop_int(&e, "size");
        out->creation_us = prop_int(&e, "creation");
        char *md5 = prop_str(&e, "md5_hash");
        snprintf(out->md5_hex, sizeof out->md5_hex, "%s", md5 ? md5 : "");
        free(md5);
        ds_entity_free(&e);
    }
    buf_free(&raw);
    return rc;
}

void blob_info_clear(blob_info *bi)
{
    free(bi->content_type);
    free(bi->filename);
    bi->content_type = bi->filename = NULL;
}

/* ---- the API methods ---- */

static int service_ok(api_ctx *ctx, api_reply *reply)
{
    blob_service *s = ctx->service_data;
    if (s->ds && s->store) return 1;
    api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "%s", s->open_err);
    return 0;
}

static void CreateUploadURL(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    blob_service *s = ctx->service_data;
    if (!service_ok(ctx, reply)) return;
    const uint8_t *path = NULL; size_t path_len = 0;
    int64_t max_total = 0, max_blob = 0;
    int32_t expiry = 0;
    int has_bucket = 0;
    pb_reader r;
    pb_reader_init(&r, req, len);
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) pb_bytes(&r, wt, &path, &path_len);
        else if (f == 2) pb_int64(&r, wt, &max_total);
        else if (f == 3) pb_int64(&r, wt, &max_blob);
        else if (f == 4) { const uint8_t *p; size_t n; pb_bytes(&r, wt, &p, &n); has_bucket = 1; }
        else if (f == 5) pb_int32(&r, wt, &expiry);
        else pb_skip(&r, wt, f);
    }
    if (r.err || !path) { api_rpc_error(reply, RPC_PARSE_ERROR, "The CreateUploadURLRequest is malformed."); return; }
    if (has_bucket) {
        api_app_error(reply, BLOBSTORE_PERMISSION_DENIED,
                      "Uploads to Google Cloud Storage (gs_bucket_name) are not supported: Cyclozzo keeps uploads in its own blob store.");
        return;
    }
    if (path_len > BLOBSTORE_MAX_SUCCESS_PATH) {
        api_app_error(reply, BLOBSTORE_URL_TOO_LONG, "The success path is longer than %d bytes.", BLOBSTORE_MAX_SUCCESS_PATH);
        return;
    }
    if (path_len == 0 || path[0] != '/' || memchr(path, '\r', path_len) || memchr(path, '\n', path_len) ||
        memchr(path, ' ', path_len) || memchr(path, 0, path_len)) {
        api_app_error(reply, BLOBSTORE_ARGUMENT_OUT_OF_RANGE, "The success path must be a path on this app starting with '/'.");
        return;
    }
    if (max_total < 0 || max_blob < 0 || expiry < 0) {
        api_app_error(reply, BLOBSTORE_ARGUMENT_OUT_OF_RANGE, "Upload size limits and the expiry must not be negative.");
        return;
    }
    char sid[BLOB_KEY_MAX + 1];
    blob_key_new(sid);
    char *sp = xstrndup((const char *)path, path_len);
    int64_t now = wall_us();
    ds_prop props[5] = {
        str_prop("success_path", sp, 0),
        int_prop("max_bytes_per_blob", max_blob, 0, 0),
        int_prop("max_bytes_total", max_total, 0, 0),
        int_prop("creation", now, DS_MEANING_GD_WHEN, 0),
        int_prop("expires", now + (int64_t)(expiry ? expiry : DEFAULT_EXPIRY_S) * 1000000, DS_MEANING_GD_WHEN, 0),
    };
    buf put = BUF_INIT, resp = BUF_INIT;
    put_entity(&put, ctx->app_id, SESSION_KIND, sid, props, 5);
    ds_err e = {0, ""};
    int rc = ds_put_reserved(s->ds, ctx->app_id, (const uint8_t *)buf_rp(&put), buf_unread(&put), &resp, &e);
    buf_free(&put);
    buf_free(&resp);
    free(sp);
    if (rc < 0) {
        log_error("blobstore", "app=%s msg=\"cannot store an upload session\" err=%s", log_q(ctx->app_id), log_q(e.msg));
        api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "The upload session could not be stored: %s", e.msg);
        return;
    }
    buf url = BUF_INIT;
    if (s->hostname) buf_printf(&url, "http://%s", s->hostname);
    buf_printf(&url, "%s%s", BLOBSTORE_UPLOAD_PREFIX, sid);
    pb_put_bytes(&reply->response, 1, buf_rp(&url), buf_unread(&url));
    buf_free(&url);
}

static void DeleteBlob(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    blob_service *s = ctx->service_data;
    if (!service_ok(ctx, reply)) return;
    pb_reader r;
    pb_reader_init(&r, req, len);
    uint32_t f; int wt;
    /* Check the whole request before deleting anything. */
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) { const uint8_t *p; size_t n; pb_bytes(&r, wt, &p, &n); }
        else pb_skip(&r, wt, f);
    }
    if (r.err) { api_rpc_error(reply, RPC_PARSE_ERROR, "The DeleteBlobRequest is malformed."); return; }
    pb_reader_init(&r, req, len);
    while (pb_next(&r, &f, &wt) > 0) {
        if (f != 1) { pb_skip(&r, wt, f); continue; }
        const uint8_t *p; size_t n;
        pb_bytes(&r, wt, &p, &n);
        /* Keys that name no blob of ours (never ours, already gone) are ignored, as on App Engine. */
        if (!blob_key_valid((const char *)p, n)) continue;
        char key[BLOB_KEY_MAX + 1];
        memcpy(key, p, n);
        key[n] = 0;
        char err[512];
        if (delete_entity(s, ctx->app_id, INFO_KIND, key, err, sizeof err) < 0) {
            api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "%s", err);
            return;
        }
        if (blob_delete(s->store, ctx->app_id, key, err, sizeof err) == BLOB_ERR) {
            log_error("blobstore", "app=%s msg=\"cannot delete a blob\" err=%s", log_q(ctx->app_id), log_q(err));
            api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "%s", err);
            return;
        }
    }
}

static void FetchData(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    blob_service *s = ctx->service_data;
    if (!service_ok(ctx, reply)) return;
    const uint8_t *kp = NULL; size_t kn = 0;
    int64_t start = 0, end = 0;
    int has_start = 0, has_end = 0;
    pb_reader r;
    pb_reader_init(&r, req, len);
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) pb_bytes(&r, wt, &kp, &kn);
        else if (f == 2) { pb_int64(&r, wt, &start); has_start = 1; }
        else if (f == 3) { pb_int64(&r, wt, &end); has_end = 1; }
        else pb_skip(&r, wt, f);
    }
    if (r.err || !kp || !has_start || !has_end) { api_rpc_error(reply, RPC_PARSE_ERROR, "The FetchDataRequest is malformed."); return; }
    if (start < 0) { api_app_error(reply, BLOBSTORE_DATA_INDEX_OUT_OF_RANGE, "Cannot fetch blob data at a negative index."); return; }
    if (end < start) { api_app_error(reply, BLOBSTORE_DATA_INDEX_OUT_OF_RANGE, "Start index %lld > end index %lld.", (long long)start, (long long)end); return; }
    if (end - start + 1 > BLOBSTORE_MAX_FETCH) {
        api_app_error(reply, BLOBSTORE_BLOB_FETCH_SIZE_TOO_LARGE, "Blob fetch size is too large: %lld bytes (at most %d).",
                      (long long)(end - start + 1), BLOBSTORE_MAX_FETCH);
        return;
    }
    if (!blob_key_valid((const char *)kp, kn)) {
        api_app_error(reply, BLOBSTORE_BLOB_NOT_FOUND, "No blob has the key %.*s.", (int)(kn > 200 ? 200 : kn), (const char *)kp);
        return;
    }
    char key[BLOB_KEY_MAX + 1];
    memcpy(key, kp, kn);
    key[kn] = 0;
    char err[512];
    blob_reader *br;
    int rc = blob_open(s->store, ctx->app_id, key, &br, err, sizeof err);
    if (rc == BLOB_NOT_FOUND) { api_app_error(reply, BLOBSTORE_BLOB_NOT_FOUND, "No blob has the key %s.", key); return; }
    if (rc < 0) { api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "%s", err); return; }
    uint64_t size = blob_reader_size(br);
    size_t want = (uint64_t)start >= size ? 0 : (size_t)((uint64_t)end + 1 > size ? size - (uint64_t)start : (uint64_t)(end - start + 1));
    char *data = xmalloc(want ? want : 1);
    ssize_t got = want ? blob_pread(br, data, want, (uint64_t)start, err, sizeof err) : 0;
    blob_close(br);
    if (got < 0) { free(data); api_app_error(reply, BLOBSTORE_INTERNAL_ERROR, "%s", err); return; }
    pb_put_bytes(&reply->response, 1000, data, (size_t)got);
    free(data);
}

static void DecodeBlobKey(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    /* Cyclozzo's blob keys are not encrypted: each decodes to itself. */
    pb_reader r;
    pb_reader_init(&r, req, len);
    uint32_t f; int wt;
    buf out = BUF_INIT;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) { const uint8_t *p; size_t n; if (pb_bytes(&r, wt, &p, &n) == 0) pb_put_bytes(&out, 1, p, n); }
        else pb_skip(&r, wt, f);
    }
    if (r.err) { buf_free(&out); api_rpc_error(reply, RPC_PARSE_ERROR, "The DecodeBlobKeyRequest is malformed."); return; }
    buf_append(&reply->response, buf_rp(&out), buf_unread(&out));
    buf_free(&out);
}

static void CreateEncodedGoogleStorageKey(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    const uint8_t *p = NULL; size_t n = 0;
    pb_reader r;
    pb_reader_init(&r, req, len);
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) pb_bytes(&r, wt, &p, &n);
        else pb_skip(&r, wt, f);
    }
    if (r.err || !p) { api_rpc_error(reply, RPC_PARSE_ERROR, "The CreateEncodedGoogleStorageKeyRequest is malformed."); return; }
    /* "encoded_gs_file:" + URL-safe base64 of the file name, as the SDK's
     * local stub encodes it. Such keys name no blob in Cyclozzo's store. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    buf k = BUF_INIT;
    buf_puts(&k, "encoded_gs_file:");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        buf_putc(&k, b64[(v >> 18) & 63]);
        buf_putc(&k, b64[(v >> 12) & 63]);
        buf_putc(&k, i + 1 < n ? b64[(v >> 6) & 63] : '=');
        buf_putc(&k, i + 2 < n ? b64[v & 63] : '=');
    }
    pb_put_bytes(&reply->response, 1, buf_rp(&k), buf_unread(&k));
    buf_free(&k);
}

static void service_free(void *p)
{
    blob_service *s = p;
    blob_store_free(s->store);
    if (s->ds) ds_close(s->ds);       /* does not close the shared engine */
    free(s->hostname);
    free(s);
}

void blobstore_register(api_server *srv, const char *home)
{
    blob_service *s = xcalloc(1, sizeof *s);
    kv_engine *kv = api_shared(srv, "kv");
    const char *dir = api_shared(srv, "blob.dir");
    const char *host = api_shared(srv, "app.hostname");
    char *defdir = xasprintf("%s/blobs", home);
    char err[300];
    if (!kv) snprintf(s->open_err, sizeof s->open_err, "The Blobstore is unavailable because the datastore is.");
    else s->ds = ds_open_engine(kv, 0);
    s->store = blob_store_open(dir && *dir ? dir : defdir, err, sizeof err);
    if (!s->store) {
        snprintf(s->open_err, sizeof s->open_err, "The blob store is unavailable: %s", err);
        log_error("blobstore", "msg=\"cannot open the blob store\" err=%s", log_q(err));
    } else {
        log_info("blobstore", "msg=\"blob store open\" driver=%s location=%s", blob_store_driver(s->store),
                 log_q(dir && *dir ? dir : defdir));
    }
    free(defdir);
    if (host && *host) s->hostname = xstrdup(host);
    static const char *methods[] = {"CreateUploadURL", "DeleteBlob", "FetchData", "DecodeBlobKey",
                                    "CreateEncodedGoogleStorageKey", NULL};
    for (int i = 0; methods[i]; i++) api_register(srv, "blobstore", methods[i], blobstore_method(methods[i]), s);
    api_on_stop(srv, service_free, s);
    api_share(srv, "blobstore", s);
}

blob_service *blobstore_service(api_server *srv) { return api_shared(srv, "blobstore"); }

api_method_fn blobstore_method(const char *name)
{
    static const struct { const char *name; api_method_fn fn; } m[] = {
        {"CreateUploadURL", CreateUploadURL}, {"DeleteBlob", DeleteBlob}, {"FetchData", FetchData},
        {"DecodeBlobKey", DecodeBlobKey}, {"CreateEncodedGoogleStorageKey", CreateEncodedGoogleStorageKey},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!strcmp(m[i].name, name)) return m[i].fn;
    return NULL;
}
