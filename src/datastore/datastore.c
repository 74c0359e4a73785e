/* datastore.c - the datastore core: Get, Put, Delete, AllocateIds and
 * optimistic transactions over the kv engine. See datastore.h for the model
 * and keycodec.h for the rows.
 *
 * Writing an entity (put_entity) reads the stored copy, computes the index
 * rows of the old and the new version (index_rows: kind row, ascending and
 * descending single-property rows per indexed value, composite rows per
 * matching index definition), deletes the rows only the old one had, writes
 * the rows only the new one has, stores the entity bytes, and bumps the
 * entity group's version. Everything a request does happens in one engine
 * transaction, retried when the engine reports a conflict.
 *
 * Transactions live in memory in a table keyed by a random 64-bit handle.
 * Each holds the entity-group versions it observed and the mutations it
 * buffered; Commit re-reads those versions inside one write transaction and
 * applies the mutations only if none moved; work other services tied to the
 * transaction (ds_txn_on_commit: transactional task adds) is written in the
 * same engine transaction, so it lands exactly when the commit does. A
 * transaction object is reference-counted so a Commit or Rollback never frees it under a
 * concurrent call on the same handle. */
#include "datastore/datastore.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/log.h"
#include "core/util.h"
#include "datastore/keycodec.h"
#include "proto/pb.h"

#define KV_RETRIES 8              /* engine conflicts retried per request */
#define MAX_INDEX_ROWS 20000      /* App Engine's per-entity index entry limit */
#define TXN_IDLE_MS (5 * 60 * 1000)
#define SCATTER_BITS 51

typedef struct {
    buf gkey;                     /* 'G' row key */
    int64_t version;              /* version observed (0: never written) */
    int written;                  /* a buffered mutation touches this group */
} txn_group;

typedef struct {
    int is_put;
    buf data;                     /* put: EntityProto bytes; delete: Reference bytes */
} txn_mut;

typedef struct {
    ds_commit_fn fn;
    void (*done)(void *arg, int committed);
    void *arg;
} txn_hook;

typedef struct ds_txn {
    uint64_t handle;
    char *app;
    int read_only;
    int refs;                     /* table link counts as one */
    int linked;
    int64_t last_used_ms;
    pthread_mutex_t mu;
    txn_group *groups;
    size_t ngroups, capg;
    txn_mut *muts;
    size_t nmuts, capm;
    txn_hook *hooks;              /* ds_txn_on_commit; done() not yet called */
    size_t nhooks;
    struct ds_txn *next;
} ds_txn;

struct datastore {
    kv_engine *kv;
    int own;
    pthread_mutex_t mu;           /* guards the transaction table */
    ds_txn *txns;
};

