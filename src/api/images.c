/* images.c - protocol glue between the API server and images/image.c.
 *
 * Each method decodes its request (apphosting.Images*Request, proto2) fully
 * into a small struct first, with field presence kept where the meaning
 * depends on it (a Transform is a resize when width or height is present, a
 * rotation when rotate is present, even rotate = 0), checks every parameter
 * before decoding any picture, then runs the work between img_acquire() and
 * img_release(), which bound how many requests hold decoded pictures at once,
 * inside api_blocking_begin/end so that calls to other services are never
 * left without a free worker.
 *
 * One Transform message must ask for exactly one operation; the operations
 * run in the order given. Orientation correction (CORRECT_ORIENTATION) is
 * applied before the first operation. source_metadata is always returned
 * (ImageWidth/ImageLength; the EXIF fields too with parse_metadata).
 *
 * A malformed message is RPC PARSE_ERROR; everything else is an
 * ImagesServiceError application error with one sentence. */
#include "api/images.h"
#include "api/blobstore.h"
#include "images/image.h"
#include "images/serving.h"
#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const uint8_t *p; size_t n; } bytes;

/* service_data: blobs and serving URLs (NULL: inline images only). */
typedef struct {
    img_server *server;
    char *hostname;           /* the app's host for serving URLs, or NULL */
} images_svc;

/* ---- decoding ---- */

typedef struct {
    bytes content, blob_key;
    int has_content, has_blob_key;
} image_data;

typedef struct {
    int has_width, has_height, has_rotate;
    int has_crop[4];
    int32_t width, height, rotate;
    int crop_to_fit, allow_stretch, hflip, vflip, autolevels;
    float offset_x, offset_y, crop[4];
} transform_msg;

typedef struct {
    int32_t mime_type, quality;
    int has_quality;
} output_settings;

