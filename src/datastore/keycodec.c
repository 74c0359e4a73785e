/* keycodec.c - order-preserving encodings of datastore keys and values.
 * The formats and the row layout are described in keycodec.h.
 *
 * Encoders append to a buf; decoders walk a pointer forward and fail
 * (return -1) rather than read past the end, so index rows from disk can be
 * parsed without trusting them. */
#include "datastore/keycodec.h"

#include <math.h>
#include <string.h>
#include "proto/pb.h"
#include "core/util.h"
#include <stdlib.h>

/* ---- primitives ---- */

void kc_put_str(buf *b, const void *p, size_t n)
{
    const uint8_t *s = p;
    buf_reserve(b, n + 2);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) { buf_putc(b, 0); buf_putc(b, (char)0xff); }
        else buf_putc(b, (char)s[i]);
    }
    buf_putc(b, 0);
    buf_putc(b, 1);
}

void kc_put_cstr(buf *b, const char *s) { kc_put_str(b, s, strlen(s)); }

static void put_u64(buf *b, uint64_t u)
{
    uint8_t o[8];
    for (int i = 0; i < 8; i++) o[i] = (uint8_t)(u >> (56 - 8 * i));
    buf_append(b, o, 8);
}

void kc_put_i64(buf *b, int64_t v) { put_u64(b, (uint64_t)v ^ (UINT64_C(1) << 63)); }

void kc_put_double(buf *b, double d)
{
    uint64_t u;
    if (isnan(d)) d = NAN;             /* one NaN: the positive quiet one */
    memcpy(&u, &d, 8);
    if (u >> 63) u = ~u;               /* negative: flip everything */
    else u ^= UINT64_C(1) << 63;       /* positive: flip the sign bit */
    put_u64(b, u);
}

static void put_elem(buf *b, const ds_elem *e)
{
    buf_putc(b, 2);
    kc_put_str(b, e->type.p, e->type.n);
    if (e->has_name) { buf_putc(b, 2); kc_put_str(b, e->name.p, e->name.n); }
    else if (e->has_id) { buf_putc(b, 1); kc_put_i64(b, e->id); }
    else buf_putc(b, 0);
}

void kc_put_path_prefix(buf *b, const ds_elem *e, size_t n)
{
    for (size_t i = 0; i < n; i++) put_elem(b, &e[i]);
}

void kc_put_path(buf *b, const ds_elem *e, size_t n)
{
    kc_put_path_prefix(b, e, n);
    buf_putc(b, 1);
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= UINT64_C(0x100000001b3); }
    return h;
}

/* A string value: like kc_put_str, but cut once the escaped bytes would pass
 * KC_MAX_INDEXED_STRING, then 00 02 and a 64-bit hash of the whole value. */
static void put_value_str(buf *b, const uint8_t *s, size_t n)
{
    size_t esc = 0, cut = 0;
    while (cut < n && esc + (s[cut] ? 1u : 2u) <= KC_MAX_INDEXED_STRING) esc += s[cut++] ? 1 : 2;
    if (cut == n) { kc_put_str(b, s, n); return; }
    for (size_t i = 0; i < cut; i++) {
        if (s[i] == 0) { buf_putc(b, 0); buf_putc(b, (char)0xff); }
        else buf_putc(b, (char)s[i]);
    }
    buf_putc(b, 0);
    buf_putc(b, 2);
    put_u64(b, fnv1a64(s, n));
}

/* Read a string value; 1 when it was cut (out then holds the kept bytes). */
static int get_value_str(const uint8_t **pp, const uint8_t *end, buf *out)
{
    const uint8_t *p = *pp;
    while (p < end) {
        uint8_t c = *p++;
        if (c != 0) { if (out) buf_putc(out, (char)c); continue; }
        if (p >= end) return -1;
        uint8_t d = *p++;
        if (d == 0xff) { if (out) buf_putc(out, 0); continue; }
        if (d == 1) { *pp = p; return 0; }
        if (d == 2 && end - p >= 8) { *pp = p + 8; return 1; }
        return -1;
    }
    return -1;
}