static int dserr(ds_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int dserr(ds_err *e, int code, const char *fmt, ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int kverr(ds_err *e, const char *what, const char *kmsg)
{
    log_error("datastore", "msg=\"engine failure\" op=%s err=%s", what, log_q(kmsg));
    return dserr(e, DS_INTERNAL_ERROR, "the datastore could not %s: %s", what, kmsg);
}

/* ---- open / close ---- */

datastore *ds_open_engine(kv_engine *kv, int own)
{
    datastore *ds = xcalloc(1, sizeof *ds);
    ds->kv = kv;
    ds->own = own;
    pthread_mutex_init(&ds->mu, NULL);
    return ds;
}

datastore *ds_open(const char *home, char *err, size_t errlen)
{
    const char *spec = getenv("CYCLOZZO_DATASTORE");
    char *dir = spec && *spec ? xstrdup(spec) : xasprintf("lmdb:%s/datastore", home);
    kv_engine *kv = kv_open(dir, err, errlen);
    free(dir);
    return kv ? ds_open_engine(kv, 1) : NULL;
}

static void txn_free(ds_txn *t)
{
    for (size_t i = 0; i < t->ngroups; i++) buf_free(&t->groups[i].gkey);
    for (size_t i = 0; i < t->nmuts; i++) buf_free(&t->muts[i].data);
    for (size_t i = 0; i < t->nhooks; i++) t->hooks[i].done(t->hooks[i].arg, 0);
    free(t->hooks);
    free(t->groups);
    free(t->muts);
    free(t->app);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void ds_close(datastore *ds)
{
    if (!ds) return;
    while (ds->txns) {
        ds_txn *t = ds->txns;
        ds->txns = t->next;
        txn_free(t);
    }
    if (ds->own) kv_close(ds->kv);
    pthread_mutex_destroy(&ds->mu);
    free(ds);
}

kv_engine *ds_kv(datastore *ds) { return ds->kv; }

/* ---- small helpers ---- */

static int bytes_eq(ds_bytes a, const char *s)
{
    size_t n = strlen(s);
    return a.n == n && (n == 0 || memcmp(a.p, s, n) == 0);
}

static void put_be64(uint8_t *o, int64_t v)
{
    for (int i = 0; i < 8; i++) o[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
}

static int64_t get_be64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | p[i];
    return (int64_t)x;
}

/* Engine result of a whole request: KV_CONFLICT from any step is retried. */
static int is_retry(const ds_err *e) { return e->code == DS_CONCURRENT_TRANSACTION && e->msg[0] == '\x01'; }

static int kv_status(int rc, ds_err *e, const char *what, const char *kerr)
{
    if (rc == KV_CONFLICT) { e->code = DS_CONCURRENT_TRANSACTION; e->msg[0] = '\x01'; e->msg[1] = 0; return -1; }
    if (rc == KV_NOTFOUND || rc == KV_OK) return 0;
    return kverr(e, what, kerr);
}

/* Read an int64 row (version, counter); 0 when absent. */
static int read_i64(kv_txn *kt, const buf *key, int64_t *v, ds_err *e)
{
    const void *val;
    size_t vn;
    char kerr[256];
    int rc = kv_get(kt, key->data, key->len, &val, &vn, kerr, sizeof kerr);
    if (rc == KV_NOTFOUND) { *v = 0; return 0; }
    if (rc != KV_OK) { kv_status(rc, e, "read a counter", kerr); return -1; }
    *v = vn == 8 ? get_be64(val) : 0;
    return 0;
}

static int write_i64(kv_txn *kt, const buf *key, int64_t v, ds_err *e)
{
    uint8_t o[8];
    put_be64(o, v);
    char kerr[256];
    int rc = kv_put(kt, key->data, key->len, o, 8, kerr, sizeof kerr);
    if (rc != KV_OK) { kv_status(rc, e, "write a counter", kerr); return -1; }
    return 0;
}

/* Check a key belongs to the caller and is well-formed. complete: every
 * element has an id or a name; else the last may be incomplete. */
static int check_key(const char *app, const ds_ref *k, int complete, ds_err *e)
{
    if (!bytes_eq(k->app, app))
        return dserr(e, DS_BAD_REQUEST, "app \"%.*s\" cannot access app \"%s\"'s data",
                     (int)(k->app.n > 100 ? 100 : k->app.n), (const char *)k->app.p, app);
    if (k->nelems == 0) return dserr(e, DS_BAD_REQUEST, "a key has an empty path");
    for (size_t i = 0; i < k->nelems; i++) {
        const ds_elem *el = &k->elems[i];
        if (el->type.n == 0) return dserr(e, DS_BAD_REQUEST, "a key has a path element with an empty kind");
        if (el->has_name && el->name.n == 0) return dserr(e, DS_BAD_REQUEST, "a key has an empty name");
        if (el->has_id && el->id < 0) return dserr(e, DS_BAD_REQUEST, "a key has a negative id");
        int last = i + 1 == k->nelems;
        if (!el->has_id && !el->has_name && (complete || !last))
            return dserr(e, DS_BAD_REQUEST, "a key is incomplete: its path element %zu has neither an id nor a name", i + 1);
    }
    return 0;
}

static int check_row_len(const buf *row, ds_err *e, const char *what)
{
    if (row->len > KV_MAX_KEY)
        return dserr(e, DS_BAD_REQUEST, "%s is too long to store (its datastore row would be %zu bytes, the limit is %d)",
                     what, row->len, KV_MAX_KEY);
    return 0;
}

/* ---- index rows ---- */

static void row_add(buf *rows, const buf *row)
{
    uint32_t n = (uint32_t)row->len;
    buf_append(rows, &n, 4);
    buf_append(rows, row->data, row->len);
}

typedef struct { const uint8_t *p; uint32_t n; } rowref;

static int rowref_cmp(const void *a, const void *b)
{
    const rowref *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, m);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* Split a row list into a sorted, de-duplicated array. */
static rowref *rows_sorted(const buf *rows, size_t *count)
{
    size_t n = 0, cap = 16;
    rowref *r = xmalloc(cap * sizeof *r);
    const uint8_t *p = (const uint8_t *)rows->data, *end = p ? p + rows->len : p;
    while (p && p + 4 <= end) {
        uint32_t len;
        memcpy(&len, p, 4);
        p += 4;
        if (n == cap) { cap *= 2; r = xrealloc(r, cap * sizeof *r); }
        r[n].p = p;
        r[n].n = len;
        n++;
        p += len;
    }
    qsort(r, n, sizeof *r, rowref_cmp);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || rowref_cmp(&r[w - 1], &r[i]) != 0) r[w++] = r[i];
    *count = w;
    return r;
}

/* A composite index definition (CompositeIndex proto), decoded enough to
 * build rows. */
typedef struct {
    int64_t id;
    ds_bytes kind;
    int ancestor;
    size_t nprops;
    ds_bytes names[32];
    int dirs[32];
} comp_def;

static int comp_def_decode(const uint8_t *p, size_t n, comp_def *d)
{
    memset(d, 0, sizeof *d);
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt, k;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        if (f == 2) { if (pb_int64(&r, wt, &d->id) < 0) return -1; }
        else if (f == 3) {
            pb_reader def;
            if (pb_sub(&r, wt, &def) < 0) return -1;
            uint32_t df;
            int dw, dk;
            while ((dk = pb_next(&def, &df, &dw)) > 0) {
                if (df == 1) { if (pb_bytes(&def, dw, &d->kind.p, &d->kind.n) < 0) return -1; }
                else if (df == 5) { if (pb_bool(&def, dw, &d->ancestor) < 0) return -1; }
                else if (df == 2 && dw == PB_SGROUP) {
                    pb_reader g;
                    if (pb_group(&def, dw, df, &g) < 0) return -1;
                    if (d->nprops >= 32) return -1;
                    ds_bytes nm = {0, 0};
                    int32_t dir = 1;
                    uint32_t gf;
                    int gw, gk;
                    while ((gk = pb_next(&g, &gf, &gw)) > 0) {
                        if (gf == 3) { if (pb_bytes(&g, gw, &nm.p, &nm.n) < 0) return -1; }
                        else if (gf == 4) { if (pb_int32(&g, gw, &dir) < 0) return -1; }
                        else if (pb_skip(&g, gw, gf) < 0) return -1;
                    }
                    if (gk < 0) return -1;
                    d->names[d->nprops] = nm;
                    d->dirs[d->nprops] = dir == 2 ? KC_DESC : KC_ASC;
                    d->nprops++;
                } else if (pb_skip(&def, dw, df) < 0) return -1;
            }
            if (dk < 0) return -1;
        } else if (pb_skip(&r, wt, f) < 0) return -1;
    }
    return k < 0 ? -1 : 0;
}

/* Values of property `name` that are indexed, as pointers into ent. */
static size_t prop_values(const ds_entity *ent, ds_bytes name, const ds_value **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < ent->nprops && n < max; i++) {
        const ds_prop *pr = &ent->props[i];
        if (!ds_prop_indexable(pr) || pr->name.n != name.n || memcmp(pr->name.p, name.p, name.n)) continue;
        out[n++] = &pr->v;
    }
    return n;
}

#define MAX_VALS 1000

static int composite_rows(const ds_entity *ent, const comp_def *d, buf *rows, size_t *count, ds_err *e)
{
    const ds_ref *k = &ent->key;
    const ds_value **vals[32];
    size_t nv[32];
    ds_value keyval;
    memset(&keyval, 0, sizeof keyval);
    keyval.type = DSV_REF;
    keyval.ref = *k;
    int rc = 0;
    for (size_t i = 0; i < d->nprops; i++) vals[i] = NULL;
    for (size_t i = 0; i < d->nprops; i++) {
        vals[i] = xmalloc(MAX_VALS * sizeof *vals[i]);
        if (bytes_eq(d->names[i], "__key__")) { vals[i][0] = &keyval; nv[i] = 1; }
        else nv[i] = prop_values(ent, d->names[i], vals[i], MAX_VALS);
        if (nv[i] == 0) goto out;              /* entity lacks a property: no rows */
    }
    size_t idx[32] = {0};
    size_t nanc = d->ancestor ? k->nelems : 1;
    buf row = BUF_INIT;
    for (;;) {
        for (size_t a = 0; a < nanc; a++) {
            if (++*count > MAX_INDEX_ROWS) {
                buf_free(&row);
                rc = dserr(e, DS_BAD_REQUEST, "too many indexed properties: an entity would need more than %d index rows",
                           MAX_INDEX_ROWS);
                goto out;
            }
            buf_reset(&row);
            kc_composite_prefix(&row, k->app, k->ns, d->id);
            if (d->ancestor) kc_put_path(&row, k->elems, a + 1);
            for (size_t i = 0; i < d->nprops; i++) kc_put_value(&row, vals[i][idx[i]], d->dirs[i]);
            kc_put_path(&row, k->elems, k->nelems);
            if (check_row_len(&row, e, "a composite index entry") < 0) { buf_free(&row); rc = -1; goto out; }
            row_add(rows, &row);
        }
        /* Next combination (odometer over the value lists). */
        size_t i = d->nprops;
        while (i > 0) {
            i--;
            if (++idx[i] < nv[i]) break;
            idx[i] = 0;
            if (i == 0) { i = (size_t)-1; break; }
        }
        if (i == (size_t)-1 || d->nprops == 0) break;
    }
    buf_free(&row);
out:
    for (size_t i = 0; i < d->nprops; i++) free(vals[i]);
    return rc;
}

