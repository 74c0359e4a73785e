/* query_plan.c - query planning: from a decoded Query to the index scans
 * that answer it, as App Engine plans them.
 *
 * The query is first normalized the way App Engine does (equality filters
 * make sort orders on the same property moot; one inequality property at
 * most, and it must be the first sort order; orders after __key__ are
 * dropped; projected and grouped properties must exist). Then:
 *
 *   kindless                      -> E rows (entity table), by key
 *   kind, no property filters     -> K rows (kind index), by key
 *   kind + equality filters only  -> merge-join of P scans, one per value,
 *                                    each already in key order
 *   one property (filter/order/   -> one P scan (ascending or descending
 *     projection), no ancestor       rows), the inequality as its range
 *   anything else                 -> a composite index (C rows); missing:
 *                                    NEED_INDEX, or created on demand in
 *                                    auto-index mode
 *
 * An ancestor restricts E/K/P scans to a key prefix (a path prefixes all
 * its descendants) and selects an ancestor composite index. Composite index
 * definitions and the app's index mode live in 'M' rows (see keycodec.h), so
 * the put path maintains their rows and GetIndices lists them. */
#include "datastore/query_plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"

#define KEY_PROP "__key__"

void ds_err_set(ds_err *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

void plan_free(plan *p)
{
    for (size_t i = 0; i < PLAN_MAX_SCANS; i++) { buf_free(&p->scans[i].prefix); buf_free(&p->scans[i].range); }
    buf_free(&p->lo); buf_free(&p->hi);
    buf_free(&p->key_lo); buf_free(&p->key_hi); buf_free(&p->key_eq);
    buf_free(&p->ancestor_path);
    memset(p, 0, sizeof *p);
}

/* ---- index definitions in M rows ---- */

static ds_bytes cs(const char *s) { return ds_cstr(s ? s : ""); }

static void meta_index_key(buf *b, const char *app, int64_t id)
{
    kc_meta_prefix(b, cs(app), "index");
    kc_put_i64(b, id);
}

void dsq_index_def_encode(const dsq_index *ix, buf *out)
{
    pb_put_str(out, 1, ix->kind);
    for (size_t i = 0; i < ix->n_props; i++) {
        pb_group_begin(out, 2);
        pb_put_str(out, 3, ix->props[i].name);
        pb_put_int(out, 4, ix->props[i].desc ? 2 : 1);
        pb_group_end(out, 2);
    }
    pb_put_bool(out, 5, ix->ancestor);
}

/* The definition (storage Index message) inside a stored CompositeIndex. */
static int index_def_decode(const uint8_t *p, size_t n, dsq_index *ix);

int dsq_index_def_decode(const uint8_t *p, size_t n, dsq_index *ix)
{
    memset(ix, 0, sizeof *ix);
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f; int wt, rc;
    const uint8_t *d = NULL; size_t dn = 0;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 3) { if (pb_bytes(&r, wt, &d, &dn) < 0) return -1; }
        else if (pb_skip(&r, wt, f) < 0) return -1;
    }
    if (rc < 0 || r.err || !d) return -1;
    return index_def_decode(d, dn, ix);
}

static int index_def_decode(const uint8_t *p, size_t n, dsq_index *ix)
{
    memset(ix, 0, sizeof *ix);
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f; int wt, rc;
    const uint8_t *s; size_t sn;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) {
            if (pb_bytes(&r, wt, &s, &sn) < 0) break;
            free(ix->kind);
            ix->kind = xstrndup((const char *)s, sn);
        } else if (f == 5) {
            if (pb_bool(&r, wt, &ix->ancestor) < 0) break;
        } else if (f == 2) {
            pb_reader g;
            if (pb_group(&r, wt, f, &g) < 0) break;
            dsq_index_prop pr = {0};
            uint32_t gf; int gwt, grc;
            while ((grc = pb_next(&g, &gf, &gwt)) > 0) {
                if (gf == 3) {
                    if (pb_bytes(&g, gwt, &s, &sn) < 0) break;
                    free(pr.name);
                    pr.name = xstrndup((const char *)s, sn);
                } else if (gf == 4) {
                    int32_t d;
                    if (pb_int32(&g, gwt, &d) < 0) break;
                    pr.desc = d == 2;
                } else if (pb_skip(&g, gwt, gf) < 0) break;
            }
            if (grc < 0 || g.err || !pr.name) { free(pr.name); r.err = 1; break; }
            ix->props = xrealloc(ix->props, (ix->n_props + 1) * sizeof *ix->props);
            ix->props[ix->n_props++] = pr;
        } else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (rc < 0 || r.err || !ix->kind) { dsq_index_free(ix); return -1; }
    dsq_index_set_id(ix);
    return 0;
}