static void put_value_asc(buf *b, const ds_value *v)
{
    switch (v->type) {
    case DSV_NULL: buf_putc(b, (char)KC_T_NULL); break;
    case DSV_INT: buf_putc(b, (char)KC_T_INT); kc_put_i64(b, v->i); break;
    case DSV_BOOL: buf_putc(b, (char)KC_T_BOOL); buf_putc(b, v->b ? 1 : 0); break;
    case DSV_STRING: buf_putc(b, (char)KC_T_STRING); put_value_str(b, v->s.p, v->s.n); break;
    case DSV_DOUBLE: buf_putc(b, (char)KC_T_DOUBLE); kc_put_double(b, v->d); break;
    case DSV_POINT:
        buf_putc(b, (char)KC_T_POINT); kc_put_double(b, v->x); kc_put_double(b, v->y); break;
    case DSV_USER:
        buf_putc(b, (char)KC_T_USER);
        kc_put_str(b, v->user.email.p, v->user.email.n);
        kc_put_str(b, v->user.auth_domain.p, v->user.auth_domain.n);
        break;
    case DSV_REF:
        buf_putc(b, (char)KC_T_KEY);
        kc_put_str(b, v->ref.app.p, v->ref.app.n);
        kc_put_str(b, v->ref.ns.p, v->ref.ns.n);
        kc_put_path(b, v->ref.elems, v->ref.nelems);
        break;
    }
}

void kc_put_value(buf *b, const ds_value *v, int dir)
{
    size_t start = b->len;
    put_value_asc(b, v);
    if (dir == KC_DESC)
        for (size_t i = start; i < b->len; i++) b->data[i] = (char)~(uint8_t)b->data[i];
}

/* ---- decoders ---- */

int kc_get_str(const uint8_t **pp, const uint8_t *end, buf *out)
{
    const uint8_t *p = *pp;
    while (p < end) {
        uint8_t c = *p++;
        if (c != 0) { if (out) buf_putc(out, (char)c); continue; }
        if (p >= end) return -1;
        uint8_t d = *p++;
        if (d == 0xff) { if (out) buf_putc(out, 0); continue; }
        if (d == 1) { *pp = p; return 0; }
        return -1;
    }
    return -1;
}

static int get_u64(const uint8_t **pp, const uint8_t *end, uint64_t *u)
{
    if (end - *pp < 8) return -1;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | (*pp)[i];
    *pp += 8;
    *u = x;
    return 0;
}

int kc_get_i64(const uint8_t **pp, const uint8_t *end, int64_t *v)
{
    uint64_t u;
    if (get_u64(pp, end, &u) < 0) return -1;
    *v = (int64_t)(u ^ (UINT64_C(1) << 63));
    return 0;
}

int kc_get_double(const uint8_t **pp, const uint8_t *end, double *d)
{
    uint64_t u;
    if (get_u64(pp, end, &u) < 0) return -1;
    if (u >> 63) u ^= UINT64_C(1) << 63;
    else u = ~u;
    memcpy(d, &u, 8);
    return 0;
}

/* One path; elements re-encoded as Path.Element groups into out when given.
 * tag_group/tag_type... are the field numbers to use (Path or ReferenceValue). */
