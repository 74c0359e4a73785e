/* query_meta.c - metadata queries: __namespace__, __kind__, __property__.
 *
 * They are answered from the row layout without an index of their own, by
 * skip-scans: read one row, note the namespace (E rows), kind (K rows) or
 * kind/property/value type (P rows), then seek just past every row sharing
 * it. Keys are as App Engine defines them: __namespace__ entities are named
 * by the namespace (id 1 for the default one); __kind__ by the kind;
 * __property__ entities are children of their __kind__ key, named by the
 * property, and carry `property_representation` (INT64, STRING, ...) unless
 * the query is keys-only. __key__ range filters and an ancestor (a __kind__
 * key, for __property__) narrow the results; the whole result is one batch. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "datastore/query_plan.h"
#include "proto/pb.h"

typedef struct {
    buf lo, hi;
    int has_lo, has_hi, lo_incl, hi_incl;
} keyrange;

typedef struct {
    ds_elem el[2];
    size_t n;
    buf names;          /* storage for element strings */
    uint32_t reps;      /* bit per type tag (property_representation) */
} meta_item;

static int cmpb(const buf *a, const buf *b)
{
    size_t m = a->len < b->len ? a->len : b->len;
    int c = m ? memcmp(a->data, b->data, m) : 0;
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int range_keep(const keyrange *r, const buf *path)
{
    if (r->has_lo) { int c = cmpb(path, &r->lo); if (c < 0 || (c == 0 && !r->lo_incl)) return 0; }
    if (r->has_hi) { int c = cmpb(path, &r->hi); if (c > 0 || (c == 0 && !r->hi_incl)) return 0; }
    return 1;
}

static int read_key_filters(const dsq_query *q, keyrange *r, ds_err *e)
{
    for (size_t i = 0; i < q->n_filters; i++) {
        const dsq_filter *f = &q->filters[i];
        if (strcmp(f->prop, "__key__") != 0) {
            ds_err_set(e, DS_BAD_REQUEST, "metadata queries can only filter on __key__, not %s", f->prop);
            return -1;
        }
        ds_value v;
        char err[200];
        if (!f->n_values || ds_value_decode(f->values[0].p, f->values[0].n, &v, err, sizeof err) < 0 || v.type != DSV_REF) {
            if (f->n_values && v.type != DSV_REF) ds_value_free(&v);
            ds_err_set(e, DS_BAD_REQUEST, "a __key__ filter value must be a key");
            return -1;
        }
        buf pb = BUF_INIT;
        kc_put_path(&pb, v.ref.elems, v.ref.nelems);
        ds_value_free(&v);
        int op = f->op;
        if (op == DSQ_EQ || op == DSQ_GT || op == DSQ_GE) {
            if (!r->has_lo || cmpb(&pb, &r->lo) > 0) { buf_reset(&r->lo); buf_append(&r->lo, pb.data, pb.len); r->has_lo = 1; r->lo_incl = op != DSQ_GT; }
        }
        if (op == DSQ_EQ || op == DSQ_LT || op == DSQ_LE) {
            if (!r->has_hi || cmpb(&pb, &r->hi) < 0) { buf_reset(&r->hi); buf_append(&r->hi, pb.data, pb.len); r->has_hi = 1; r->hi_incl = op != DSQ_LT; }
        }
        buf_free(&pb);
    }
    return 0;
}

static void item_set(meta_item *it, const char *t0, const buf *n0, int use_id, const char *t1, const buf *n1)
{
    memset(it, 0, sizeof *it);
    /* Copy strings into one buffer; fix pointers after all appends. */
    size_t o0 = 0, o1;
    buf_append(&it->names, n0->data ? n0->data : "", n0->len);
    o1 = it->names.len;
    if (n1) buf_append(&it->names, n1->data ? n1->data : "", n1->len);
    buf_putc(&it->names, 0);
    it->el[0].type = ds_cstr(t0);
    if (use_id) { it->el[0].has_id = 1; it->el[0].id = 1; }
    else { it->el[0].has_name = 1; it->el[0].name.p = (uint8_t *)it->names.data + o0; it->el[0].name.n = n0->len; }
    it->n = 1;
    if (t1) {
        it->el[1].type = ds_cstr(t1);
        it->el[1].has_name = 1;
        it->el[1].name.p = (uint8_t *)it->names.data + o1;
        it->el[1].name.n = n1->len;
        it->n = 2;
    }
}

static const char *rep_name(int tag)
{
    switch (tag) {
    case KC_T_NULL: return "NULL";
    case KC_T_INT: return "INT64";
    case KC_T_BOOL: return "BOOLEAN";
    case KC_T_STRING: return "STRING";
    case KC_T_DOUBLE: return "DOUBLE";
    case KC_T_POINT: return "POINT";
    case KC_T_USER: return "USER";
    case KC_T_KEY: return "REFERENCE";
    }
    return NULL;
}

static void put_item(buf *out, const dsq_query *q, const meta_item *it)
{
    size_t m = pb_begin(out, 2);
    size_t r = pb_begin(out, 13);
    pb_put_str(out, 13, q->app);
    if (q->ns && q->ns[0]) pb_put_str(out, 20, q->ns);
    size_t pm = pb_begin(out, 14);
    ds_path_encode(out, it->el, it->n);
    pb_end(out, pm);
    pb_end(out, r);
    size_t g = pb_begin(out, 16);
    ds_path_encode(out, it->el, 1);
    pb_end(out, g);
    if (!q->keys_only && it->reps) {
        for (int t = 1; t <= 8; t++) {
            if (!(it->reps & (1u << t))) continue;
            size_t p = pb_begin(out, 14);
            pb_put_str(out, 3, "property_representation");
            pb_put_bool(out, 4, 1);
            size_t v = pb_begin(out, 5);
            pb_put_str(out, 3, rep_name(t << 4));
            pb_end(out, v);
            pb_end(out, p);
        }
    }
    pb_end(out, m);
}

/* Seek just past every key that starts with pre. 0 ok, else a KV code. */
static int seek_past(kv_cursor *c, const buf *pre, char *err, size_t errlen)
{
    uint8_t nx[KV_MAX_KEY + 64];
    if (pre->len > sizeof nx) return KV_NOTFOUND;
    size_t n = kv_prefix_end(pre->data, pre->len, nx);
    if (!n) return KV_NOTFOUND;
    return kv_seek(c, nx, n, KV_FWD, err, errlen);
}

int meta_run(datastore *ds, kv_txn *kt, const dsq_query *q, buf *resp, ds_err *e)
{
    (void)ds;
    keyrange kr = {BUF_INIT, BUF_INIT, 0, 0, 0, 0};
    meta_item *items = NULL;
    size_t n_items = 0;
    char err[256];
    kv_cursor *c = NULL;
    int rc = -1;
    buf pre = BUF_INIT, a = BUF_INIT, b = BUF_INIT, pb = BUF_INIT, sk = BUF_INIT;
    const char *kind = q->kind;
    ds_bytes app = ds_cstr(q->app), ns = ds_cstr(q->ns ? q->ns : "");
    buf only_kind = BUF_INIT;
    int has_only_kind = 0;

    if (read_key_filters(q, &kr, e) < 0) goto out;
    for (size_t i = 0; i < q->n_orders; i++)
        if (strcmp(q->orders[i].prop, "__key__") || q->orders[i].desc) {
            ds_err_set(e, DS_BAD_REQUEST, "metadata queries can only be sorted by __key__ ascending");
            goto out;
        }
    if (q->has_ancestor) {
        ds_ref anc;
        if (ds_ref_decode(q->ancestor.p, q->ancestor.n, &anc, err, sizeof err) < 0) { ds_err_set(e, DS_BAD_REQUEST, "the query ancestor is malformed: %s", err); goto out; }
        int ok = !strcmp(kind, "__property__") && anc.nelems >= 1 && anc.elems[0].has_name &&
                 anc.elems[0].type.n == 8 && !memcmp(anc.elems[0].type.p, "__kind__", 8);
        if (ok) { buf_append(&only_kind, anc.elems[0].name.p, anc.elems[0].name.n); has_only_kind = 1; }
        ds_ref_free(&anc);
        if (!ok) { ds_err_set(e, DS_BAD_REQUEST, "only __property__ queries take an ancestor, and it must be a __kind__ key"); goto out; }
    }
    int r = kv_cursor_open(kt, &c, err, sizeof err);
    if (r != KV_OK) goto kverr;
    if (!strcmp(kind, "__namespace__")) {
        buf_putc(&pre, KC_ENTITY);
        kc_put_str(&pre, app.p, app.n);
        r = kv_seek(c, pre.data, pre.len, KV_FWD, err, sizeof err);
        while (r == KV_OK) {
            const void *k, *v; size_t kn, vn;
            kv_cursor_get(c, &k, &kn, &v, &vn);
            if (kn < pre.len || memcmp(k, pre.data, pre.len)) break;
            const uint8_t *p = (const uint8_t *)k + pre.len;
            buf_reset(&a);
            if (kc_get_str(&p, (const uint8_t *)k + kn, &a) < 0) break;
            items = xrealloc(items, (n_items + 1) * sizeof *items);
            item_set(&items[n_items++], "__namespace__", &a, a.len == 0, NULL, NULL);
            buf_reset(&sk);
            kc_ns_prefix(&sk, KC_ENTITY, app, (ds_bytes){(uint8_t *)a.data, a.len});
            r = seek_past(c, &sk, err, sizeof err);
        }
    } else if (!strcmp(kind, "__kind__")) {
        kc_ns_prefix(&pre, KC_KIND, app, ns);
        r = kv_seek(c, pre.data, pre.len, KV_FWD, err, sizeof err);
        while (r == KV_OK) {
            const void *k, *v; size_t kn, vn;
            kv_cursor_get(c, &k, &kn, &v, &vn);
            if (kn < pre.len || memcmp(k, pre.data, pre.len)) break;
            const uint8_t *p = (const uint8_t *)k + pre.len;
            buf_reset(&a);
            if (kc_get_str(&p, (const uint8_t *)k + kn, &a) < 0) break;
            items = xrealloc(items, (n_items + 1) * sizeof *items);
            item_set(&items[n_items++], "__kind__", &a, 0, NULL, NULL);
            buf_reset(&sk);
            kc_kind_prefix(&sk, app, ns, (ds_bytes){(uint8_t *)a.data, a.len});
            r = seek_past(c, &sk, err, sizeof err);
        }
    } else {
        kc_ns_prefix(&pre, KC_PROP, app, ns);
        buf start = BUF_INIT;
        buf_append(&start, pre.data, pre.len);
        if (has_only_kind) kc_put_str(&start, only_kind.data, only_kind.len);
        r = kv_seek(c, start.data, start.len, KV_FWD, err, sizeof err);
        buf_free(&start);
        while (r == KV_OK) {
            const void *k, *v; size_t kn, vn;
            kv_cursor_get(c, &k, &kn, &v, &vn);
            if (kn < pre.len || memcmp(k, pre.data, pre.len)) break;
            const uint8_t *p = (const uint8_t *)k + pre.len, *end = (const uint8_t *)k + kn;
            buf_reset(&a); buf_reset(&b);
            if (kc_get_str(&p, end, &a) < 0 || kc_get_str(&p, end, &b) < 0 || p >= end) break;
            if (has_only_kind && cmpb(&a, &only_kind) != 0) break;
            int dir = *p++;
            ds_bytes kb = {(uint8_t *)a.data, a.len}, pbn = {(uint8_t *)b.data, b.len};
            if (dir == KC_ASC && p < end) {
                int tag = *p & 0xf0;
                int same = 0;
                if (n_items) {
                    meta_item *l = &items[n_items - 1];
                    same = l->n == 2 && l->el[0].name.n == a.len && !memcmp(l->el[0].name.p, a.data, a.len) &&
                           l->el[1].name.n == b.len && !memcmp(l->el[1].name.p, b.data, b.len);
                }
                if (!same) {
                    items = xrealloc(items, (n_items + 1) * sizeof *items);
                    item_set(&items[n_items++], "__kind__", &a, 0, "__property__", &b);
                }
                if (tag >= 0x10 && tag <= 0x80) items[n_items - 1].reps |= 1u << (tag >> 4);
                /* Next value type of this property. */
                buf_reset(&sk);
                kc_prop_prefix(&sk, app, ns, kb, pbn, KC_ASC);
                if (tag >= 0x80) {
                    r = seek_past(c, &sk, err, sizeof err);
                } else {
                    buf_putc(&sk, (char)(tag + 0x10));
                    r = kv_seek(c, sk.data, sk.len, KV_FWD, err, sizeof err);
                }
            } else {
                /* Descending rows (or junk): skip to the next property. */
                buf_reset(&sk);
                kc_ns_prefix(&sk, KC_PROP, app, ns);
                kc_put_str(&sk, a.data, a.len);
                kc_put_str(&sk, b.data, b.len);
                r = seek_past(c, &sk, err, sizeof err);
            }
        }
    }
    if (r != KV_OK && r != KV_NOTFOUND) goto kverr;

    /* Key filters, offset, limit; the items are already in key order
     * (the row order of their names matches the key encoding's). */
    int64_t skipped = 0, emitted = 0, offset = q->offset;
    for (size_t i = 0; i < n_items; i++) {
        buf_reset(&pb);
        kc_put_path(&pb, items[i].el, items[i].n);
        if (!range_keep(&kr, &pb)) continue;
        if (offset > 0) { offset--; skipped++; continue; }
        if (q->has_limit && emitted >= q->limit) break;
        put_item(resp, q, &items[i]);
        emitted++;
    }
    pb_put_bool(resp, 3, 0);
    if (q->keys_only) pb_put_bool(resp, 4, 1);
    if (skipped || q->offset) pb_put_int(resp, 7, skipped);
    rc = 0;
    goto out;
kverr:
    ds_err_set(e, r == KV_CONFLICT ? DS_CONCURRENT_TRANSACTION : DS_INTERNAL_ERROR, "a metadata scan failed: %s", err);
out:
    if (c) kv_cursor_close(c);
    for (size_t i = 0; i < n_items; i++) buf_free(&items[i].names);
    free(items);
    buf_free(&kr.lo); buf_free(&kr.hi);
    buf_free(&pre); buf_free(&a); buf_free(&b); buf_free(&pb); buf_free(&sk); buf_free(&only_kind);
    return rc;
}