int dsq_read_indexes(kv_txn *kt, const char *app, dsq_index_list *out, ds_err *e)
{
    memset(out, 0, sizeof *out);
    buf pre = BUF_INIT;
    kc_meta_prefix(&pre, cs(app), "index");
    kv_cursor *c = NULL;
    char err[256];
    int rc = kv_cursor_open(kt, &c, err, sizeof err);
    if (rc != KV_OK) goto fail;
    rc = kv_seek(c, pre.data, pre.len, KV_FWD, err, sizeof err);
    while (rc == KV_OK) {
        const void *k, *v; size_t kn, vn;
        kv_cursor_get(c, &k, &kn, &v, &vn);
        if (kn < pre.len || memcmp(k, pre.data, pre.len) != 0) break;
        dsq_index ix;
        if (dsq_index_def_decode(v, vn, &ix) == 0) {
            dsq_index_list_add(out, &ix);
            dsq_index_free(&ix);
        }
        rc = kv_next(c, err, sizeof err);
    }
    if (rc != KV_OK && rc != KV_NOTFOUND) goto fail;
    kv_cursor_close(c);
    buf_free(&pre);
    return 0;
fail:
    if (c) kv_cursor_close(c);
    buf_free(&pre);
    dsq_index_list_free(out);
    ds_err_set(e, rc == KV_CONFLICT ? DS_CONCURRENT_TRANSACTION : DS_INTERNAL_ERROR, "reading index definitions failed: %s", err);
    return -1;
}

int dsq_read_mode(kv_txn *kt, const char *app)
{
    buf k = BUF_INIT;
    kc_meta_prefix(&k, cs(app), "indexmode");
    const void *v; size_t vn;
    char err[256];
    int strict = 0;
    if (kv_get(kt, k.data, k.len, &v, &vn, err, sizeof err) == KV_OK)
        strict = vn == 6 && memcmp(v, "strict", 6) == 0;
    buf_free(&k);
    return strict;
}

static int starts_with(const void *k, size_t kn, const buf *pre)
{
    return kn >= pre->len && memcmp(k, pre->data, pre->len) == 0;
}