static int get_path(const uint8_t **pp, const uint8_t *end, buf *out,
                    uint32_t f_elem, uint32_t f_type, uint32_t f_id, uint32_t f_name)
{
    const uint8_t *p = *pp;
    buf tmp = BUF_INIT;
    int rc = -1;
    for (;;) {
        if (p >= end) goto done;
        uint8_t m = *p++;
        if (m == 1) break;
        if (m != 2) goto done;
        if (out) buf_reset(&tmp);
        if (kc_get_str(&p, end, out ? &tmp : NULL) < 0) goto done;
        if (out) { pb_group_begin(out, f_elem); pb_put_bytes(out, f_type, tmp.data, tmp.len); }
        if (p >= end) goto done;
        uint8_t k = *p++;
        if (k == 1) {
            int64_t id;
            if (kc_get_i64(&p, end, &id) < 0) goto done;
            if (out) pb_put_int(out, f_id, id);
        } else if (k == 2) {
            if (out) buf_reset(&tmp);
            if (kc_get_str(&p, end, out ? &tmp : NULL) < 0) goto done;
            if (out) pb_put_bytes(out, f_name, tmp.data, tmp.len);
        } else if (k != 0) goto done;
        if (out) pb_group_end(out, f_elem);
    }
    *pp = p;
    rc = 0;
done:
    buf_free(&tmp);
    return rc;
}

int kc_get_path(const uint8_t **pp, const uint8_t *end, buf *out)
{
    return get_path(pp, end, out, 1, 2, 3, 4);
}

/* Decode an ascending value from p (already un-inverted). */
static int get_value_asc(const uint8_t **pp, const uint8_t *end, buf *pv)
{
    const uint8_t *p = *pp;
    if (p >= end) return -1;
    uint8_t tag = *p++;
    buf tmp = BUF_INIT;
    int rc = -1, truncated = 0;
    switch (tag) {
    case KC_T_NULL: break;
    case KC_T_INT: {
        int64_t v;
        if (kc_get_i64(&p, end, &v) < 0) goto done;
        if (pv) pb_put_int(pv, 1, v);
        break;
    }
    case KC_T_BOOL:
        if (p >= end || *p > 1) goto done;
        if (pv) pb_put_bool(pv, 2, *p);
        p++;
        break;
    case KC_T_STRING: {
        int t = get_value_str(&p, end, pv ? &tmp : NULL);
        if (t < 0) goto done;
        if (pv) pb_put_bytes(pv, 3, tmp.data, tmp.len);
        truncated = t;
        break;
    }
    case KC_T_DOUBLE: {
        double d;
        if (kc_get_double(&p, end, &d) < 0) goto done;
        if (pv) pb_put_double(pv, 4, d);
        break;
    }
    case KC_T_POINT: {
        double x, y;
        if (kc_get_double(&p, end, &x) < 0 || kc_get_double(&p, end, &y) < 0) goto done;
        if (pv) { pb_group_begin(pv, 5); pb_put_double(pv, 6, x); pb_put_double(pv, 7, y); pb_group_end(pv, 5); }
        break;
    }
    case KC_T_USER: {
        buf dom = BUF_INIT;
        if (kc_get_str(&p, end, pv ? &tmp : NULL) < 0 || kc_get_str(&p, end, pv ? &dom : NULL) < 0) {
            buf_free(&dom);
            goto done;
        }
        if (pv) {
            pb_group_begin(pv, 8);
            pb_put_bytes(pv, 9, tmp.data, tmp.len);
            pb_put_bytes(pv, 10, dom.data, dom.len);
            pb_put_int(pv, 18, 0);
            pb_group_end(pv, 8);
        }
        buf_free(&dom);
        break;
    }
    case KC_T_KEY: {
        buf ns = BUF_INIT;
        if (kc_get_str(&p, end, pv ? &tmp : NULL) < 0 || kc_get_str(&p, end, pv ? &ns : NULL) < 0) {
            buf_free(&ns);
            goto done;
        }
        if (pv) {
            pb_group_begin(pv, 12);
            pb_put_bytes(pv, 13, tmp.data, tmp.len);
            if (ns.len) pb_put_bytes(pv, 20, ns.data, ns.len);
        }
        int r = get_path(&p, end, pv, 14, 15, 16, 17);
        buf_free(&ns);
        if (r < 0) goto done;
        if (pv) pb_group_end(pv, 12);
        break;
    }
    default: goto done;
    }
    *pp = p;
    rc = truncated;
done:
    buf_free(&tmp);
    return rc;
}

