/* pb.c - protobuf wire codec. See pb.h. */
#include "proto/pb.h"

#include <string.h>

#define PB_MAX_DEPTH 64

void pb_reader_init(pb_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->err = 0;
    r->depth = 0;
}

static int fail(pb_reader *r) { r->err = 1; return -1; }

static int read_varint(pb_reader *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return fail(r);
        uint8_t c = *r->p++;
        if (shift == 63 && c > 1) return fail(r);
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) { *v = x; return 0; }
    }
    return fail(r);
}

int pb_next(pb_reader *r, uint32_t *field, int *wt)
{
    if (r->err) return -1;
    if (r->p >= r->end) return 0;
    uint64_t tag;
    if (read_varint(r, &tag) < 0) return -1;
    uint64_t f = tag >> 3;
    if (f == 0 || f > 536870911u) return fail(r);
    *field = (uint32_t)f;
    *wt = (int)(tag & 7);
    if (*wt == 6 || *wt == 7) return fail(r);
    return 1;
}

int pb_varint(pb_reader *r, int wt, uint64_t *v)
{
    if (r->err || wt != PB_VARINT) return fail(r);
    return read_varint(r, v);
}

int pb_int64(pb_reader *r, int wt, int64_t *v)
{
    uint64_t u;
    if (pb_varint(r, wt, &u) < 0) return -1;
    *v = (int64_t)u;
    return 0;
}

int pb_int32(pb_reader *r, int wt, int32_t *v)
{
    uint64_t u;
    if (pb_varint(r, wt, &u) < 0) return -1;
    *v = (int32_t)(uint32_t)u;
    return 0;
}

int pb_bool(pb_reader *r, int wt, int *v)
{
    uint64_t u;
    if (pb_varint(r, wt, &u) < 0) return -1;
    *v = u != 0;
    return 0;
}

int pb_fixed64(pb_reader *r, int wt, uint64_t *v)
{
    if (r->err || wt != PB_FIXED64 || r->end - r->p < 8) return fail(r);
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | r->p[i];
    r->p += 8;
    *v = x;
    return 0;
}

int pb_fixed32(pb_reader *r, int wt, uint32_t *v)
{
    if (r->err || wt != PB_FIXED32 || r->end - r->p < 4) return fail(r);
    uint32_t x = 0;
    for (int i = 3; i >= 0; i--) x = (x << 8) | r->p[i];
    r->p += 4;
    *v = x;
    return 0;
}

int pb_double(pb_reader *r, int wt, double *v)
{
    uint64_t u;
    if (pb_fixed64(r, wt, &u) < 0) return -1;
    memcpy(v, &u, 8);
    return 0;
}