/* Write the composite rows of every entity of ix->kind (all namespaces). */
static int backfill(datastore *ds, kv_txn *kt, const char *app, const dsq_index *ix, char *err, size_t errlen)
{
    buf appk = BUF_INIT, pre = BUF_INIT, ek = BUF_INIT, rows = BUF_INIT, cpre = BUF_INIT, endk = BUF_INIT;
    buf_putc(&appk, KC_KIND);
    kc_put_cstr(&appk, app);
    kv_cursor *nc = NULL, *c = NULL;
    int rc = kv_cursor_open(kt, &nc, err, errlen);
    if (rc == KV_OK) rc = kv_cursor_open(kt, &c, err, errlen);
    if (rc != KV_OK) goto done;
    rc = kv_seek(nc, appk.data, appk.len, KV_FWD, err, errlen);
    while (rc == KV_OK) {
        const void *k, *v; size_t kn, vn;
        kv_cursor_get(nc, &k, &kn, &v, &vn);
        if (!starts_with(k, kn, &appk)) break;
        const uint8_t *p = (const uint8_t *)k + appk.len, *end = (const uint8_t *)k + kn;
        buf ns = BUF_INIT;
        if (kc_get_str(&p, end, &ns) < 0) { buf_free(&ns); rc = KV_ERROR; set_err(err, errlen, "a kind index row is malformed"); goto done; }
        ds_bytes nsb = {(const uint8_t *)ns.data, ns.len};
        /* Next namespace: just past every K row of this one. */
        buf_reset(&endk);
        kc_ns_prefix(&endk, KC_KIND, cs(app), nsb);
        buf_reset(&pre);
        kc_kind_prefix(&pre, cs(app), nsb, cs(ix->kind));
        buf_reset(&cpre);
        kc_composite_prefix(&cpre, cs(app), nsb, ix->id);
        int r2 = kv_seek(c, pre.data, pre.len, KV_FWD, err, errlen);
        while (r2 == KV_OK) {
            const void *k2, *v2; size_t kn2, vn2;
            kv_cursor_get(c, &k2, &kn2, &v2, &vn2);
            if (!starts_with(k2, kn2, &pre)) break;
            buf_reset(&ek);
            kc_ns_prefix(&ek, KC_ENTITY, cs(app), nsb);
            buf_append(&ek, (const uint8_t *)k2 + pre.len, kn2 - pre.len);
            const void *ev; size_t evn;
            r2 = kv_get(kt, ek.data, ek.len, &ev, &evn, err, errlen);
            if (r2 == KV_OK) {
                uint8_t *copy = xmalloc(evn ? evn : 1);
                memcpy(copy, ev, evn);
                ds_entity ent;
                ds_err de = {0};
                if (ds_entity_decode(copy, evn, &ent, err, errlen) == 0) {
                    buf_reset(&rows);
                    if (ds_index_rows(ds, kt, &ent, &rows, &de) < 0) {
                        set_err(err, errlen, "%s", de.msg);
                        r2 = KV_ERROR;
                    }
                    for (size_t off = 0; r2 == KV_OK && off + 4 <= rows.len;) {
                        uint32_t len;
                        memcpy(&len, rows.data + off, 4);
                        const char *row = rows.data + off + 4;
                        if (len >= cpre.len && memcmp(row, cpre.data, cpre.len) == 0)
                            r2 = kv_put(kt, row, len, "", 0, err, errlen);
                        off += 4 + len;
                    }
                    ds_entity_free(&ent);
                }
                free(copy);
                if (r2 != KV_OK) { rc = r2; buf_free(&ns); goto done; }
                /* kv_put may have moved the cursor's page: reposition. */
                buf_reset(&ek);
                buf_append(&ek, k2, kn2);
                r2 = kv_seek(c, ek.data, ek.len, KV_FWD, err, errlen);
                if (r2 == KV_OK) r2 = kv_next(c, err, errlen);
            } else if (r2 == KV_NOTFOUND) {
                r2 = kv_next(c, err, errlen);
            }
        }
        buf_free(&ns);
        if (r2 != KV_OK && r2 != KV_NOTFOUND) { rc = r2; goto done; }
        uint8_t nx[KV_MAX_KEY + 8];
        size_t nn = endk.len <= sizeof nx ? kv_prefix_end(endk.data, endk.len, nx) : 0;
        if (!nn) { rc = KV_NOTFOUND; break; }
        rc = kv_seek(nc, nx, nn, KV_FWD, err, errlen);
    }
    if (rc == KV_NOTFOUND) rc = KV_OK;
done:
    if (c) kv_cursor_close(c);
    if (nc) kv_cursor_close(nc);
    buf_free(&appk); buf_free(&pre); buf_free(&ek); buf_free(&rows); buf_free(&cpre); buf_free(&endk);
    return rc;
}

int dsq_create_index(datastore *ds, const char *app, const dsq_index *ix, ds_err *e)
{
    char err[256] = "";
    for (int attempt = 0; attempt < 10; attempt++) {
        kv_txn *t = NULL;
        int rc = kv_begin(ds_kv(ds), 1, &t, err, sizeof err);
        if (rc != KV_OK) break;
        buf k = BUF_INIT, v = BUF_INIT;
        meta_index_key(&k, app, ix->id);
        const void *old; size_t oldn;
        rc = kv_get(t, k.data, k.len, &old, &oldn, err, sizeof err);
        if (rc == KV_NOTFOUND) {
            dsq_index_encode(ix, app, &v);
            rc = kv_put(t, k.data, k.len, v.data ? v.data : "", v.len, err, sizeof err);
            if (rc == KV_OK) rc = backfill(ds, t, app, ix, err, sizeof err);
            if (rc == KV_OK) rc = kv_commit(t, err, sizeof err);
            else kv_abort(t);
            if (rc == KV_OK) log_info("datastore", "app=%s msg=\"composite index created\" index=%lld kind=%s",
                                      log_q(app), (long long)ix->id, log_q(ix->kind));
        } else {
            kv_abort(t);
            if (rc == KV_OK) rc = KV_OK;
        }
        buf_free(&k); buf_free(&v);
        if (rc == KV_OK) return 0;
        if (rc != KV_CONFLICT) break;
    }
    ds_err_set(e, DS_INTERNAL_ERROR, "creating the composite index on %s failed: %s", ix->kind, err);
    return -1;
}

/* ---- normalization ---- */

typedef struct { const char *prop; int desc; } ord;