static float f32(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

static int read_float(pb_reader *r, int wt, float *out)
{
    uint32_t u;
    if (pb_fixed32(r, wt, &u) < 0) return -1;
    *out = f32(u);
    return 0;
}

/* ImageData { content = 1; blob_key = 2; width = 3; height = 4; } */
static int decode_image(pb_reader *r, int wt, image_data *d)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        if (f == 1) { rc = pb_bytes(&s, w, &d->content.p, &d->content.n); d->has_content = 1; }
        else if (f == 2) { rc = pb_bytes(&s, w, &d->blob_key.p, &d->blob_key.n); d->has_blob_key = 1; }
        else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int decode_transform(pb_reader *r, int wt, transform_msg *t)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    t->offset_x = t->offset_y = 0.5f;
    t->crop[2] = t->crop[3] = 1.0f;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        switch (f) {
        case 1: rc = pb_int32(&s, w, &t->width); t->has_width = 1; break;
        case 2: rc = pb_int32(&s, w, &t->height); t->has_height = 1; break;
        case 3: rc = pb_int32(&s, w, &t->rotate); t->has_rotate = 1; break;
        case 4: rc = pb_bool(&s, w, &t->hflip); break;
        case 5: rc = pb_bool(&s, w, &t->vflip); break;
        case 6: case 7: case 8: case 9:
            rc = read_float(&s, w, &t->crop[f - 6]); t->has_crop[f - 6] = 1; break;
        case 10: rc = pb_bool(&s, w, &t->autolevels); break;
        case 11: rc = pb_bool(&s, w, &t->crop_to_fit); break;
        case 12: rc = read_float(&s, w, &t->offset_x); break;
        case 13: rc = read_float(&s, w, &t->offset_y); break;
        case 14: rc = pb_bool(&s, w, &t->allow_stretch); break;
        default: rc = pb_skip(&s, w, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

/* OutputSettings { mime_type = 1; quality = 2; } */
static int decode_output(pb_reader *r, int wt, output_settings *o)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        if (f == 1) rc = pb_int32(&s, w, &o->mime_type);
        else if (f == 2) { rc = pb_int32(&s, w, &o->quality); o->has_quality = 1; }
        else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static void parse_error(api_reply *reply, const char *what)
{
    api_rpc_error(reply, RPC_PARSE_ERROR, "The images %s request could not be parsed.", what);
}

/* The transform message as one img_transform; IMG_OK or BAD_TRANSFORM_DATA. */
static int to_transform(const transform_msg *m, int index, img_transform *t,
                        char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    int kinds = 0;
    int crop = m->has_crop[0] || m->has_crop[1] || m->has_crop[2] || m->has_crop[3];
    if (m->has_width || m->has_height) {
        kinds++;
        t->op = IMG_T_RESIZE;
        t->width = m->width;
        t->height = m->height;
        t->crop_to_fit = m->crop_to_fit;
        t->allow_stretch = m->allow_stretch;
        t->crop_offset_x = m->offset_x;
        t->crop_offset_y = m->offset_y;
    }
    if (m->has_rotate) { kinds++; t->op = IMG_T_ROTATE; t->degrees = m->rotate; }
    if (m->hflip) { kinds++; t->op = IMG_T_HFLIP; }
    if (m->vflip) { kinds++; t->op = IMG_T_VFLIP; }
    if (crop) {
        kinds++;
        t->op = IMG_T_CROP;
        t->left = m->crop[0]; t->top = m->crop[1]; t->right = m->crop[2]; t->bottom = m->crop[3];
    }
    if (m->autolevels) { kinds++; t->op = IMG_T_LUCKY; }
    if (kinds != 1) {
        set_err(err, errlen, kinds ? "Transform %d asks for more than one operation; send one "
                "Transform per operation." : "Transform %d asks for no operation.", index + 1);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    char inner[256];
    int rc = img_check_transform(t, inner, sizeof inner);
    if (rc) set_err(err, errlen, "Transform %d: %s", index + 1, inner);
    return rc;
}

static int check_output(const output_settings *o, char *err, size_t errlen)
{
    if (o->mime_type < IMG_OUT_PNG || o->mime_type > IMG_OUT_WEBP) {
        set_err(err, errlen, "Unknown output encoding %d; use PNG (0), JPEG (1) or WEBP (2).",
                (int)o->mime_type);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    if (o->has_quality && (o->quality < 1 || o->quality > 100)) {
        set_err(err, errlen, "Output quality must be between 1 and 100, not %d.", (int)o->quality);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    return IMG_OK;
}

/* The bytes of an ImageData: inline content, or the blob it names. *owned
 * is set when the bytes were allocated here (free them). */
static int source_bytes(api_ctx *ctx, const image_data *d, bytes *out, void **owned,
                        char *err, size_t errlen)
{
    *owned = NULL;
    if (d->has_blob_key && d->content.n) {
        set_err(err, errlen, "An image may be given by content or by blob key, not both.");
        return IMG_E_INVALID_BLOB_KEY;
    }
    if (d->has_blob_key) {
        images_svc *svc = ctx->service_data;
        if (!svc) {
            set_err(err, errlen, "This images service reads inline images only; blob keys are not "
                    "available.");
            return IMG_E_INVALID_BLOB_KEY;
        }
        buf b = BUF_INIT;
        int rc = img_server_read_blob(svc->server, ctx->app_id, (const char *)d->blob_key.p,
                                      d->blob_key.n, &b, err, errlen);
        if (rc) { buf_free(&b); return rc; }
        *owned = b.data;
        out->p = (const uint8_t *)buf_rp(&b);
        out->n = buf_unread(&b);
        return IMG_OK;
    }
    if (!d->content.n) {
        set_err(err, errlen, "The image data is empty.");
        return IMG_E_NOT_IMAGE;
    }
    *out = d->content;
    return IMG_OK;
}

static int decode_source(api_ctx *ctx, const image_data *d, long long max_pixels, img **im,
                         char *err, size_t errlen)
{
    bytes b;
    void *owned;
    int rc = source_bytes(ctx, d, &b, &owned, err, errlen);
    if (rc) return rc;
    rc = img_decode(b.p, b.n, max_pixels, im, err, errlen);
    free(owned);
    return rc;
}

static void put_image(buf *out, uint32_t field, const buf *data, const img *im)
{
    size_t m = pb_begin(out, field);
    pb_put_bytes(out, 1, data->data, data->len);
    pb_put_int(out, 3, img_width(im));
    pb_put_int(out, 4, img_height(im));
    pb_end(out, m);
}

/* Image work may wait for a slot (img_acquire) and then keep a CPU busy for
 * a while: the server is told, so other services' calls keep free workers. */
static void work_begin(api_ctx *ctx)
{
    api_blocking_begin(ctx);
    img_acquire();
}

static void work_end(api_ctx *ctx)
{
    img_release();
    api_blocking_end(ctx);
}

static int ready(api_reply *reply)
{
    char err[256];
    if (img_init(err, sizeof err) < 0) {
        api_app_error(reply, IMG_E_UNSPECIFIED, "%s", err);
        return 0;
    }
    return 1;
}

/* ---- Transform ---- */

typedef struct {
    image_data image;
    int has_image;
    transform_msg t[IMG_MAX_TRANSFORMS];
    int nt, too_many;
    output_settings out;
    int correct_orientation, parse_metadata, has_bg;
    int32_t bg;
} transform_req;

/* InputSettings { correct_exif_orientation = 1; parse_metadata = 2;
 * transparent_substitution_rgb = 3; } */
static int decode_input(pb_reader *r, int wt, transform_req *q)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        int32_t v;
        if (f == 1) { rc = pb_int32(&s, w, &v); q->correct_orientation = v == 1; }
        else if (f == 2) rc = pb_bool(&s, w, &q->parse_metadata);
        else if (f == 3) { rc = pb_int32(&s, w, &q->bg); q->has_bg = 1; }
        else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int decode_transform_req(const uint8_t *in, size_t len, transform_req *q)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1: rc = decode_image(&r, wt, &q->image); q->has_image = 1; break;
        case 2:
            if (q->nt < IMG_MAX_TRANSFORMS) rc = decode_transform(&r, wt, &q->t[q->nt++]);
            else { q->too_many = 1; rc = pb_skip(&r, wt, f); }
            break;
        case 3: rc = decode_output(&r, wt, &q->out); break;
        case 4: rc = decode_input(&r, wt, q); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void m_transform(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    transform_req *q = xcalloc(1, sizeof *q);
    img_transform ops[IMG_MAX_TRANSFORMS];
    char err[512];
    int rc = IMG_OK;
    if (decode_transform_req(in, len, q) < 0) { parse_error(reply, "Transform"); goto out; }
    if (q->too_many) {
        rc = IMG_E_BAD_TRANSFORM_DATA;
        set_err(err, sizeof err, "A Transform request may hold at most %d transforms.",
                IMG_MAX_TRANSFORMS);
        goto fail;
    }
    for (int i = 0; i < q->nt && !rc; i++) rc = to_transform(&q->t[i], i, &ops[i], err, sizeof err);
    if (!rc) rc = check_output(&q->out, err, sizeof err);
    if (rc) goto fail;
    if (!ready(reply)) goto out;

    work_begin(ctx);
    img *im = NULL;
    buf meta = BUF_INIT, data = BUF_INIT;
    rc = decode_source(ctx, &q->image, 0, &im, err, sizeof err);
    if (!rc) rc = img_metadata_json(im, q->parse_metadata, &meta, err, sizeof err);
    if (!rc && q->correct_orientation) rc = img_correct_orientation(&im, err, sizeof err);
    for (int i = 0; i < q->nt && !rc; i++) rc = img_apply(&im, &ops[i], err, sizeof err);
    if (!rc) rc = img_encode(im, q->out.mime_type, q->out.has_quality ? q->out.quality : 0,
                             q->has_bg, (uint32_t)q->bg, &data, err, sizeof err);
    if (!rc) {
        put_image(&reply->response, 1, &data, im);
        pb_put_bytes(&reply->response, 2, meta.data, meta.len);
    }
    img_free(im);
    work_end(ctx);
    buf_free(&meta);
    buf_free(&data);
    if (!rc) goto out;
fail:
    log_debug("images", "app=%s msg=\"Transform refused\" code=%d detail=%s", ctx->app_id, rc,
              log_q(err));
    api_app_error(reply, rc, "%s", err);
out:
    free(q);
}

/* ---- Composite ---- */

typedef struct {
    int32_t source_index, x, y, anchor;
    float opacity;
} comp_option;

typedef struct {
    image_data images[IMG_MAX_COMPOSITES];
    comp_option opts[IMG_MAX_COMPOSITES];
    int ni, no, too_many, has_canvas;
    int32_t width, height, color;
    output_settings out;
} composite_req;

/* CompositeImageOptions { source_index = 1; x_offset = 2; y_offset = 3;
 * opacity = 4 (float); anchor = 5; } */
static int decode_option(pb_reader *r, int wt, comp_option *o)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    o->opacity = 1.0f;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        switch (f) {
        case 1: rc = pb_int32(&s, w, &o->source_index); break;
        case 2: rc = pb_int32(&s, w, &o->x); break;
        case 3: rc = pb_int32(&s, w, &o->y); break;
        case 4: rc = read_float(&s, w, &o->opacity); break;
        case 5: rc = pb_int32(&s, w, &o->anchor); break;
        default: rc = pb_skip(&s, w, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

/* ImagesCanvas { width = 1; height = 2; output = 3; color = 4 (default -1); } */
static int decode_canvas(pb_reader *r, int wt, composite_req *q)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    q->has_canvas = 1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        switch (f) {
        case 1: rc = pb_int32(&s, w, &q->width); break;
        case 2: rc = pb_int32(&s, w, &q->height); break;
        case 3: rc = decode_output(&s, w, &q->out); break;
        case 4: rc = pb_int32(&s, w, &q->color); break;
        default: rc = pb_skip(&s, w, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int decode_composite_req(const uint8_t *in, size_t len, composite_req *q)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    q->color = -1;
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1:
            if (q->ni < IMG_MAX_COMPOSITES) rc = decode_image(&r, wt, &q->images[q->ni++]);
            else { q->too_many = 1; rc = pb_skip(&r, wt, f); }
            break;
        case 2:
            if (q->no < IMG_MAX_COMPOSITES) rc = decode_option(&r, wt, &q->opts[q->no++]);
            else { q->too_many = 1; rc = pb_skip(&r, wt, f); }
            break;
        case 3: rc = decode_canvas(&r, wt, q); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static int check_composite(const composite_req *q, char *err, size_t errlen)
{
    if (q->too_many) {
        set_err(err, errlen, "A Composite request may hold at most %d images and %d options.",
                IMG_MAX_COMPOSITES, IMG_MAX_COMPOSITES);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    if (!q->ni || !q->no) {
        set_err(err, errlen, "A Composite request needs at least one image and one option.");
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    if (!q->has_canvas || q->width < 1 || q->height < 1 || q->width > IMG_MAX_DIMENSION ||
        q->height > IMG_MAX_DIMENSION) {
        set_err(err, errlen, "The canvas must be between 1 and %d pixels on each side.",
                IMG_MAX_DIMENSION);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    for (int i = 0; i < q->no; i++) {
        const comp_option *o = &q->opts[i];
        if (o->source_index < 0 || o->source_index >= q->ni) {
            set_err(err, errlen, "Option %d names image %d, but the request holds %d images.",
                    i + 1, (int)o->source_index, q->ni);
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        if (o->anchor < 0 || o->anchor > 8) {
            set_err(err, errlen, "Option %d has an unknown anchor %d.", i + 1, (int)o->anchor);
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        if (!(o->opacity >= 0 && o->opacity <= 1)) {
            set_err(err, errlen, "Option %d: opacity must be between 0.0 and 1.0.", i + 1);
            return IMG_E_BAD_TRANSFORM_DATA;
        }
    }
    return check_output(&q->out, err, errlen);
}

static void m_composite(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    composite_req *q = xcalloc(1, sizeof *q);
    char err[512];
    int rc;
    if (decode_composite_req(in, len, q) < 0) { parse_error(reply, "Composite"); goto out; }
    if ((rc = check_composite(q, err, sizeof err))) goto fail;
    if (!ready(reply)) goto out;

    work_begin(ctx);
    img *src[IMG_MAX_COMPOSITES] = {0}, *canvas = NULL;
    buf data = BUF_INIT;
    long long used = 0;
    for (int i = 0; i < q->ni && !rc; i++) {
        rc = decode_source(ctx, &q->images[i], IMG_MAX_TOTAL_PIXELS - used, &src[i], err, sizeof err);
        if (rc == IMG_E_IMAGE_TOO_LARGE && used)
            set_err(err, sizeof err, "The images of the composite add up to more than %lld "
                    "megapixels.", IMG_MAX_TOTAL_PIXELS / 1000000);
        if (!rc) used += (long long)img_width(src[i]) * img_height(src[i]);
    }
    if (!rc) rc = img_canvas(q->width, q->height, (uint32_t)q->color, &canvas, err, sizeof err);
    for (int i = 0; i < q->no && !rc; i++) {
        const comp_option *o = &q->opts[i];
        const img *s = src[o->source_index];
        int64_t dx = (int64_t)q->width - img_width(s), dy = (int64_t)q->height - img_height(s);
        /* anchor column/row 0, 1, 2 = left/centre/right; halves truncate toward zero */
        int64_t x = (2 * (int64_t)o->x + (o->anchor % 3) * dx) / 2;
        int64_t y = (2 * (int64_t)o->y + (o->anchor / 3) * dy) / 2;
        rc = img_composite(&canvas, s, x, y, o->opacity, err, sizeof err);
    }
    if (!rc) rc = img_encode(canvas, q->out.mime_type, q->out.has_quality ? q->out.quality : 0,
                             0, 0, &data, err, sizeof err);
    if (!rc) put_image(&reply->response, 1, &data, canvas);
    img_free(canvas);
    for (int i = 0; i < q->ni; i++) img_free(src[i]);
    work_end(ctx);
    buf_free(&data);
    if (!rc) goto out;
fail:
    log_debug("images", "app=%s msg=\"Composite refused\" code=%d detail=%s", ctx->app_id, rc,
              log_q(err));
    api_app_error(reply, rc, "%s", err);
out:
    free(q);
}

/* ---- Histogram ---- */

static void m_histogram(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    image_data d = {0};
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        rc = f == 1 ? decode_image(&r, wt, &d) : pb_skip(&r, wt, f);
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { parse_error(reply, "Histogram"); return; }
    if (!ready(reply)) return;
    char err[512];
    uint32_t (*hist)[256] = xmalloc(3 * sizeof *hist);
    work_begin(ctx);
    img *im = NULL;
    rc = decode_source(ctx, &d, 0, &im, err, sizeof err);
    if (!rc) rc = img_histogram(im, hist, err, sizeof err);
    img_free(im);
    work_end(ctx);
    if (rc) {
        api_app_error(reply, rc, "%s", err);
    } else {
        size_t m = pb_begin(&reply->response, 1);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 256; i++) pb_put_int(&reply->response, (uint32_t)c + 1, hist[c][i]);
        pb_end(&reply->response, m);
    }
    free(hist);
}

/* ---- serving URLs ---- */

/* ImagesGetUrlBaseRequest { blob_key = 1; create_secure_url = 2; } and
 * ImagesDeleteUrlBaseRequest { blob_key = 1; } */
static int decode_url_req(const uint8_t *in, size_t len, bytes *key, int *secure)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    int has_key = 0;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) { rc = pb_bytes(&r, wt, &key->p, &key->n); has_key = 1; }
        else if (f == 2) rc = pb_bool(&r, wt, secure);
        else rc = pb_skip(&r, wt, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err || !has_key ? -1 : 0;
}

static void url_base(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply, int on)
{
    images_svc *svc = ctx->service_data;
    bytes key = {0};
    int secure = 0;
    if (decode_url_req(in, len, &key, &secure) < 0) {
        parse_error(reply, on ? "GetUrlBase" : "DeleteUrlBase");
        return;
    }
    char err[512];
    int rc = img_server_publish(svc ? svc->server : NULL, ctx->app_id, (const char *)key.p, key.n,
                                on, err, sizeof err);
    if (rc) { api_app_error(reply, rc, "%s", err); return; }
    if (!on) return;
    buf url = BUF_INIT;
    if (svc->hostname) buf_printf(&url, "%s://%s", secure ? "https" : "http", svc->hostname);
    buf_puts(&url, IMG_SERVE_PREFIX);
    buf_append(&url, key.p, key.n);
    pb_put_bytes(&reply->response, 1, buf_rp(&url), buf_unread(&url));
    buf_free(&url);
}

static void m_get_url_base(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    url_base(ctx, in, len, reply, 1);
}

static void m_delete_url_base(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    url_base(ctx, in, len, reply, 0);
}

/* ---- registration ---- */

static const struct { const char *name; api_method_fn fn; } methods[] = {
    { "Transform", m_transform },
    { "Composite", m_composite },
    { "Histogram", m_histogram },
    { "GetUrlBase", m_get_url_base },
    { "DeleteUrlBase", m_delete_url_base },
};

api_method_fn images_method(const char *method)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i].name, method)) return methods[i].fn;
    return NULL;
}

static void svc_free(void *p)
{
    images_svc *svc = p;
    img_server_free(svc->server);
    free(svc->hostname);
    free(svc);
}

void images_register(api_server *srv, const char *home)
{
    (void)home;
    images_svc *svc = xcalloc(1, sizeof *svc);
    blob_service *bs = blobstore_service(srv);
    svc->server = img_server_new(api_shared(srv, "kv"), bs ? blobsvc_store(bs) : NULL);
    const char *host = api_shared(srv, "app.hostname");
    if (host && *host) svc->hostname = xstrdup(host);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        api_register(srv, "images", methods[i].name, methods[i].fn, svc);
    api_on_stop(srv, svc_free, svc);
    api_share(srv, "images", svc->server);
}