int ds_index_rows(datastore *ds, kv_txn *kt, const ds_entity *ent, buf *rows, ds_err *e)
{
    (void)ds;
    const ds_ref *k = &ent->key;
    ds_bytes kind = k->elems[k->nelems - 1].type;
    buf row = BUF_INIT;
    size_t count = 1;
    kc_kind_key(&row, k->app, k->ns, kind, k->elems, k->nelems);
    if (check_row_len(&row, e, "the entity's key") < 0) { buf_free(&row); return -1; }
    row_add(rows, &row);
    for (size_t i = 0; i < ent->nprops; i++) {
        const ds_prop *pr = &ent->props[i];
        if (!ds_prop_indexable(pr)) continue;
        for (int dir = KC_ASC; dir <= KC_DESC; dir++) {
            buf_reset(&row);
            kc_prop_key(&row, k->app, k->ns, kind, pr->name, dir, &pr->v, k->elems, k->nelems);
            if (row.len > KV_MAX_KEY) {
                dserr(e, DS_BAD_REQUEST, "the value of indexed property \"%.*s\" is too long to index "
                      "(%zu bytes with its key; the limit is %d); make the property unindexed",
                      (int)(pr->name.n > 100 ? 100 : pr->name.n), (const char *)pr->name.p, row.len, KV_MAX_KEY);
                buf_free(&row);
                return -1;
            }
            row_add(rows, &row);
            count++;
        }
        if (count > MAX_INDEX_ROWS) {
            buf_free(&row);
            return dserr(e, DS_BAD_REQUEST, "too many indexed properties: an entity would need more than %d index rows",
                         MAX_INDEX_ROWS);
        }
    }
    buf_free(&row);
    if (!kt) return 0;

    /* Composite index definitions: 'M' app "index" int64(id) -> CompositeIndex. */
    buf pfx = BUF_INIT;
    kc_meta_prefix(&pfx, k->app, "index");
    kv_cursor *c;
    char kerr[256];
    int rc = kv_cursor_open(kt, &c, kerr, sizeof kerr);
    if (rc != KV_OK) { buf_free(&pfx); kv_status(rc, e, "open a cursor", kerr); return -1; }
    rc = kv_seek(c, pfx.data, pfx.len, KV_FWD, kerr, sizeof kerr);
    int r = 0;
    while (rc == KV_OK) {
        const void *rk, *rv;
        size_t rkn, rvn;
        kv_cursor_get(c, &rk, &rkn, &rv, &rvn);
        if (rkn < pfx.len || memcmp(rk, pfx.data, pfx.len)) break;
        comp_def d;
        if (comp_def_decode(rv, rvn, &d) == 0 && d.kind.n == kind.n && !memcmp(d.kind.p, kind.p, kind.n)) {
            /* rv stays valid: nothing is written while we read. */
            if (composite_rows(ent, &d, rows, &count, e) < 0) { r = -1; break; }
        }
        rc = kv_next(c, kerr, sizeof kerr);
    }
    kv_cursor_close(c);
    buf_free(&pfx);
    if (r < 0) return -1;
    if (rc != KV_OK && rc != KV_NOTFOUND) return kv_status(rc, e, "read index definitions", kerr);
    return 0;
}

/* ---- writing entities ---- */

static int bump_group(kv_txn *kt, const ds_ref *k, ds_err *e)
{
    buf g = BUF_INIT;
    kc_group_key(&g, k->app, k->ns, &k->elems[0]);
    int64_t v;
    int r = read_i64(kt, &g, &v, e);
    if (r == 0) r = write_i64(kt, &g, v + 1, e);
    buf_free(&g);
    return r;
}

/* Delete the stored entity at ekey (if any) with its index rows, or, with
 * new_ent, replace it. */
static int write_rows(datastore *ds, kv_txn *kt, const buf *ekey, const ds_entity *new_ent,
                      const uint8_t *new_bytes, size_t new_len, ds_err *e)
{
    char kerr[256];
    const void *old;
    size_t oldn;
    buf oldrows = BUF_INIT, newrows = BUF_INIT;
    rowref *o = NULL, *nw = NULL;
    size_t no = 0, nn = 0;
    uint8_t *oldcopy = NULL;
    int r = -1;
    int rc = kv_get(kt, ekey->data, ekey->len, &old, &oldn, kerr, sizeof kerr);
    if (rc != KV_OK && rc != KV_NOTFOUND) { kv_status(rc, e, "read an entity", kerr); goto out; }
    if (rc == KV_OK) {
        oldcopy = xmalloc(oldn ? oldn : 1);
        memcpy(oldcopy, old, oldn);
        ds_entity oe;
        if (ds_entity_decode(oldcopy, oldn, &oe, kerr, sizeof kerr) == 0) {
            int ir = ds_index_rows(ds, kt, &oe, &oldrows, e);
            ds_entity_free(&oe);
            /* An old entity that no longer yields rows (e.g. a limit
             * changed) must still be replaceable: drop what we have. */
            if (ir < 0 && is_retry(e)) goto out;
        } else {
            log_warn("datastore", "msg=\"stored entity undecodable; replacing it\" err=%s", log_q(kerr));
        }
    }
    if (new_ent && ds_index_rows(ds, kt, new_ent, &newrows, e) < 0) goto out;
    o = rows_sorted(&oldrows, &no);
    nw = rows_sorted(&newrows, &nn);
    size_t i = 0, j = 0;
    while (i < no || j < nn) {
        int c = i >= no ? 1 : j >= nn ? -1 : rowref_cmp(&o[i], &nw[j]);
        if (c < 0) {
            rc = kv_del(kt, o[i].p, o[i].n, kerr, sizeof kerr);
            if (rc != KV_OK && rc != KV_NOTFOUND) { kv_status(rc, e, "delete an index row", kerr); goto out; }
            i++;
        } else if (c > 0) {
            rc = kv_put(kt, nw[j].p, nw[j].n, "", 0, kerr, sizeof kerr);
            if (rc != KV_OK) { kv_status(rc, e, "write an index row", kerr); goto out; }
            j++;
        } else { i++; j++; }
    }
    if (new_ent) rc = kv_put(kt, ekey->data, ekey->len, new_bytes, new_len, kerr, sizeof kerr);
    else rc = oldcopy ? kv_del(kt, ekey->data, ekey->len, kerr, sizeof kerr) : KV_OK;
    if (rc != KV_OK && rc != KV_NOTFOUND) { kv_status(rc, e, "write an entity", kerr); goto out; }
    r = 0;
out:
    free(o);
    free(nw);
    free(oldcopy);
    buf_free(&oldrows);
    buf_free(&newrows);
    return r;
}

