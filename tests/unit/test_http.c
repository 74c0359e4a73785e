/* Unit tests for the HTTP/1.1 parsers (src/http/http.c): request and
 * response heads, framing and anti-smuggling rules, limits, the chunked
 * decoder, percent-decoding and HTTP dates. */
#include "http/http.h"
#include "test.h"

#include <stdlib.h>

static http_request req;
static http_response resp;

static int preq(const char *s) { return http_parse_request(s, strlen(s), &req, NULL); }
static int presp(const char *s) { return http_parse_response(s, strlen(s), &resp, NULL); }

static int span_is(const char *p, size_t n, const char *lit)
{
    return p && n == strlen(lit) && !memcmp(p, lit, n);
}
#define CHECK_SPAN(p, n, lit) do { if (!span_is((p), (n), (lit))) { \
    printf("  %s:%d: %s == \"%.*s\", expected \"%s\"\n", __FILE__, __LINE__, #p, \
           (p) ? (int)(n) : 6, (p) ? (p) : "(null)", (lit)); test_failed_now = 1; } } while (0)

/* ---- requests ----------------------------------------------------------- */

static const char browser_get[] =
    "GET /static/app.js?v=3&x=%20y HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/\r\n"
    "Cookie: session=abc123; theme=dark\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

TEST(request_basic)
{
    CHECK_INT(preq(browser_get), HTTP_OK);
    CHECK_SPAN(req.method, req.method_len, "GET");
    CHECK_SPAN(req.target, req.target_len, "/static/app.js?v=3&x=%20y");
    CHECK_SPAN(req.path, req.path_len, "/static/app.js");
    CHECK_SPAN(req.query, req.query_len, "v=3&x=%20y");
    CHECK_INT(req.version_minor, 1);
    CHECK_INT(req.nheaders, 8);
    CHECK_SPAN(req.headers[0].name, req.headers[0].name_len, "Host");
    CHECK_SPAN(req.headers[7].value, req.headers[7].value_len, "keep-alive");
    CHECK_SPAN(req.host, req.host_len, "www.example.com");
    CHECK_INT(req.content_length, -1);
    CHECK_INT(req.chunked, 0);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(req.expect_continue, 0);
    CHECK_INT(req.head_len, strlen(browser_get));
    /* every span lies inside the buffer */
    CHECK(req.method == browser_get && req.target == browser_get + 4);
}

TEST(request_query_forms)
{
    CHECK_INT(preq("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK(req.query == NULL && req.query_len == 0);
    CHECK_SPAN(req.path, req.path_len, "/a");
    CHECK_INT(preq("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK(req.query != NULL);
    CHECK_INT(req.query_len, 0);
    CHECK_SPAN(req.path, req.path_len, "/a");
    CHECK_INT(preq("GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/a");
    CHECK_SPAN(req.query, req.query_len, "b?c");
}

TEST(request_body_framing)
{
    const char *s = "POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
    CHECK_INT(preq(s), HTTP_OK);
    CHECK_INT(req.content_length, 11);
    CHECK_INT(req.chunked, 0);
    CHECK(!strcmp(s + req.head_len, "hello world"));

    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.chunked, 1);
    CHECK_INT(req.content_length, -1);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD \r\n\r\n"), HTTP_OK);
    CHECK_INT(req.chunked, 1);

    /* repeated identical Content-Length is one reading */
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.content_length, 5);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.content_length, 5);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.content_length, 0);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.content_length, INT64_MAX);
}

