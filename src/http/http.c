/* http.c - HTTP/1.1 message parsing (RFC 9110/9112): request and response
 * heads, header lookup, chunked bodies, reason phrases, percent-decoding and
 * HTTP dates.
 *
 * How it works. The head parsers make one forward pass over the caller's
 * bytes, driven by 256-entry character-class tables, and record spans that
 * point into the caller's buffer: nothing is copied or allocated. They are
 * restartable rather than resumable: the caller passes everything read so
 * far and gets HTTP_INCOMPLETE until the empty line ending the head is there.
 * Limits are enforced by scanning only up to the limit: running out of bytes
 * before the limit means "incomplete", reaching the limit means 414/431, so
 * an oversized head is refused as soon as the limit is crossed, not when it
 * ends.
 *
 * Framing is derived while the header lines are scanned (Content-Length,
 * Transfer-Encoding, Connection, Host, Expect are recognised by length and a
 * case-folded compare) and judged once the head is complete, so that a
 * request has exactly one reading: anything ambiguous is a 400.
 *
 * Choices beyond the header's text:
 *  - up to a few empty lines before a request line are skipped (RFC 9112 2.2);
 *  - an HTTP/1.1 request without Host, or any request with several Host
 *    lines or a Host value with characters not allowed in an authority, is a
 *    400 (RFC 9112 3.2); for an absolute-form target, `host` is the target's
 *    authority (the Host header is ignored, RFC 9112 3.2.2) and an
 *    absolute-form target with no path gives path "/" (a static string);
 *  - Content-Length may repeat (as lines or a comma list) only with one value;
 *  - Transfer-Encoding in an HTTP/1.0 request is a 400; "chunked" must be
 *    last and appear once (else 400); other codings before it are 501;
 *  - responses follow RFC 9112 6.3 as a client would: Transfer-Encoding
 *    wins over Content-Length, a coding list not ending in chunked means the
 *    body runs until close; 1xx/204/304 get content_length 0 and chunked 0,
 *    a HEAD response must be framed by the caller, who knows the method;
 *  - the chunked decoder requires CRLF (not bare LF) everywhere in the
 *    framing, since lenient chunk-line endings are a known smuggling vector.
 */
#include "http/http.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define DEF_MAX_REQUEST_LINE 8192
#define DEF_MAX_HEAD 65536
#define MAX_LEADING_EMPTY_LINES 8
#define MAX_CHUNK_LINE 4096        /* chunk-size line with extensions */
#define MAX_TRAILERS 65536         /* whole trailer section */

/* ---- character classes ---------------------------------------------- */

/* tchar: token characters (RFC 9110 5.6.2). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* Field-value and reason-phrase bytes: HTAB, SP, VCHAR, obs-text. */
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
static const unsigned char vchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,   /* HTAB only */
    R16(0),
    R16(1), R16(1), R16(1), R16(1), R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,   /* DEL */
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1),
};

/* Request-target bytes: VCHAR and obs-text (no SP, no controls). */
static const unsigned char uchar[256] = {
    R16(0), R16(0),
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,   /* no SP */
    R16(1), R16(1), R16(1), R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,   /* DEL */
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1),
};

static inline int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* Compare a token (case-insensitively) with a lowercase literal made of
 * letters and '-': for token characters, c|0x20 equals such a literal byte
 * only for that letter in either case. */
static inline int tok_eq(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] | 0x20) != (unsigned char)lit[i]) return 0;
    return 1;
}

/* Case-insensitive compare of a value span with a lowercase literal, for
 * arbitrary bytes. */
static int ci_eq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (unsigned char)lit[i]) return 0;
    }
    return i == n && !lit[i];
}

/* ---- header section --------------------------------------------------- */