/* ---- ids ---- */

static int64_t scatter(int64_t counter)
{
    uint64_t c = (uint64_t)counter, rev = 0;
    for (int i = 0; i < SCATTER_BITS; i++) if (c & (UINT64_C(1) << i)) rev |= UINT64_C(1) << (SCATTER_BITS - 1 - i);
    return (int64_t)((UINT64_C(1) << 52) + rev);
}

/* Which sequence an id belongs to and its counter value; 0 for neither. */
static int id_counter(int64_t id, int64_t *counter)
{
    if (id > 0 && id <= DS_MAX_SEQUENTIAL_ID) { *counter = id; return KC_SEQ_SEQUENTIAL; }
    int64_t base = INT64_C(1) << 52;
    if (id >= base && id < base + (INT64_C(1) << SCATTER_BITS)) {
        uint64_t v = (uint64_t)(id - base), c = 0;
        for (int i = 0; i < SCATTER_BITS; i++) if (v & (UINT64_C(1) << i)) c |= UINT64_C(1) << (SCATTER_BITS - 1 - i);
        *counter = (int64_t)c;
        return KC_SEQ_SCATTERED;
    }
    return 0;
}

/* Reserve n ids from a sequence; *first gets the first counter value. */
static int seq_take(kv_txn *kt, ds_bytes app, int which, int64_t n, int64_t *first, ds_err *e)
{
    buf k = BUF_INIT;
    kc_seq_key(&k, app, which);
    int64_t last;
    int r = read_i64(kt, &k, &last, e);
    int64_t max = which == KC_SEQ_SEQUENTIAL ? DS_MAX_SEQUENTIAL_ID : (INT64_C(1) << SCATTER_BITS) - 1;
    if (r == 0 && (n < 0 || last > max - n))
        r = dserr(e, DS_BAD_REQUEST, "cannot allocate %lld more ids: the id space is exhausted", (long long)n);
    if (r == 0 && n > 0) r = write_i64(kt, &k, last + n, e);
    *first = last + 1;
    buf_free(&k);
    return r;
}

/* Make sure the sequence an id belongs to never hands it out. */
static int seq_observe(kv_txn *kt, ds_bytes app, int64_t id, ds_err *e)
{
    int64_t c;
    int which = id_counter(id, &c);
    if (!which) return 0;
    buf k = BUF_INIT;
    kc_seq_key(&k, app, which);
    int64_t last;
    int r = read_i64(kt, &k, &last, e);
    if (r == 0 && c > last) r = write_i64(kt, &k, c, e);
    buf_free(&k);
    return r;
}

static int assign_id(kv_txn *kt, ds_ref *k, int sequential, ds_err *e)
{
    int64_t c;
    if (seq_take(kt, k->app, sequential ? KC_SEQ_SEQUENTIAL : KC_SEQ_SCATTERED, 1, &c, e) < 0) return -1;
    ds_elem *last = &k->elems[k->nelems - 1];
    last->id = sequential ? c : scatter(c);
    last->has_id = 1;
    return 0;
}

/* ---- transactions table ---- */

int ds_txn_decode(const uint8_t *p, size_t n, uint64_t *handle, ds_bytes *app)
{
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt, k, has = 0;
    app->p = NULL;
    app->n = 0;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) { if (pb_fixed64(&r, wt, handle) < 0) return -1; has = 1; }
        else if (f == 2) { if (pb_bytes(&r, wt, &app->p, &app->n) < 0) return -1; }
        else if (pb_skip(&r, wt, f) < 0) return -1;
    }
    return k < 0 || !has ? -1 : 0;
}

static void txn_release(datastore *ds, ds_txn *t)
{
    pthread_mutex_lock(&ds->mu);
    int last = --t->refs == 0;
    pthread_mutex_unlock(&ds->mu);
    if (last) txn_free(t);
}

/* Find (and reference) a live transaction; unlink=1 also removes it. */
static ds_txn *txn_find(datastore *ds, const char *app, uint64_t handle, int unlink, ds_err *e)
{
    pthread_mutex_lock(&ds->mu);
    ds_txn **pp = &ds->txns, *t = NULL;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->handle == handle) { t = *pp; break; }
    if (t && strcmp(t->app, app) != 0) t = NULL;
    if (t) {
        t->refs++;
        t->last_used_ms = now_ms();
        if (unlink) { *pp = t->next; t->linked = 0; t->refs--; }
    }
    pthread_mutex_unlock(&ds->mu);
    if (!t) dserr(e, DS_BAD_REQUEST, "the transaction has expired or is invalid (handle %llu)",
                  (unsigned long long)handle);
    return t;
}

/* Remember the version of key's entity group as seen through kt (first
 * observation wins). Caller holds t->mu. */
static int txn_observe(ds_txn *t, kv_txn *kt, const ds_ref *k, int written, ds_err *e)
{
    buf g = BUF_INIT;
    kc_group_key(&g, k->app, k->ns, &k->elems[0]);
    for (size_t i = 0; i < t->ngroups; i++) {
        if (t->groups[i].gkey.len == g.len && !memcmp(t->groups[i].gkey.data, g.data, g.len)) {
            t->groups[i].written |= written;
            buf_free(&g);
            return 0;
        }
    }
    int64_t v;
    if (read_i64(kt, &g, &v, e) < 0) { buf_free(&g); return -1; }
    if (t->ngroups == t->capg) {
        t->capg = t->capg ? t->capg * 2 : 4;
        t->groups = xrealloc(t->groups, t->capg * sizeof *t->groups);
    }
    t->groups[t->ngroups].gkey = g;
    t->groups[t->ngroups].version = v;
    t->groups[t->ngroups].written = written;
    t->ngroups++;
    return 0;
}

static void txn_add_mut(ds_txn *t, int is_put, const void *p, size_t n)
{
    if (t->nmuts == t->capm) {
        t->capm = t->capm ? t->capm * 2 : 8;
        t->muts = xrealloc(t->muts, t->capm * sizeof *t->muts);
    }
    txn_mut *m = &t->muts[t->nmuts++];
    m->is_put = is_put;
    memset(&m->data, 0, sizeof m->data);
    buf_append(&m->data, p, n);
}

int ds_txn_note_read(datastore *ds, const char *app, uint64_t handle, kv_txn *kt, const ds_ref *key, ds_err *e)
{
    if (key->nelems == 0) return 0;
    ds_txn *t = txn_find(ds, app, handle, 0, e);
    if (!t) return -1;
    pthread_mutex_lock(&t->mu);
    int r = txn_observe(t, kt, key, 0, e);
    pthread_mutex_unlock(&t->mu);
    txn_release(ds, t);
    return r;
}