TEST(request_smuggling)
{
    const char *bad[] = {
        /* CL + TE, in both orders */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        /* differing Content-Lengths */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
        /* malformed Content-Length */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        /* Transfer-Encoding not ending in a single chunked */
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        /* obs-fold: a line starting with SP or HTAB */
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip,\r\n\tchunked\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: h\r\n\r\n",
        /* whitespace before the colon */
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\n",
        /* bare CR, NUL and other controls */
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r2\r\n\r\n",
        "GET / HTTP/1.1\rHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n\r\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01" "b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f" "b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x1b[0m\r\n\r\n",
        "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
        "G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
        /* malformed header lines */
        "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX\"A: 1\r\n\r\n",
        /* Host: missing in 1.1, repeated, or not an authority */
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil.com/x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@evil.com\r\n\r\n",
        /* malformed request lines */
        "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
        "GET / http/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.10\r\nHost: h\r\n\r\n",
        "GET / HTTP/11\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.x\r\nHost: h\r\n\r\n",
        "GET /\r\n\r\n",
        "GET\r\n\r\n",
        "GET foo HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://user@evil.com/ HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "CONNECT a/b HTTP/1.1\r\nHost: h\r\n\r\n",
        "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = preq(bad[i]);
        if (rc != HTTP_ERR_BAD_REQUEST) {
            printf("  case %zu: rc %d for \"%s\"\n", i, rc, bad[i]);
            test_failed_now = 1;
        }
    }
    /* NUL bytes (strlen would stop at them) */
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n";
    static const char nul_name[] = "GET / HTTP/1.1\r\nHost: h\r\nX\0A: 1\r\n\r\n";
    static const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n";
    static const char nul_method[] = "G\0T / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(http_parse_request(nul_value, sizeof nul_value - 1, &req, NULL), HTTP_ERR_BAD_REQUEST);
    CHECK_INT(http_parse_request(nul_name, sizeof nul_name - 1, &req, NULL), HTTP_ERR_BAD_REQUEST);
    CHECK_INT(http_parse_request(nul_target, sizeof nul_target - 1, &req, NULL), HTTP_ERR_BAD_REQUEST);
    CHECK_INT(http_parse_request(nul_method, sizeof nul_method - 1, &req, NULL), HTTP_ERR_BAD_REQUEST);
}

TEST(request_not_implemented)
{
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
              HTTP_ERR_NOT_IMPLEMENTED);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
              HTTP_ERR_NOT_IMPLEMENTED);
    CHECK_INT(preq("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n"),
              HTTP_ERR_NOT_IMPLEMENTED);
}

