/* buf.c - growable byte buffer. See buf.h. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) { fputs("cyclozzo: out of memory\n", stderr); abort(); }
    return q;
}

void buf_free(buf *b) { free(b->data); b->data = NULL; b->len = b->off = b->cap = 0; }
void buf_reset(buf *b) { b->len = b->off = 0; }

void buf_reserve(buf *b, size_t extra)
{
    if (b->cap && b->len + extra + 1 <= b->cap) return;
    if (b->off && b->off == b->len) { b->off = b->len = 0; if (b->cap && extra + 1 <= b->cap) return; }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + extra + 1) ncap *= 2;
    b->data = xrealloc(b->data, ncap);
    b->cap = ncap;
}

void buf_append(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

void buf_puts(buf *b, const char *s) { buf_append(b, s, strlen(s)); }
void buf_putc(buf *b, char c) { buf_append(b, &c, 1); }

void buf_put_dec(buf *b, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do { tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10); v /= 10; } while (v);
    buf_append(b, tmp + sizeof tmp - n, (size_t)n);
}

void buf_put_hex(buf *b, uint64_t v)
{
    static const char hx[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do { tmp[sizeof tmp - 1 - n++] = hx[v & 15]; v >>= 4; } while (v);
    buf_append(b, tmp + sizeof tmp - n, (size_t)n);
}

void buf_put_b64(buf *b, const void *p, size_t n, int url)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char web[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *al = url ? web : std;
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i += 3) {
        size_t k = n - i < 3 ? n - i : 3;
        uint32_t v = (uint32_t)s[i] << 16 | (k > 1 ? (uint32_t)s[i + 1] << 8 : 0) | (k > 2 ? s[i + 2] : 0);
        char q[4] = {al[v >> 18 & 63], al[v >> 12 & 63], k > 1 ? al[v >> 6 & 63] : '=', k > 2 ? al[v & 63] : '='};
        buf_append(b, q, url ? k + 1 : 4);
    }
}

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

int buf_get_b64url(buf *b, const char *s, size_t n)
{
    if (n % 4 == 1) return -1;
    uint32_t acc = 0;
    int bits = 0;
    buf_reserve(b, n / 4 * 3 + 3);
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_putc(b, (char)(acc >> bits));
            acc &= (1u << bits) - 1;
        }
    }
    return acc ? -1 : 0;   /* leftover bits must be zero */
}

void buf_cat(buf *b, ...)
{
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *));) buf_append(b, s, strlen(s));
    va_end(ap);
}

void buf_printf(buf *b, const char *fmt, ...)
{
    /* Format straight into the spare room; grow and redo only if it did not fit. */
    buf_reserve(b, 128);
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= room) {
        buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_consume(buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

void buf_compact(buf *b)
{
    if (!b->off) return;
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

char *buf_cstr(buf *b)
{
    buf_reserve(b, 0);
    b->data[b->len] = 0;
    return b->data + b->off;
}

char *buf_detach(buf *b, size_t *len)
{
    buf_compact(b);
    buf_reserve(b, 0);
    b->data[b->len] = 0;
    char *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->off = b->cap = 0;
    return p;
}
