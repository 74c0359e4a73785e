/* test_images.c - unit tests for images/image.c (libvips work: sniffing,
 * parameter checks, exact output sizes, histograms, metadata), images/exif.c
 * (EXIF fields from a hand-made TIFF block) and images/serving.c (serving
 * paths, publishing, rendering and its cache over a real LMDB engine and a
 * real local blob store). */
#include "test.h"
#include "tmpdir.h"
#include "images/exif.h"
#include "images/image.h"
#include "images/serving.h"

#include <stdlib.h>
#include <string.h>

static char err[512];

/* A w x h PNG of one ARGB colour, made by the module itself. */
static void make_png(int w, int h, uint32_t argb, buf *out)
{
    img *c = NULL;
    buf_reset(out);
    if (img_canvas(w, h, argb, &c, err, sizeof err) != IMG_OK) { printf("canvas: %s\n", err); return; }
    if (img_encode(c, IMG_OUT_PNG, 0, 0, 0, out, err, sizeof err) != IMG_OK) printf("encode: %s\n", err);
    img_free(c);
}

static img *decode_buf(const buf *b)
{
    img *im = NULL;
    int rc = img_decode(buf_rp(b), buf_unread(b), 0, &im, err, sizeof err);
    if (rc) printf("decode: %d %s\n", rc, err);
    return im;
}

TEST(sniff)
{
    CHECK_INT(img_sniff("\xff\xd8\xff\xe0", 4), IMG_FMT_JPEG);
    CHECK_INT(img_sniff("\x89PNG\r\n\x1a\n", 8), IMG_FMT_PNG);
    CHECK_INT(img_sniff("\x89PNG\r\n\x1a", 7), IMG_FMT_UNKNOWN);
    CHECK_INT(img_sniff("GIF89a", 6), IMG_FMT_GIF);
    CHECK_INT(img_sniff("GIF90a", 6), IMG_FMT_UNKNOWN);
    CHECK_INT(img_sniff("RIFF\0\0\0\0WEBPVP8 ", 16), IMG_FMT_WEBP);
    CHECK_INT(img_sniff("RIFF\0\0\0\0WAVE", 12), IMG_FMT_UNKNOWN);
    CHECK_INT(img_sniff("II*\0", 4), IMG_FMT_TIFF);
    CHECK_INT(img_sniff("MM\0*", 4), IMG_FMT_TIFF);
    CHECK_INT(img_sniff("BM", 2), IMG_FMT_BMP);
    CHECK_INT(img_sniff("", 0), IMG_FMT_UNKNOWN);
}

TEST(decode_errors)
{
    img *im = NULL;
    CHECK_INT(img_decode("hello", 5, 0, &im, err, sizeof err), IMG_E_NOT_IMAGE);
    CHECK(im == NULL);
    CHECK_INT(img_decode("", 0, 0, &im, err, sizeof err), IMG_E_NOT_IMAGE);
    CHECK_INT(img_decode("BM\0\0\0\0", 6, 0, &im, err, sizeof err), IMG_E_NOT_IMAGE);
    CHECK(strstr(err, "BMP") != NULL);
    CHECK_INT(img_decode("\xff\xd8\xff\xe0\0\0", 6, 0, &im, err, sizeof err), IMG_E_BAD_IMAGE_DATA);
    buf png = BUF_INIT;
    make_png(50, 40, 0xff102030, &png);
    CHECK_INT(img_decode(buf_rp(&png), buf_unread(&png) - 20, 0, &im, err, sizeof err), IMG_E_BAD_IMAGE_DATA);
    CHECK_INT(img_decode(buf_rp(&png), buf_unread(&png), 1999, &im, err, sizeof err), IMG_E_IMAGE_TOO_LARGE);
    CHECK_INT(img_decode(buf_rp(&png), buf_unread(&png), 2000, &im, err, sizeof err), IMG_OK);
    CHECK_INT(img_width(im), 50);
    CHECK_INT(img_height(im), 40);
    CHECK_INT(img_source_format(im), IMG_FMT_PNG);
    img_free(im);
    buf_free(&png);
}