typedef struct {
    const dsq_filter *eq[PLAN_MAX_SCANS];   /* value equality filters */
    ds_value eqv[PLAN_MAX_SCANS];
    size_t n_eq;
    const char *ineq;                       /* inequality property, or NULL */
    ord orders[DSQ_MAX_ORDERS];             /* value orders (ineq first) */
    size_t n_orders;
    int key_desc;                           /* trailing __key__ descending */
    const char *exists[DSQ_MAX_ORDERS];     /* sorted */
    size_t n_exists;
} norm;

static void norm_free(norm *n)
{
    for (size_t i = 0; i < n->n_eq; i++) ds_value_free(&n->eqv[i]);
}

static int is_eq_prop(const norm *n, const char *prop)
{
    for (size_t i = 0; i < n->n_eq; i++) if (!strcmp(n->eq[i]->prop, prop)) return 1;
    return 0;
}

static int in_orders(const norm *n, const char *prop)
{
    for (size_t i = 0; i < n->n_orders; i++) if (!strcmp(n->orders[i].prop, prop)) return 1;
    return 0;
}

static void add_exists(norm *n, const char *prop)
{
    if (!strcmp(prop, KEY_PROP) || is_eq_prop(n, prop) || in_orders(n, prop)) return;
    if (n->ineq && !strcmp(n->ineq, prop)) return;
    for (size_t i = 0; i < n->n_exists; i++) if (!strcmp(n->exists[i], prop)) return;
    if (n->n_exists >= DSQ_MAX_ORDERS) return;
    size_t i = n->n_exists++;
    while (i > 0 && strcmp(n->exists[i - 1], prop) > 0) { n->exists[i] = n->exists[i - 1]; i--; }
    n->exists[i] = prop;
}

static int decode_value(const dsq_filter *f, size_t i, ds_value *v, ds_err *e)
{
    char err[200];
    if (i >= f->n_values) { ds_err_set(e, DS_BAD_REQUEST, "the filter on %s has no value", f->prop); return -1; }
    if (ds_value_decode(f->values[i].p, f->values[i].n, v, err, sizeof err) < 0) {
        ds_err_set(e, DS_BAD_REQUEST, "the filter value for %s is malformed: %s", f->prop, err);
        return -1;
    }
    return 0;
}

/* Tighten a key bound: keep the larger lower / smaller upper bound. */
static void key_bound(buf *b, int *has, int *incl, const buf *v, int v_incl, int lower)
{
    if (*has) {
        size_t m = b->len < v->len ? b->len : v->len;
        int c = memcmp(v->data, b->data, m);
        if (!c) c = (v->len > b->len) - (v->len < b->len);
        if (lower ? c < 0 : c > 0) return;
        if (c == 0 && !(*incl && !v_incl)) return;
    }
    buf_reset(b);
    buf_append(b, v->data, v->len);
    *has = 1;
    *incl = v_incl;
}