/* Length of the value starting at p, or -1. For descending values the bytes
 * are inverted first into a scratch copy. */
static int value_span(const uint8_t *p, const uint8_t *end, int dir, buf *pv, size_t *len)
{
    if (dir != KC_DESC) {
        const uint8_t *q = p;
        int r = get_value_asc(&q, end, pv);
        if (r < 0) return -1;
        *len = (size_t)(q - p);
        return r;
    }
    /* Values are bounded by the key size, so inverting the rest is cheap. */
    size_t n = (size_t)(end - p);
    uint8_t stackbuf[1024];
    uint8_t *inv = n <= sizeof stackbuf ? stackbuf : xmalloc(n);
    for (size_t i = 0; i < n; i++) inv[i] = (uint8_t)~p[i];
    const uint8_t *q = inv;
    int r = get_value_asc(&q, inv + n, pv);
    if (r >= 0) *len = (size_t)(q - inv);
    if (inv != stackbuf) free(inv);
    return r;
}

int kc_skip_value(const uint8_t **pp, const uint8_t *end, int dir)
{
    size_t len;
    if (value_span(*pp, end, dir, NULL, &len) < 0) return -1;
    *pp += len;
    return 0;
}

int kc_get_value(const uint8_t **pp, const uint8_t *end, int dir, buf *pv)
{
    size_t len;
    size_t mark = pv ? pv->len : 0;
    int r = value_span(*pp, end, dir, pv, &len);
    if (r < 0) { if (pv) pv->len = mark; return -1; }
    *pp += len;
    return r;
}

/* ---- row keys ---- */

void kc_ns_prefix(buf *b, int tag, ds_bytes app, ds_bytes ns)
{
    buf_putc(b, (char)tag);
    kc_put_str(b, app.p, app.n);
    kc_put_str(b, ns.p, ns.n);
}

void kc_entity_key(buf *b, ds_bytes app, ds_bytes ns, const ds_elem *path, size_t n)
{
    kc_ns_prefix(b, KC_ENTITY, app, ns);
    kc_put_path(b, path, n);
}

void kc_kind_prefix(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind)
{
    kc_ns_prefix(b, KC_KIND, app, ns);
    kc_put_str(b, kind.p, kind.n);
}

void kc_kind_key(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, const ds_elem *path, size_t n)
{
    kc_kind_prefix(b, app, ns, kind);
    kc_put_path(b, path, n);
}

void kc_prop_prefix(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, ds_bytes prop, int dir)
{
    kc_ns_prefix(b, KC_PROP, app, ns);
    kc_put_str(b, kind.p, kind.n);
    kc_put_str(b, prop.p, prop.n);
    buf_putc(b, (char)(dir == KC_DESC ? KC_DESC : KC_ASC));
}

void kc_prop_key(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, ds_bytes prop, int dir,
                 const ds_value *v, const ds_elem *path, size_t n)
{
    kc_prop_prefix(b, app, ns, kind, prop, dir);
    kc_put_value(b, v, dir);
    kc_put_path(b, path, n);
}

void kc_composite_prefix(buf *b, ds_bytes app, ds_bytes ns, int64_t index_id)
{
    kc_ns_prefix(b, KC_COMPOSITE, app, ns);
    kc_put_i64(b, index_id);
}

void kc_group_key(buf *b, ds_bytes app, ds_bytes ns, const ds_elem *root)
{
    kc_ns_prefix(b, KC_GROUP, app, ns);
    kc_put_path(b, root, 1);
}

void kc_seq_key(buf *b, ds_bytes app, int which)
{
    buf_putc(b, (char)KC_SEQ);
    kc_put_str(b, app.p, app.n);
    buf_putc(b, (char)which);
}

void kc_meta_prefix(buf *b, ds_bytes app, const char *name)
{
    buf_putc(b, (char)KC_META);
    kc_put_str(b, app.p, app.n);
    kc_put_cstr(b, name);
}