TEST(check_transform)
{
    img_transform t = { .op = IMG_T_RESIZE, .width = 10, .crop_offset_x = 0.5, .crop_offset_y = 0.5 };
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_OK);
    t.width = 4001;
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    t.width = 0;
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    t.width = 10; t.crop_to_fit = 1;
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    t.height = 10;
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_OK);
    t.crop_offset_x = 1.01;
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    t.crop_offset_x = 0.0 / 0.0;   /* NaN */
    CHECK_INT(img_check_transform(&t, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    img_transform r = { .op = IMG_T_ROTATE, .degrees = -270 };
    CHECK_INT(img_check_transform(&r, err, sizeof err), IMG_OK);
    r.degrees = 100;
    CHECK_INT(img_check_transform(&r, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    img_transform c = { .op = IMG_T_CROP, .left = 0.2, .top = 0, .right = 0.2, .bottom = 1 };
    CHECK_INT(img_check_transform(&c, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    c.right = 0.3;
    CHECK_INT(img_check_transform(&c, err, sizeof err), IMG_OK);
    c.bottom = 1.5;
    CHECK_INT(img_check_transform(&c, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
}

static void apply_size(img *src, img_transform t, int w, int h)
{
    img *im = NULL;
    buf png = BUF_INIT;
    img_encode(src, IMG_OUT_PNG, 0, 0, 0, &png, err, sizeof err);
    im = decode_buf(&png);
    int rc = img_apply(&im, &t, err, sizeof err);
    CHECK_INT(rc, IMG_OK);
    if (!rc) {
        CHECK_INT(img_width(im), w);
        CHECK_INT(img_height(im), h);
    }
    img_free(im);
    buf_free(&png);
}

TEST(exact_sizes)
{
    buf png = BUF_INIT;
    make_png(7, 3, 0xffff0000, &png);
    img *src = decode_buf(&png);
    if (!src) return;
    apply_size(src, (img_transform){ .op = IMG_T_RESIZE, .width = 2 }, 2, 1);        /* 0.86 -> 1 */
    apply_size(src, (img_transform){ .op = IMG_T_RESIZE, .height = 6 }, 14, 6);
    apply_size(src, (img_transform){ .op = IMG_T_RESIZE, .width = 100, .height = 6 }, 14, 6);
    apply_size(src, (img_transform){ .op = IMG_T_RESIZE, .width = 5, .height = 5, .crop_to_fit = 1,
                                     .crop_offset_x = 1, .crop_offset_y = 0 }, 5, 5);
    apply_size(src, (img_transform){ .op = IMG_T_RESIZE, .width = 3, .height = 9, .allow_stretch = 1,
                                     .crop_offset_x = 0.5, .crop_offset_y = 0.5 }, 3, 9);
    apply_size(src, (img_transform){ .op = IMG_T_ROTATE, .degrees = 450 }, 3, 7);
    apply_size(src, (img_transform){ .op = IMG_T_CROP, .left = 0.5, .top = 0.4, .right = 0.51, .bottom = 0.41 }, 1, 1);
    apply_size(src, (img_transform){ .op = IMG_T_CROP, .left = 0, .top = 0, .right = 1, .bottom = 1 }, 7, 3);
    /* a 1-pixel-high strip asked for 4000 high would be 16000000 x 4000 */
    buf tall = BUF_INIT;
    make_png(4000, 1, 0xff000000, &tall);
    img *strip = decode_buf(&tall);
    img_transform big = { .op = IMG_T_RESIZE, .height = 4000 };
    CHECK(strip != NULL);
    if (strip) CHECK_INT(img_apply(&strip, &big, err, sizeof err), IMG_E_IMAGE_TOO_LARGE);
    img_free(strip);
    buf_free(&tall);
    img_free(src);
    buf_free(&png);
}

TEST(histogram_and_lucky)
{
    buf png = BUF_INIT;
    make_png(3, 2, 0x80ff6400, &png);          /* half-transparent orange */
    img *im = decode_buf(&png);
    if (!im) return;
    uint32_t h[3][256];
    CHECK_INT(img_histogram(im, h, err, sizeof err), IMG_OK);
    CHECK_INT(h[0][255 * 128 / 255], 6);
    CHECK_INT(h[1][100 * 128 / 255], 6);
    CHECK_INT(h[2][0], 6);
    img_transform lucky = { .op = IMG_T_LUCKY };
    CHECK_INT(img_apply(&im, &lucky, err, sizeof err), IMG_OK);   /* flat: unchanged */
    CHECK_INT(img_histogram(im, h, err, sizeof err), IMG_OK);
    CHECK_INT(h[1][100 * 128 / 255], 6);
    img_free(im);
    buf_free(&png);
}

TEST(composite_and_metadata)
{
    img *canvas = NULL, *dot = NULL;
    buf png = BUF_INIT, out = BUF_INIT;
    make_png(2, 2, 0xff0000ff, &png);
    dot = decode_buf(&png);
    CHECK_INT(img_canvas(0, 5, 0, &canvas, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    CHECK_INT(img_canvas(6, 4, 0xff00ff00, &canvas, err, sizeof err), IMG_OK);
    CHECK_INT(img_composite(&canvas, dot, 5, 3, 1.0, err, sizeof err), IMG_OK);     /* clipped */
    CHECK_INT(img_composite(&canvas, dot, -100, 0, 1.0, err, sizeof err), IMG_OK);  /* outside */
    CHECK_INT(img_composite(&canvas, dot, 0, 0, 2.0, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    uint32_t h[3][256];
    CHECK_INT(img_histogram(canvas, h, err, sizeof err), IMG_OK);
    CHECK_INT(h[2][255], 1);
    CHECK_INT(h[1][255], 23);
    CHECK_INT(img_encode(canvas, 9, 0, 0, 0, &out, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);
    CHECK_INT(img_encode(canvas, 3, 0, 0, 0, &out, err, sizeof err), IMG_E_BAD_TRANSFORM_DATA);   /* no GIF output */
    CHECK_INT(img_encode(canvas, IMG_OUT_WEBP, 0, 0, 0, &out, err, sizeof err), IMG_OK);
    CHECK(buf_unread(&out) > 12 && !memcmp(buf_rp(&out) + 8, "WEBP", 4));
    buf_reset(&out);
    CHECK_INT(img_metadata_json(dot, 1, &out, err, sizeof err), IMG_OK);
    CHECK_STR(buf_cstr(&out), "{\"ImageLength\":2,\"ImageWidth\":2}");
    img_free(canvas);
    img_free(dot);
    buf_free(&png);
    buf_free(&out);
}

/* A little-endian TIFF block: IFD0 with Make "Cam" and Orientation 6. */
TEST(exif_fields)
{
    static const uint8_t tiff[] = {
        'I', 'I', 42, 0, 8, 0, 0, 0,                 /* header, IFD0 at 8 */
        2, 0,                                        /* two entries */
        0x0f, 0x01, 2, 0, 4, 0, 0, 0, 'C', 'a', 'm', 0,   /* Make, ASCII, 4 */
        0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0,         /* Orientation, SHORT, 6 */
        0, 0, 0, 0,                                  /* no next IFD */
    };
    json_t *o = json_object();
    exif_to_json(tiff, sizeof tiff, o);
    CHECK_STR(json_string_value(json_object_get(o, "Make")), "Cam");
    CHECK_INT(json_integer_value(json_object_get(o, "Orientation")), 6);
    json_decref(o);
    o = json_object();
    exif_to_json((const uint8_t *)"Exif\0\0garbage garbage", 21, o);
    exif_to_json(tiff, 9, o);                        /* truncated */
    CHECK_INT(json_object_size(o), 0);
    json_decref(o);
}

TEST(serve_parse)
{
    img_serve_req q;
#define P(s) img_serve_parse(s, strlen(s), &q)
    CHECK_INT(P("abc_D-9"), 0);
    CHECK_STR(q.key, "abc_D-9");
    CHECK_INT(q.size, -1);
    CHECK_INT(P("k=s32"), 0);
    CHECK_INT(q.size, 32);
    CHECK_INT(q.crop, 0);
    CHECK_INT(P("k=s32-c"), 0);
    CHECK_INT(q.crop, 1);
    CHECK_INT(P("k=s0"), 0);
    CHECK_INT(q.size, 0);
    CHECK_INT(P("k=s3200"), 0);
    CHECK_INT(P("k=s3201"), -1);
    CHECK_INT(P("k=c"), -1);
    CHECK_INT(P("k=s0-c"), -1);
    CHECK_INT(P("k="), -1);
    CHECK_INT(P("k=s32-"), -1);
    CHECK_INT(P("k=w32"), -1);
    CHECK_INT(P("k=s3x"), -1);
    CHECK_INT(P("a/b"), -1);
    CHECK_INT(P(""), -1);
#undef P
}

TEST(serving)
{
    char dir[256], sub[300];
    if (!test_mkdtemp(dir, sizeof dir)) { CHECK(0); return; }
    snprintf(sub, sizeof sub, "%s/kv", dir);
    kv_engine *kv = kv_open(sub, err, sizeof err);
    snprintf(sub, sizeof sub, "%s/blobs", dir);
    blob_store *bs = blob_store_local(sub, err, sizeof err);
    CHECK(kv && bs);
    if (!kv || !bs) return;
    buf png = BUF_INIT, out = BUF_INIT;
    make_png(600, 300, 0xffffffff, &png);
    blob_writer *w = NULL;
    CHECK_INT(blob_create(bs, "dev~a", "key1", &w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_write(w, buf_rp(&png), buf_unread(&png), err, sizeof err), BLOB_OK);
    CHECK_INT(blob_commit(w, err, sizeof err), BLOB_OK);

    img_server *s = img_server_new(kv, bs);
    img_serve_req q;
    img_serve_parse("key1", 4, &q);
    const char *mime = NULL;
    CHECK_INT(img_server_render(s, "dev~a", &q, &out, &mime, err, sizeof err), 404);   /* not published */
    CHECK_INT(img_server_publish(s, "dev~a", "key1", 4, 1, err, sizeof err), IMG_OK);
    CHECK_INT(img_server_publish(s, "dev~b", "key1", 4, 1, err, sizeof err), IMG_E_OBJECT_NOT_FOUND);
    CHECK_INT(img_server_publish(s, "dev~a", "no such", 7, 1, err, sizeof err), IMG_E_INVALID_BLOB_KEY);
    CHECK_INT(img_server_render(s, "dev~a", &q, &out, &mime, err, sizeof err), 200);
    CHECK_STR(mime, "image/png");
    img *im = decode_buf(&out);
    if (im) { CHECK_INT(img_width(im), 512); CHECK_INT(img_height(im), 256); }
    img_free(im);
    CHECK_INT(img_server_render(s, "dev~b", &q, &out, &mime, err, sizeof err), 404);   /* other app */
    buf_reset(&out);
    CHECK_INT(img_server_render(s, "dev~a", &q, &out, &mime, err, sizeof err), 200);
    size_t entries, bytes;
    unsigned long hits;
    img_server_cache_stats(s, &entries, &bytes, &hits);
    CHECK_INT(entries, 1);
    CHECK_INT(hits, 1);
    CHECK_INT(bytes, buf_unread(&out));
    img_serve_parse("key1=s20-c", 10, &q);
    buf_reset(&out);
    CHECK_INT(img_server_render(s, "dev~a", &q, &out, &mime, err, sizeof err), 200);
    im = decode_buf(&out);
    if (im) { CHECK_INT(img_width(im), 20); CHECK_INT(img_height(im), 20); }
    img_free(im);
    CHECK_INT(img_server_publish(s, "dev~a", "key1", 4, 0, err, sizeof err), IMG_OK);
    CHECK_INT(img_server_render(s, "dev~a", &q, &out, &mime, err, sizeof err), 404);
    buf got = BUF_INIT;
    CHECK_INT(img_server_read_blob(s, "dev~a", "key1", 4, &got, err, sizeof err), IMG_OK);
    CHECK_INT(buf_unread(&got), buf_unread(&png));
    CHECK_INT(img_server_read_blob(s, "dev~a", "key2", 4, &got, err, sizeof err), IMG_E_OBJECT_NOT_FOUND);
    buf_free(&got);
    img_server_free(s);
    buf_free(&png);
    buf_free(&out);
    blob_store_free(bs);
    kv_close(kv);
    test_rmtree(dir);
}

int main(void)
{
    if (img_init(err, sizeof err) < 0) { printf("%s\n", err); return 1; }
    RUN(sniff);
    RUN(decode_errors);
    RUN(check_transform);
    RUN(exact_sizes);
    RUN(histogram_and_lucky);
    RUN(composite_and_metadata);
    RUN(exif_fields);
    RUN(serve_parse);
    RUN(serving);
    return test_report();
}