static int normalize(const dsq_query *q, norm *n, plan *p, ds_err *e)
{
    memset(n, 0, sizeof *n);
    const char *key_ineq = NULL;
    for (size_t i = 0; i < q->n_filters; i++) {
        const dsq_filter *f = &q->filters[i];
        int op = f->op;
        if (op == DSQ_IN && f->n_values == 1) op = DSQ_EQ;
        if (op == DSQ_IN || op == DSQ_NE || op == DSQ_NOT_IN) {
            ds_err_set(e, DS_BAD_REQUEST, "the %s operator on %s must be expanded into several queries by the client",
                    op == DSQ_IN ? "IN" : op == DSQ_NE ? "!=" : "NOT IN", f->prop);
            return -1;
        }
        if (op == DSQ_REGION) { ds_err_set(e, DS_BAD_REQUEST, "geographic region filters are not supported"); return -1; }
        if (op == DSQ_EXISTS) continue;
        if (!strcmp(f->prop, KEY_PROP)) {
            ds_value v;
            if (decode_value(f, 0, &v, e) < 0) return -1;
            if (v.type != DSV_REF) { ds_value_free(&v); ds_err_set(e, DS_BAD_REQUEST, "a __key__ filter value must be a key"); return -1; }
            buf pb = BUF_INIT;
            kc_put_path(&pb, v.ref.elems, v.ref.nelems);
            ds_value_free(&v);
            if (op == DSQ_EQ) {
                if (p->has_key_eq && (pb.len != p->key_eq.len || memcmp(pb.data, p->key_eq.data, pb.len))) {
                    /* Two different keys: nothing can match; an empty range does it. */
                    buf_reset(&p->key_lo); buf_putc(&p->key_lo, (char)0xff); p->has_key_lo = 1; p->key_lo_incl = 0;
                    buf_reset(&p->key_hi); buf_putc(&p->key_hi, 0); p->has_key_hi = 1; p->key_hi_incl = 0;
                }
                buf_reset(&p->key_eq); buf_append(&p->key_eq, pb.data, pb.len); p->has_key_eq = 1;
            } else {
                key_ineq = KEY_PROP;
                if (op == DSQ_GT || op == DSQ_GE) key_bound(&p->key_lo, &p->has_key_lo, &p->key_lo_incl, &pb, op == DSQ_GE, 1);
                else key_bound(&p->key_hi, &p->has_key_hi, &p->key_hi_incl, &pb, op == DSQ_LE, 0);
            }
            buf_free(&pb);
            continue;
        }
        if (op == DSQ_EQ) {
            if (n->n_eq >= PLAN_MAX_SCANS) { ds_err_set(e, DS_BAD_REQUEST, "the query has more than %d equality filters", PLAN_MAX_SCANS); return -1; }
            if (decode_value(f, 0, &n->eqv[n->n_eq], e) < 0) return -1;
            n->eq[n->n_eq++] = f;
        } else {
            if (n->ineq && strcmp(n->ineq, f->prop) != 0) {
                ds_err_set(e, DS_BAD_REQUEST, "Only one inequality filter per query is supported. Encountered both %s and %s", n->ineq, f->prop);
                return -1;
            }
            n->ineq = f->prop;
        }
    }
    if (n->ineq && key_ineq) {
        ds_err_set(e, DS_BAD_REQUEST, "Only one inequality filter per query is supported. Encountered both %s and %s", n->ineq, KEY_PROP);
        return -1;
    }
    /* Orders: drop equality-filtered and repeated properties; stop at __key__. */
    for (size_t i = 0; i < q->n_orders; i++) {
        const dsq_order *o = &q->orders[i];
        if (!strcmp(o->prop, KEY_PROP)) { n->key_desc = o->desc; break; }
        if ((is_eq_prop(n, o->prop) && !(n->ineq && !strcmp(n->ineq, o->prop))) || in_orders(n, o->prop)) continue;
        n->orders[n->n_orders].prop = o->prop;
        n->orders[n->n_orders].desc = o->desc;
        n->n_orders++;
    }
    if (n->ineq) {
        if (n->n_orders && strcmp(n->orders[0].prop, n->ineq) != 0) {
            ds_err_set(e, DS_BAD_REQUEST, "The first sort property must be the same as the property to which the "
                    "inequality filter is applied. In your query the first sort property is %s but the "
                    "inequality filter is on %s", n->orders[0].prop, n->ineq);
            return -1;
        }
        if (!n->n_orders) { n->orders[0].prop = n->ineq; n->orders[0].desc = 0; n->n_orders = 1; }
    }
    if (key_ineq && (n->n_orders || (q->n_orders && strcmp(q->orders[0].prop, KEY_PROP)))) {
        ds_err_set(e, DS_BAD_REQUEST, "The first sort property must be the same as the property to which the "
                "inequality filter is applied. In your query the first sort property is %s but the "
                "inequality filter is on %s", n->n_orders ? n->orders[0].prop : q->orders[0].prop, KEY_PROP);
        return -1;
    }
    if (p->has_key_eq) { n->n_orders = 0; n->key_desc = 0; }
    for (size_t i = 0; i < q->n_filters; i++)
        if (q->filters[i].op == DSQ_EXISTS) add_exists(n, q->filters[i].prop);
    for (size_t i = 0; i < q->n_projection; i++) {
        if (!strcmp(q->projection[i], KEY_PROP)) { ds_err_set(e, DS_BAD_REQUEST, "__key__ cannot be projected"); return -1; }
        add_exists(n, q->projection[i]);
    }
    for (size_t i = 0; i < q->n_group_by; i++) add_exists(n, q->group_by[i]);
    return 0;
}

/* ---- composite index selection ---- */

static int name_in(const char *name, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++) if (!strcmp(set[i], name)) return 1;
    return 0;
}

/* Distinct equality property names, sorted. */
static size_t eq_names(const norm *n, const char **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_eq; i++) {
        const char *nm = n->eq[i]->prop;
        if (name_in(nm, out, k)) continue;
        size_t j = k++;
        while (j > 0 && strcmp(out[j - 1], nm) > 0) { out[j] = out[j - 1]; j--; }
        out[j] = nm;
    }
    return k;
}