int ds_txn_on_commit(datastore *ds, const char *app, uint64_t handle, size_t limit,
                     ds_commit_fn fn, void (*done)(void *arg, int committed), void *arg, ds_err *e)
{
    ds_txn *t = txn_find(ds, app, handle, 0, e);
    if (!t) return -1;
    pthread_mutex_lock(&t->mu);
    int r = 0;
    if (limit && t->nhooks >= limit) r = 1;
    else {
        t->hooks = xrealloc(t->hooks, (t->nhooks + 1) * sizeof *t->hooks);
        t->hooks[t->nhooks++] = (txn_hook){fn, done, arg};
    }
    pthread_mutex_unlock(&t->mu);
    txn_release(ds, t);
    return r;
}

/* Parse an embedded Transaction field and find it. */
static ds_txn *txn_from_field(datastore *ds, const char *app, const uint8_t *p, size_t n, ds_err *e)
{
    uint64_t h;
    ds_bytes tapp;
    if (ds_txn_decode(p, n, &h, &tapp) < 0) {
        dserr(e, DS_BAD_REQUEST, "the request's transaction is not a well-formed message");
        return NULL;
    }
    return txn_find(ds, app, h, 0, e);
}

/* ---- Get ---- */

int ds_get(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, k;
    const uint8_t *txp = NULL;
    size_t txn_len = 0;
    size_t nkeys = 0;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t pn;
        if (f == 1) { if (pb_bytes(&r, wt, &p, &pn) < 0) break; nkeys++; }
        else if (f == 2) { if (pb_bytes(&r, wt, &txp, &txn_len) < 0) break; }
        else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (k < 0 || r.err) return dserr(e, DS_BAD_REQUEST, "the Get request is not a well-formed message");

    ds_txn *t = NULL;
    if (txp && !(t = txn_from_field(ds, app, txp, txn_len, e))) return -1;

    size_t mark = resp->len;
    int result = -1;
    for (int attempt = 0; attempt < KV_RETRIES; attempt++) {
        resp->len = mark;
        kv_txn *kt;
        char kerr[256];
        if (t) pthread_mutex_lock(&t->mu);    /* before the engine txn: see txn_find */
        int rc = kv_begin(ds->kv, 0, &kt, kerr, sizeof kerr);
        if (rc != KV_OK) { if (t) pthread_mutex_unlock(&t->mu); kverr(e, "begin a read", kerr); break; }
        int bad = 0;
        pb_reader_init(&r, req, n);
        while (!bad && pb_next(&r, &f, &wt) > 0) {
            if (f != 1) { pb_skip(&r, wt, f); continue; }
            const uint8_t *p;
            size_t pn;
            pb_bytes(&r, wt, &p, &pn);
            ds_ref key;
            if (ds_ref_decode(p, pn, &key, e->msg, sizeof e->msg) < 0) { e->code = DS_BAD_REQUEST; bad = 1; break; }
            if (check_key(app, &key, 1, e) < 0) { ds_ref_free(&key); bad = 1; break; }
            buf ek = BUF_INIT;
            kc_entity_key(&ek, key.app, key.ns, key.elems, key.nelems);
            const void *v;
            size_t vn;
            rc = ek.len > KV_MAX_KEY ? KV_NOTFOUND : kv_get(kt, ek.data, ek.len, &v, &vn, kerr, sizeof kerr);
            buf_free(&ek);
            if (rc != KV_OK && rc != KV_NOTFOUND) { kv_status(rc, e, "read an entity", kerr); ds_ref_free(&key); bad = 1; break; }
            if (t && txn_observe(t, kt, &key, 0, e) < 0) { ds_ref_free(&key); bad = 1; break; }
            buf g = BUF_INIT;
            int64_t ver = 0;
            if (rc == KV_OK) {
                kc_group_key(&g, key.app, key.ns, &key.elems[0]);
                if (read_i64(kt, &g, &ver, e) < 0) { buf_free(&g); ds_ref_free(&key); bad = 1; break; }
                buf_free(&g);
            }
            pb_group_begin(resp, 1);
            if (rc == KV_OK) {
                pb_put_bytes(resp, 2, v, vn);
                pb_put_int(resp, 3, ver);
            } else {
                pb_put_bytes(resp, 4, p, pn);
            }
            pb_group_end(resp, 1);
            ds_ref_free(&key);
        }
        kv_abort(kt);
        if (t) pthread_mutex_unlock(&t->mu);
        if (!bad) { result = 0; break; }
        if (!is_retry(e)) break;
    }
    if (result < 0 && is_retry(e)) dserr(e, DS_TIMEOUT, "the datastore was too busy to read; try again");
    if (result < 0) resp->len = mark;
    if (t) txn_release(ds, t);
    return result;
}

/* ---- Put ---- */

typedef struct {
    ds_entity ent;
    buf bytes;          /* what gets stored (key rewritten when needed) */
    int incomplete;
} put_item;

static void put_items_free(put_item *it, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ds_entity_free(&it[i].ent);
        buf_free(&it[i].bytes);
    }
    free(it);
}

/* Fill it->bytes from the entity with its (possibly new) key and decode
 * that copy back so rows see the final key. */
static int finalize_item(put_item *it, ds_err *e)
{
    buf nb = BUF_INIT;
    ds_entity_encode_keyed(&nb, &it->ent, &it->ent.key);   /* reads it->bytes: build aside */
    if (nb.len > DS_MAX_ENTITY_BYTES) {
        size_t len = nb.len;
        buf_free(&nb);
        return dserr(e, DS_BAD_REQUEST, "the entity is too big: %zu bytes, the limit is %d",
                     len, DS_MAX_ENTITY_BYTES);
    }
    ds_entity_free(&it->ent);
    buf_free(&it->bytes);
    it->bytes = nb;
    if (ds_entity_decode((const uint8_t *)it->bytes.data, it->bytes.len, &it->ent, e->msg, sizeof e->msg) < 0) {
        e->code = DS_INTERNAL_ERROR;
        return -1;
    }
    return 0;
}

/* Store one final entity and keep ids in step; no group bump. */
static int store_entity(datastore *ds, kv_txn *kt, const ds_entity *ent, const uint8_t *bytes, size_t n, ds_err *e)
{
    const ds_ref *k = &ent->key;
    buf ek = BUF_INIT;
    kc_entity_key(&ek, k->app, k->ns, k->elems, k->nelems);
    int r = check_row_len(&ek, e, "the entity's key");
    const ds_elem *last = &k->elems[k->nelems - 1];
    if (r == 0 && last->has_id) r = seq_observe(kt, k->app, last->id, e);
    if (r == 0) r = write_rows(ds, kt, &ek, ent, bytes, n, e);
    buf_free(&ek);
    return r;
}

static void put_response(buf *resp, put_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t m = pb_begin(resp, 1);
        ds_ref_encode(resp, &items[i].ent.key);
        pb_end(resp, m);
    }
}

