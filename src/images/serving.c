/* serving.c - blobs as images: reading them, publishing serving URLs and
 * rendering /_ah/img/ requests with a small in-memory cache (serving.h).
 *
 * Published URLs are rows "U/<app>/<blobkey>" (empty value) in the kv
 * engine datastore_v3 shares; blob keys hold no '/', so the rows of
 * different apps never mix. The cache is a list in most-recently-used order
 * under one mutex, bounded by bytes and entries; a render happens outside
 * the lock (two threads may render the same image at once; the second
 * insert is dropped). */
#include "images/serving.h"
#include "images/image.h"
#include "core/log.h"
#include "core/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX_ENTRIES 2048

typedef struct centry {
    struct centry *prev, *next;
    char *id;                 /* "app\nkey\nsize\ncrop" */
    char *data;
    size_t len;
    const char *mime;
} centry;

struct img_server {
    kv_engine *kv;
    blob_store *blobs;
    pthread_mutex_t mu;
    centry *head, *tail;      /* most recently used first */
    size_t entries, bytes;
    unsigned long hits;
};

img_server *img_server_new(kv_engine *kv, blob_store *blobs)
{
    img_server *s = xcalloc(1, sizeof *s);
    s->kv = kv;
    s->blobs = blobs;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void centry_free(centry *e)
{
    free(e->id);
    free(e->data);
    free(e);
}

void img_server_free(img_server *s)
{
    if (!s) return;
    for (centry *e = s->head, *n; e; e = n) { n = e->next; centry_free(e); }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- blobs ---- */

static int check_key(img_server *s, const char *key, size_t keylen, char *err, size_t errlen)
{
    if (!blob_key_valid(key, keylen)) {
        set_err(err, errlen, "\"%.*s\" is not a valid blob key.", keylen > 160 ? 160 : (int)keylen, key);
        return IMG_E_INVALID_BLOB_KEY;
    }
    if (!s || !s->blobs) {
        set_err(err, errlen, "The blob store is not available to the images service.");
        return IMG_E_UNSPECIFIED;
    }
    return IMG_OK;
}

int img_server_read_blob(img_server *s, const char *app, const char *key, size_t keylen,
                         buf *out, char *err, size_t errlen)
{
    int rc = check_key(s, key, keylen, err, errlen);
    if (rc) return rc;
    char k[BLOB_KEY_MAX + 1];
    memcpy(k, key, keylen);
    k[keylen] = 0;
    blob_reader *r = NULL;
    char berr[256];
    int b = blob_open(s->blobs, app, k, &r, berr, sizeof berr);
    if (b == BLOB_NOT_FOUND) {
        set_err(err, errlen, "There is no blob with key %s.", k);
        return IMG_E_OBJECT_NOT_FOUND;
    }
    if (b != BLOB_OK) {
        set_err(err, errlen, "The blob %s could not be read: %s", k, berr);
        return IMG_E_UNSPECIFIED;
    }
    uint64_t size = blob_reader_size(r);
    if (size > IMG_MAX_BLOB_BYTES) {
        blob_close(r);
        set_err(err, errlen, "The blob %s holds %llu bytes, more than the %u MiB read as an image.",
                k, (unsigned long long)size, IMG_MAX_BLOB_BYTES >> 20);
        return IMG_E_IMAGE_TOO_LARGE;
    }
    buf_reserve(out, (size_t)size);
    uint64_t off = 0;
    while (off < size) {
        ssize_t n = blob_pread(r, buf_wp(out), (size_t)(size - off), off, berr, sizeof berr);
        if (n < 0) {
            blob_close(r);
            set_err(err, errlen, "The blob %s could not be read: %s", k, berr);
            return IMG_E_UNSPECIFIED;
        }
        if (n == 0) break;
        out->len += (size_t)n;
        off += (uint64_t)n;
    }
    blob_close(r);
    return IMG_OK;
}

/* ---- published serving URLs ---- */

static void url_row(buf *k, const char *app, const char *key, size_t keylen)
{
    buf_puts(k, "U/");
    buf_puts(k, app);
    buf_putc(k, '/');
    buf_append(k, key, keylen);
}

/* 1 published, 0 not, -1 error. */
static int published(img_server *s, const char *app, const char *key, size_t keylen,
                     char *err, size_t errlen)
{
    buf k = BUF_INIT;
    url_row(&k, app, key, keylen);
    kv_txn *t = NULL;
    int rc = kv_begin(s->kv, 0, &t, err, errlen);
    if (rc == KV_OK) {
        const void *v; size_t vn;
        rc = kv_get(t, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
        kv_abort(t);
    }
    buf_free(&k);
    return rc == KV_OK ? 1 : rc == KV_NOTFOUND ? 0 : -1;
}

int img_server_publish(img_server *s, const char *app, const char *key, size_t keylen, int on,
                       char *err, size_t errlen)
{
    int rc = check_key(s, key, keylen, err, errlen);
    if (rc) return rc;
    if (!s->kv) {
        set_err(err, errlen, "Serving URLs are not available: the datastore is not.");
        return IMG_E_UNSPECIFIED;
    }
    char k[BLOB_KEY_MAX + 1];
    memcpy(k, key, keylen);
    k[keylen] = 0;
    if (on) {
        uint64_t size;
        char berr[256];
        int b = blob_size(s->blobs, app, k, &size, berr, sizeof berr);
        if (b == BLOB_NOT_FOUND) {
            set_err(err, errlen, "There is no blob with key %s.", k);
            return IMG_E_OBJECT_NOT_FOUND;
        }
        if (b != BLOB_OK) {
            set_err(err, errlen, "The blob %s could not be read: %s", k, berr);
            return IMG_E_UNSPECIFIED;
        }
    }
    buf row = BUF_INIT;
    url_row(&row, app, key, keylen);
    char kerr[256];
    int krc;
    for (int attempt = 0; attempt < 5; attempt++) {
        kv_txn *t = NULL;
        krc = kv_begin(s->kv, 1, &t, kerr, sizeof kerr);
        if (krc != KV_OK) continue;
        krc = on ? kv_put(t, buf_rp(&row), buf_unread(&row), "", 0, kerr, sizeof kerr)
                 : kv_del(t, buf_rp(&row), buf_unread(&row), kerr, sizeof kerr);
        if (krc == KV_NOTFOUND) krc = KV_OK;      /* withdrawing twice is fine */
        if (krc != KV_OK) { kv_abort(t); if (krc == KV_CONFLICT) continue; break; }
        krc = kv_commit(t, kerr, sizeof kerr);
        if (krc != KV_CONFLICT) break;
    }
    buf_free(&row);
    if (krc != KV_OK) {
        set_err(err, errlen, "The serving URL of %s could not be %s: %s", k,
                on ? "stored" : "deleted", kerr);
        return IMG_E_UNSPECIFIED;
    }
    return IMG_OK;
}

/* ---- rendering ---- */

int img_serve_parse(const char *p, size_t n, img_serve_req *q)
{
    memset(q, 0, sizeof *q);
    q->size = -1;
    const char *eq = memchr(p, '=', n);
    size_t kl = eq ? (size_t)(eq - p) : n;
    if (!blob_key_valid(p, kl)) return -1;
    memcpy(q->key, p, kl);
    q->key[kl] = 0;
    if (!eq) return 0;
    const char *o = eq + 1, *end = p + n;
    if (o == end) return -1;                   /* "=" and no option */
    while (o < end) {
        const char *dash = memchr(o, '-', (size_t)(end - o));
        size_t ol = dash ? (size_t)(dash - o) : (size_t)(end - o);
        if (ol >= 2 && o[0] == 's' && ol <= 6) {
            int v = 0;
            for (size_t i = 1; i < ol; i++) {
                if (o[i] < '0' || o[i] > '9') return -1;
                v = v * 10 + (o[i] - '0');
            }
            if (v > IMG_SERVE_MAX_SIZE) return -1;
            q->size = v;
        } else if (ol == 1 && o[0] == 'c') {
            q->crop = 1;
        } else {
            return -1;
        }
        o += ol + (dash ? 1 : 0);
        if (dash && o == end) return -1;   /* trailing '-' */
    }
    if (q->crop && q->size <= 0) return -1;   /* as the SDK: crop needs a size */
    return 0;
}

static int status_of(int code)
{
    switch (code) {
    case IMG_E_NOT_IMAGE: case IMG_E_BAD_IMAGE_DATA: return 400;
    case IMG_E_IMAGE_TOO_LARGE: return 413;
    case IMG_E_INVALID_BLOB_KEY: case IMG_E_OBJECT_NOT_FOUND: return 404;
    default: return 500;
    }
}

static int render(img_server *s, const char *app, const img_serve_req *q, buf *out,
                  const char **mime, char *err, size_t errlen)
{
    buf raw = BUF_INIT;
    int rc = img_server_read_blob(s, app, q->key, strlen(q->key), &raw, err, errlen);
    if (rc) { buf_free(&raw); return rc; }
    if (img_init(err, errlen) < 0) { buf_free(&raw); return IMG_E_UNSPECIFIED; }
    img_acquire();
    img *im = NULL;
    rc = img_decode(buf_rp(&raw), buf_unread(&raw), 0, &im, err, errlen);
    buf_free(&raw);
    if (!rc) rc = img_correct_orientation(&im, err, errlen);
    if (!rc && q->crop) {
        img_transform t = { .op = IMG_T_RESIZE, .width = q->size, .height = q->size,
                            .crop_to_fit = 1, .crop_offset_x = 0.5, .crop_offset_y = 0.5 };
        rc = img_apply(&im, &t, err, errlen);
    } else if (!rc && q->size != 0) {
        int w = img_width(im), h = img_height(im), longest = w > h ? w : h;
        int target = q->size < 0 ? (longest > IMG_SERVE_DEFAULT_SIZE ? IMG_SERVE_DEFAULT_SIZE : longest)
                                 : q->size;
        if (target != longest) {
            img_transform t = { .op = IMG_T_RESIZE, .crop_offset_x = 0.5, .crop_offset_y = 0.5 };
            if (w >= h) t.width = target; else t.height = target;
            rc = img_apply(&im, &t, err, errlen);
        }
    }
    int out_type = IMG_OUT_PNG;
    *mime = "image/png";
    if (!rc) {
        switch (img_source_format(im)) {
        case IMG_FMT_JPEG: out_type = IMG_OUT_JPEG; *mime = "image/jpeg"; break;
        case IMG_FMT_WEBP: out_type = IMG_OUT_WEBP; *mime = "image/webp"; break;
        default: break;
        }
        rc = img_encode(im, out_type, 0, 0, 0, out, err, errlen);
    }
    img_free(im);
    img_release();
    return rc;
}

int img_server_render(img_server *s, const char *app, const img_serve_req *q, buf *out,
                      const char **mime, char *err, size_t errlen)
{
    if (!s || !s->kv || !s->blobs) {
        set_err(err, errlen, "Serving URLs are not available on this server.");
        return 404;
    }
    int p = published(s, app, q->key, strlen(q->key), err, errlen);
    if (p < 0) return 500;
    uint64_t size;
    char berr[256];
    if (!p || blob_size(s->blobs, app, q->key, &size, berr, sizeof berr) != BLOB_OK) {
        set_err(err, errlen, "No image is served at this URL.");
        return 404;
    }
    char *id = xasprintf("%s\n%s\n%d\n%d", app, q->key, q->size, q->crop);
    pthread_mutex_lock(&s->mu);
    for (centry *e = s->head; e; e = e->next) {
        if (strcmp(e->id, id)) continue;
        if (e != s->head) {           /* move to the front */
            e->prev->next = e->next;
            if (e->next) e->next->prev = e->prev; else s->tail = e->prev;
            e->prev = NULL;
            e->next = s->head;
            s->head->prev = e;
            s->head = e;
        }
        buf_append(out, e->data, e->len);
        *mime = e->mime;
        s->hits++;
        pthread_mutex_unlock(&s->mu);
        free(id);
        return 200;
    }
    pthread_mutex_unlock(&s->mu);

    size_t start = out->len;
    int rc = render(s, app, q, out, mime, err, errlen);
    if (rc) {
        free(id);
        log_info("images", "app=%s msg=\"cannot serve image\" key=%s err=%s", log_q(app), q->key, log_q(err));
        return status_of(rc);
    }
    size_t len = out->len - start;
    if (len > IMG_SERVE_CACHE_BYTES / 4) { free(id); return 200; }
    centry *n = xcalloc(1, sizeof *n);
    n->id = id;
    n->data = xmalloc(len ? len : 1);
    memcpy(n->data, out->data + start, len);
    n->len = len;
    n->mime = *mime;
    pthread_mutex_lock(&s->mu);
    int dup = 0;
    for (centry *e = s->head; e && !dup; e = e->next) dup = !strcmp(e->id, id);
    if (dup) {
        centry_free(n);
    } else {
        n->next = s->head;
        if (s->head) s->head->prev = n; else s->tail = n;
        s->head = n;
        s->entries++;
        s->bytes += len;
        while (s->tail && (s->bytes > IMG_SERVE_CACHE_BYTES || s->entries > CACHE_MAX_ENTRIES)) {
            centry *t = s->tail;
            s->tail = t->prev;
            if (s->tail) s->tail->next = NULL; else s->head = NULL;
            s->entries--;
            s->bytes -= t->len;
            centry_free(t);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return 200;
}

void img_server_cache_stats(img_server *s, size_t *entries, size_t *bytes, unsigned long *hits)
{
    pthread_mutex_lock(&s->mu);
    *entries = s->entries;
    *bytes = s->bytes;
    *hits = s->hits;
    pthread_mutex_unlock(&s->mu);
}
