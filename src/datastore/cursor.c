/* cursor.c - query cursors: fingerprints and the CompiledCursor wire form.
 *
 * A cursor handed to the client is a CompiledCursor whose
 * absolute_position (field 3) carries one opaque blob in its key (field 1):
 *
 *   "cz" version(1) fingerprint(8, big-endian) flags(1) n_orders(1) dirs(4)
 *   n_orders x (varint length, ascending-encoded sort value)
 *   varint length, encoded key path
 *
 * flags: bit 0 = has a position (else: the start of the query),
 *        bit 1 = inclusive (the row at the position is part of what follows).
 * dirs:  bit i = sort value i descending; bit 30 = the last value is the
 *        key (a __key__ sort in an index); bit 31 = key-ordered scan
 *        running backwards.
 * The fingerprint hashes the query's shape (app, namespace, kind, ancestor,
 * filters, sort properties up to __key__, projection, grouping), so a
 * cursor from one query is refused for another; sort directions are not
 * hashed so a cursor may resume a query whose sort order is reversed, as
 * App Engine allows.
 * Every length is checked on decode: the blob comes from the client. */
#include "datastore/query.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "proto/pb.h"

#define CURSOR_VERSION 1

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    uint32_t n = s ? (uint32_t)strlen(s) : 0xffffffffu;
    h = fnv(h, &n, sizeof n);
    return s ? fnv(h, s, strlen(s)) : h;
}

static uint64_t fnv_bytes(uint64_t h, dsq_bytes b)
{
    uint32_t n = (uint32_t)b.n;
    h = fnv(h, &n, sizeof n);
    return fnv(h, b.p, b.n);
}

uint64_t dsq_fingerprint(const dsq_query *q)
{
    uint64_t h = 14695981039346656037ULL;
    h = fnv_str(h, q->app);
    h = fnv_str(h, q->ns);
    h = fnv_str(h, q->kind);
    h = fnv_bytes(h, q->ancestor);
    for (size_t i = 0; i < q->n_filters; i++) {
        const dsq_filter *f = &q->filters[i];
        uint32_t op = (uint32_t)f->op;
        h = fnv(h, &op, sizeof op);
        h = fnv_str(h, f->prop);
        for (size_t j = 0; j < f->n_values; j++) h = fnv_bytes(h, f->values[j]);
    }
    h = fnv(h, "|o", 2);
    /* Up to __key__: the key always breaks ties last, and orders after it
     * are moot, so order(x) and order(-x, -__key__) share cursors. */
    for (size_t i = 0; i < q->n_orders && strcmp(q->orders[i].prop, "__key__"); i++)
        h = fnv_str(h, q->orders[i].prop);
    h = fnv(h, "|p", 2);
    for (size_t i = 0; i < q->n_projection; i++) h = fnv_str(h, q->projection[i]);
    h = fnv(h, "|g", 2);
    for (size_t i = 0; i < q->n_group_by; i++) h = fnv_str(h, q->group_by[i]);
    return h;
}

void dsq_cursor_encode(const dsq_cursor *c, buf *out)
{
    buf blob = BUF_INIT;
    buf_append(&blob, "cz", 2);
    buf_putc(&blob, CURSOR_VERSION);
    for (int i = 7; i >= 0; i--) buf_putc(&blob, (char)(c->fingerprint >> (8 * i)));
    buf_putc(&blob, (char)((c->has_position ? 1 : 0) | (c->inclusive ? 2 : 0)));
    buf_putc(&blob, (char)c->n_orders);
    for (int i = 3; i >= 0; i--) buf_putc(&blob, (char)(c->dirs >> (8 * i)));
    if (c->has_position) {
        for (unsigned i = 0; i < c->n_orders; i++) {
            pb_put_varint_raw(&blob, c->values[i].n);
            buf_append(&blob, c->values[i].p, c->values[i].n);
        }
        pb_put_varint_raw(&blob, c->key.n);
        buf_append(&blob, c->key.p, c->key.n);
    }
    size_t m = pb_begin(out, 3);
    pb_put_bytes(out, 1, buf_rp(&blob), buf_unread(&blob));
    pb_end(out, m);
    buf_free(&blob);
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -1;
}

static int get_chunk(const uint8_t **p, const uint8_t *end, dsq_bytes *out)
{
    uint64_t n;
    if (get_varint(p, end, &n) < 0 || n > (uint64_t)(end - *p)) return -1;
    out->p = *p; out->n = (size_t)n;
    *p += n;
    return 0;
}

int dsq_cursor_decode(const uint8_t *data, size_t len, dsq_cursor *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    pb_reader r, sub;
    pb_reader_init(&r, data, len);
    uint32_t field; int wt, rc;
    const uint8_t *blob = NULL; size_t blob_len = 0;
    while ((rc = pb_next(&r, &field, &wt)) > 0) {
        if (field == 3) {
            if (pb_sub(&r, wt, &sub) < 0) break;
            uint32_t f2; int wt2, rc2;
            while ((rc2 = pb_next(&sub, &f2, &wt2)) > 0) {
                if (f2 == 1) { if (pb_bytes(&sub, wt2, &blob, &blob_len) < 0) break; }
                else if (pb_skip(&sub, wt2, f2) < 0) break;
            }
            if (rc2 < 0 || sub.err) { r.err = 1; break; }
        } else if (pb_skip(&r, wt, field) < 0) break;
    }
    if (rc < 0 || r.err) { set_err(err, errlen, "the query cursor is malformed"); return -1; }
    if (!blob || blob_len < 2 || memcmp(blob, "cz", 2) != 0) {
        set_err(err, errlen, "the query cursor was not made by this datastore");
        return -1;
    }
    if (blob_len < 17 || blob[2] != CURSOR_VERSION) {
        set_err(err, errlen, "the query cursor has an unsupported version");
        return -1;
    }
    c->owned = xmalloc(blob_len);
    memcpy(c->owned, blob, blob_len);
    const uint8_t *p = c->owned + 3, *end = c->owned + blob_len;
    for (int i = 0; i < 8; i++) c->fingerprint = (c->fingerprint << 8) | *p++;
    uint8_t flags = *p++;
    c->has_position = flags & 1;
    c->inclusive = (flags >> 1) & 1;
    c->n_orders = *p++;
    for (int i = 0; i < 4; i++) c->dirs = (c->dirs << 8) | *p++;
    if (flags & ~3u || c->n_orders > DSQ_MAX_ORDERS) goto bad;
    if (c->has_position) {
        for (unsigned i = 0; i < c->n_orders; i++)
            if (get_chunk(&p, end, &c->values[i]) < 0) goto bad;
        if (get_chunk(&p, end, &c->key) < 0) goto bad;
    }
    if (p != end) goto bad;
    return 0;
bad:
    dsq_cursor_free(c);
    set_err(err, errlen, "the query cursor is malformed");
    return -1;
}

void dsq_cursor_free(dsq_cursor *c)
{
    free(c->owned);
    memset(c, 0, sizeof *c);
}