static int put_impl(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e,
                    int allow_reserved);

int ds_put(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    return put_impl(ds, app, req, n, resp, e, 0);
}

int ds_put_reserved(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    return put_impl(ds, app, req, n, resp, e, 1);
}

static int put_impl(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e,
                    int allow_reserved)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, k;
    const uint8_t *txp = NULL;
    size_t txn_len = 0;
    int32_t policy = 0;
    size_t nitems = 0, cap = 0;
    put_item *items = NULL;
    int result = -1;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t pn;
        if (f == 1) {
            if (pb_bytes(&r, wt, &p, &pn) < 0) break;
            if (pn > DS_MAX_ENTITY_BYTES) {
                dserr(e, DS_BAD_REQUEST, "the entity is too big: %zu bytes, the limit is %d", pn, DS_MAX_ENTITY_BYTES);
                goto out;
            }
            if (nitems == cap) { cap = cap ? cap * 2 : 8; items = xrealloc(items, cap * sizeof *items); }
            put_item *it = &items[nitems];
            memset(it, 0, sizeof *it);
            if (ds_entity_decode(p, pn, &it->ent, e->msg, sizeof e->msg) < 0) { e->code = DS_BAD_REQUEST; goto out; }
            nitems++;
            if (check_key(app, &it->ent.key, 0, e) < 0) goto out;
            ds_elem *last = &it->ent.key.elems[it->ent.key.nelems - 1];
            it->incomplete = !last->has_id && !last->has_name;
            if (!allow_reserved && last->type.n >= 4 && last->type.p[0] == '_' && last->type.p[1] == '_' &&
                last->type.p[last->type.n - 1] == '_' && last->type.p[last->type.n - 2] == '_')
                { dserr(e, DS_BAD_REQUEST, "kinds of the form __*__ are reserved and cannot be written"); goto out; }
        } else if (f == 2) { if (pb_bytes(&r, wt, &txp, &txn_len) < 0) break; }
        else if (f == 10) { if (pb_int32(&r, wt, &policy) < 0) break; }
        else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (k < 0 || r.err) { dserr(e, DS_BAD_REQUEST, "the Put request is not a well-formed message"); goto out; }
    int sequential = policy == 1;

    if (txp) {
        ds_txn *t = txn_from_field(ds, app, txp, txn_len, e);
        if (!t) goto out;
        if (t->read_only) {
            txn_release(ds, t);
            dserr(e, DS_BAD_REQUEST, "a read-only transaction cannot write entities");
            goto out;
        }
        /* Ids are allocated now, outside the transaction, and never reused. */
        int any = 0;
        for (size_t i = 0; i < nitems; i++) any |= items[i].incomplete;
        for (int attempt = 0; any && attempt < KV_RETRIES; attempt++) {
            kv_txn *kt;
            char kerr[256];
            if (kv_begin(ds->kv, 1, &kt, kerr, sizeof kerr) != KV_OK) { kverr(e, "begin an id allocation", kerr); txn_release(ds, t); goto out; }
            int bad = 0;
            for (size_t i = 0; i < nitems && !bad; i++)
                if (items[i].incomplete && assign_id(kt, &items[i].ent.key, sequential, e) < 0) bad = 1;
            int rc = KV_OK;
            if (bad) kv_abort(kt);
            else rc = kv_commit(kt, kerr, sizeof kerr);
            if (!bad && rc == KV_OK) { any = 0; break; }
            for (size_t i = 0; i < nitems; i++)
                if (items[i].incomplete) items[i].ent.key.elems[items[i].ent.key.nelems - 1].has_id = 0;
            if (bad && is_retry(e)) continue;
            if (!bad && rc == KV_CONFLICT) continue;
            if (!bad) kverr(e, "allocate ids", kerr);
            txn_release(ds, t);
            goto out;
        }
        if (any) { dserr(e, DS_TIMEOUT, "the datastore was too busy to allocate ids; try again"); txn_release(ds, t); goto out; }
        for (size_t i = 0; i < nitems; i++)
            if (finalize_item(&items[i], e) < 0) { txn_release(ds, t); goto out; }
        /* Record the groups written (their versions as of now) and buffer. */
        kv_txn *kt;
        char kerr[256];
        pthread_mutex_lock(&t->mu);
        if (kv_begin(ds->kv, 0, &kt, kerr, sizeof kerr) != KV_OK) { pthread_mutex_unlock(&t->mu); kverr(e, "begin a read", kerr); txn_release(ds, t); goto out; }
        int bad = 0;
        for (size_t i = 0; i < nitems && !bad; i++) {
            if (txn_observe(t, kt, &items[i].ent.key, 1, e) < 0) bad = 1;
            else {
                /* Check index rows now so Commit does not fail on them. */
                buf rows = BUF_INIT;
                if (ds_index_rows(ds, NULL, &items[i].ent, &rows, e) < 0) bad = 1;
                buf_free(&rows);
            }
            if (!bad) txn_add_mut(t, 1, items[i].bytes.data, items[i].bytes.len);
        }
        kv_abort(kt);
        pthread_mutex_unlock(&t->mu);
        txn_release(ds, t);
        if (bad) { if (is_retry(e)) dserr(e, DS_TIMEOUT, "the datastore was too busy; try again"); goto out; }
        put_response(resp, items, nitems);
        result = 0;
        goto out;
    }

    for (int attempt = 0; attempt < KV_RETRIES; attempt++) {
        kv_txn *kt;
        char kerr[256];
        if (kv_begin(ds->kv, 1, &kt, kerr, sizeof kerr) != KV_OK) { kverr(e, "begin a write", kerr); goto out; }
        int bad = 0;
        for (size_t i = 0; i < nitems && !bad; i++) {
            put_item *it = &items[i];
            if (it->incomplete) {
                it->ent.key.elems[it->ent.key.nelems - 1].has_id = 0;
                if (assign_id(kt, &it->ent.key, sequential, e) < 0) { bad = 1; break; }
            }
            if (finalize_item(it, e) < 0 ||
                store_entity(ds, kt, &it->ent, (const uint8_t *)it->bytes.data, it->bytes.len, e) < 0 ||
                bump_group(kt, &it->ent.key, e) < 0) bad = 1;
        }
        if (bad) {
            kv_abort(kt);
            if (is_retry(e)) continue;
            goto out;
        }
        int rc = kv_commit(kt, kerr, sizeof kerr);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) { kverr(e, "commit a write", kerr); goto out; }
        put_response(resp, items, nitems);
        result = 0;
        goto out;
    }
    dserr(e, DS_TIMEOUT, "the datastore was too busy to write; try again");
out:
    put_items_free(items, nitems);
    return result;
}

/* ---- Delete ---- */

