/* fuzz_http.c - libFuzzer target for src/http: runs the request and response
 * head parsers (default and tiny limits), the chunked decoder (whole input
 * and split at several points, which must agree), the Range / entity-tag /
 * date / percent-decoding helpers and the MIME lookup over the input, and
 * aborts when an invariant breaks: a head longer than the input or the
 * limit, a span outside the buffer, a proper prefix of a complete head not
 * reported incomplete, framing fields that contradict each other, a range
 * outside the file, a date that does not round-trip. */
#include "http/http.h"
#include "http/mime.h"
#include "http/range.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

static const char *g_lo, *g_hi;

static void in_buf(const char *p, size_t n)
{
    ASSERT(p != NULL);
    ASSERT(p >= g_lo && p + n <= g_hi);
}

static void check_headers(const http_header *h, size_t n)
{
    ASSERT(n <= HTTP_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        in_buf(h[i].name, h[i].name_len);
        in_buf(h[i].value, h[i].value_len);
        ASSERT(h[i].name_len > 0);
        if (h[i].value_len) {
            ASSERT(h[i].value[0] != ' ' && h[i].value[0] != '\t');
            ASSERT(h[i].value[h[i].value_len - 1] != ' ' && h[i].value[h[i].value_len - 1] != '\t');
        }
        for (size_t j = 0; j < h[i].value_len; j++) {
            unsigned char c = (unsigned char)h[i].value[j];
            ASSERT(c >= 0x20 || c == '\t');
            ASSERT(c != 0x7f);
        }
    }
}

static http_request req, req2;
static http_response resp, resp2;

static void run_request(const char *d, size_t n, const http_limits *lim)
{
    int rc = http_parse_request(d, n, &req, lim);
    ASSERT(rc == HTTP_OK || rc == HTTP_INCOMPLETE || rc == HTTP_ERR_BAD_REQUEST ||
           rc == HTTP_ERR_URI_TOO_LONG || rc == HTTP_ERR_HEADERS_TOO_LARGE ||
           rc == HTTP_ERR_NOT_IMPLEMENTED || rc == HTTP_ERR_VERSION);
    if (rc != HTTP_OK) return;
    size_t h = req.head_len;
    ASSERT(h > 0 && h <= n);
    if (lim) ASSERT(h <= lim->max_head);
    g_lo = d; g_hi = d + h;
    in_buf(req.method, req.method_len);
    in_buf(req.target, req.target_len);
    ASSERT(req.method_len > 0 && req.target_len > 0);
    if (!(req.path_len == 1 && req.path[0] == '/' && (req.path < d || req.path >= d + h)))
        in_buf(req.path, req.path_len);
    if (req.query) in_buf(req.query, req.query_len);
    if (req.host) in_buf(req.host, req.host_len);
    if (lim) ASSERT(req.method_len + req.target_len + 10 <= lim->max_request_line);
    check_headers(req.headers, req.nheaders);
    ASSERT(req.version_minor == 0 || req.version_minor == 1);
    ASSERT(req.content_length >= -1);
    ASSERT(!(req.chunked && req.content_length != -1));
    ASSERT(!(req.chunked && req.version_minor == 0));
    ASSERT(req.version_minor == 0 || req.host != NULL);
    ASSERT(req.keep_alive == 0 || req.keep_alive == 1);

    /* The head alone parses the same; any proper prefix is incomplete. */
    ASSERT(http_parse_request(d, h, &req2, lim) == HTTP_OK);
    ASSERT(req2.head_len == h && req2.nheaders == req.nheaders);
    ASSERT(req2.content_length == req.content_length && req2.chunked == req.chunked);
    ASSERT(http_parse_request(d, h - 1, &req2, lim) == HTTP_INCOMPLETE);
    ASSERT(http_parse_request(d, h / 2, &req2, lim) == HTTP_INCOMPLETE);
}

static void run_response(const char *d, size_t n, const http_limits *lim)
{
    int rc = http_parse_response(d, n, &resp, lim);
    ASSERT(rc == HTTP_OK || rc == HTTP_INCOMPLETE || rc == HTTP_ERR_BAD_REQUEST ||
           rc == HTTP_ERR_URI_TOO_LONG || rc == HTTP_ERR_HEADERS_TOO_LARGE || rc == HTTP_ERR_VERSION);
    if (rc != HTTP_OK) return;
    size_t h = resp.head_len;
    ASSERT(h > 0 && h <= n);
    if (lim) ASSERT(h <= lim->max_head);
    g_lo = d; g_hi = d + h;
    in_buf(resp.reason, resp.reason_len);
    check_headers(resp.headers, resp.nheaders);
    ASSERT(resp.status >= 100 && resp.status <= 599);
    ASSERT(resp.content_length >= -1);
    ASSERT(!(resp.chunked && resp.content_length != -1));
    if (resp.status < 200 || resp.status == 204 || resp.status == 304)
        ASSERT(resp.content_length == 0 && !resp.chunked);
    if (resp.content_length == -1 && !resp.chunked) ASSERT(!resp.keep_alive);
    ASSERT(http_parse_response(d, h, &resp2, lim) == HTTP_OK);
    ASSERT(resp2.head_len == h && resp2.status == resp.status);
    ASSERT(http_parse_response(d, h - 1, &resp2, lim) == HTTP_INCOMPLETE);
}

