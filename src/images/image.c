/* image.c - the images service's picture work, on libvips (see image.h).
 *
 * Decoding: the format is sniffed from the magic bytes and the matching
 * libvips loader is called directly (never the generic "guess" loader, so no
 * ImageMagick, PDF or SVG code ever sees request bytes). Loaders read the
 * header lazily, so the pixel cap is checked before any pixel is decoded;
 * then the picture is converted to 8-bit sRGB (3 bands, 4 with alpha) and
 * rendered into memory in one sequential pass with fail_on=truncated, so
 * every decoding error surfaces here as BAD_IMAGE_DATA and the operations
 * after it work on plain memory images.
 *
 * Each operation builds a short libvips pipeline from a memory image and
 * renders it into a new memory image (except composites, which stay lazy
 * until encoding so that 16 overlays do not copy the canvas 16 times).
 * Output sizes are computed with integer arithmetic, so they are exact.
 *
 * libvips' error buffer is shared by all threads, so the sentences given to
 * callers are our own; the buffer is cleared after each failure. */
#include "images/image.h"
#include "images/exif.h"
#include "core/log.h"
#include "core/util.h"

#include <vips/vips.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct img {
    VipsImage *v;          /* 8-bit sRGB, 3 or 4 bands */
    img_format src;
    int orientation;       /* EXIF orientation still to be applied, 1..8 */
    uint8_t *exif;         /* raw EXIF of the source, or NULL */
    size_t exif_len;
};

#define EXIF_MAX (1u << 20)

/* ---- process set-up ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_failed;

static void on_vips_log(const char *domain, GLogLevelFlags level, const char *msg, void *data)
{
    (void)domain; (void)level; (void)data;
    log_debug("images", "msg=\"libvips says\" detail=%s", log_q(msg));
}

static void do_init(void)
{
    if (VIPS_INIT("cyclozzo")) { init_failed = 1; return; }
    /* Pixel buffers are large and short-lived, and freed on other threads'
     * arenas. glibc raises its mmap threshold after each large free, after
     * which such buffers stay in the arenas: the API server's RSS then grew
     * by ~300 MB over 50 requests. A fixed threshold keeps them in mmap, so
     * freeing returns them to the system. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* Every request brings new pictures: caching operations only holds memory. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    /* Requests run on the API server's worker threads already. */
    vips_concurrency_set(1);
    vips_block_untrusted_set(TRUE);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO |
                      G_LOG_LEVEL_DEBUG, on_vips_log, NULL);
}

int img_init(char *err, size_t errlen)
{
    pthread_once(&init_once, do_init);
    if (init_failed) {
        set_err(err, errlen, "libvips could not be initialised.");
        return -1;
    }
    return 0;
}

static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t active_cv = PTHREAD_COND_INITIALIZER;
static int active;

void img_acquire(void)
{
    pthread_mutex_lock(&active_mu);
    while (active >= IMG_MAX_ACTIVE) pthread_cond_wait(&active_cv, &active_mu);
    active++;
    pthread_mutex_unlock(&active_mu);
}

void img_release(void)
{
    pthread_mutex_lock(&active_mu);
    active--;
    pthread_cond_signal(&active_cv);
    pthread_mutex_unlock(&active_mu);
}

/* ---- small helpers ---- */

/* A libvips call failed: forget its message, give ours. */
static int fail(int code, char *err, size_t errlen, const char *what)
{
    vips_error_clear();
    set_err(err, errlen, "%s", what);
    return code;
}

static img *wrap(VipsImage *v, const img *like)
{
    img *im = xcalloc(1, sizeof *im);
    im->v = v;
    im->src = like ? like->src : IMG_FMT_UNKNOWN;
    im->orientation = like ? like->orientation : 1;
    return im;
}

/* Render a pipeline into memory; takes over t (unreffed either way). */
static VipsImage *materialize(VipsImage *t)
{
    VipsImage *m = vips_image_copy_memory(t);
    g_object_unref(t);
    return m;
}

/* To 8-bit (no-op when already); takes over t. NULL on failure. */
static VipsImage *to_uchar(VipsImage *t)
{
    if (t->BandFmt == VIPS_FORMAT_UCHAR) return t;
    VipsImage *u = NULL;
    int rc = vips_cast(t, &u, VIPS_FORMAT_UCHAR, NULL);
    g_object_unref(t);
    return rc ? NULL : u;
}