static int delete_entity(datastore *ds, kv_txn *kt, const ds_ref *k, ds_err *e)
{
    buf ek = BUF_INIT;
    kc_entity_key(&ek, k->app, k->ns, k->elems, k->nelems);
    int r = ek.len > KV_MAX_KEY ? 0 : write_rows(ds, kt, &ek, NULL, NULL, 0, e);
    buf_free(&ek);
    return r;
}

int ds_delete(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, k;
    const uint8_t *txp = NULL;
    size_t txn_len = 0;
    ds_ref *keys = NULL;
    size_t nkeys = 0, cap = 0;
    int result = -1;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t pn;
        if (f == 6) {
            if (pb_bytes(&r, wt, &p, &pn) < 0) break;
            if (nkeys == cap) { cap = cap ? cap * 2 : 8; keys = xrealloc(keys, cap * sizeof *keys); }
            if (ds_ref_decode(p, pn, &keys[nkeys], e->msg, sizeof e->msg) < 0) { e->code = DS_BAD_REQUEST; goto out; }
            nkeys++;
            if (check_key(app, &keys[nkeys - 1], 1, e) < 0) goto out;
        } else if (f == 5) { if (pb_bytes(&r, wt, &txp, &txn_len) < 0) break; }
        else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (k < 0 || r.err) { dserr(e, DS_BAD_REQUEST, "the Delete request is not a well-formed message"); goto out; }

    if (txp) {
        ds_txn *t = txn_from_field(ds, app, txp, txn_len, e);
        if (!t) goto out;
        if (t->read_only) { txn_release(ds, t); dserr(e, DS_BAD_REQUEST, "a read-only transaction cannot delete entities"); goto out; }
        kv_txn *kt;
        char kerr[256];
        pthread_mutex_lock(&t->mu);
        if (kv_begin(ds->kv, 0, &kt, kerr, sizeof kerr) != KV_OK) { pthread_mutex_unlock(&t->mu); kverr(e, "begin a read", kerr); txn_release(ds, t); goto out; }
        int bad = 0;
        for (size_t i = 0; i < nkeys && !bad; i++) {
            if (txn_observe(t, kt, &keys[i], 1, e) < 0) { bad = 1; break; }
            buf kb = BUF_INIT;
            ds_ref_encode(&kb, &keys[i]);
            txn_add_mut(t, 0, kb.data, kb.len);
            buf_free(&kb);
        }
        kv_abort(kt);
        pthread_mutex_unlock(&t->mu);
        txn_release(ds, t);
        if (bad) goto out;
        result = 0;
        goto out;
    }

    for (int attempt = 0; attempt < KV_RETRIES; attempt++) {
        kv_txn *kt;
        char kerr[256];
        if (kv_begin(ds->kv, 1, &kt, kerr, sizeof kerr) != KV_OK) { kverr(e, "begin a write", kerr); goto out; }
        int bad = 0;
        for (size_t i = 0; i < nkeys && !bad; i++)
            if (delete_entity(ds, kt, &keys[i], e) < 0 || bump_group(kt, &keys[i], e) < 0) bad = 1;
        if (bad) { kv_abort(kt); if (is_retry(e)) continue; goto out; }
        int rc = kv_commit(kt, kerr, sizeof kerr);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) { kverr(e, "commit a delete", kerr); goto out; }
        result = 0;
        goto out;
    }
    dserr(e, DS_TIMEOUT, "the datastore was too busy to delete; try again");
out:
    for (size_t i = 0; i < nkeys; i++) ds_ref_free(&keys[i]);
    free(keys);
    (void)resp;
    return result;
}

/* ---- AllocateIds ---- */

int ds_allocate_ids(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, k;
    int64_t size = 0, max = 0;
    int has_size = 0, has_max = 0;
    ds_ref model;
    int has_model = 0;
    ds_ref *reserve = NULL;
    size_t nres = 0, cap = 0;
    int result = -1;
    memset(&model, 0, sizeof model);
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t pn;
        if (f == 1) {
            if (pb_bytes(&r, wt, &p, &pn) < 0) break;
            ds_ref_free(&model);
            if (ds_ref_decode(p, pn, &model, e->msg, sizeof e->msg) < 0) { e->code = DS_BAD_REQUEST; goto out; }
            has_model = 1;
            if (check_key(app, &model, 0, e) < 0) goto out;
        } else if (f == 2) { if (pb_int64(&r, wt, &size) < 0) break; has_size = 1; }
        else if (f == 3) { if (pb_int64(&r, wt, &max) < 0) break; has_max = 1; }
        else if (f == 5) {
            if (pb_bytes(&r, wt, &p, &pn) < 0) break;
            if (nres == cap) { cap = cap ? cap * 2 : 8; reserve = xrealloc(reserve, cap * sizeof *reserve); }
            if (ds_ref_decode(p, pn, &reserve[nres], e->msg, sizeof e->msg) < 0) { e->code = DS_BAD_REQUEST; goto out; }
            nres++;
            if (check_key(app, &reserve[nres - 1], 1, e) < 0) goto out;
        } else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (k < 0 || r.err) { dserr(e, DS_BAD_REQUEST, "the AllocateIds request is not a well-formed message"); goto out; }
    if (has_size && has_max) { dserr(e, DS_BAD_REQUEST, "AllocateIds takes a size or a max, not both"); goto out; }
    if ((has_size || has_max) && !has_model) { dserr(e, DS_BAD_REQUEST, "AllocateIds needs a model key"); goto out; }
    if (has_size && (size < 1 || size > 1000000000)) { dserr(e, DS_BAD_REQUEST, "cannot allocate %lld ids: the size must be between 1 and 1000000000", (long long)size); goto out; }
    if (has_max && (max < 0 || max > DS_MAX_SEQUENTIAL_ID)) { dserr(e, DS_BAD_REQUEST, "cannot allocate ids up to %lld: the max is out of range", (long long)max); goto out; }

    ds_bytes appb = ds_cstr(app);
    for (int attempt = 0; attempt < KV_RETRIES; attempt++) {
        kv_txn *kt;
        char kerr[256];
        if (kv_begin(ds->kv, 1, &kt, kerr, sizeof kerr) != KV_OK) { kverr(e, "begin an id allocation", kerr); goto out; }
        int64_t start = 0, end = 0;
        int bad = 0;
        if (has_size) {
            if (seq_take(kt, appb, KC_SEQ_SEQUENTIAL, size, &start, e) < 0) bad = 1;
            end = start + size - 1;
        } else if (has_max) {
            int64_t last;
            if (seq_take(kt, appb, KC_SEQ_SEQUENTIAL, 0, &start, e) < 0) bad = 1;
            last = start - 1;
            if (!bad && max > last && seq_observe(kt, appb, max, e) < 0) bad = 1;
            end = max > last ? max : last;
        }
        for (size_t i = 0; i < nres && !bad; i++) {
            const ds_elem *el = &reserve[i].elems[reserve[i].nelems - 1];
            if (el->has_id && seq_observe(kt, appb, el->id, e) < 0) bad = 1;
        }
        if (bad) { kv_abort(kt); if (is_retry(e)) continue; goto out; }
        int rc = kv_commit(kt, kerr, sizeof kerr);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) { kverr(e, "commit an id allocation", kerr); goto out; }
        pb_put_int(resp, 1, start);
        pb_put_int(resp, 2, end);
        result = 0;
        goto out;
    }
    dserr(e, DS_TIMEOUT, "the datastore was too busy to allocate ids; try again");
