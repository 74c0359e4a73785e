/* test_multipart.c - the streaming multipart/form-data parser: parts,
 * names, filenames and content types; the same events whatever the input
 * split (byte by byte included); content never held back beyond a
 * delimiter's length; every malformed shape refused with a sentence. */
#include "test.h"

#include <stdlib.h>

#include "core/buf.h"
#include "core/util.h"
#include "http/multipart.h"

typedef struct {
    buf log;            /* "B name|filename|ctype\n" "D <bytes>" "E\n" */
    size_t max_span;
} rec;

static int on_begin(void *arg, const mp_part *p)
{
    rec *r = arg;
    buf_printf(&r->log, "B %s|%s|%s|%zu\n", p->name, p->filename ? p->filename : "-",
               p->content_type ? p->content_type : "-", p->head_len);
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    rec *r = arg;
    buf_append(&r->log, d, n);
    if (n > r->max_span) r->max_span = n;
    return 0;
}

static int on_end(void *arg)
{
    rec *r = arg;
    buf_puts(&r->log, "|E\n");
    return 0;
}

static const mp_callbacks cbs = {on_begin, on_data, on_end};

/* Parse body with the given piece size (0 = all at once); returns the result and fills log. */
static int parse(const char *boundary, const char *body, size_t len, size_t piece, rec *r, char *err, size_t errlen)
{
    buf_reset(&r->log);
    r->max_span = 0;
    mp_parser *p = mp_new(boundary, strlen(boundary), &cbs, r);
    if (!p) return -99;
    int k = MP_OK;
    size_t off = 0;
    if (!piece) piece = len ? len : 1;
    while (off < len && k == MP_OK) {
        size_t n = len - off < piece ? len - off : piece;
        k = mp_feed(p, body + off, n);
        off += n;
    }
    if (k == MP_OK) k = mp_finish(p);
    snprintf(err, errlen, "%s", k == MP_ERR ? mp_error(p) : "");
    mp_free(p);
    return k;
}

static const char form[] =
    "preamble to ignore\r\n"
    "--AaB03x\r\n"
    "Content-Disposition: form-data; name=\"field1\"\r\n"
    "\r\n"
    "Joe Blow\r\nalmost tricked you!\r\n"
    "--AaB03x  \r\n"
    "Content-Disposition: form-data; name=\"pics\"; filename=\"file1.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "... contents of file1.txt ...\r\r\n--AaB03\r\n"
    "--AaB03x\r\n"
    "content-disposition: form-data; name=\"q\\\"uote\"; filename=\"\"\r\n"
    "\r\n"
    "\r\n"
    "--AaB03x--\r\n"
    "epilogue";

TEST(parts_and_splits)
{
    rec r = {BUF_INIT, 0};
    char err[256];
    CHECK_INT(parse("AaB03x", form, sizeof form - 1, 0, &r, err, sizeof err), MP_DONE);
    char *whole = xstrdup(buf_cstr(&r.log));
    CHECK_STR(whole,
              "B field1|-|-|47\nJoe Blow\r\nalmost tricked you!|E\n"
              "B pics|file1.txt|text/plain|93\n... contents of file1.txt ...\r\r\n--AaB03|E\n"
              "B q\"uote||-|61\n|E\n");
    for (size_t piece = 1; piece < 40; piece++) {
        CHECK_INT(parse("AaB03x", form, sizeof form - 1, piece, &r, err, sizeof err), MP_DONE);
        CHECK_STR(buf_cstr(&r.log), whole);
    }
    free(whole);
    buf_free(&r.log);
}

TEST(large_part_streams)
{
    /* 1 MiB of content fed in 16 KiB pieces comes out in spans no larger
     * than a piece plus a delimiter: nothing accumulates. */
    buf b = BUF_INIT;
    buf_puts(&b, "--zz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"big.bin\"\r\n\r\n");
    for (int i = 0; i < (1 << 20); i++) buf_putc(&b, (char)("\r\n-z"[i % 4]));
    buf_puts(&b, "\r\n--zz--\r\n");
    rec r = {BUF_INIT, 0};
    char err[256];
    CHECK_INT(parse("zz", buf_rp(&b), buf_unread(&b), 16384, &r, err, sizeof err), MP_DONE);
    CHECK(r.max_span <= 16384 + 8);
    CHECK_INT(buf_unread(&r.log), strlen("B f|big.bin|-|63\n") + (1 << 20) + 3);
    buf_free(&b);
    buf_free(&r.log);
}

TEST(malformed)
{
    static const struct { const char *body, *why; } bad[] = {
        {"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxyz", "before its closing delimiter"},
        {"no delimiter at all", "no multipart delimiter"},
        {"", "no multipart delimiter"},
        {"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "no Content-Disposition"},
        {"--b\r\n\r\nx\r\n--b--", "no Content-Disposition"},
        {"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--", "not form-data"},
        {"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "not form-data"},
        {"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--", "not form-data"},
        {"--b\r\nContent-Disposition form-data; name=a\r\n\r\nx\r\n--b--", "colon"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n folded\r\n\r\nx\r\n--b--", "folded"},
        {"--b\r\nContent-Disposition: form-data; name=a\n\r\n\r\nx\r\n--b--", "CRLF"},
        {"--bX\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--", "not followed by CRLF"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\n\r\n--b--", "two"},
    };
    rec r = {BUF_INIT, 0};
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t piece = 0; piece < 4; piece++) {
            int k = parse("b", bad[i].body, strlen(bad[i].body), piece, &r, err, sizeof err);
            if (k != MP_ERR || !strstr(err, bad[i].why)) {
                printf("  case %zu piece %zu: k=%d err=%s\n", i, piece, k, err);
                CHECK(0);
            }
        }
    }
    /* Headers too long. */
    buf b = BUF_INIT;
    buf_puts(&b, "--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    for (int i = 0; i < 20000; i++) buf_putc(&b, 'p');
    buf_puts(&b, "\r\n\r\nx\r\n--b--");
    CHECK_INT(parse("b", buf_rp(&b), buf_unread(&b), 1000, &r, err, sizeof err), MP_ERR);
    CHECK(strstr(err, "16 KiB") != NULL);
    buf_free(&b);
    buf_free(&r.log);
    CHECK(mp_new("", 0, &cbs, NULL) == NULL);
    char longb[80];
    memset(longb, 'x', sizeof longb);
    CHECK(mp_new(longb, 71, &cbs, NULL) == NULL);
}

TEST(content_type)
{
    const char *b;
    size_t bl;
    const char *ct = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), 0);
    CHECK_INT(bl, 37);
    CHECK(!memcmp(b, "----WebKitFormBoundary7MA4YWxkTrZu0gW", 37));
    ct = "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), 0);
    CHECK_INT(bl, 5);
    ct = "multipart/mixed; boundary=x";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), -1);
    ct = "multipart/form-data";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), -1);
    ct = "multipart/form-data; boundary=";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), -1);
    ct = "application/x-www-form-urlencoded";
    CHECK_INT(mp_content_type_boundary(ct, strlen(ct), &b, &bl), -1);
}

int main(void)
{
    RUN(parts_and_splits);
    RUN(large_part_streams);
    RUN(malformed);
    RUN(content_type);
    return test_report();
}