/* Replace *im with a new memory image made from pipeline t (taken over). */
static int replace(img **im, VipsImage *t, char *err, size_t errlen, const char *what)
{
    if (!t) return fail(IMG_E_UNSPECIFIED, err, errlen, what);
    t = to_uchar(t);
    VipsImage *m = t ? materialize(t) : NULL;
    if (!m) return fail(IMG_E_UNSPECIFIED, err, errlen, what);
    img *n = wrap(m, *im);
    img_free(*im);
    *im = n;
    return IMG_OK;
}

/* ---- formats ---- */

img_format img_sniff(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return IMG_FMT_JPEG;
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return IMG_FMT_PNG;
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return IMG_FMT_GIF;
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return IMG_FMT_WEBP;
    if (n >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) return IMG_FMT_TIFF;
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return IMG_FMT_BMP;
    if (n >= 4 && !memcmp(p, "\0\0\1\0", 4)) return IMG_FMT_ICO;
    return IMG_FMT_UNKNOWN;
}

const char *img_format_name(img_format f)
{
    switch (f) {
    case IMG_FMT_JPEG: return "JPEG";
    case IMG_FMT_PNG: return "PNG";
    case IMG_FMT_GIF: return "GIF";
    case IMG_FMT_WEBP: return "WebP";
    case IMG_FMT_TIFF: return "TIFF";
    case IMG_FMT_BMP: return "BMP";
    case IMG_FMT_ICO: return "ICO";
    default: return "unknown";
    }
}