static int index_matches(const dsq_index *ix, const char *kind, int ancestor, const norm *n,
                         const char **eqn, size_t n_eqn)
{
    if (strcmp(ix->kind, kind) != 0 || ix->ancestor != ancestor) return 0;
    if (ix->n_props != n_eqn + n->n_orders + n->n_exists) return 0;
    size_t i = 0;
    for (; i < n_eqn; i++) if (!name_in(ix->props[i].name, eqn, n_eqn)) return 0;
    for (size_t j = 0; j < n->n_orders; j++, i++)
        if (strcmp(ix->props[i].name, n->orders[j].prop) || ix->props[i].desc != n->orders[j].desc) return 0;
    for (size_t j = 0; j < n->n_exists; j++, i++)
        if (!name_in(ix->props[i].name, n->exists, n->n_exists)) return 0;
    /* No name twice among the equality part. */
    for (size_t a = 0; a < n_eqn; a++)
        for (size_t b = a + 1; b < n_eqn; b++)
            if (!strcmp(ix->props[a].name, ix->props[b].name)) return 0;
    return 1;
}

static void recommended_index(const char *kind, int ancestor, const norm *n, const char **eqn,
                              size_t n_eqn, dsq_index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->kind = xstrdup(kind);
    ix->ancestor = ancestor;
    ix->n_props = n_eqn + n->n_orders + n->n_exists;
    ix->props = xcalloc(ix->n_props ? ix->n_props : 1, sizeof *ix->props);
    size_t i = 0;
    for (size_t j = 0; j < n_eqn; j++, i++) ix->props[i].name = xstrdup(eqn[j]);
    for (size_t j = 0; j < n->n_orders; j++, i++) {
        ix->props[i].name = xstrdup(n->orders[j].prop);
        ix->props[i].desc = n->orders[j].desc;
    }
    for (size_t j = 0; j < n->n_exists; j++, i++) ix->props[i].name = xstrdup(n->exists[j]);
    dsq_index_set_id(ix);
}

/* ---- bounds on the first postfix value ---- */

static int cmp_bytes(const buf *a, const buf *b)
{
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->data, b->data, m);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int set_value_bounds(const dsq_query *q, const norm *n, plan *p, ds_err *e)
{
    if (!n->ineq) return 0;
    buf lo = BUF_INIT, hi = BUF_INIT, v = BUF_INIT;
    int has_lo = 0, has_hi = 0, lo_incl = 0, hi_incl = 0;
    for (size_t i = 0; i < q->n_filters; i++) {
        const dsq_filter *f = &q->filters[i];
        if (strcmp(f->prop, n->ineq) != 0 || f->op < DSQ_LT || f->op > DSQ_GE) continue;
        ds_value dv;
        if (decode_value(f, 0, &dv, e) < 0) { buf_free(&lo); buf_free(&hi); buf_free(&v); return -1; }
        buf_reset(&v);
        kc_put_value(&v, &dv, KC_ASC);
        ds_value_free(&dv);
        int incl = f->op == DSQ_LE || f->op == DSQ_GE;
        if (f->op == DSQ_GT || f->op == DSQ_GE) {
            int c = has_lo ? cmp_bytes(&v, &lo) : 1;
            if (c > 0 || (c == 0 && !incl)) { buf_reset(&lo); buf_append(&lo, v.data, v.len); has_lo = 1; lo_incl = incl; }
        } else {
            int c = has_hi ? cmp_bytes(&v, &hi) : -1;
            if (c < 0 || (c == 0 && !incl)) { buf_reset(&hi); buf_append(&hi, v.data, v.len); has_hi = 1; hi_incl = incl; }
        }
    }
    buf_free(&v);
    if (p->post_dir[0] == KC_DESC) {
        /* Descending rows hold inverted values: the bounds swap ends. */
        for (size_t i = 0; i < lo.len; i++) lo.data[i] = (char)~lo.data[i];
        for (size_t i = 0; i < hi.len; i++) hi.data[i] = (char)~hi.data[i];
        buf t = lo; lo = hi; hi = t;
        int th = has_lo; has_lo = has_hi; has_hi = th;
        int ti = lo_incl; lo_incl = hi_incl; hi_incl = ti;
    }
    p->lo = lo; p->hi = hi;
    p->has_lo = has_lo; p->has_hi = has_hi; p->lo_incl = lo_incl; p->hi_incl = hi_incl;
    return 0;
}

