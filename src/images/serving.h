/* serving.h - images kept in the blob store: reading them for the images
 * service, and serving URLs (get_serving_url) rendered for the router.
 *
 * A serving URL is http(s)://HOST/_ah/img/BLOBKEY, optionally followed by
 * "=sNN" (longest side NN pixels, 0..IMG_SERVE_MAX_SIZE, 0 = original size)
 * and "-c" (square crop to NN x NN, centred). Without options the image is
 * shrunk to IMG_SERVE_DEFAULT_SIZE on its longest side if larger, as App
 * Engine does. A blob is served only while it has a serving URL: GetUrlBase
 * publishes it (a row "U/<app>/<blobkey>" in the shared kv engine, so it
 * survives restarts) and DeleteUrlBase withdraws it.
 *
 * Rendered images are cached in memory (IMG_SERVE_CACHE_BYTES, least
 * recently used first out), keyed by app, blob key, size and crop; blobs are
 * immutable, and every request checks first that the URL is published and
 * the blob still exists, so the cache never serves a withdrawn image. */
#ifndef CZ_IMAGES_SERVING_H
#define CZ_IMAGES_SERVING_H

#include <stddef.h>
#include "blob/blobstore.h"
#include "core/buf.h"
#include "kv/kv.h"

#define IMG_SERVE_PREFIX "/_ah/img/"
#define IMG_SERVE_DEFAULT_SIZE 512
#define IMG_SERVE_MAX_SIZE 3200          /* the SDK's IMG_SERVING_SIZES_LIMIT */
#define IMG_SERVE_CACHE_BYTES (32u << 20)
#define IMG_MAX_BLOB_BYTES (32u << 20)   /* largest blob read as an image */

typedef struct img_server img_server;

/* kv and blobs may be NULL (then blob keys and serving URLs are refused with
 * a sentence); neither is owned. */
img_server *img_server_new(kv_engine *kv, blob_store *blobs);
void img_server_free(img_server *s);

/* The bytes of blob key of app into out: IMG_OK, IMG_E_INVALID_BLOB_KEY
 * (malformed), IMG_E_OBJECT_NOT_FOUND (no such blob), IMG_E_IMAGE_TOO_LARGE
 * (over IMG_MAX_BLOB_BYTES) or IMG_E_UNSPECIFIED, with err. */
int img_server_read_blob(img_server *s, const char *app, const char *key, size_t keylen,
                         buf *out, char *err, size_t errlen);

/* Publish (on = 1) or withdraw (on = 0) the serving URL of a blob. Publishing
 * needs the blob to exist. Same codes as img_server_read_blob. */
int img_server_publish(img_server *s, const char *app, const char *key, size_t keylen, int on,
                       char *err, size_t errlen);

/* A parsed serving path (the part after IMG_SERVE_PREFIX). */
typedef struct {
    char key[BLOB_KEY_MAX + 1];
    int size;                            /* -1: default */
    int crop;
} img_serve_req;

/* 0, or -1 when the path is not KEY[=sNN][-c]. */
int img_serve_parse(const char *p, size_t n, img_serve_req *q);

/* Render a serving URL: returns an HTTP status. 200: out holds the image and
 * *mime its type; else err holds the sentence for the error page (404 not
 * published or no such blob, 400 not an image, 413 too large, 500 other). */
int img_server_render(img_server *s, const char *app, const img_serve_req *q, buf *out,
                      const char **mime, char *err, size_t errlen);

/* Cache statistics (tests). */
void img_server_cache_stats(img_server *s, size_t *entries, size_t *bytes, unsigned long *hits);

#endif