/* What the header lines say about framing, gathered during the scan. */
typedef struct {
    int64_t cl;            /* -1 absent, -2 invalid/conflicting */
    int te_seen, te_chunked_last, te_chunked_count, te_other, te_bad;
    int conn_close, conn_keep_alive;
    int expect_continue;
    int host_count, host_bad;
    const char *host; size_t host_len;
} framing;

/* Content-Length value: 1*DIGIT, optionally repeated as "n, n". Merges into
 * f->cl; conflicting or malformed values set -2. */
static void note_content_length(framing *f, const char *v, size_t n)
{
    size_t i = 0;
    if (f->cl == -2) return;
    for (;;) {
        while (i < n && is_ows((unsigned char)v[i])) i++;
        if (i == n || v[i] < '0' || v[i] > '9') { f->cl = -2; return; }
        int64_t x = 0;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            int d = v[i++] - '0';
            if (x > (INT64_MAX - d) / 10) { f->cl = -2; return; }
            x = x * 10 + d;
        }
        while (i < n && is_ows((unsigned char)v[i])) i++;
        if (f->cl >= 0 && f->cl != x) { f->cl = -2; return; }
        f->cl = x;
        if (i == n) return;
        if (v[i] != ',') { f->cl = -2; return; }
        i++;
    }
}

/* Transfer-Encoding: comma list of codings, in order, possibly over several
 * lines. Tracks whether chunked is last, how often it appears, and whether
 * any other coding is present. */
static void note_transfer_encoding(framing *f, const char *v, size_t n)
{
    size_t i = 0;
    int any = 0;
    f->te_seen = 1;
    while (i <= n) {
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (s < e && is_ows((unsigned char)v[s])) s++;
        while (e > s && is_ows((unsigned char)v[e - 1])) e--;
        if (e > s) {
            any = 1;
            if (ci_eq(v + s, e - s, "chunked")) {
                f->te_chunked_count++;
                f->te_chunked_last = 1;
            } else {
                f->te_other = 1;
                f->te_chunked_last = 0;
            }
        }
        i++;
    }
    if (!any) f->te_bad = 1;
}

static void note_connection(framing *f, const char *v, size_t n)
{
    size_t i = 0;
    while (i <= n) {
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (s < e && is_ows((unsigned char)v[s])) s++;
        while (e > s && is_ows((unsigned char)v[e - 1])) e--;
        if (ci_eq(v + s, e - s, "close")) f->conn_close = 1;
        else if (ci_eq(v + s, e - s, "keep-alive")) f->conn_keep_alive = 1;
        i++;
    }
}

/* Host = uri-host [ ":" port ]: reg-name, IPv4 or IP-literal characters
 * (ALPHA DIGIT "-._~!$&'()*+,;=:[]%"). */
static const unsigned char hchar[256] = {
    ['!'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1,
    ['+'] = 1, [','] = 1, ['-'] = 1, ['.'] = 1, [':'] = 1, [';'] = 1, ['='] = 1, ['['] = 1,
    [']'] = 1, ['_'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static int host_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!hchar[(unsigned char)v[i]]) return 0;
    return 1;
}

static inline void classify(framing *f, const char *name, size_t nlen, const char *v, size_t vlen)
{
    switch (nlen) {
    case 4:
        if (tok_eq(name, "host", 4)) {
            f->host_count++;
            f->host = v; f->host_len = vlen;
            if (!host_ok(v, vlen)) f->host_bad = 1;
        }
        break;
    case 6:
        if (tok_eq(name, "expect", 6) && ci_eq(v, vlen, "100-continue")) f->expect_continue = 1;
        break;
    case 10:
        if (tok_eq(name, "connection", 10)) note_connection(f, v, vlen);
        break;
    case 14:
        if (tok_eq(name, "content-length", 14)) note_content_length(f, v, vlen);
        break;
    case 17:
        if (tok_eq(name, "transfer-encoding", 17)) note_transfer_encoding(f, v, vlen);
        break;
    }
}

/* Skip field-value bytes from p, stopping at the first byte that is not one
 * (a line end, a control byte, or hend). */
static inline const char *scan_value(const char *p, const char *hend)
{
#if defined(__SSE2__)
    /* 16 bytes at a time while none is below 0x20 (signed compare, so
     * obs-text also drops to the byte loop) or DEL. */
    const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    while (hend - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, sp), _mm_cmpeq_epi8(v, del));
        int m = _mm_movemask_epi8(bad);
        if (m) { p += __builtin_ctz((unsigned)m); break; }
        p += 16;
    }
