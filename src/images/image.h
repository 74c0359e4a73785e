/* image.h - decoded images and the operations of App Engine's images
 * service, on libvips.
 *
 * An img is a fully decoded image held in memory: 8-bit sRGB, 3 bands, or 4
 * with alpha. img_decode() sniffs the format from the leading bytes (JPEG,
 * PNG, GIF, WebP, TIFF; first frame of an animation), refuses more than
 * IMG_MAX_PIXELS before any pixel is decoded, and decodes strictly (a
 * truncated file is an error, not a grey-padded picture). Every operation
 * returns a new img or fills a caller's buffer; the inputs are untouched.
 *
 * Failures return one of the IMG_E_* codes, which equal App Engine's
 * ImagesServiceError codes, with one sentence in err. The service code
 * (api/images.c) hands them to the SDK unchanged.
 *
 * libvips is set up once per process by img_init() (idempotent, thread-
 * safe): operation cache off, one worker thread per pipeline, untrusted
 * loaders blocked, libvips warnings sent to the debug log. img_acquire()
 * and img_release() bound how many decoded images are worked on at once
 * (IMG_MAX_ACTIVE), which bounds memory. See docs/images.md. */
#ifndef CZ_IMAGE_H
#define CZ_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

/* ImagesServiceError.ErrorCode (images_service.proto). */
enum {
    IMG_OK = 0,
    IMG_E_UNSPECIFIED = 1,
    IMG_E_BAD_TRANSFORM_DATA = 2,
    IMG_E_NOT_IMAGE = 3,
    IMG_E_BAD_IMAGE_DATA = 4,
    IMG_E_IMAGE_TOO_LARGE = 5,
    IMG_E_INVALID_BLOB_KEY = 6,
    IMG_E_ACCESS_DENIED = 7,
    IMG_E_OBJECT_NOT_FOUND = 8,
};

#define IMG_MAX_PIXELS      50000000LL   /* decoded width*height of one input */
#define IMG_MAX_TOTAL_PIXELS 50000000LL  /* sum over the inputs of one Composite */
#define IMG_MAX_DIMENSION   4000         /* resize target and canvas side */
#define IMG_MAX_TRANSFORMS  10           /* per Transform request */
#define IMG_MAX_COMPOSITES  16           /* images and options per Composite */
#define IMG_MAX_ACTIVE      2            /* requests decoding/working at once */

/* Source formats, as sniffed. */
typedef enum { IMG_FMT_UNKNOWN = 0, IMG_FMT_JPEG, IMG_FMT_PNG, IMG_FMT_GIF, IMG_FMT_WEBP,
               IMG_FMT_TIFF, IMG_FMT_BMP, IMG_FMT_ICO } img_format;

/* Output encodings: OutputSettings.MIME_TYPE values, plus GIF, which the
 * protocol has no value for (Cyclozzo accepts 3 for it). */
/* No GIF output: libvips' GIF writer (libimagequant) leaks on some inputs,
 * and no App Engine SDK can ask for GIF. */
enum { IMG_OUT_PNG = 0, IMG_OUT_JPEG = 1, IMG_OUT_WEBP = 2 };

typedef struct img img;

/* Set up libvips for this process; 0, or -1 with err. */
int img_init(char *err, size_t errlen);

/* Bound concurrent image work: acquire before decoding, release after the
 * last img of the request is freed. */
void img_acquire(void);
void img_release(void);

img_format img_sniff(const void *data, size_t n);
const char *img_format_name(img_format f);

/* Decode data. max_pixels caps width*height (0 = IMG_MAX_PIXELS). */
int img_decode(const void *data, size_t n, long long max_pixels, img **out,
               char *err, size_t errlen);
void img_free(img *im);
int  img_width(const img *im);
int  img_height(const img *im);
int  img_has_alpha(const img *im);
img_format img_source_format(const img *im);
/* EXIF orientation of the source, 1..8 (1 when none). */
int  img_orientation(const img *im);

/* One step of a Transform request. Exactly one kind per step. */
typedef enum { IMG_T_RESIZE = 1, IMG_T_ROTATE, IMG_T_HFLIP, IMG_T_VFLIP, IMG_T_CROP,
               IMG_T_LUCKY } img_op;

typedef struct {
    img_op op;
    /* resize */
    int width, height;               /* 0 = unset; at most IMG_MAX_DIMENSION */
    int crop_to_fit, allow_stretch;
    double crop_offset_x, crop_offset_y;   /* 0..1, default 0.5 */
    /* rotate: degrees clockwise, a multiple of 90 (negative = anticlockwise) */
    int64_t degrees;
    /* crop: fractions 0..1, left < right, top < bottom */
    double left, top, right, bottom;
} img_transform;

/* Check a transform's parameters without an image: IMG_OK or
 * IMG_E_BAD_TRANSFORM_DATA with err. */
int img_check_transform(const img_transform *t, char *err, size_t errlen);

/* Apply t to *im, replacing *im with the result (the old one is freed). */
int img_apply(img **im, const img_transform *t, char *err, size_t errlen);

/* Undo the EXIF orientation (1..8) of the source, as App Engine's
 * CORRECT_ORIENTATION does: skipped when the stored image is taller than
 * wide. Replaces *im. */
int img_correct_orientation(img **im, char *err, size_t errlen);

/* Encode: out_type is IMG_OUT_*; quality 1..100 for JPEG and WebP (0 =
 * default: 85 JPEG, 75 WebP). Formats without alpha (JPEG, and GIF's
 * partial alpha) are flattened onto bg_rgb (0xRRGGBB) when has_bg, else
 * black. Metadata is not carried over. Appends to out. */
int img_encode(const img *im, int out_type, int quality, int has_bg, uint32_t bg_rgb,
               buf *out, char *err, size_t errlen);

/* Per-channel histograms of the pixels, each channel premultiplied by alpha
 * (a transparent pixel counts as black), as App Engine reports them. */
int img_histogram(const img *im, uint32_t hist[3][256], char *err, size_t errlen);

/* A width x height canvas of one ARGB colour (0xAARRGGBB). */
int img_canvas(int width, int height, uint32_t argb, img **out, char *err, size_t errlen);

/* Draw src over *canvas with its top-left corner at (x, y), the source's
 * alpha scaled by opacity (0..1). Parts outside the canvas are clipped.
 * Replaces *canvas. */
int img_composite(img **canvas, const img *src, int64_t x, int64_t y, double opacity,
                  char *err, size_t errlen);

/* The source's metadata as a JSON object (appended to out): always
 * ImageWidth and ImageLength of the stored image; with parse_exif, the EXIF
 * fields too (see docs/images.md). */
int img_metadata_json(const img *im, int parse_exif, buf *out, char *err, size_t errlen);

#endif
