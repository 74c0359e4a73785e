/* range.c - Range parsing, entity-tags and conditional-request evaluation
 * for static files (RFC 9110). See range.h for the rules.
 *
 * Everything here is a pure function over length-delimited strings: the
 * Range set is walked once, element by element, counting satisfiable ranges
 * without storing them; entity-tag lists are walked tag by tag (commas may
 * appear inside quotes, so the list is not split on commas). Numbers
 * saturate at UINT64_MAX instead of overflowing, which keeps the meaning of
 * huge positions ("beyond the end"). */
#include "http/range.h"

#include <stdio.h>
#include <string.h>

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

/* 1*DIGIT at v[*i]; saturating. Returns 0 if there is no digit. */
static int read_num(const char *v, size_t n, size_t *i, uint64_t *out)
{
    size_t s = *i;
    uint64_t x = 0;
    while (*i < n && v[*i] >= '0' && v[*i] <= '9') {
        unsigned d = (unsigned)(v[*i] - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
        (*i)++;
    }
    *out = x;
    return *i > s;
}

int http_range_parse(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last)
{
    size_t i = 0;
    if (!v || n < 6) return HTTP_RANGE_FULL;
    static const char unit[] = "bytes=";
    for (; i < 6; i++) {
        char c = v[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != unit[i]) return HTTP_RANGE_FULL;
    }
    int nsat = 0, nspecs = 0;
    uint64_t f = 0, l = 0;
    while (i <= n) {
        while (i < n && is_ows(v[i])) i++;
        if (i == n || v[i] == ',') {                 /* empty list element */
            i++;
            continue;
        }
        uint64_t a, b;
        int sat = 0;
        nspecs++;
        if (v[i] == '-') {                           /* suffix-range */
            i++;
            if (!read_num(v, n, &i, &b)) return HTTP_RANGE_FULL;
            if (b > 0 && size > 0) {
                sat = 1;
                a = b >= size ? 0 : size - b;
                b = size - 1;
            }
        } else {
            if (!read_num(v, n, &i, &a)) return HTTP_RANGE_FULL;
            if (i >= n || v[i] != '-') return HTTP_RANGE_FULL;
            i++;
            if (read_num(v, n, &i, &b)) {
                if (b < a) return HTTP_RANGE_FULL;   /* invalid range-spec */
            } else {
                b = UINT64_MAX;
            }
            if (a < size) {
                sat = 1;
                if (b >= size) b = size - 1;
            }
        }
        while (i < n && is_ows(v[i])) i++;
        if (i < n && v[i] != ',') return HTTP_RANGE_FULL;
        i++;
        if (sat) { nsat++; f = a; l = b; }
    }
    if (!nspecs) return HTTP_RANGE_FULL;
    if (!nsat) return HTTP_RANGE_UNSATISFIABLE;
    if (nsat > 1) return HTTP_RANGE_FULL;
    *first = f;
    *last = l;
    return HTTP_RANGE_PARTIAL;
}

int http_content_range(char *out, int result, uint64_t first, uint64_t last, uint64_t size)
{
    if (result == HTTP_RANGE_PARTIAL)
        return snprintf(out, HTTP_CONTENT_RANGE_MAX, "bytes %llu-%llu/%llu", (unsigned long long)first,
                        (unsigned long long)last, (unsigned long long)size);
    return snprintf(out, HTTP_CONTENT_RANGE_MAX, "bytes */%llu", (unsigned long long)size);
}

/* Lower-case hex of v at out; returns the digits written (no printf: this
 * runs for every static response). */
static int put_hex(char *out, uint64_t v)
{
    static const char hx[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do { tmp[n++] = hx[v & 15]; v >>= 4; } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

int http_etag(char *out, uint64_t ino, uint64_t size, int64_t mtime_ns)
{
    int n = 0;
    out[n++] = '"';
    n += put_hex(out + n, ino);
    out[n++] = '-';
    n += put_hex(out + n, size);
    out[n++] = '-';
    n += put_hex(out + n, (uint64_t)mtime_ns);
    out[n++] = '"';
    out[n] = 0;
    return n;
}

/* Next entity-tag in a list at v[*i]: sets *tag, *len to the quoted part
 * (quotes included) and *weak. Returns 1, 0 at the end, -1 if malformed. */
static int next_etag(const char *v, size_t n, size_t *i, const char **tag, size_t *len, int *weak)
{
    size_t p = *i;
    for (;;) {                                       /* skip OWS and empty elements */
        while (p < n && is_ows(v[p])) p++;
        if (p < n && v[p] == ',') { p++; continue; }
        break;
    }
    if (p == n) { *i = p; return 0; }
    *weak = 0;
    if (n - p >= 2 && v[p] == 'W' && v[p + 1] == '/') { *weak = 1; p += 2; }
    if (p >= n || v[p] != '"') return -1;
    size_t s = p++;
    while (p < n && v[p] != '"') {
        unsigned char c = (unsigned char)v[p];
        if (c < 0x21 || c == 0x7f) return -1;       /* etagc: %x21 / %x23-7E / obs-text */
        p++;
    }
    if (p >= n) return -1;
    p++;
    *tag = v + s;
    *len = p - s;
    while (p < n && is_ows(v[p])) p++;
    if (p < n && v[p] != ',') return -1;
    *i = p;
    return 1;
}

int http_etag_match(const char *v, size_t n, const char *etag, int weak)
{
    if (!v || !etag) return 0;
    size_t el = strlen(etag);
    int etag_weak = 0;
    if (el >= 2 && etag[0] == 'W' && etag[1] == '/') { etag_weak = 1; etag += 2; el -= 2; }
    size_t s = 0, e = n;
    while (s < e && is_ows(v[s])) s++;
    while (e > s && is_ows(v[e - 1])) e--;
    if (e - s == 1 && v[s] == '*') return 1;
    size_t i = 0;
    const char *t; size_t tl; int tw;
    int rc, hit = 0;
    while ((rc = next_etag(v, n, &i, &t, &tl, &tw)) == 1) {
        if (!weak && (tw || etag_weak)) continue;
        if (tl == el && !memcmp(t, etag, el)) hit = 1;
    }
    return rc == 0 && hit;
}

int http_if_range(const char *v, size_t n, const char *etag, int64_t mtime)
{
    if (!v) return 1;
    if (n >= 1 && (v[0] == '"' || (n >= 2 && v[0] == 'W' && v[1] == '/'))) {
        /* exactly one entity-tag, compared strongly */
        size_t i = 0;
        const char *t; size_t tl; int tw;
        if (next_etag(v, n, &i, &t, &tl, &tw) != 1 || i != n || tw || !etag) return 0;
        if (etag[0] == 'W') return 0;
        return tl == strlen(etag) && !memcmp(t, etag, tl);
    }
    int64_t d = http_parse_date(v, n);
    return d >= 0 && d == mtime;
}

int http_static_status(const char *method, size_t method_len,
                       const http_header *h, size_t nh,
                       const char *etag, int64_t mtime, uint64_t size,
                       uint64_t *first, uint64_t *last)
{
    int is_get = method_len == 3 && !memcmp(method, "GET", 3);
    int is_head = method_len == 4 && !memcmp(method, "HEAD", 4);
    const http_header *x;

    if ((x = http_find_header(h, nh, "If-Match"))) {
        if (!http_etag_match(x->value, x->value_len, etag, 0)) return 412;
    } else if ((x = http_find_header(h, nh, "If-Unmodified-Since"))) {
        int64_t d = http_parse_date(x->value, x->value_len);
        if (d >= 0 && mtime > d) return 412;
    }
    if ((x = http_find_header(h, nh, "If-None-Match"))) {
        if (http_etag_match(x->value, x->value_len, etag, 1)) return is_get || is_head ? 304 : 412;
    } else if ((is_get || is_head) && (x = http_find_header(h, nh, "If-Modified-Since"))) {
        int64_t d = http_parse_date(x->value, x->value_len);
        if (d >= 0 && mtime <= d) return 304;
    }
    if (is_get && (x = http_find_header(h, nh, "Range"))) {
        const http_header *ir = http_find_header(h, nh, "If-Range");
        if (ir && !http_if_range(ir->value, ir->value_len, etag, mtime)) return 200;
        switch (http_range_parse(x->value, x->value_len, size, first, last)) {
        case HTTP_RANGE_PARTIAL: return 206;
        case HTTP_RANGE_UNSATISFIABLE: return 416;
        default: return 200;
        }
    }
    return 200;
}