/* Header only: libvips loaders are lazy. */
static int load_header(img_format f, const void *data, size_t n, VipsImage **v)
{
    void *d = (void *)data;   /* the loaders do not write to the buffer */
    switch (f) {
    case IMG_FMT_JPEG:
        return vips_jpegload_buffer(d, n, v, "access", VIPS_ACCESS_SEQUENTIAL,
                                    "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    case IMG_FMT_PNG:
        return vips_pngload_buffer(d, n, v, "access", VIPS_ACCESS_SEQUENTIAL,
                                   "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    case IMG_FMT_GIF:
        return vips_gifload_buffer(d, n, v, "access", VIPS_ACCESS_SEQUENTIAL,
                                   "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    case IMG_FMT_WEBP:
        return vips_webpload_buffer(d, n, v, "access", VIPS_ACCESS_SEQUENTIAL,
                                    "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    case IMG_FMT_TIFF:
        return vips_tiffload_buffer(d, n, v, "access", VIPS_ACCESS_SEQUENTIAL,
                                    "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    default:
        return -1;
    }
}

/* The loaded picture as 8-bit sRGB with 3 or 4 bands (lazy); takes over v. */
static VipsImage *normalize(VipsImage *v)
{
    VipsImage *t = NULL;
    /* Interpretations libvips cannot convert (e.g. a MULTIBAND TIFF) are
     * taken as they are: cast to 8 bits, bands fixed below. */
    if (vips_colourspace_issupported(v) &&
        (v->Type != VIPS_INTERPRETATION_sRGB || v->BandFmt != VIPS_FORMAT_UCHAR)) {
        int rc = vips_colourspace(v, &t, VIPS_INTERPRETATION_sRGB, NULL);
        g_object_unref(v);
        if (rc) return NULL;
        v = t;
    }
    if (!(v = to_uchar(v))) return NULL;
    if (v->Bands == 3 || v->Bands == 4) return v;
    int rc;
    if (v->Bands > 4) {                  /* e.g. extra TIFF channels */
        rc = vips_extract_band(v, &t, 0, "n", 4, NULL);
    } else {                             /* grey, or grey + alpha, left over */
        VipsImage *g = NULL, *a = NULL;
        rc = vips_extract_band(v, &g, 0, NULL);
        if (!rc && v->Bands == 2) rc = vips_extract_band(v, &a, 1, NULL);
        if (!rc) {
            VipsImage *in[4] = { g, g, g, a };
            rc = vips_bandjoin(in, &t, a ? 4 : 3, NULL);
        }
        if (g) g_object_unref(g);
        if (a) g_object_unref(a);
    }
    g_object_unref(v);
    return rc ? NULL : t;
}

int img_decode(const void *data, size_t n, long long max_pixels, img **out,
               char *err, size_t errlen)
{
    *out = NULL;
    if (max_pixels <= 0) max_pixels = IMG_MAX_PIXELS;
    img_format f = img_sniff(data, n);
    if (f == IMG_FMT_UNKNOWN) {
        set_err(err, errlen, n ? "The data is not an image in a format the images service reads "
                                 "(JPEG, PNG, GIF, WebP or TIFF)." : "The image data is empty.");
        return IMG_E_NOT_IMAGE;
    }
    if (f == IMG_FMT_BMP || f == IMG_FMT_ICO) {
        set_err(err, errlen, "%s images are not supported; send JPEG, PNG, GIF, WebP or TIFF.",
                img_format_name(f));
        return IMG_E_NOT_IMAGE;
    }
    VipsImage *v = NULL;
    if (load_header(f, data, n, &v) || !v) {
        char msg[128];
        snprintf(msg, sizeof msg, "The %s image data is corrupt: its header could not be read.",
                 img_format_name(f));
        return fail(IMG_E_BAD_IMAGE_DATA, err, errlen, msg);
    }
    long long w = v->Xsize, h = v->Ysize;
    if (w <= 0 || h <= 0 || w * h > max_pixels) {
        g_object_unref(v);
        set_err(err, errlen, "The image is %lldx%lld pixels, more than the %lld megapixels the "
                "images service decodes.", w, h, max_pixels / 1000000);
        return IMG_E_IMAGE_TOO_LARGE;
    }
    int orientation = vips_image_get_orientation(v);
    uint8_t *exif = NULL;
    size_t exif_len = 0;
    const void *blob;
    size_t blob_len;
    if (vips_image_get_typeof(v, VIPS_META_EXIF_NAME) &&
        !vips_image_get_blob(v, VIPS_META_EXIF_NAME, &blob, &blob_len) &&
        blob_len > 0 && blob_len <= EXIF_MAX) {
        exif = xmalloc(blob_len);
        memcpy(exif, blob, blob_len);
        exif_len = blob_len;
    }
    VipsImage *t = normalize(v);
    VipsImage *m = t ? materialize(t) : NULL;
    if (!m) {
        free(exif);
        char msg[128];
        snprintf(msg, sizeof msg, "The %s image data is corrupt or truncated and could not be "
                 "decoded.", img_format_name(f));
        return fail(IMG_E_BAD_IMAGE_DATA, err, errlen, msg);
    }
    img *im = wrap(m, NULL);
    im->src = f;
    im->orientation = orientation >= 1 && orientation <= 8 ? orientation : 1;
    im->exif = exif;
    im->exif_len = exif_len;
    *out = im;
    return IMG_OK;
}

void img_free(img *im)
{
    if (!im) return;
    if (im->v) g_object_unref(im->v);
    free(im->exif);
    free(im);
}

int img_width(const img *im) { return im->v->Xsize; }
int img_height(const img *im) { return im->v->Ysize; }
int img_has_alpha(const img *im) { return im->v->Bands == 4; }
img_format img_source_format(const img *im) { return im->src; }
int img_orientation(const img *im) { return im->orientation; }

/* ---- transforms ---- */

int img_check_transform(const img_transform *t, char *err, size_t errlen)
{
    switch (t->op) {
    case IMG_T_RESIZE:
        if (t->width < 0 || t->height < 0 || t->width > IMG_MAX_DIMENSION ||
            t->height > IMG_MAX_DIMENSION) {
            set_err(err, errlen, "Resize width and height must be between 0 and %d.", IMG_MAX_DIMENSION);
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        if (!t->width && !t->height) {
            set_err(err, errlen, "Resize needs a width or a height above 0.");
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        if ((t->crop_to_fit || t->allow_stretch) && !(t->width && t->height)) {
            set_err(err, errlen, "Resize with %s needs both a width and a height above 0.",
                    t->crop_to_fit ? "crop_to_fit" : "allow_stretch");
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        if (!(t->crop_offset_x >= 0 && t->crop_offset_x <= 1 &&
              t->crop_offset_y >= 0 && t->crop_offset_y <= 1)) {
            set_err(err, errlen, "crop_offset_x and crop_offset_y must be between 0.0 and 1.0.");
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        return IMG_OK;
    case IMG_T_ROTATE:
        if (t->degrees % 90) {
            set_err(err, errlen, "Rotation must be a multiple of 90 degrees, not %lld.",
                    (long long)t->degrees);
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        return IMG_OK;
    case IMG_T_CROP: {
        const double v[4] = { t->left, t->top, t->right, t->bottom };
        for (int i = 0; i < 4; i++)
            if (!(v[i] >= 0 && v[i] <= 1)) {
                set_err(err, errlen, "Crop bounds must be between 0.0 and 1.0.");
                return IMG_E_BAD_TRANSFORM_DATA;
            }
        if (!(t->left < t->right) || !(t->top < t->bottom)) {
            set_err(err, errlen, "Crop bounds must have left_x < right_x and top_y < bottom_y.");
            return IMG_E_BAD_TRANSFORM_DATA;
        }
        return IMG_OK;
    }
    case IMG_T_HFLIP: case IMG_T_VFLIP: case IMG_T_LUCKY:
        return IMG_OK;
    }
    set_err(err, errlen, "Unknown transform.");
    return IMG_E_BAD_TRANSFORM_DATA;
}

/* Scale the memory image v to exactly nw x nh (alpha premultiplied while
 * resampling, so transparent pixels do not bleed colour). */
static VipsImage *scale_to(VipsImage *v, int nw, int nh)
{
    VipsImage *a = NULL, *b = NULL, *c = NULL;
    int alpha = v->Bands == 4;
    if (alpha) { if (vips_premultiply(v, &a, NULL)) return NULL; }
    else { a = v; g_object_ref(a); }
    double hs = (double)nw / v->Xsize, vs = (double)nh / v->Ysize;
    int rc = vips_resize(a, &b, hs, "vscale", vs, NULL);
    g_object_unref(a);
    if (rc) return NULL;
    if (b->Xsize != nw || b->Ysize != nh) {   /* rounding inside libvips: fix the edge */
        rc = vips_embed(b, &c, 0, 0, nw, nh, "extend", VIPS_EXTEND_COPY, NULL);
        g_object_unref(b);
        if (rc) return NULL;
        b = c;
    }
    if (alpha) {
        rc = vips_unpremultiply(b, &c, NULL);
        g_object_unref(b);
        if (rc) return NULL;
        b = c;
    }
    return b;
}

static int do_resize(img **im, const img_transform *t, char *err, size_t errlen)
{
    VipsImage *v = (*im)->v;
    int64_t cw = v->Xsize, ch = v->Ysize, W = t->width, H = t->height;
    if (t->crop_to_fit && !t->allow_stretch) {
        /* Scale by the larger ratio and crop the overflow: done as a crop of
         * the source first (so the intermediate never grows), then a resize
         * to exactly W x H. */
        int64_t sw, sh;                     /* source region with W:H aspect */
        if (W * ch > H * cw) { sw = cw; sh = (H * cw + W / 2) / W; }   /* width ratio wins */
        else { sh = ch; sw = (W * ch + H / 2) / H; }
        if (sw < 1) sw = 1;
        if (sh < 1) sh = 1;
        if (sw > cw) sw = cw;
        if (sh > ch) sh = ch;
        int64_t x = (int64_t)((double)(cw - sw) * t->crop_offset_x);
        int64_t y = (int64_t)((double)(ch - sh) * t->crop_offset_y);
        VipsImage *r = NULL;
        if (vips_extract_area(v, &r, (int)x, (int)y, (int)sw, (int)sh, NULL))
            return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be cropped to fit.");
        VipsImage *m = materialize(r);
        if (!m) return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be cropped to fit.");
        VipsImage *s = scale_to(m, (int)W, (int)H);
        g_object_unref(m);
        return replace(im, s, err, errlen, "The image could not be resized.");
    }
    int64_t nw, nh;
    if (t->allow_stretch) { nw = W; nh = H; }
    else if (!W || (H && W * ch > H * cw)) { nh = H; nw = H * cw / ch; }   /* height limits */
    else { nw = W; nh = W * ch / cw; }
    if (nw < 1) nw = 1;
    if (nh < 1) nh = 1;
    if (nw > VIPS_MAX_COORD || nh > VIPS_MAX_COORD || nw * nh > IMG_MAX_PIXELS) {
        set_err(err, errlen, "Resizing would make the image %lldx%lld pixels, more than the %lld "
                "megapixels allowed.", (long long)nw, (long long)nh, IMG_MAX_PIXELS / 1000000);
        return IMG_E_IMAGE_TOO_LARGE;
    }
    if (nw == cw && nh == ch) return IMG_OK;
    return replace(im, scale_to(v, (int)nw, (int)nh), err, errlen, "The image could not be resized.");
}

static int do_rotate(img **im, int64_t degrees, char *err, size_t errlen)
{
    int d = (int)(((degrees % 360) + 360) % 360);
    if (!d) return IMG_OK;
    VipsImage *t = NULL;
    VipsAngle a = d == 90 ? VIPS_ANGLE_D90 : d == 180 ? VIPS_ANGLE_D180 : VIPS_ANGLE_D270;
    if (vips_rot((*im)->v, &t, a, NULL)) t = NULL;
    return replace(im, t, err, errlen, "The image could not be rotated.");
}

static int do_flip(img **im, VipsDirection dir, char *err, size_t errlen)
{
    VipsImage *t = NULL;
    if (vips_flip((*im)->v, &t, dir, NULL)) t = NULL;
    return replace(im, t, err, errlen, "The image could not be flipped.");
}

static int do_crop(img **im, const img_transform *t, char *err, size_t errlen)
{
    int w = (*im)->v->Xsize, h = (*im)->v->Ysize;
    int l = (int)lround(t->left * w), r = (int)lround(t->right * w);
    int tp = (int)lround(t->top * h), b = (int)lround(t->bottom * h);
    if (l > w - 1) l = w - 1;
    if (tp > h - 1) tp = h - 1;
    if (r <= l) r = l + 1;          /* at least one pixel survives */
    if (b <= tp) b = tp + 1;
    if (l == 0 && tp == 0 && r == w && b == h) return IMG_OK;
    VipsImage *o = NULL;
    if (vips_extract_area((*im)->v, &o, l, tp, r - l, b - tp, NULL)) o = NULL;
    return replace(im, o, err, errlen, "The image could not be cropped.");
}

/* "I'm feeling lucky": a per-channel levels stretch. For each of R, G and B
 * the darkest and brightest 0.5% of the pixels are clipped and the range in
 * between is stretched linearly to 0..255; alpha is untouched. A channel
 * with a single value is left as it is. */
static int do_lucky(img **im, char *err, size_t errlen)
{
    VipsImage *v = vips_image_copy_memory((*im)->v);   /* a ref when already in memory */
    if (!v) return fail(IMG_E_UNSPECIFIED, err, errlen, "The image levels could not be adjusted.");
    int bands = v->Bands, w = v->Xsize, h = v->Ysize;
    uint64_t hist[3][256];
    memset(hist, 0, sizeof hist);
    for (int y = 0; y < h; y++) {
        const uint8_t *p = VIPS_IMAGE_ADDR(v, 0, y);
        for (int x = 0; x < w; x++, p += bands)
            for (int c = 0; c < 3; c++) hist[c][p[c]]++;
    }
    uint64_t n = (uint64_t)w * h, clip = n / 200;
    uint8_t lut[256 * 4];
    for (int c = 0; c < 3; c++) {
        int lo = 0, hi = 255;
        uint64_t acc = 0;
        for (lo = 0; lo < 255; lo++) { acc += hist[c][lo]; if (acc > clip) break; }
        acc = 0;
        for (hi = 255; hi > 0; hi--) { acc += hist[c][hi]; if (acc > clip) break; }
        for (int i = 0; i < 256; i++) {
            int o = i;
            if (hi > lo) {
                int s = (i - lo) * 255;
                o = i <= lo ? 0 : i >= hi ? 255 : (s + (hi - lo) / 2) / (hi - lo);
            }
            lut[i * bands + c] = (uint8_t)o;
        }
    }
    if (bands == 4) for (int i = 0; i < 256; i++) lut[i * 4 + 3] = (uint8_t)i;
    VipsImage *l = vips_image_new_from_memory_copy(lut, 256 * (size_t)bands, 256, 1, bands,
                                                   VIPS_FORMAT_UCHAR);
    VipsImage *o = NULL;
    if (l && vips_maplut(v, &o, l, NULL)) o = NULL;
    if (l) g_object_unref(l);
    g_object_unref(v);
    return replace(im, o, err, errlen, "The image levels could not be adjusted.");
}

int img_apply(img **im, const img_transform *t, char *err, size_t errlen)
{
    int rc = img_check_transform(t, err, errlen);
    if (rc) return rc;
    switch (t->op) {
    case IMG_T_RESIZE: return do_resize(im, t, err, errlen);
    case IMG_T_ROTATE: return do_rotate(im, t->degrees, err, errlen);
    case IMG_T_HFLIP: return do_flip(im, VIPS_DIRECTION_HORIZONTAL, err, errlen);
    case IMG_T_VFLIP: return do_flip(im, VIPS_DIRECTION_VERTICAL, err, errlen);
    case IMG_T_CROP: return do_crop(im, t, err, errlen);
    case IMG_T_LUCKY: return do_lucky(im, err, errlen);
    }
    return IMG_E_BAD_TRANSFORM_DATA;
}

int img_correct_orientation(img **im, char *err, size_t errlen)
{
    int o = (*im)->orientation;
    (*im)->orientation = 1;
    if (o <= 1 || img_height(*im) > img_width(*im)) return IMG_OK;
    VipsImage *t = NULL;
    /* autorot reads the orientation field, which normalize() kept on v */
    if (vips_autorot((*im)->v, &t, NULL)) t = NULL;
    int rc = replace(im, t, err, errlen, "The image orientation could not be corrected.");
    if (!rc) (*im)->orientation = 1;
    return rc;
}

/* ---- encoding ---- */

int img_encode(const img *im, int out_type, int quality, int has_bg, uint32_t bg_rgb,
               buf *out, char *err, size_t errlen)
{
    if (quality < 0 || quality > 100) {
        set_err(err, errlen, "Output quality must be between 1 and 100, not %d.", quality);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    VipsImage *v = im->v;
    g_object_ref(v);
    if (v->BandFmt != VIPS_FORMAT_UCHAR && !(v = to_uchar(v)))
        return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be prepared for encoding.");
    if (out_type == IMG_OUT_JPEG && v->Bands == 4) {
        uint32_t c = has_bg ? bg_rgb : 0;
        VipsArrayDouble *bg = vips_array_double_newv(3, (double)((c >> 16) & 255),
                                                     (double)((c >> 8) & 255), (double)(c & 255));
        VipsImage *f = NULL;
        int rc = vips_flatten(v, &f, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        g_object_unref(v);
        if (rc || !(v = to_uchar(f)))
            return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be flattened for JPEG.");
    }
    void *data = NULL;
    size_t len = 0;
    int rc;
    switch (out_type) {
    case IMG_OUT_PNG:
        rc = vips_pngsave_buffer(v, &data, &len, "compression", 6, "strip", TRUE, NULL);
        break;
    case IMG_OUT_JPEG:
        rc = vips_jpegsave_buffer(v, &data, &len, "Q", quality ? quality : 85, "strip", TRUE, NULL);
        break;
    case IMG_OUT_WEBP:
        rc = vips_webpsave_buffer(v, &data, &len, "Q", quality ? quality : 75, "strip", TRUE, NULL);
        break;
    default:
        g_object_unref(v);
        set_err(err, errlen, "Unknown output encoding %d; use PNG (0), JPEG (1) or WEBP (2).",
                out_type);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    g_object_unref(v);
    if (rc || !data) {
        g_free(data);
        return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be encoded.");
    }
    buf_append(out, data, len);
    g_free(data);
    return IMG_OK;
}

/* ---- histogram ---- */

int img_histogram(const img *im, uint32_t hist[3][256], char *err, size_t errlen)
{
    VipsImage *v = vips_image_copy_memory(im->v);   /* a ref when already in memory */
    if (!v) return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be measured.");
    memset(hist, 0, 3 * 256 * sizeof hist[0][0]);
    int bands = v->Bands, w = v->Xsize, h = v->Ysize;
    for (int y = 0; y < h; y++) {
        const uint8_t *p = VIPS_IMAGE_ADDR(v, 0, y);
        for (int x = 0; x < w; x++, p += bands) {
            unsigned a = bands == 4 ? p[3] : 255;
            for (int c = 0; c < 3; c++) hist[c][p[c] * a / 255]++;
        }
    }
    g_object_unref(v);
    return IMG_OK;
}

/* ---- composite ---- */

int img_canvas(int width, int height, uint32_t argb, img **out, char *err, size_t errlen)
{
    *out = NULL;
    if (width < 1 || height < 1 || width > IMG_MAX_DIMENSION || height > IMG_MAX_DIMENSION) {
        set_err(err, errlen, "The canvas must be between 1 and %d pixels on each side, not %dx%d.",
                IMG_MAX_DIMENSION, width, height);
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    VipsImage *b = NULL, *c = NULL, *d = NULL;
    double mul[4] = { 0, 0, 0, 0 };
    double add[4] = { (argb >> 16) & 255, (argb >> 8) & 255, argb & 255, (argb >> 24) & 255 };
    if (vips_black(&b, width, height, "bands", 4, NULL))
        return fail(IMG_E_UNSPECIFIED, err, errlen, "The canvas could not be made.");
    int rc = vips_linear(b, &c, mul, add, 4, "uchar", TRUE, NULL);
    g_object_unref(b);
    if (rc) return fail(IMG_E_UNSPECIFIED, err, errlen, "The canvas could not be made.");
    rc = vips_copy(c, &d, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
    g_object_unref(c);
    if (rc) return fail(IMG_E_UNSPECIFIED, err, errlen, "The canvas could not be made.");
    *out = wrap(d, NULL);
    return IMG_OK;
}

int img_composite(img **canvas, const img *src, int64_t x, int64_t y, double opacity,
                  char *err, size_t errlen)
{
    if (!(opacity >= 0 && opacity <= 1)) {
        set_err(err, errlen, "Opacity must be between 0.0 and 1.0.");
        return IMG_E_BAD_TRANSFORM_DATA;
    }
    VipsImage *base = (*canvas)->v, *s = src->v;
    int64_t cw = base->Xsize, ch = base->Ysize, sw = s->Xsize, sh = s->Ysize;
    if (opacity == 0 || x >= cw || y >= ch || x + sw <= 0 || y + sh <= 0) return IMG_OK;
    /* Cut the source down to the part that lands on the canvas. */
    int64_t l = x < 0 ? -x : 0, t = y < 0 ? -y : 0;
    int64_t r = x + sw > cw ? cw - x : sw, b = y + sh > ch ? ch - y : sh;
    VipsImage *a = NULL, *o = NULL, *out = NULL;
    if (vips_extract_area(s, &a, (int)l, (int)t, (int)(r - l), (int)(b - t), NULL))
        return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be composited.");
    if (a->Bands == 3) {
        int rc = vips_bandjoin_const1(a, &o, 255, NULL);
        g_object_unref(a);
        if (rc) return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be composited.");
        a = o;
    }
    if (opacity < 1) {
        double mul[4] = { 1, 1, 1, opacity }, add[4] = { 0, 0, 0, 0 };
        int rc = vips_linear(a, &o, mul, add, 4, "uchar", TRUE, NULL);
        g_object_unref(a);
        if (rc) return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be composited.");
        a = o;
    }
    int rc = vips_composite2(base, a, &out, VIPS_BLEND_MODE_OVER,
                             "x", (int)(x + l), "y", (int)(y + t), NULL);
    g_object_unref(a);
    if (rc || !(out = to_uchar(out)))
        return fail(IMG_E_UNSPECIFIED, err, errlen, "The image could not be composited.");
    img *n = wrap(out, *canvas);
    img_free(*canvas);
    *canvas = n;
    return IMG_OK;
}

/* ---- metadata ---- */

int img_metadata_json(const img *im, int parse_exif, buf *out, char *err, size_t errlen)
{
    json_t *o = json_object();
    if (parse_exif && im->exif) exif_to_json(im->exif, im->exif_len, o);
    json_object_set_new(o, "ImageWidth", json_integer(img_width(im)));
    json_object_set_new(o, "ImageLength", json_integer(img_height(im)));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!s) {
        set_err(err, errlen, "The image metadata could not be encoded.");
        return IMG_E_UNSPECIFIED;
    }
    buf_puts(out, s);
    free(s);
    return IMG_OK;
}