out:
    ds_ref_free(&model);
    for (size_t i = 0; i < nres; i++) ds_ref_free(&reserve[i]);
    free(reserve);
    return result;
}

/* ---- BeginTransaction / Commit / Rollback ---- */

static void txn_reap(datastore *ds)
{
    int64_t now = now_ms();
    pthread_mutex_lock(&ds->mu);
    for (ds_txn **pp = &ds->txns; *pp;) {
        ds_txn *t = *pp;
        if (now - t->last_used_ms > TXN_IDLE_MS) {
            *pp = t->next;
            t->linked = 0;
            if (--t->refs == 0) txn_free(t);
        } else pp = &t->next;
    }
    pthread_mutex_unlock(&ds->mu);
}

int ds_begin_transaction(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, k;
    ds_bytes rapp = {0, 0};
    int32_t mode = 0;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) { if (pb_bytes(&r, wt, &rapp.p, &rapp.n) < 0) break; }
        else if (f == 5) { if (pb_int32(&r, wt, &mode) < 0) break; }
        else if (pb_skip(&r, wt, f) < 0) break;
    }
    if (k < 0 || r.err) return dserr(e, DS_BAD_REQUEST, "the BeginTransaction request is not a well-formed message");
    if (rapp.n && !bytes_eq(rapp, app))
        return dserr(e, DS_BAD_REQUEST, "app \"%.*s\" cannot begin a transaction for app \"%s\"",
                     (int)(rapp.n > 100 ? 100 : rapp.n), (const char *)rapp.p, app);
    txn_reap(ds);
    ds_txn *t = xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    t->app = xstrdup(app);
    t->read_only = mode == 1;
    t->refs = 1;
    t->linked = 1;
    t->last_used_ms = now_ms();
    pthread_mutex_lock(&ds->mu);
    for (;;) {
        uint64_t h = 0;
        if (random_bytes(&h, sizeof h) < 0) h = (uint64_t)wall_us() * 2654435761u;
        if (h == 0) continue;
        int dup = 0;
        for (ds_txn *o = ds->txns; o; o = o->next) if (o->handle == h) dup = 1;
        if (!dup) { t->handle = h; break; }
    }
    t->next = ds->txns;
    ds->txns = t;
    pthread_mutex_unlock(&ds->mu);
    pb_put_fixed64(resp, 1, t->handle);
    pb_put_str(resp, 2, app);
    return 0;
}

static int apply_mutation(datastore *ds, kv_txn *kt, const txn_mut *m, ds_err *e)
{
    if (m->is_put) {
        ds_entity ent;
        if (ds_entity_decode((const uint8_t *)m->data.data, m->data.len, &ent, e->msg, sizeof e->msg) < 0) {
            e->code = DS_INTERNAL_ERROR;
            return -1;
        }
        int r = store_entity(ds, kt, &ent, (const uint8_t *)m->data.data, m->data.len, e);
        ds_entity_free(&ent);
        return r;
    }
    ds_ref key;
    if (ds_ref_decode((const uint8_t *)m->data.data, m->data.len, &key, e->msg, sizeof e->msg) < 0) {
        e->code = DS_INTERNAL_ERROR;
        return -1;
    }
    int r = delete_entity(ds, kt, &key, e);
    ds_ref_free(&key);
    return r;
}

int ds_commit(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    uint64_t h;
    ds_bytes tapp;
    if (ds_txn_decode(req, n, &h, &tapp) < 0)
        return dserr(e, DS_BAD_REQUEST, "the Commit request is not a well-formed transaction");
    ds_txn *t = txn_find(ds, app, h, 1, e);
    if (!t) return -1;
    pthread_mutex_lock(&t->mu);
    int result = -1;
    for (int attempt = 0; attempt < KV_RETRIES; attempt++) {
        kv_txn *kt;
        char kerr[256];
        int write = t->nmuts > 0 || t->nhooks > 0;
        if (kv_begin(ds->kv, write, &kt, kerr, sizeof kerr) != KV_OK) { kverr(e, "begin a commit", kerr); break; }
        int bad = 0, conflict = 0;
        for (size_t i = 0; i < t->ngroups && !bad; i++) {
            int64_t v;
            if (read_i64(kt, &t->groups[i].gkey, &v, e) < 0) bad = 1;
            else if (v != t->groups[i].version) conflict = bad = 1;
        }
        for (size_t i = 0; i < t->nmuts && !bad; i++)
            if (apply_mutation(ds, kt, &t->muts[i], e) < 0) bad = 1;
        for (size_t i = 0; i < t->ngroups && !bad; i++) {
            if (!t->groups[i].written) continue;
            if (write_i64(kt, &t->groups[i].gkey, t->groups[i].version + 1, e) < 0) bad = 1;
        }
        for (size_t i = 0; i < t->nhooks && !bad; i++) {
            int hr = t->hooks[i].fn(t->hooks[i].arg, kt, kerr, sizeof kerr);
            if (hr != KV_OK) {
                bad = 1;
                if (hr == KV_CONFLICT) kv_status(hr, e, "", "");
                else dserr(e, DS_INTERNAL_ERROR, "the transaction's tasks could not be queued: %s", kerr);
            }
        }
        if (bad) {
            kv_abort(kt);
            if (conflict) {
                dserr(e, DS_CONCURRENT_TRANSACTION,
                      "too much contention on these datastore entities: another request changed them during this transaction; please try again");
                break;
            }
            if (is_retry(e)) continue;
            break;
        }
        int rc = kv_commit(kt, kerr, sizeof kerr);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) { kverr(e, "commit a transaction", kerr); break; }
        result = 0;
        for (size_t i = 0; i < t->nhooks; i++) t->hooks[i].done(t->hooks[i].arg, 1);
        t->nhooks = 0;
        break;
    }
    if (result < 0 && is_retry(e))
        dserr(e, DS_CONCURRENT_TRANSACTION, "the datastore was too busy to commit this transaction; please try again");
    pthread_mutex_unlock(&t->mu);
    txn_release(ds, t);
    (void)resp;    /* CommitResponse: every field is optional */
    return result;
}

int ds_rollback(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    uint64_t h;
    ds_bytes tapp;
    (void)resp;
    if (ds_txn_decode(req, n, &h, &tapp) < 0)
        return dserr(e, DS_BAD_REQUEST, "the Rollback request is not a well-formed transaction");
    ds_txn *t = txn_find(ds, app, h, 1, e);
    if (!t) return -1;
    txn_release(ds, t);
    return 0;
}