#endif
    while (p < hend && vchar[(unsigned char)*p]) p++;
    return p;
}

/* Parse header lines from *pp up to and including the empty line. Scans no
 * further than hend (the head limit); `end` is the end of the data. Returns
 * HTTP_OK, HTTP_INCOMPLETE, or an error. */
static int parse_fields(const char **pp, const char *hend, const char *end,
                        http_header *hdr, size_t *nhdr, framing *f)
{
    const char *p = *pp;
    size_t nh = 0;
    for (;;) {
        if (p >= hend) goto out;
        if (*p == '\r') {
            if (p + 1 >= hend) goto out;
            if (p[1] != '\n') return HTTP_ERR_BAD_REQUEST;
            p += 2;
            break;
        }
        if (*p == '\n') { p++; break; }
        if (nh == HTTP_MAX_HEADERS) return HTTP_ERR_HEADERS_TOO_LARGE;
        const char *name = p;
        while (p < hend && tchar[(unsigned char)*p]) p++;
        if (p >= hend) goto out;
        /* A line starting with SP/HTAB (obs-fold), whitespace before the
         * colon, or any non-token byte in the name ends up here. */
        if (*p != ':' || p == name) return HTTP_ERR_BAD_REQUEST;
        size_t nlen = (size_t)(p - name);
        p++;
        while (p < hend && is_ows((unsigned char)*p)) p++;
        const char *v = p;
        p = scan_value(p, hend);
        if (p >= hend) goto out;
        const char *ve = p;
        if (*p == '\r') {
            if (p + 1 >= hend) goto out;
            if (p[1] != '\n') return HTTP_ERR_BAD_REQUEST;   /* bare CR */
            p += 2;
        } else if (*p == '\n') {
            p++;
        } else {
            return HTTP_ERR_BAD_REQUEST;                     /* control byte */
        }
        while (ve > v && is_ows((unsigned char)ve[-1])) ve--;
        hdr[nh].name = name; hdr[nh].name_len = nlen;
        hdr[nh].value = v; hdr[nh].value_len = (size_t)(ve - v);
        nh++;
        classify(f, name, nlen, v, (size_t)(ve - v));
    }
    *pp = p;
    *nhdr = nh;
    return HTTP_OK;
out:
    *nhdr = nh;
    return hend < end ? HTTP_ERR_HEADERS_TOO_LARGE : HTTP_INCOMPLETE;
}