int pb_bytes(pb_reader *r, int wt, const uint8_t **p, size_t *n)
{
    uint64_t len;
    if (r->err || wt != PB_LEN) return fail(r);
    if (read_varint(r, &len) < 0) return -1;
    if (len > (uint64_t)(r->end - r->p)) return fail(r);
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

int pb_sub(pb_reader *r, int wt, pb_reader *sub)
{
    const uint8_t *p;
    size_t n;
    if (r->depth >= PB_MAX_DEPTH) return fail(r);
    if (pb_bytes(r, wt, &p, &n) < 0) return -1;
    pb_reader_init(sub, p, n);
    sub->depth = r->depth + 1;
    return 0;
}

/* Skips one value; for a start-group, everything up to its matching end. */
static int skip_value(pb_reader *r, int wt, uint32_t field, int depth)
{
    uint64_t u;
    const uint8_t *p;
    size_t n;
    switch (wt) {
    case PB_VARINT: return read_varint(r, &u);
    case PB_FIXED64: if (r->end - r->p < 8) return fail(r); r->p += 8; return 0;
    case PB_FIXED32: if (r->end - r->p < 4) return fail(r); r->p += 4; return 0;
    case PB_LEN: return pb_bytes(r, wt, &p, &n);
    case PB_SGROUP:
        if (depth >= PB_MAX_DEPTH) return fail(r);
        for (;;) {
            uint32_t f;
            int w;
            int k = pb_next(r, &f, &w);
            if (k <= 0) return fail(r);          /* end of input inside a group */
            if (w == PB_EGROUP) return f == field ? 0 : fail(r);
            if (skip_value(r, w, f, depth + 1) < 0) return -1;
        }
    default: return fail(r);
    }
}

int pb_skip(pb_reader *r, int wt, uint32_t field)
{
    if (r->err) return -1;
    if (wt == PB_EGROUP) return fail(r);
    return skip_value(r, wt, field, r->depth);
}

int pb_group(pb_reader *r, int wt, uint32_t field, pb_reader *sub)
{
    if (r->err || wt != PB_SGROUP || r->depth >= PB_MAX_DEPTH) return fail(r);
    const uint8_t *start = r->p;
    for (;;) {
        const uint8_t *before = r->p;
        uint32_t f;
        int w;
        int k = pb_next(r, &f, &w);
        if (k <= 0) return fail(r);
        if (w == PB_EGROUP) {
            if (f != field) return fail(r);
            pb_reader_init(sub, start, (size_t)(before - start));
            sub->depth = r->depth + 1;
            return 0;
        }
        if (skip_value(r, w, f, r->depth + 1) < 0) return -1;
    }
}

/* Writer */

void pb_put_varint_raw(buf *b, uint64_t v)
{
    uint8_t tmp[10];
    int n = 0;
    do {
        tmp[n] = v & 0x7f;
        v >>= 7;
        if (v) tmp[n] |= 0x80;
        n++;
    } while (v);
    buf_append(b, tmp, n);
}

void pb_put_tag(buf *b, uint32_t field, int wt) { pb_put_varint_raw(b, ((uint64_t)field << 3) | (unsigned)wt); }
void pb_put_uint(buf *b, uint32_t field, uint64_t v) { pb_put_tag(b, field, PB_VARINT); pb_put_varint_raw(b, v); }
void pb_put_int(buf *b, uint32_t field, int64_t v) { pb_put_uint(b, field, (uint64_t)v); }
void pb_put_bool(buf *b, uint32_t field, int v) { pb_put_uint(b, field, v ? 1 : 0); }

void pb_put_fixed64(buf *b, uint32_t field, uint64_t v)
{
    uint8_t tmp[8];
    for (int i = 0; i < 8; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    pb_put_tag(b, field, PB_FIXED64);
    buf_append(b, tmp, 8);
}

void pb_put_fixed32(buf *b, uint32_t field, uint32_t v)
{
    uint8_t tmp[4];
    for (int i = 0; i < 4; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    pb_put_tag(b, field, PB_FIXED32);
    buf_append(b, tmp, 4);
}

void pb_put_double(buf *b, uint32_t field, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_put_fixed64(b, field, u);
}

void pb_put_bytes(buf *b, uint32_t field, const void *p, size_t n)
{
    pb_put_tag(b, field, PB_LEN);
    pb_put_varint_raw(b, n);
    buf_append(b, p, n);
}

void pb_put_str(buf *b, uint32_t field, const char *s) { pb_put_bytes(b, field, s, strlen(s)); }

/* Reserve one length byte; pb_end widens it if the body is 128 bytes or more. */
size_t pb_begin(buf *b, uint32_t field)
{
    pb_put_tag(b, field, PB_LEN);
    buf_putc(b, 0);
    return b->len;
}

void pb_end(buf *b, size_t mark)
{
    size_t body = b->len - mark;
    uint8_t tmp[10];
    int n = 0;
    uint64_t v = body;
    do { tmp[n] = v & 0x7f; v >>= 7; if (v) tmp[n] |= 0x80; n++; } while (v);
    if (n > 1) {
        buf_reserve(b, (size_t)n - 1);
        memmove(b->data + mark + n - 1, b->data + mark, body);
        b->len += (size_t)n - 1;
    }
    memcpy(b->data + mark - 1, tmp, (size_t)n);
}

void pb_group_begin(buf *b, uint32_t field) { pb_put_tag(b, field, PB_SGROUP); }
void pb_group_end(buf *b, uint32_t field) { pb_put_tag(b, field, PB_EGROUP); }
