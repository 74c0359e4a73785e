/* Unit tests for byte ranges, entity-tags and conditional requests
 * (src/http/range.c). */
#include "http/range.h"
#include "test.h"

static uint64_t f, l;

static int rng(const char *v, uint64_t size)
{
    f = l = 12345678;
    return http_range_parse(v, strlen(v), size, &f, &l);
}

TEST(range_single)
{
    CHECK_INT(rng("bytes=0-499", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 0); CHECK_INT(l, 499);
    CHECK_INT(rng("bytes=500-999", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 500); CHECK_INT(l, 999);
    CHECK_INT(rng("bytes=500-5000", 1000), HTTP_RANGE_PARTIAL);     /* clamped */
    CHECK_INT(f, 500); CHECK_INT(l, 999);
    CHECK_INT(rng("bytes=900-", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 900); CHECK_INT(l, 999);
    CHECK_INT(rng("bytes=-100", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 900); CHECK_INT(l, 999);
    CHECK_INT(rng("bytes=-5000", 1000), HTTP_RANGE_PARTIAL);        /* whole file */
    CHECK_INT(f, 0); CHECK_INT(l, 999);
    CHECK_INT(rng("bytes=999-999", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 999); CHECK_INT(l, 999);
    CHECK_INT(rng("Bytes=0-0", 1), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 0); CHECK_INT(l, 0);
    CHECK_INT(rng("bytes=0-99999999999999999999999", 10), HTTP_RANGE_PARTIAL);
    CHECK_INT(l, 9);
    CHECK_INT(rng("bytes= 1-2 ,", 10), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 1); CHECK_INT(l, 2);
}

TEST(range_unsatisfiable)
{
    CHECK_INT(rng("bytes=1000-", 1000), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=1000-2000", 1000), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=-0", 1000), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=0-", 0), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=-10", 0), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=99999999999999999999999-", 10), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(rng("bytes=2000-3000, 5000-", 1000), HTTP_RANGE_UNSATISFIABLE);
    CHECK_INT(f, 12345678);                                          /* untouched */
}

TEST(range_ignored)
{
    const char *full[] = {
        "", "bytes", "bytes=", "bytes=,", "items=0-1", "bytes 0-1", "bytes=abc", "bytes=1",
        "bytes=5-1", "bytes=--1", "bytes=1-2-3", "bytes=1-2;x", "bytes=0x10-", "bytes=+1-2",
        "bytes=0-1,2-3", "bytes=0-1, -1", "bytes=1 -2", "bytesx=0-1",
    };
    for (size_t i = 0; i < sizeof full / sizeof *full; i++) {
        int r = rng(full[i], 1000);
        if (r != HTTP_RANGE_FULL) { printf("  \"%s\" gave %d\n", full[i], r); test_failed_now = 1; }
    }
    CHECK_INT(http_range_parse(NULL, 0, 10, &f, &l), HTTP_RANGE_FULL);
    /* several ranges of which one is satisfiable: that one */
    CHECK_INT(rng("bytes=0-9, 5000-6000", 1000), HTTP_RANGE_PARTIAL);
    CHECK_INT(f, 0); CHECK_INT(l, 9);
}

TEST(content_range)
{
    char out[HTTP_CONTENT_RANGE_MAX];
    CHECK_INT(http_content_range(out, HTTP_RANGE_PARTIAL, 0, 499, 1234), 16);
    CHECK_STR(out, "bytes 0-499/1234");
    http_content_range(out, HTTP_RANGE_UNSATISFIABLE, 0, 0, 1234);
    CHECK_STR(out, "bytes */1234");
    http_content_range(out, HTTP_RANGE_PARTIAL, UINT64_MAX - 1, UINT64_MAX - 1, UINT64_MAX);
    CHECK_STR(out, "bytes 18446744073709551614-18446744073709551614/18446744073709551615");
}

TEST(etags)
{
    char e[HTTP_ETAG_MAX];
    CHECK_INT(http_etag(e, 0x1234, 1000, 1700000000123456789LL), 27);
    CHECK_STR(e, "\"1234-3e8-17979cfe3d85cd15\"");
    char e2[HTTP_ETAG_MAX];
    http_etag(e2, 0x1234, 1000, 1700000000123456790LL);
    CHECK(strcmp(e, e2) != 0);
    http_etag(e2, UINT64_MAX, UINT64_MAX, INT64_MAX);
    CHECK_INT(strlen(e2), 2 + 16 + 1 + 16 + 1 + 16);

    const char *tag = "\"abc\"";
#define M(v, weak) http_etag_match(v, strlen(v), tag, weak)
    CHECK(M("\"abc\"", 0));
    CHECK(M("\"abc\"", 1));
    CHECK(M("*", 0));
    CHECK(M(" * ", 1));
    CHECK(M("\"x\", \"abc\"", 0));
    CHECK(M("\"x,y\" ,\"abc\"", 0));         /* comma inside a tag */
    CHECK(M("W/\"abc\"", 1));
    CHECK(!M("W/\"abc\"", 0));
    CHECK(!M("\"abcd\"", 1));
    CHECK(!M("\"ab\"", 1));
    CHECK(!M("abc", 1));
    CHECK(!M("\"abc", 1));
    CHECK(!M("\"abc\" junk", 1));
    CHECK(!M("\"abc\" \"x\"", 1));
    CHECK(!M("", 1));
    CHECK(M(", ,\"abc\",", 1));
    CHECK(!M("\"a bc\"", 1));
    CHECK(!M("*, \"x\"", 1));
    CHECK(http_etag_match("W/\"abc\"", 7, "W/\"abc\"", 1));
    CHECK(!http_etag_match("W/\"abc\"", 7, "W/\"abc\"", 0));
#undef M
}

TEST(if_range)
{
    const char *tag = "\"t1\"";
    int64_t mt = 784111777;
    CHECK(http_if_range(NULL, 0, tag, mt));
    CHECK(http_if_range("\"t1\"", 4, tag, mt));
    CHECK(!http_if_range("\"t2\"", 4, tag, mt));
    CHECK(!http_if_range("W/\"t1\"", 6, tag, mt));
    CHECK(!http_if_range("\"t1\", \"t2\"", 10, tag, mt));
    const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";
    CHECK(http_if_range(d, strlen(d), tag, mt));
    CHECK(!http_if_range(d, strlen(d), tag, mt + 1));
    CHECK(!http_if_range(d, strlen(d), tag, mt - 1));
    CHECK(!http_if_range("garbage", 7, tag, mt));
}

/* Parse a request head and run http_static_status on it. */
static int status_for(const char *extra_headers, const char *method, uint64_t size)
{
    static char buf[2048];
    static http_request req;
    snprintf(buf, sizeof buf, "%s /f HTTP/1.1\r\nHost: h\r\n%s\r\n", method, extra_headers);
    if (http_parse_request(buf, strlen(buf), &req, NULL) != HTTP_OK) return -1;
    f = l = 12345678;
    return http_static_status(req.method, req.method_len, req.headers, req.nheaders,
                              "\"e1\"", 784111777, size, &f, &l);
}

TEST(static_status)
{
    CHECK_INT(status_for("", "GET", 100), 200);
    CHECK_INT(status_for("If-None-Match: \"e1\"\r\n", "GET", 100), 304);
    CHECK_INT(status_for("If-None-Match: W/\"e1\"\r\n", "HEAD", 100), 304);
    CHECK_INT(status_for("If-None-Match: \"e0\", \"e1\"\r\n", "GET", 100), 304);
    CHECK_INT(status_for("If-None-Match: *\r\n", "GET", 100), 304);
    CHECK_INT(status_for("If-None-Match: \"e2\"\r\n", "GET", 100), 200);
    CHECK_INT(status_for("If-None-Match: \"e1\"\r\n", "DELETE", 100), 412);
    /* If-Modified-Since */
    CHECK_INT(status_for("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", "GET", 100), 304);
    CHECK_INT(status_for("If-Modified-Since: Sun, 06 Nov 1994 08:49:38 GMT\r\n", "GET", 100), 304);
    CHECK_INT(status_for("If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n", "GET", 100), 200);
    CHECK_INT(status_for("If-Modified-Since: yesterday\r\n", "GET", 100), 200);
    /* If-None-Match takes precedence over If-Modified-Since */
    CHECK_INT(status_for("If-None-Match: \"e2\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
                         "GET", 100), 200);
    /* If-Match and If-Unmodified-Since */
    CHECK_INT(status_for("If-Match: \"e1\"\r\n", "GET", 100), 200);
    CHECK_INT(status_for("If-Match: \"e2\"\r\n", "GET", 100), 412);
    CHECK_INT(status_for("If-Match: W/\"e1\"\r\n", "GET", 100), 412);
    CHECK_INT(status_for("If-Match: *\r\n", "GET", 100), 200);
    CHECK_INT(status_for("If-Unmodified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n", "GET", 100), 412);
    CHECK_INT(status_for("If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", "GET", 100), 200);
    CHECK_INT(status_for("If-Match: \"e1\"\r\nIf-Unmodified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n",
                         "GET", 100), 200);
    /* Range */
    CHECK_INT(status_for("Range: bytes=10-19\r\n", "GET", 100), 206);
    CHECK_INT(f, 10); CHECK_INT(l, 19);
    CHECK_INT(status_for("Range: bytes=-10\r\n", "GET", 100), 206);
    CHECK_INT(f, 90); CHECK_INT(l, 99);
    CHECK_INT(status_for("Range: bytes=100-\r\n", "GET", 100), 416);
    CHECK_INT(status_for("Range: bytes=0-1,5-6\r\n", "GET", 100), 200);
    CHECK_INT(status_for("Range: lines=1-2\r\n", "GET", 100), 200);
    CHECK_INT(status_for("Range: bytes=10-19\r\n", "HEAD", 100), 200);
    CHECK_INT(status_for("Range: bytes=10-19\r\nIf-Range: \"e1\"\r\n", "GET", 100), 206);
    CHECK_INT(status_for("Range: bytes=10-19\r\nIf-Range: \"e2\"\r\n", "GET", 100), 200);
    CHECK_INT(status_for("Range: bytes=10-19\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n", "GET", 100), 206);
    CHECK_INT(status_for("Range: bytes=10-19\r\nIf-Range: Sun, 06 Nov 1994 08:49:38 GMT\r\n", "GET", 100), 200);
    CHECK_INT(status_for("Range: bytes=100-\r\nIf-Range: \"e2\"\r\n", "GET", 100), 200);
    /* 304 wins over Range */
    CHECK_INT(status_for("Range: bytes=10-19\r\nIf-None-Match: \"e1\"\r\n", "GET", 100), 304);
}

int main(void)
{
    RUN(range_single);
    RUN(range_unsatisfiable);
    RUN(range_ignored);
    RUN(content_range);
    RUN(etags);
    RUN(if_range);
    RUN(static_status);
    return test_report();
}