/* "HTTP/x.y" at p (8 bytes available): 1 or 0 in *minor, else an error. */
static int parse_version(const char *p, int *minor)
{
    if (memcmp(p, "HTTP/", 5) || p[6] != '.') return HTTP_ERR_BAD_REQUEST;
    if (p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9') return HTTP_ERR_BAD_REQUEST;
    if (p[5] != '1' || p[7] > '1') return HTTP_ERR_VERSION;
    *minor = p[7] - '0';
    return HTTP_OK;
}

/* Line end at p: advances past CRLF or LF. Returns OK, INCOMPLETE or 400. */
static inline int eat_eol(const char **pp, const char *end)
{
    const char *p = *pp;
    if (p >= end) return HTTP_INCOMPLETE;
    if (*p == '\n') { *pp = p + 1; return HTTP_OK; }
    if (*p != '\r') return HTTP_ERR_BAD_REQUEST;
    if (p + 1 >= end) return HTTP_INCOMPLETE;
    if (p[1] != '\n') return HTTP_ERR_BAD_REQUEST;
    *pp = p + 2;
    return HTTP_OK;
}

/* ---- requests ----------------------------------------------------------- */

/* Split an absolute-form target "scheme://authority[path][?query]". Returns 0
 * on success (path/query/authority set), -1 if it is not absolute-form. */
static int split_absolute(http_request *r, const char *t, size_t n)
{
    size_t i = 0;
    if (!n || !((t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z')) return -1;
    while (i < n && (((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z') ||
                     (t[i] >= '0' && t[i] <= '9') || t[i] == '+' || t[i] == '-' || t[i] == '.'))
        i++;
    if (n - i < 3 || memcmp(t + i, "://", 3)) return -1;
    i += 3;
    size_t a = i;
    while (i < n && t[i] != '/' && t[i] != '?') i++;
    if (i == a || !host_ok(t + a, i - a)) return -1;     /* empty, userinfo, ... */
    r->host = t + a; r->host_len = i - a;
    size_t ps = i;
    while (i < n && t[i] != '?') i++;
    if (ps < n && t[ps] == '/') {
        r->path = t + ps; r->path_len = i - ps;
    } else {
        r->path = "/"; r->path_len = 1;
    }
    if (i < n) { r->query = t + i + 1; r->query_len = n - i - 1; }
    return 0;
}

int http_parse_request(const char *buf, size_t len, http_request *req, const http_limits *lim)
{
    size_t max_rl = lim && lim->max_request_line ? lim->max_request_line : DEF_MAX_REQUEST_LINE;
    size_t max_head = lim && lim->max_head ? lim->max_head : DEF_MAX_HEAD;
    const char *end = buf + len;
    const char *hend = len > max_head ? buf + max_head : end;
    const char *p = buf;
    int rc;

    req->nheaders = 0;
    req->head_len = 0;

    /* Empty lines before the request line. */
    for (int i = 0; p < hend && (*p == '\r' || *p == '\n'); i++) {
        if (i == MAX_LEADING_EMPTY_LINES) return HTTP_ERR_BAD_REQUEST;
        rc = eat_eol(&p, hend);
        if (rc == HTTP_INCOMPLETE) return hend < end ? HTTP_ERR_HEADERS_TOO_LARGE : HTTP_INCOMPLETE;
        if (rc) return rc;
    }

    /* Request line, scanned no further than the request-line limit. */
    const char *ls = p;
    const char *lend = (size_t)(hend - ls) > max_rl ? ls + max_rl : hend;
    const char *m = p;
    while (p < lend && tchar[(unsigned char)*p]) p++;
    if (p >= lend) goto line_short;
    if (*p != ' ' || p == m) return HTTP_ERR_BAD_REQUEST;
    req->method = m; req->method_len = (size_t)(p - m);
    const char *t = ++p;
    const char *q = NULL;
    while (p < lend && uchar[(unsigned char)*p] && *p != '?') p++;
    if (p < lend && *p == '?') {
        q = p++;
        while (p < lend && uchar[(unsigned char)*p]) p++;
    }
    if (p >= lend) goto line_short;
    if (*p != ' ' || p == t) return HTTP_ERR_BAD_REQUEST;
    req->target = t; req->target_len = (size_t)(p - t);
    p++;
    if (lend - p < 8) goto line_short;
    if ((rc = parse_version(p, &req->version_minor))) return rc;
    p += 8;
    /* The line end itself may lie past the request-line limit. */
    rc = eat_eol(&p, hend);
    if (rc == HTTP_INCOMPLETE) return hend < end ? HTTP_ERR_HEADERS_TOO_LARGE : HTTP_INCOMPLETE;
    if (rc) return rc;

    framing f = { .cl = -1 };
    rc = parse_fields(&p, hend, end, req->headers, &req->nheaders, &f);
    if (rc) return rc;

    /* Target forms: origin ("/..."), absolute ("http://h/..."), asterisk
     * ("*", OPTIONS), authority ("host:port", CONNECT). */
    req->query = NULL; req->query_len = 0;
    req->host = NULL; req->host_len = 0;
    size_t tl = req->target_len;
    if (t[0] == '/') {
        req->path = t;
        if (q) {
            req->path_len = (size_t)(q - t);
            req->query = q + 1; req->query_len = tl - req->path_len - 1;
        } else {
            req->path_len = tl;
        }
    } else if (tl == 1 && t[0] == '*' && req->method_len == 7 && !memcmp(req->method, "OPTIONS", 7)) {
        req->path = t; req->path_len = 1;
    } else if (req->method_len == 7 && !memcmp(req->method, "CONNECT", 7)) {
        if (!host_ok(t, tl)) return HTTP_ERR_BAD_REQUEST;
        req->path = t; req->path_len = tl;
    } else if (split_absolute(req, t, tl)) {
        return HTTP_ERR_BAD_REQUEST;
    }

    /* Host: required once in HTTP/1.1, never repeated, well-formed. */
    if (f.host_count > 1 || f.host_bad) return HTTP_ERR_BAD_REQUEST;
    if (f.host_count == 0 && req->version_minor == 1) return HTTP_ERR_BAD_REQUEST;
    if (!req->host && f.host_count) { req->host = f.host; req->host_len = f.host_len; }

    /* Framing: exactly one reading of the body length. */
    if (f.cl == -2) return HTTP_ERR_BAD_REQUEST;
    req->chunked = 0;
    if (f.te_seen) {
        if (f.cl != -1 || req->version_minor == 0 || f.te_bad) return HTTP_ERR_BAD_REQUEST;
        if (!f.te_chunked_last || f.te_chunked_count != 1) return HTTP_ERR_BAD_REQUEST;
        if (f.te_other) return HTTP_ERR_NOT_IMPLEMENTED;
        req->chunked = 1;
    }
    req->content_length = f.cl;
    req->keep_alive = req->version_minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
    req->expect_continue = req->version_minor == 1 && f.expect_continue;
    req->head_len = (size_t)(p - buf);
    return HTTP_OK;

line_short:
    /* Out of bytes inside the request line: the limit if it was the
     * request-line limit (or the head limit), else wait for more. */
    if (lend < hend) return HTTP_ERR_URI_TOO_LONG;
    if (hend < end) return HTTP_ERR_HEADERS_TOO_LARGE;
    return HTTP_INCOMPLETE;
}

/* ---- responses ---------------------------------------------------------- */

int http_parse_response(const char *buf, size_t len, http_response *resp, const http_limits *lim)
{
    size_t max_rl = lim && lim->max_request_line ? lim->max_request_line : DEF_MAX_REQUEST_LINE;
    size_t max_head = lim && lim->max_head ? lim->max_head : DEF_MAX_HEAD;
    const char *end = buf + len;
    const char *hend = len > max_head ? buf + max_head : end;
    const char *lend = (size_t)(hend - buf) > max_rl ? buf + max_rl : hend;
    const char *p = buf;
    int rc;

    resp->nheaders = 0;
    resp->head_len = 0;

    if (lend - p < 12) {
        /* Not enough for "HTTP/1.1 200" yet; reject early what cannot become one. */
        size_t n = (size_t)(lend - p);
        if (memcmp(p, "HTTP/1.1 200", n < 5 ? n : 5)) return HTTP_ERR_BAD_REQUEST;
        goto line_short;
    }
    if ((rc = parse_version(p, &resp->version_minor))) return rc;
    p += 8;
    if (p[0] != ' ' || p[1] < '1' || p[1] > '5' || p[2] < '0' || p[2] > '9' || p[3] < '0' || p[3] > '9')
        return HTTP_ERR_BAD_REQUEST;
    resp->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    p += 4;
    resp->reason = p; resp->reason_len = 0;
    if (p < lend && *p == ' ') {
        p++;
        resp->reason = p;
        while (p < lend && vchar[(unsigned char)*p]) p++;
        if (p >= lend) goto line_short;
        resp->reason_len = (size_t)(p - resp->reason);
    }
    rc = eat_eol(&p, hend);
    if (rc == HTTP_INCOMPLETE) goto line_short;
    if (rc) return rc;

    framing f = { .cl = -1 };
    rc = parse_fields(&p, hend, end, resp->headers, &resp->nheaders, &f);
    if (rc) return rc;

    resp->keep_alive = resp->version_minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
    resp->chunked = 0;
    int st = resp->status;
    if (st < 200 || st == 204 || st == 304) {
        resp->content_length = 0;
    } else if (f.te_seen) {
        if (f.te_bad) return HTTP_ERR_BAD_REQUEST;
        if (f.te_chunked_last && f.te_chunked_count == 1 && resp->version_minor == 1) {
            resp->chunked = 1;
        } else {
            resp->keep_alive = 0;      /* body runs until close */
        }
        resp->content_length = -1;
    } else {
        if (f.cl == -2) return HTTP_ERR_BAD_REQUEST;
        resp->content_length = f.cl;
        if (f.cl == -1) resp->keep_alive = 0;
    }
    resp->head_len = (size_t)(p - buf);
    return HTTP_OK;

line_short:
    if (lend < hend) return HTTP_ERR_URI_TOO_LONG;
    if (hend < end) return HTTP_ERR_HEADERS_TOO_LARGE;
    return HTTP_INCOMPLETE;
}

const http_header *http_find_header(const http_header *h, size_t n, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len != nl) continue;
        size_t j = 0;
        for (; j < nl; j++) {
            unsigned char a = (unsigned char)h[i].name[j], b = (unsigned char)name[j];
            if (a >= 'A' && a <= 'Z') a += 32;
            if (b >= 'A' && b <= 'Z') b += 32;
            if (a != b) break;
        }
        if (j == nl) return &h[i];
    }
    return NULL;
}

/* ---- chunked bodies ------------------------------------------------------ */

enum {
    CH_SIZE0 = 0,    /* expecting the first hex digit of a chunk size */
    CH_SIZE,         /* inside hex digits */
    CH_EXT_BWS,      /* after the size: BWS, then ';' or CR */
    CH_EXT,          /* inside extensions, until CR */
    CH_SIZE_LF,      /* CR seen after the size line */
    CH_DATA,         /* chunk data, `remaining` bytes left */
    CH_DATA_CR,      /* CRLF after chunk data */
    CH_DATA_LF,
    CH_TRAILER,      /* at the start of a trailer line (or the final CRLF) */
    CH_TRAILER_LINE, /* inside a trailer line */
    CH_TRAILER_LF,   /* CR seen ending a trailer line */
    CH_END_LF,       /* CR seen on the final empty line */
    CH_DONE,
    CH_ERROR,
};

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *consumed,
                      const char **data, size_t *data_len)
{
    size_t i = 0;
    *data = NULL; *data_len = 0;
    while (i < len) {
        unsigned char b = (unsigned char)in[i];
        switch (c->state) {
        case CH_SIZE0:
        case CH_SIZE: {
            int h = hexval(b);
            if (h >= 0) {
                if (c->remaining >> 59) goto bad;          /* > 2^63: overflow */
                c->remaining = (c->remaining << 4) | (uint64_t)h;
                c->state = CH_SIZE;
                if (++c->line_len > MAX_CHUNK_LINE) goto bad;
                i++;
                break;
            }
            if (c->state == CH_SIZE0) goto bad;             /* no digits */
            c->state = CH_EXT_BWS;
            break;                                          /* reread b there */
        }
        case CH_EXT_BWS:
            if (b == '\r') { c->state = CH_SIZE_LF; i++; break; }
            if (b == ';') c->state = CH_EXT;
            else if (!is_ows(b)) goto bad;                  /* "1x", "0x10", bare LF */
            if (++c->line_len > MAX_CHUNK_LINE) goto bad;
            i++;
            break;
        case CH_EXT:
            if (b == '\r') { c->state = CH_SIZE_LF; i++; break; }
            if (!vchar[b]) goto bad;                        /* control, bare LF */
            if (++c->line_len > MAX_CHUNK_LINE) goto bad;
            i++;
            break;
        case CH_SIZE_LF:
            if (b != '\n') goto bad;
            i++;
            c->line_len = 0;
            if (c->remaining == 0) {
                c->state = CH_TRAILER;
            } else {
                c->state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t avail = len - i;
            size_t n = c->remaining < avail ? (size_t)c->remaining : avail;
            *data = in + i; *data_len = n;
            c->remaining -= n;
            if (c->remaining == 0) c->state = CH_DATA_CR;
            *consumed = i + n;
            return HTTP_CHUNK_DATA;
        }
        case CH_DATA_CR:
            if (b != '\r') goto bad;
            c->state = CH_DATA_LF; i++;
            break;
        case CH_DATA_LF:
            if (b != '\n') goto bad;
            c->state = CH_SIZE0; i++;
            break;
        case CH_TRAILER:
            if (b == '\r') { c->state = CH_END_LF; i++; break; }
            c->state = CH_TRAILER_LINE;
            break;
        case CH_TRAILER_LINE:
            if (b == '\r') { c->state = CH_TRAILER_LF; i++; break; }
            if (!vchar[b]) goto bad;
            /* `remaining` (0 here) counts the whole trailer section. */
            if (++c->remaining > MAX_TRAILERS) goto bad;
            i++;
            break;
        case CH_TRAILER_LF:
            if (b != '\n') goto bad;
            c->state = CH_TRAILER; i++;
            break;
        case CH_END_LF:
            if (b != '\n') goto bad;
            c->state = CH_DONE; i++;
            c->remaining = 0;
            *consumed = i;
            return HTTP_CHUNK_DONE;
        case CH_DONE:
            *consumed = i;
            return HTTP_CHUNK_DONE;
        default:
            goto bad;
        }
    }
    *consumed = i;
    if (c->state == CH_DONE) return HTTP_CHUNK_DONE;
    if (c->state == CH_ERROR) return HTTP_ERR_BAD_REQUEST;
    return HTTP_INCOMPLETE;
bad:
    c->state = CH_ERROR;
    *consumed = i;
    return HTTP_ERR_BAD_REQUEST;
}

/* ---- reason phrases ------------------------------------------------------ */

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    case 511: return "Network Authentication Required";
    default:  return "Unknown";
    }
}

/* ---- percent-decoding ---------------------------------------------------- */

/* Also refuses a literal NUL, so the result is always a safe C string. */
long http_url_decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            if (n - i < 3) return -1;
            int hi = hexval((unsigned char)src[i + 1]), lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (!c) return -1;
        dst[o++] = (char)c;
    }
    dst[o] = 0;
    return (long)o;
}