TEST(request_versions)
{
    CHECK_INT(preq("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_INT(preq("GET / HTTP/3.0\r\nHost: h\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_INT(preq("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_INT(preq("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_INT(preq("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP_ERR_VERSION);

    /* HTTP/1.0: no Host needed, keep-alive only on request */
    CHECK_INT(preq("GET / HTTP/1.0\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.version_minor, 0);
    CHECK_INT(req.keep_alive, 0);
    CHECK(req.host == NULL);
    CHECK_INT(preq("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(preq("GET / HTTP/1.0\r\nConnection: TE, keep-alive \r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(preq("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(preq("GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.keep_alive, 1);

    /* Expect: 100-continue counts only in 1.1 */
    CHECK_INT(preq("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.expect_continue, 1);
    CHECK_INT(preq("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.expect_continue, 0);
    CHECK_INT(preq("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.expect_continue, 0);
}

TEST(request_target_forms)
{
    CHECK_INT(preq("GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.target, req.target_len, "http://Example.com:8080/a/b?x=1");
    CHECK_SPAN(req.path, req.path_len, "/a/b");
    CHECK_SPAN(req.query, req.query_len, "x=1");
    CHECK_SPAN(req.host, req.host_len, "Example.com:8080");   /* authority wins over Host */

    CHECK_INT(preq("GET https://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/");
    CHECK(req.query == NULL);
    CHECK_SPAN(req.host, req.host_len, "h.example");

    CHECK_INT(preq("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/");
    CHECK_SPAN(req.query, req.query_len, "q=1");

    CHECK_INT(preq("GET http://[::1]:80/x HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.host, req.host_len, "[::1]:80");
    CHECK_SPAN(req.path, req.path_len, "/x");

    CHECK_INT(preq("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "*");

    CHECK_INT(preq("CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(req.target, req.target_len, "h.example:443");

    /* obs-text in the target (raw UTF-8) is tolerated; controls are not */
    CHECK_INT(preq("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.path_len, 6);
}

TEST(request_values)
{
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost:h\r\nX-A:   a b \t \r\nX-Empty:\r\nX-Sp:   \r\n"
                   "X-U: caf\xc3\xa9\r\n\r\n"), HTTP_OK);
    CHECK_INT(req.nheaders, 5);
    CHECK_SPAN(req.host, req.host_len, "h");
    CHECK_SPAN(req.headers[1].value, req.headers[1].value_len, "a b");
    CHECK_INT(req.headers[2].value_len, 0);
    CHECK_INT(req.headers[3].value_len, 0);
    CHECK_SPAN(req.headers[4].value, req.headers[4].value_len, "caf\xc3\xa9");
    /* Empty Host is allowed */
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost: \r\n\r\n"), HTTP_OK);
    CHECK(req.host != NULL && req.host_len == 0);

    /* bare LF line endings */
    const char *lf = "GET /x HTTP/1.1\nHost: a\nX-B: 2\n\n";
    CHECK_INT(preq(lf), HTTP_OK);
    CHECK_INT(req.nheaders, 2);
    CHECK_INT(req.head_len, strlen(lf));
    CHECK_SPAN(req.headers[1].value, req.headers[1].value_len, "2");

    /* empty lines before the request line are skipped and counted */
    const char *lead = "\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(preq(lead), HTTP_OK);
    CHECK_INT(req.head_len, strlen(lead));
    CHECK_SPAN(req.method, req.method_len, "GET");

    /* long values cross the 16-byte fast path with obs-text and a control late */
    char big[600];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX-Long: %s\xff%s\r\n\r\n",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    CHECK_INT(preq(big), HTTP_OK);
    CHECK_INT(req.headers[1].value_len, 51 + 1 + 43);
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX-Long: %s\x02%s\r\n\r\n",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    CHECK_INT(preq(big), HTTP_ERR_BAD_REQUEST);
}

TEST(request_incremental)
{
    /* every proper prefix is incomplete; the whole head parses; the result
     * does not depend on bytes after the head */
    const char *full = browser_get;
    size_t n = strlen(full);
    for (size_t k = 0; k < n; k++) {
        int rc = http_parse_request(full, k, &req, NULL);
        if (rc != HTTP_INCOMPLETE) { printf("  prefix %zu: rc %d\n", k, rc); test_failed_now = 1; }
    }
    CHECK_INT(http_parse_request(full, n, &req, NULL), HTTP_OK);
    CHECK_INT(req.head_len, n);

    const char *lf = "POST /u HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi";
    size_t hl = strlen(lf) - 2;
    for (size_t k = 0; k < hl; k++)
        CHECK_INT(http_parse_request(lf, k, &req, NULL), HTTP_INCOMPLETE);
    for (size_t k = hl; k <= strlen(lf); k++) {
        CHECK_INT(http_parse_request(lf, k, &req, NULL), HTTP_OK);
        CHECK_INT(req.head_len, hl);
    }

    /* a buffer copied byte by byte into a growing heap block (so ASan sees
     * any read past the end) */
    char *b = malloc(n);
    for (size_t k = 1; k <= n; k++) {
        char *c = malloc(k);
        memcpy(c, full, k);
        int rc = http_parse_request(c, k, &req, NULL);
        CHECK_INT(rc, k == n ? HTTP_OK : HTTP_INCOMPLETE);
        free(c);
    }
    free(b);
}

TEST(request_pipelined)
{
    const char *s =
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
        "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    size_t len = strlen(s), off = 0;
    CHECK_INT(http_parse_request(s + off, len - off, &req, NULL), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/a");
    CHECK_INT(req.content_length, 5);
    CHECK(!memcmp(s + off + req.head_len, "hello", 5));
    off += req.head_len + 5;
    CHECK_INT(http_parse_request(s + off, len - off, &req, NULL), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/b");
    CHECK_INT(req.keep_alive, 1);
    off += req.head_len;
    CHECK_INT(http_parse_request(s + off, len - off, &req, NULL), HTTP_OK);
    CHECK_SPAN(req.path, req.path_len, "/c");
    CHECK_INT(req.keep_alive, 0);
    off += req.head_len;
    CHECK_INT(off, len);
    CHECK_INT(http_parse_request(s + off, len - off, &req, NULL), HTTP_INCOMPLETE);
}

TEST(request_limits)
{
    http_limits lim = { .max_request_line = 64, .max_head = 256 };
    char buf[2048];

    /* request line of exactly 64 bytes is fine, 65 is 414 */
    char target[128];
    memset(target, 'a', sizeof target);
    target[0] = '/';
    snprintf(buf, sizeof buf, "GET %.*s HTTP/1.1\r\nHost: h\r\n\r\n", 64 - 13, target);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_OK);
    snprintf(buf, sizeof buf, "GET %.*s HTTP/1.1\r\nHost: h\r\n\r\n", 64 - 12, target);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_ERR_URI_TOO_LONG);
    /* ... and 414 as soon as the limit is crossed, before the line ends */
    snprintf(buf, sizeof buf, "GET %.*s", 100, target);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_ERR_URI_TOO_LONG);
    CHECK_INT(http_parse_request(buf, 64, &req, &lim), HTTP_INCOMPLETE);
    CHECK_INT(http_parse_request(buf, 65, &req, &lim), HTTP_ERR_URI_TOO_LONG);
    /* an endless method token also hits the line limit */
    memset(buf, 'G', 100);
    CHECK_INT(http_parse_request(buf, 100, &req, &lim), HTTP_ERR_URI_TOO_LONG);

    /* head of exactly max_head bytes is fine, one more is 431 */
    size_t base = strlen("GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n");
    char val[512];
    memset(val, 'v', sizeof val);
    snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\nX: %.*s\r\n\r\n", (int)(256 - base), val);
    CHECK_INT(strlen(buf), 256);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_OK);
    snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\nX: %.*s\r\n\r\n", (int)(257 - base), val);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_ERR_HEADERS_TOO_LARGE);
    /* ... also while the head is still incomplete */
    snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\nX: %.*s", 400, val);
    CHECK_INT(http_parse_request(buf, strlen(buf), &req, &lim), HTTP_ERR_HEADERS_TOO_LARGE);
    CHECK_INT(http_parse_request(buf, 256, &req, &lim), HTTP_INCOMPLETE);

    /* default limits: 8192-byte request line */
    char *big = malloc(70000);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', 8192);
    CHECK_INT(http_parse_request(big, 8197, &req, NULL), HTTP_ERR_URI_TOO_LONG);
    /* default 64 KiB head */
    size_t o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
    while (o < 66000) o += (size_t)sprintf(big + o, "X-Pad: %0100d\r\n", 0);
    CHECK_INT(http_parse_request(big, o, &req, NULL), HTTP_ERR_HEADERS_TOO_LARGE);
    free(big);

    /* exactly HTTP_MAX_HEADERS header lines parse; one more is 431 */
    o = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++) o += (size_t)sprintf(buf + o, "a%d:\r\n", i % 10);
    memcpy(buf + o, "\r\n", 3);
    CHECK_INT(http_parse_request(buf, o + 2, &req, NULL), HTTP_OK);
    CHECK_INT(req.nheaders, HTTP_MAX_HEADERS);
    memcpy(buf + o, "b:\r\n\r\n", 7);
    CHECK_INT(http_parse_request(buf, o + 6, &req, NULL), HTTP_ERR_HEADERS_TOO_LARGE);
}

TEST(find_header)
{
    CHECK_INT(preq(browser_get), HTTP_OK);
    const http_header *h = http_find_header(req.headers, req.nheaders, "accept-encoding");
    CHECK(h != NULL);
    if (h) CHECK_SPAN(h->value, h->value_len, "gzip, deflate, br");
    h = http_find_header(req.headers, req.nheaders, "COOKIE");
    CHECK(h && h == &req.headers[6]);
    CHECK(http_find_header(req.headers, req.nheaders, "Accept-Encod") == NULL);
    CHECK(http_find_header(req.headers, req.nheaders, "X-Missing") == NULL);
    CHECK(http_find_header(req.headers, 0, "Host") == NULL);
    /* first match wins */
    CHECK_INT(preq("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n"), HTTP_OK);
    h = http_find_header(req.headers, req.nheaders, "X-A");
    CHECK(h && span_is(h->value, h->value_len, "1"));
}

/* ---- responses ---------------------------------------------------------- */

TEST(response_basic)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    CHECK_INT(presp(s), HTTP_OK);
    CHECK_INT(resp.status, 200);
    CHECK_INT(resp.version_minor, 1);
    CHECK_SPAN(resp.reason, resp.reason_len, "OK");
    CHECK_INT(resp.nheaders, 2);
    CHECK_INT(resp.content_length, 5);
    CHECK_INT(resp.chunked, 0);
    CHECK_INT(resp.keep_alive, 1);
    CHECK(!strcmp(s + resp.head_len, "hello"));

    CHECK_INT(presp("HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n"), HTTP_OK);
    CHECK_SPAN(resp.reason, resp.reason_len, "Not Found Here");
    CHECK_INT(presp("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.reason_len, 0);
    CHECK_INT(presp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.reason_len, 0);
    CHECK_INT(presp("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), HTTP_OK);

    for (size_t k = 0; k < strlen(s) - 5; k++)
        CHECK_INT(http_parse_response(s, k, &resp, NULL), HTTP_INCOMPLETE);
}

TEST(response_framing)
{
    /* chunked wins over Content-Length */
    CHECK_INT(presp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.chunked, 1);
    CHECK_INT(resp.content_length, -1);
    CHECK_INT(resp.keep_alive, 1);
    /* no length: until close */
    CHECK_INT(presp("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.chunked, 0);
    CHECK_INT(resp.content_length, -1);
    CHECK_INT(resp.keep_alive, 0);
    /* coding list not ending in chunked: until close */
    CHECK_INT(presp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.chunked, 0);
    CHECK_INT(resp.content_length, -1);
    CHECK_INT(resp.keep_alive, 0);
    /* no body for 1xx, 204, 304 whatever the headers say */
    CHECK_INT(presp("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.content_length, 0);
    CHECK_INT(resp.keep_alive, 1);
    CHECK_INT(presp("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.content_length, 0);
    CHECK_INT(resp.chunked, 0);
    CHECK_INT(presp("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.content_length, 0);
    CHECK_INT(presp("HTTP/1.1 100 Continue\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.status, 100);
    CHECK_INT(resp.content_length, 0);
    /* a response to HEAD: the head parses the same, the caller skips the body */
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n";
    CHECK_INT(presp(head), HTTP_OK);
    CHECK_INT(resp.head_len, strlen(head));
    CHECK_INT(resp.content_length, 12345);
    /* HTTP/1.0 */
    CHECK_INT(presp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.version_minor, 0);
    CHECK_INT(resp.keep_alive, 0);
    CHECK_INT(presp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.keep_alive, 1);
    CHECK_INT(presp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.chunked, 0);
    CHECK_INT(resp.keep_alive, 0);
    CHECK_INT(presp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"), HTTP_OK);
    CHECK_INT(resp.keep_alive, 0);
}

TEST(response_errors)
{
    const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 600 Odd\r\n\r\n",
        "HTTP/1.1 099 Odd\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 OK\rX: y\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "XTTP",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = presp(bad[i]);
        if (rc != HTTP_ERR_BAD_REQUEST) {
            printf("  case %zu: rc %d for \"%s\"\n", i, rc, bad[i]);
            test_failed_now = 1;
        }
    }
    CHECK_INT(presp("HTTP/2.0 200 OK\r\n\r\n"), HTTP_ERR_VERSION);
    http_limits lim = { .max_request_line = 32, .max_head = 128 };
    const char *longreason = "HTTP/1.1 200 OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO\r\n\r\n";
    CHECK_INT(http_parse_response(longreason, strlen(longreason), &resp, &lim), HTTP_ERR_URI_TOO_LONG);
    char big[512];
    int n = snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nX: %0200d\r\n\r\n", 0);
    CHECK_INT(http_parse_response(big, (size_t)n, &resp, &lim), HTTP_ERR_HEADERS_TOO_LARGE);
}

/* ---- chunked bodies ----------------------------------------------------- */

/* Decode all of in[0, len) fed in pieces of at most `step` bytes (0 = all at
 * once, split = feed [0,split) then the rest). Appends data to out. Returns
 * the last status; *used = bytes consumed in total. */
static int dechunk(const char *in, size_t len, size_t split, size_t step, char *out, size_t *outlen,
                   size_t *used)
{
    http_chunked c;
    memset(&c, 0, sizeof c);
    size_t off = 0, o = 0;
    int rc = HTTP_INCOMPLETE;
    while (off < len) {
        size_t avail = len - off;
        if (split && off < split) avail = split - off;
        if (step && avail > step) avail = step;
        size_t cons = 0;
        const char *d; size_t dl;
        rc = http_chunked_feed(&c, in + off, avail, &cons, &d, &dl);
        if (cons > avail) { rc = -9999; break; }
        if (rc == HTTP_CHUNK_DATA) {
            if (!(d >= in + off && d + dl <= in + off + cons && dl > 0)) { rc = -9998; break; }
            memcpy(out + o, d, dl);
            o += dl;
        }
        off += cons;
        if (rc == HTTP_CHUNK_DONE || rc < 0) break;
        if (rc == HTTP_INCOMPLETE && cons != avail) { rc = -9997; break; }
    }
    *outlen = o;
    *used = off;
    return rc;
}

TEST(chunked_basic)
{
    const char *s = "5\r\nhello\r\n6;name=val;x\r\n world\r\nA \r\n0123456789\r\n0\r\n\r\nNEXT";
    char out[64]; size_t ol, used;
    CHECK_INT(dechunk(s, strlen(s), 0, 0, out, &ol, &used), HTTP_CHUNK_DONE);
    CHECK_INT(ol, 21);
    CHECK(!memcmp(out, "hello world0123456789", 21));
    CHECK_INT(used, strlen(s) - 4);     /* stops before the next message */

    /* trailers are read and discarded */
    const char *t = "3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-More: two\r\n\r\n";
    CHECK_INT(dechunk(t, strlen(t), 0, 0, out, &ol, &used), HTTP_CHUNK_DONE);
    CHECK_INT(ol, 3);
    CHECK_INT(used, strlen(t));

    /* upper-case hex, leading zeros */
    const char *u = "00000B\r\nhello world\r\n0000\r\n\r\n";
    CHECK_INT(dechunk(u, strlen(u), 0, 0, out, &ol, &used), HTTP_CHUNK_DONE);
    CHECK_INT(ol, 11);

    /* after DONE the decoder stays done and consumes nothing */
    http_chunked c = {0};
    size_t cons; const char *d; size_t dl;
    CHECK_INT(http_chunked_feed(&c, "0\r\n\r\n", 5, &cons, &d, &dl), HTTP_CHUNK_DONE);
    CHECK_INT(cons, 5);
    CHECK_INT(http_chunked_feed(&c, "xyz", 3, &cons, &d, &dl), HTTP_CHUNK_DONE);
    CHECK_INT(cons, 0);
    /* empty input */
    memset(&c, 0, sizeof c);
    CHECK_INT(http_chunked_feed(&c, "", 0, &cons, &d, &dl), HTTP_INCOMPLETE);
    CHECK_INT(cons, 0);
}

TEST(chunked_every_split)
{
    const char *s = "4\r\nWiki\r\n5;ext=\"q\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n";
    size_t len = strlen(s);
    const char *want = "Wikipedia in\r\n\r\nchunks.";
    char out[128]; size_t ol, used;
    for (size_t k = 1; k < len; k++) {
        int rc = dechunk(s, len, k, 0, out, &ol, &used);
        if (rc != HTTP_CHUNK_DONE || ol != strlen(want) || memcmp(out, want, ol) || used != len) {
            printf("  split at %zu: rc %d len %zu used %zu\n", k, rc, ol, used);
            test_failed_now = 1;
        }
    }
    for (size_t step = 1; step < 8; step++) {
        int rc = dechunk(s, len, 0, step, out, &ol, &used);
        CHECK_INT(rc, HTTP_CHUNK_DONE);
        CHECK(ol == strlen(want) && !memcmp(out, want, ol));
        CHECK_INT(used, len);
    }
}

TEST(chunked_errors)
{
    const char *bad[] = {
        "x\r\n",                        /* not hex */
        "\r\n",                         /* no digits */
        "-1\r\n",
        "0x10\r\nabc",                  /* hex with a prefix */
        "5 x\r\nhello\r\n",             /* garbage after size */
        "5\nhello\r\n0\r\n\r\n",        /* bare LF after size */
        "5\rhello",                     /* bare CR */
        "5\r\nhelloX\r\n",              /* data longer than announced */
        "5\r\nhello\n0\r\n\r\n",        /* bare LF after data */
        "5;a\x01\r\nhello\r\n",         /* control byte in extension */
        "10000000000000000\r\n",        /* 2^64 */
        "FFFFFFFFFFFFFFFFF\r\n",
        "0\r\nX: a\x01\r\n\r\n",        /* control byte in trailer */
        "0\r\n\n",                      /* bare LF ending */
        "0\r\nX: 1\n\r\n",
    };
    char out[64]; size_t ol, used;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = dechunk(bad[i], strlen(bad[i]), 0, 0, out, &ol, &used);
        if (rc != HTTP_ERR_BAD_REQUEST) {
            printf("  case %zu: rc %d\n", i, rc);
            test_failed_now = 1;
        }
        /* byte by byte too */
        rc = dechunk(bad[i], strlen(bad[i]), 0, 1, out, &ol, &used);
        if (rc != HTTP_ERR_BAD_REQUEST) {
            printf("  case %zu bytewise: rc %d\n", i, rc);
            test_failed_now = 1;
        }
    }
    /* a NUL in the size line */
    http_chunked c = {0};
    size_t cons; const char *d; size_t dl;
    CHECK_INT(http_chunked_feed(&c, "5\0\r\n", 4, &cons, &d, &dl), HTTP_ERR_BAD_REQUEST);
    /* errors are sticky */
    CHECK_INT(http_chunked_feed(&c, "0\r\n\r\n", 5, &cons, &d, &dl), HTTP_ERR_BAD_REQUEST);

    /* overlong size line (leading zeros / extensions) */
    char *big = malloc(10000);
    memset(big, '0', 9000);
    memcpy(big + 9000, "1\r\na\r\n", 6);
    CHECK_INT(dechunk(big, 9006, 0, 0, out, &ol, &used), HTTP_ERR_BAD_REQUEST);
    big[0] = '1'; big[1] = ';';
    memset(big + 2, 'e', 8998);
    memcpy(big + 9000, "\r\nx\r\n", 5);
    CHECK_INT(dechunk(big, 9005, 0, 0, out, &ol, &used), HTTP_ERR_BAD_REQUEST);
    free(big);

    /* the largest accepted size: 15 hex digits (2^60 - 1) announce data */
    memset(&c, 0, sizeof c);
    CHECK_INT(http_chunked_feed(&c, "fffffffffffffff\r\nab", 19, &cons, &d, &dl), HTTP_CHUNK_DATA);
    CHECK_INT(dl, 2);
    CHECK(c.remaining == 0xfffffffffffffffULL - 2);
}

/* ---- small helpers -------------------------------------------------------- */

TEST(reason)
{
    CHECK_STR(http_reason(200), "OK");
    CHECK_STR(http_reason(404), "Not Found");
    CHECK_STR(http_reason(416), "Range Not Satisfiable");
    CHECK_STR(http_reason(431), "Request Header Fields Too Large");
    CHECK_STR(http_reason(505), "HTTP Version Not Supported");
    CHECK_STR(http_reason(999), "Unknown");
    CHECK_STR(http_reason(-1), "Unknown");
}

TEST(url_decode)
{
    char out[64];
    CHECK_INT(http_url_decode("a%20b%2Fc", 9, out), 5);
    CHECK_STR(out, "a b/c");
    CHECK_INT(http_url_decode("a+b", 3, out), 3);
    CHECK_STR(out, "a+b");
    CHECK_INT(http_url_decode("%e2%82%AC", 9, out), 3);
    CHECK_STR(out, "\xe2\x82\xac");
    CHECK_INT(http_url_decode("", 0, out), 0);
    CHECK_STR(out, "");
    CHECK_INT(http_url_decode("%", 1, out), -1);
    CHECK_INT(http_url_decode("ab%4", 4, out), -1);
    CHECK_INT(http_url_decode("%zz", 3, out), -1);
    CHECK_INT(http_url_decode("%4g", 3, out), -1);
    CHECK_INT(http_url_decode("a%00b", 5, out), -1);
    CHECK_INT(http_url_decode("a\0b", 3, out), -1);
    /* stops at n, not at the string's end */
    CHECK_INT(http_url_decode("%41%42", 3, out), 1);
    CHECK_STR(out, "A");
}

TEST(dates)
{
    char out[30];
    http_format_date(784111777, out);
    CHECK_STR(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    http_format_date(0, out);
    CHECK_STR(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    http_format_date(951782400, out);
    CHECK_STR(out, "Tue, 29 Feb 2000 00:00:00 GMT");
    http_format_date(1700000000, out);
    CHECK_STR(out, "Tue, 14 Nov 2023 22:13:20 GMT");

    CHECK_INT(http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT", 29), 784111777);
    CHECK_INT(http_parse_date("Sunday, 06-Nov-94 08:49:37 GMT", 30), 784111777);
    CHECK_INT(http_parse_date("Sun Nov  6 08:49:37 1994", 24), 784111777);
    CHECK_INT(http_parse_date("Wednesday, 01-Jan-30 00:00:00 GMT", 33), 1893456000);
    CHECK_INT(http_parse_date("Thu, 01 Jan 1970 00:00:00 GMT", 29), 0);

    /* round trip across a wide range */
    for (int64_t t = 0; t < 253402300799LL; t += 987654321) {
        http_format_date(t, out);
        if (http_parse_date(out, 29) != t) {
            printf("  round trip of %lld gave %s\n", (long long)t, out);
            test_failed_now = 1;
        }
    }

    const char *bad[] = {
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Mon, 29 Feb 2001 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Xyz 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT ",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 19a4 08:49:37 GMT",
        "Sun, 06 Nov 1969 08:49:37 GMT",
        "Sun Nov 32 08:49:37 1994",
        "Sunday, 06-Nov-94 08:49:37 UTC",
        "Funday, 06-Nov-94 08:49:37 GMT",
        "",
        "Sun",
        "Sunday,",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (http_parse_date(bad[i], strlen(bad[i])) != -1) {
            printf("  accepted bad date \"%s\"\n", bad[i]);
            test_failed_now = 1;
        }
    }
}

int main(void)
{
    RUN(request_basic);
    RUN(request_query_forms);
    RUN(request_body_framing);
    RUN(request_smuggling);
    RUN(request_not_implemented);
    RUN(request_versions);
    RUN(request_target_forms);
    RUN(request_values);
    RUN(request_incremental);
    RUN(request_pipelined);
    RUN(request_limits);
    RUN(find_header);
    RUN(response_basic);
    RUN(response_framing);
    RUN(response_errors);
    RUN(chunked_basic);
    RUN(chunked_every_split);
    RUN(chunked_errors);
    RUN(reason);
    RUN(url_decode);
    RUN(dates);
    return test_report();
}