static int group_prefix(const dsq_query *q, plan *p, ds_err *e)
{
    if (!q->n_group_by) return 0;
    if (q->n_group_by > p->n_post) goto bad;
    for (size_t i = 0; i < q->n_group_by; i++) {
        int found = 0;
        for (size_t j = 0; j < q->n_group_by; j++) if (!strcmp(p->post_prop[j], q->group_by[i])) found = 1;
        if (!found) goto bad;
    }
    p->n_group = q->n_group_by;
    return 0;
bad:
    ds_err_set(e, DS_BAD_REQUEST, "a distinct query must sort by its group-by properties first");
    return -1;
}

/* ---- the planner ---- */

int plan_build(datastore *ds, kv_txn *kt, const dsq_query *q, plan *p, int *retry, ds_err *e)
{
    memset(p, 0, sizeof *p);
    *retry = 0;
    p->app = q->app; p->ns = q->ns ? q->ns : ""; p->kind = q->kind;
    if (q->kind && !strcmp(q->kind, "__kind__")) { p->type = PLAN_META; p->meta = 1; return 0; }
    if (q->kind && !strcmp(q->kind, "__namespace__")) { p->type = PLAN_META; p->meta = 2; return 0; }
    if (q->kind && !strcmp(q->kind, "__property__")) { p->type = PLAN_META; p->meta = 3; return 0; }
    ds_bytes app = cs(q->app), ns = cs(p->ns);
    ds_ref anc = {0};
    norm n;
    memset(&n, 0, sizeof n);
    int rc = -1;
    if (q->has_ancestor) {
        char err[200];
        if (ds_ref_decode(q->ancestor.p, q->ancestor.n, &anc, err, sizeof err) < 0) {
            ds_err_set(e, DS_BAD_REQUEST, "the query ancestor is malformed: %s", err);
            return -1;
        }
        if (!ds_ref_complete(&anc)) { ds_err_set(e, DS_BAD_REQUEST, "the query ancestor key is incomplete"); goto out; }
        if (anc.app.n != app.n || (app.n && memcmp(anc.app.p, app.p, app.n)) ||
            anc.ns.n != ns.n || (ns.n && memcmp(anc.ns.p, ns.p, ns.n))) {
            ds_err_set(e, DS_BAD_REQUEST, "the query ancestor belongs to another app or namespace");
            goto out;
        }
        kc_put_path_prefix(&p->ancestor_path, anc.elems, anc.nelems);
        if (q->shallow) p->shallow_depth = (int)anc.nelems + 1;
    }
    if (normalize(q, &n, p, e) < 0) goto out;

    if (!q->kind || (!n.n_eq && !n.n_orders && !n.n_exists)) {
        /* Entities or the kind index, in key order. */
        if (!q->kind && (n.n_eq || n.ineq || n.n_orders || n.n_exists)) {
            ds_err_set(e, DS_BAD_REQUEST, "kindless queries can only filter on __key__ and ancestor and sort by __key__");
            goto out;
        }
        p->type = q->kind ? PLAN_KIND : PLAN_ENTITY;
        p->n_scans = 1;
        if (q->kind) kc_kind_prefix(&p->scans[0].prefix, app, ns, cs(q->kind));
        else kc_ns_prefix(&p->scans[0].prefix, KC_ENTITY, app, ns);
        buf_append(&p->scans[0].range, p->scans[0].prefix.data, p->scans[0].prefix.len);
        buf_append(&p->scans[0].range, p->ancestor_path.data, p->ancestor_path.len);
        p->reverse = n.key_desc;
        rc = 0;
        goto out;
    }
    ds_bytes kind = cs(q->kind);
    if (!n.n_orders && !n.n_exists) {
        /* Equality filters only: merge-join the single-property scans. */
        p->type = PLAN_MERGE;
        p->n_scans = n.n_eq;
        for (size_t i = 0; i < n.n_eq; i++) {
            kc_prop_prefix(&p->scans[i].prefix, app, ns, kind, cs(n.eq[i]->prop), KC_ASC);
            kc_put_value(&p->scans[i].prefix, &n.eqv[i], KC_ASC);
            buf_append(&p->scans[i].range, p->scans[i].prefix.data, p->scans[i].prefix.len);
            buf_append(&p->scans[i].range, p->ancestor_path.data, p->ancestor_path.len);
        }
        p->reverse = n.key_desc;
        rc = 0;
        goto out;
    }
    if (n.key_desc) {
        /* Ties broken by key descending: the key becomes the composite
         * index's last property, as App Engine indexes it. */
        if (n.n_orders >= DSQ_MAX_ORDERS - 1) { ds_err_set(e, DS_BAD_REQUEST, "the query has too many sort orders"); goto out; }
        n.orders[n.n_orders].prop = KEY_PROP;
        n.orders[n.n_orders].desc = 1;
        n.n_orders++;
    }
    p->type = PLAN_INDEX;
    p->dedup = 1;
    p->n_scans = 1;
    if (!n.n_eq && !q->has_ancestor && n.n_orders + n.n_exists == 1 && !n.key_desc) {
        /* One property: its ascending or descending single-property rows. */
        const char *prop = n.n_orders ? n.orders[0].prop : n.exists[0];
        int dir = n.n_orders && n.orders[0].desc ? KC_DESC : KC_ASC;
        kc_prop_prefix(&p->scans[0].prefix, app, ns, kind, cs(prop), dir);
        buf_append(&p->scans[0].range, p->scans[0].prefix.data, p->scans[0].prefix.len);
        p->n_post = 1;
        p->post_prop[0] = (char *)prop;
        p->post_dir[0] = dir;
    } else {
        const char *eqn[PLAN_MAX_SCANS];
        size_t n_eqn = eq_names(&n, eqn);
        if (n_eqn != n.n_eq) {
            ds_err_set(e, DS_BAD_REQUEST, "several equality filters on one property cannot be combined with sort orders or projections");
            goto out;
        }
        dsq_index_list ixs;
        if (dsq_read_indexes(kt, q->app, &ixs, e) < 0) goto out;
        const dsq_index *ix = NULL;
        for (size_t i = 0; i < ixs.n && !ix; i++)
            if (index_matches(&ixs.v[i], q->kind, q->has_ancestor, &n, eqn, n_eqn)) ix = &ixs.v[i];
        if (!ix) {
            dsq_index want;
            recommended_index(q->kind, q->has_ancestor, &n, eqn, n_eqn, &want);
            dsq_index_list_free(&ixs);
            if (dsq_read_mode(kt, q->app)) {
                buf y = BUF_INIT;
                dsq_index_yaml(&want, &y);
                ds_err_set(e, DS_NEED_INDEX, "This query requires a composite index that is not defined. "
                        "You must update the index.yaml file in your application root.\n"
                        "The following index is the minimum index required:\n%s", buf_cstr(&y));
                buf_free(&y);
            } else if (dsq_create_index(ds, q->app, &want, e) == 0) {
                *retry = 1;
            }
            dsq_index_free(&want);
            goto out;
        }
        p->index_id = ix->id;
        buf *pre = &p->scans[0].prefix;
        kc_composite_prefix(pre, app, ns, ix->id);
        if (q->has_ancestor) kc_put_path(pre, anc.elems, anc.nelems);
        for (size_t i = 0; i < n_eqn; i++)
            for (size_t j = 0; j < n.n_eq; j++)
                if (!strcmp(n.eq[j]->prop, ix->props[i].name)) {
                    kc_put_value(pre, &n.eqv[j], ix->props[i].desc ? KC_DESC : KC_ASC);
                    break;
                }
        buf_append(&p->scans[0].range, pre->data, pre->len);
        p->n_post = ix->n_props - n_eqn;
        for (size_t i = 0; i < p->n_post; i++) {
            /* Point at the query's own strings: the index list is freed below. */
            const char *nm = ix->props[n_eqn + i].name, *own = NULL;
            for (size_t j = 0; j < n.n_orders && !own; j++) if (!strcmp(n.orders[j].prop, nm)) own = n.orders[j].prop;
            for (size_t j = 0; j < n.n_exists && !own; j++) if (!strcmp(n.exists[j], nm)) own = n.exists[j];
            p->post_prop[i] = (char *)own;
            p->post_dir[i] = ix->props[n_eqn + i].desc ? KC_DESC : KC_ASC;
        }
        dsq_index_list_free(&ixs);
    }
    if (set_value_bounds(q, &n, p, e) < 0) goto out;
    if (group_prefix(q, p, e) < 0) goto out;
    rc = 0;
out:
    norm_free(&n);
    ds_ref_free(&anc);
    if (rc < 0) plan_free(p);
    return rc;
}