/* ---- dates --------------------------------------------------------------- */

static const char wkday[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
static const char month[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Days since 1970-01-01 for a proleptic Gregorian date, and back
 * (Howard Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static inline void put2(char *o, unsigned v) { o[0] = (char)('0' + v / 10); o[1] = (char)('0' + v % 10); }

/* Times outside years 1970..9999 are clamped to them. */
void http_format_date(int64_t t, char *out)
{
    if (t < 0) t = 0;
    if (t > 253402300799LL) t = 253402300799LL;           /* 9999-12-31 23:59:59 */
    int64_t days = t / 86400, secs = t % 86400, y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    memcpy(out, wkday[days % 7], 3);
    out[3] = ','; out[4] = ' ';
    put2(out + 5, d);
    out[7] = ' ';
    memcpy(out + 8, month[m - 1], 3);
    out[11] = ' ';
    put2(out + 12, (unsigned)(y / 100));
    put2(out + 14, (unsigned)(y % 100));
    out[16] = ' ';
    put2(out + 17, (unsigned)(secs / 3600));
    out[19] = ':';
    put2(out + 20, (unsigned)(secs / 60 % 60));
    out[22] = ':';
    put2(out + 23, (unsigned)(secs % 60));
    memcpy(out + 25, " GMT", 5);                           /* with the NUL */
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (!memcmp(s, month[i], 3)) return i + 1;
    return 0;
}

static int wkday_of(const char *s, size_t n)
{
    static const char *const longname[7] = { "Thursday", "Friday", "Saturday", "Sunday",
                                             "Monday", "Tuesday", "Wednesday" };
    for (int i = 0; i < 7; i++) {
        if (n == 3 && !memcmp(s, wkday[i], 3)) return i;
        if (n == strlen(longname[i]) && !memcmp(s, longname[i], n)) return i;
    }
    return -1;
}

/* hh:mm:ss at s (8 bytes). */
static int64_t parse_hms(const char *s)
{
    if (s[2] != ':' || s[5] != ':') return -1;
    int h = digits(s, 2), mi = digits(s + 3, 2), se = digits(s + 6, 2);
    if (h < 0 || mi < 0 || se < 0 || h > 23 || mi > 59 || se > 60) return -1;
    return h * 3600 + mi * 60 + (se == 60 ? 59 : se);
}

static int64_t make_time(int y, int m, int d, int64_t hms)
{
    static const unsigned char mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (y < 0 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] || hms < 0) return -1;
    if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) return -1;
    int64_t t = days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + hms;
    return t < 0 ? -1 : t;
}

/* Accepts the three forms RFC 9110 5.6.7 requires recipients to read:
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
 *   RFC 850      "Sunday, 06-Nov-94 08:49:37 GMT" (yy < 70 is 20yy)
 *   asctime      "Sun Nov  6 08:49:37 1994"
 * The weekday must be a valid name but is not checked against the date. */
int64_t http_parse_date(const char *s, size_t n)
{
    if (n == 29) {
        if (wkday_of(s, 3) < 0 || memcmp(s + 3, ", ", 2) || s[7] != ' ' || s[11] != ' ' ||
            s[16] != ' ' || memcmp(s + 25, " GMT", 4))
            return -1;
        int d = digits(s + 5, 2), m = month_of(s + 8), y = digits(s + 12, 4);
        if (d < 0 || y < 0) return -1;
        return make_time(y, m, d, parse_hms(s + 17));
    }
    if (n == 24) {
        if (wkday_of(s, 3) < 0 || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ')
            return -1;
        int m = month_of(s + 4);
        int d = s[8] == ' ' ? digits(s + 9, 1) : digits(s + 8, 2);
        int y = digits(s + 20, 4);
        if (d < 0 || y < 0) return -1;
        return make_time(y, m, d, parse_hms(s + 11));
    }
    /* RFC 850: weekday name, ", dd-Mon-yy hh:mm:ss GMT" (24 bytes). */
    const char *c = memchr(s, ',', n < 10 ? n : 10);
    if (!c) return -1;
    size_t wl = (size_t)(c - s);
    if (wkday_of(s, wl) < 0 || n != wl + 24) return -1;
    const char *r = c + 1;
    if (r[0] != ' ' || r[3] != '-' || r[7] != '-' || r[10] != ' ' || memcmp(r + 19, " GMT", 4))
        return -1;
    int d = digits(r + 1, 2), m = month_of(r + 4), yy = digits(r + 8, 2);
    if (d < 0 || yy < 0) return -1;
    return make_time(yy < 70 ? 2000 + yy : 1900 + yy, m, d, parse_hms(r + 11));
}
