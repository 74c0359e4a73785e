/* blobstore.c - the driver-independent half of the blob store: opening a
 * store by location, blob keys, argument checks, and the thin wrappers that
 * dispatch to the driver's ops (see blobstore.h). */
#include "blob/blobstore.h"

#include <string.h>

#include "core/util.h"

blob_store *blob_store_open(const char *location, char *err, size_t errlen)
{
    if (!location || !*location) { set_err(err, errlen, "no blob store location was given"); return NULL; }
    if (!strncmp(location, "file://", 7)) return blob_store_local(location + 7, err, errlen);
    const char *colon = strstr(location, "://");
    if (colon) {
        set_err(err, errlen, "the blob store location %s uses an unknown scheme (use a directory path)", location);
        return NULL;
    }
    return blob_store_local(location, err, errlen);
}

void blob_store_free(blob_store *s)
{
    if (s) s->ops->free(s);
}

const char *blob_store_driver(const blob_store *s) { return s->ops->name; }

void blob_key_new(char *out)
{
    /* 24 random bytes in URL-safe base64: 32 characters, 192 bits. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t r[24];
    if (random_bytes(r, sizeof r) < 0) {
        /* The kernel always has randomness; fall back to the clock anyway. */
        uint64_t t = (uint64_t)wall_us() ^ ((uint64_t)now_us() << 20);
        for (size_t i = 0; i < sizeof r; i++) r[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)(i * 131);
    }
    size_t o = 0;
    for (size_t i = 0; i < sizeof r; i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    out[o] = 0;
}

int blob_key_valid(const char *k, size_t n)
{
    if (!k || n == 0 || n > BLOB_KEY_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int blob_app_valid(const char *app)
{
    if (!app) return 0;
    size_t n = strlen(app);
    if (n == 0 || n > 200 || strchr(app, '/') || !strcmp(app, ".") || !strcmp(app, "..")) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)app[i] < 0x20 || app[i] == 0x7f) return 0;
    return 1;
}

static int check_names(const char *app, const char *key, char *err, size_t errlen)
{
    if (!blob_app_valid(app)) { set_err(err, errlen, "the app id \"%s\" cannot own blobs", app ? app : ""); return BLOB_ERR; }
    if (!key || !blob_key_valid(key, strlen(key))) {
        set_err(err, errlen, "\"%.*s\" is not a valid blob key", 160, key ? key : "");
        return BLOB_ERR;
    }
    return BLOB_OK;
}

int blob_create(blob_store *s, const char *app, const char *key, blob_writer **w, char *err, size_t errlen)
{
    *w = NULL;
    if (check_names(app, key, err, errlen) < 0) return BLOB_ERR;
    int rc = s->ops->create(s, app, key, w, err, errlen);
    if (rc == BLOB_OK) { (*w)->s = s; (*w)->written = 0; }
    return rc;
}

int blob_write(blob_writer *w, const void *p, size_t n, char *err, size_t errlen)
{
    if (!n) return BLOB_OK;
    int rc = w->s->ops->write(w, p, n, err, errlen);
    if (rc == BLOB_OK) w->written += n;
    return rc;
}

int blob_commit(blob_writer *w, char *err, size_t errlen) { return w->s->ops->commit(w, err, errlen); }

void blob_abort(blob_writer *w)
{
    if (w) w->s->ops->abort(w);
}

int blob_open(blob_store *s, const char *app, const char *key, blob_reader **r, char *err, size_t errlen)
{
    *r = NULL;
    if (check_names(app, key, err, errlen) < 0) return BLOB_ERR;
    int rc = s->ops->open(s, app, key, r, err, errlen);
    if (rc == BLOB_OK) (*r)->s = s;
    return rc;
}

ssize_t blob_pread(blob_reader *r, void *p, size_t n, uint64_t off, char *err, size_t errlen)
{
    if (off >= r->size || !n) return 0;
    if (n > r->size - off) n = (size_t)(r->size - off);
    return r->s->ops->pread(r, p, n, off, err, errlen);
}

int blob_reader_fd(blob_reader *r) { return r->s->ops->fd ? r->s->ops->fd(r) : -1; }

void blob_close(blob_reader *r)
{
    if (r) r->s->ops->close(r);
}

int blob_size(blob_store *s, const char *app, const char *key, uint64_t *size, char *err, size_t errlen)
{
    if (check_names(app, key, err, errlen) < 0) return BLOB_ERR;
    return s->ops->size(s, app, key, size, err, errlen);
}

int blob_delete(blob_store *s, const char *app, const char *key, char *err, size_t errlen)
{
    if (check_names(app, key, err, errlen) < 0) return BLOB_ERR;
    return s->ops->remove(s, app, key, err, errlen);
}