/* Decode d[0, n) feeding pieces that end at `split` and then at most
 * `step` bytes (0 = no limit). Decoded bytes go to out. */
static int dechunk(const char *d, size_t n, size_t split, size_t step, char *out, size_t *olen,
                   size_t *used)
{
    http_chunked c;
    memset(&c, 0, sizeof c);
    size_t off = 0, o = 0;
    int rc = HTTP_INCOMPLETE;
    while (off < n) {
        size_t avail = n - off;
        if (off < split && split - off < avail) avail = split - off;
        if (step && avail > step) avail = step;
        size_t cons = 12345;
        const char *p; size_t pl;
        rc = http_chunked_feed(&c, d + off, avail, &cons, &p, &pl);
        ASSERT(cons <= avail);
        ASSERT(rc == HTTP_CHUNK_DATA || rc == HTTP_INCOMPLETE || rc == HTTP_CHUNK_DONE ||
               rc == HTTP_ERR_BAD_REQUEST);
        if (rc == HTTP_CHUNK_DATA) {
            ASSERT(pl > 0 && p >= d + off && p + pl == d + off + cons);
            memcpy(out + o, p, pl);
            o += pl;
        }
        if (rc == HTTP_INCOMPLETE) ASSERT(cons == avail);
        off += cons;
        if (rc == HTTP_CHUNK_DONE || rc < 0) break;
    }
    *olen = o;
    *used = off;
    return rc;
}

static void run_chunked(const char *d, size_t n)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    size_t al, au, bl, bu;
    int ra = dechunk(d, n, 0, 0, a, &al, &au);
    ASSERT(al <= n && au <= n);
    size_t splits[3] = { n / 2, n / 3 + 1, n > 7 ? n - 7 : 1 };
    for (int i = 0; i < 3; i++) {
        int rb = dechunk(d, n, splits[i], 0, b, &bl, &bu);
        ASSERT(rb == ra && bl == al && !memcmp(a, b, al));
        if (ra != HTTP_ERR_BAD_REQUEST) ASSERT(bu == au);
    }
    if (n <= 512) {
        int rb = dechunk(d, n, 0, 1, b, &bl, &bu);
        ASSERT(rb == ra && bl == al && !memcmp(a, b, al));
    }
    free(a);
    free(b);
}

static void run_helpers(const char *d, size_t n, const char *z)
{
    uint64_t sizes[4] = { 0, 1, 1000, UINT64_MAX };
    for (int i = 0; i < 4; i++) {
        uint64_t f = 7, l = 7;
        int r = http_range_parse(d, n, sizes[i], &f, &l);
        ASSERT(r == HTTP_RANGE_FULL || r == HTTP_RANGE_PARTIAL || r == HTTP_RANGE_UNSATISFIABLE);
        if (r == HTTP_RANGE_PARTIAL) {
            ASSERT(f <= l && l < sizes[i]);
            char cr[HTTP_CONTENT_RANGE_MAX];
            int k = http_content_range(cr, r, f, l, sizes[i]);
            ASSERT(k > 0 && k < HTTP_CONTENT_RANGE_MAX);
        }
    }
    http_etag_match(d, n, "\"abc\"", 1);
    http_etag_match(d, n, "W/\"abc\"", 0);
    http_if_range(d, n, "\"abc\"", 784111777);

    int64_t t = http_parse_date(d, n);
    if (t >= 0) {
        char buf[30];
        http_format_date(t, buf);
        ASSERT(strlen(buf) == 29);
        ASSERT(http_parse_date(buf, 29) == t);
    }
    char *dec = malloc(n + 1);
    long k = http_url_decode(d, n, dec);
    ASSERT(k >= -1 && k <= (long)n);
    if (k >= 0) ASSERT(dec[k] == 0 && strlen(dec) == (size_t)k);
    free(dec);

    const char *mt = mime_type_for(z);
    ASSERT(mt && strchr(mt, '/'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    static const http_limits tiny = { .max_request_line = 64, .max_head = 256 };

    run_request(d, size, NULL);
    run_request(d, size, &tiny);
    run_response(d, size, NULL);
    run_response(d, size, &tiny);

    /* A request with a chunked body: decode the body after the head. */
    if (http_parse_request(d, size, &req, NULL) == HTTP_OK && req.chunked)
        run_chunked(d + req.head_len, size - req.head_len);
    else
        run_chunked(d, size);

    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = 0;
    run_helpers(d, size, z);
    free(z);
    return 0;
}
