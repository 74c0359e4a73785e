/* test_datastore.c - the datastore core over a real LMDB engine: put, get
 * and delete, index rows written and removed, id allocation that never
 * repeats, transactions (commit, rollback, conflicts, read-only,
 * cross-group, all-or-nothing, concurrent increments), errors with their
 * datastore_v3 codes, and composite index rows. Requests are built as the
 * SDKs build them (datastore_v3 messages). */
#include "test.h"
#include "tmpdir.h"

#include <pthread.h>
#include <stdint.h>
#include "datastore/datastore.h"
#include "datastore/keycodec.h"
#include "proto/pb.h"

#define APP "dev~testapp"
static char dir[256];
static datastore *ds;

static void open_ds(void)
{
    char err[256];
    test_mkdtemp(dir, sizeof dir);
    ds = ds_open(dir, err, sizeof err);
    if (!ds) printf("  ds_open: %s\n", err);
}

static void close_ds(void) { ds_close(ds); ds = NULL; test_rmtree(dir); }

/* ---- building messages ---- */

typedef struct { const char *kind; int64_t id; const char *name; } el;

static ds_ref mkref(const char *app, const char *ns, const el *path, size_t n, ds_elem *store)
{
    ds_ref r;
    memset(&r, 0, sizeof r);
    r.app = ds_cstr(app);
    r.ns = ds_cstr(ns);
    for (size_t i = 0; i < n; i++) {
        memset(&store[i], 0, sizeof store[i]);
        store[i].type = ds_cstr(path[i].kind);
        if (path[i].name) { store[i].name = ds_cstr(path[i].name); store[i].has_name = 1; }
        else if (path[i].id) { store[i].id = path[i].id; store[i].has_id = 1; }
    }
    r.elems = store;
    r.nelems = n;
    return r;
}

/* An entity with integer properties (names[i] = vals[i]; indexed unless
 * the name starts with '_') and optional string props. */
static void mkentity(buf *out, const char *app, const char *ns, const el *path, size_t n,
                     const char **names, const int64_t *vals, size_t np)
{
    ds_elem store[8], gstore[1];
    ds_entity e;
    memset(&e, 0, sizeof e);
    e.key = mkref(app, ns, path, n, store);
    (void)gstore;
    ds_prop props[16];
    memset(props, 0, sizeof props);
    for (size_t i = 0; i < np; i++) {
        props[i].name = ds_cstr(names[i]);
        props[i].indexed = names[i][0] != '_';
        props[i].stashed = -1;
        props[i].v.type = DSV_INT;
        props[i].v.i = vals[i];
    }
    e.props = props;
    e.nprops = np;
    ds_entity_encode(out, &e);
}

static void put_entity_field(buf *req, const buf *ent)
{
    pb_put_bytes(req, 1, ent->data, ent->len);
}

static void put_txn_field(buf *req, int field, uint64_t h)
{
    if (!h) return;
    size_t m = pb_begin(req, (uint32_t)field);
    pb_put_fixed64(req, 1, h);
    pb_put_str(req, 2, APP);
    pb_end(req, m);
}

static void key_field(buf *req, int field, const char *app, const char *ns, const el *path, size_t n)
{
    ds_elem store[8];
    ds_ref r = mkref(app, ns, path, n, store);
    size_t m = pb_begin(req, (uint32_t)field);
    ds_ref_encode(req, &r);
    pb_end(req, m);
}

/* ---- operations ---- */

static __thread ds_err E;

/* Put one entity; returns 0/-1 and the assigned last id / key path. */
static int put1(const el *path, size_t n, const char **names, const int64_t *vals, size_t np,
                uint64_t txn, int policy, int64_t *id_out)
{
    buf ent = BUF_INIT, req = BUF_INIT, resp = BUF_INIT;
    mkentity(&ent, APP, "", path, n, names, vals, np);
    put_entity_field(&req, &ent);
    put_txn_field(&req, 2, txn);
    if (policy) pb_put_int(&req, 10, policy);
    int r = ds_put(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E);
    if (r == 0 && id_out) {
        pb_reader rd;
        pb_reader_init(&rd, resp.data, resp.len);
        uint32_t f; int wt;
        while (pb_next(&rd, &f, &wt) > 0) {
            const uint8_t *p; size_t pn;
            pb_bytes(&rd, wt, &p, &pn);
            ds_ref k;
            char err[64];
            if (f == 1 && ds_ref_decode(p, pn, &k, err, sizeof err) == 0) {
                *id_out = k.elems[k.nelems - 1].id;
                ds_ref_free(&k);
            }
        }
    }
    buf_free(&ent); buf_free(&req); buf_free(&resp);
    return r;
}

/* Get one entity: returns 1 found (value of property `prop` in *val), 0 missing, -1 error. */
static int get1(const el *path, size_t n, uint64_t txn, const char *prop, int64_t *val)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    key_field(&req, 1, APP, "", path, n);
    put_txn_field(&req, 2, txn);
    int r = ds_get(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E);
    int found = -1;
    if (r == 0) {
        pb_reader rd, g;
        pb_reader_init(&rd, resp.data, resp.len);
        uint32_t f; int wt;
        found = 0;
        while (pb_next(&rd, &f, &wt) > 0) {
            if (f != 1) { pb_skip(&rd, wt, f); continue; }
            pb_group(&rd, wt, f, &g);
            uint32_t gf; int gw;
            while (pb_next(&g, &gf, &gw) > 0) {
                if (gf == 2) {
                    const uint8_t *p; size_t pn;
                    pb_bytes(&g, gw, &p, &pn);
                    ds_entity e;
                    char err[64];
                    if (ds_entity_decode(p, pn, &e, err, sizeof err) == 0) {
                        found = 1;
                        for (size_t i = 0; prop && i < e.nprops; i++)
                            if (e.props[i].name.n == strlen(prop) && !memcmp(e.props[i].name.p, prop, e.props[i].name.n))
                                *val = e.props[i].v.i;
                        ds_entity_free(&e);
                    }
                } else pb_skip(&g, gw, gf);
            }
        }
    }
    buf_free(&req); buf_free(&resp);
    return found;
}

static int del1(const el *path, size_t n, uint64_t txn)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    key_field(&req, 6, APP, "", path, n);
    put_txn_field(&req, 5, txn);
    int r = ds_delete(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E);
    buf_free(&req); buf_free(&resp);
    return r;
}

static uint64_t begin(int mode)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    pb_put_str(&req, 1, APP);
    pb_put_bool(&req, 2, 1);
    if (mode) pb_put_int(&req, 5, mode);
    uint64_t h = 0;
    if (ds_begin_transaction(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E) == 0) {
        ds_bytes a;
        ds_txn_decode((const uint8_t *)resp.data, resp.len, &h, &a);
    }
    buf_free(&req); buf_free(&resp);
    return h;
}

static int end_txn(uint64_t h, int commit)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    pb_put_fixed64(&req, 1, h);
    pb_put_str(&req, 2, APP);
    int r = commit ? ds_commit(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E)
                   : ds_rollback(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E);
    buf_free(&req); buf_free(&resp);
    return r;
}

static int alloc_ids(int64_t size, int64_t max, const el *reserve, int64_t *start, int64_t *end)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    el model[1] = { { "M", 0, NULL } };
    if (size || max) key_field(&req, 1, APP, "", model, 1);
    if (size) pb_put_int(&req, 2, size);
    if (max) pb_put_int(&req, 3, max);
    if (reserve) key_field(&req, 5, APP, "", reserve, 1);
    int r = ds_allocate_ids(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E);
    if (r == 0) {
        pb_reader rd;
        pb_reader_init(&rd, resp.data, resp.len);
        uint32_t f; int wt;
        while (pb_next(&rd, &f, &wt) > 0) {
            int64_t v;
            pb_int64(&rd, wt, &v);
            if (f == 1) *start = v;
            if (f == 2) *end = v;
        }
    }
    buf_free(&req); buf_free(&resp);
    return r;
}

/* Count rows whose key starts with tag + app (and, if given, that
 * contain `needle` bytes somewhere). */
static int count_rows(int tag, const char *needle, size_t nn)
{
    buf pfx = BUF_INIT;
    buf_putc(&pfx, (char)tag);
    kc_put_cstr(&pfx, APP);
    kv_txn *t;
    kv_cursor *c;
    char err[128];
    int n = 0;
    if (kv_begin(ds_kv(ds), 0, &t, err, sizeof err) != KV_OK) return -1;
    kv_cursor_open(t, &c, err, sizeof err);
    for (int rc = kv_seek(c, pfx.data, pfx.len, KV_FWD, err, sizeof err); rc == KV_OK; rc = kv_next(c, err, sizeof err)) {
        const void *k; size_t kn;
        kv_cursor_get(c, &k, &kn, NULL, NULL);
        if (kn < pfx.len || memcmp(k, pfx.data, pfx.len)) break;
        if (needle && !memmem(k, kn, needle, nn)) continue;
        n++;
    }
    kv_cursor_close(c);
    kv_abort(t);
    buf_free(&pfx);
    return n;
}

/* ---- tests ---- */

TEST(put_get_delete)
{
    open_ds();
    el k[1] = { { "Thing", 0, "alpha" } };
    const char *names[] = { "a", "_hidden" };
    int64_t vals[] = { 5, 6 };
    CHECK_INT(put1(k, 1, names, vals, 2, 0, 0, NULL), 0);
    int64_t v = 0;
    CHECK_INT(get1(k, 1, 0, "a", &v), 1);
    CHECK_INT(v, 5);
    CHECK_INT(get1(k, 1, 0, "_hidden", &v), 1);
    CHECK_INT(v, 6);
    el other[1] = { { "Thing", 0, "beta" } };
    CHECK_INT(get1(other, 1, 0, NULL, NULL), 0);
    vals[0] = 7;
    CHECK_INT(put1(k, 1, names, vals, 2, 0, 0, NULL), 0);     /* overwrite */
    CHECK_INT(get1(k, 1, 0, "a", &v), 1);
    CHECK_INT(v, 7);
    CHECK_INT(del1(k, 1, 0), 0);
    CHECK_INT(get1(k, 1, 0, NULL, NULL), 0);
    CHECK_INT(del1(k, 1, 0), 0);                             /* deleting twice is fine */
    close_ds();
}

TEST(index_rows_follow_the_entity)
{
    open_ds();
    el k[2] = { { "Parent", 3, NULL }, { "Kid", 0, "k" } };
    const char *names[] = { "a", "b", "b", "_raw" };
    int64_t vals[] = { 1, 10, 11, 99 };
    CHECK_INT(put1(k, 2, names, vals, 4, 0, 0, NULL), 0);
    CHECK_INT(count_rows(KC_ENTITY, NULL, 0), 1);
    CHECK_INT(count_rows(KC_KIND, NULL, 0), 1);
    /* a: asc+desc; b: two values, asc+desc; _raw: unindexed. */
    CHECK_INT(count_rows(KC_PROP, NULL, 0), 6);
    CHECK_INT(count_rows(KC_PROP, "_raw", 4), 0);
    CHECK_INT(count_rows(KC_GROUP, NULL, 0), 1);

    /* Update: a changes, b loses a value. Old rows go, new ones come. */
    const char *names2[] = { "a", "b" };
    int64_t vals2[] = { 2, 10 };
    CHECK_INT(put1(k, 2, names2, vals2, 2, 0, 0, NULL), 0);
    CHECK_INT(count_rows(KC_PROP, NULL, 0), 4);
    buf v = BUF_INIT;
    ds_value iv = { .type = DSV_INT, .i = 1 };
    kc_put_value(&v, &iv, KC_ASC);
    CHECK_INT(count_rows(KC_PROP, v.data, v.len), 0);         /* no row holds a=1 any more */
    buf_reset(&v);
    iv.i = 2;
    kc_put_value(&v, &iv, KC_ASC);
    CHECK_INT(count_rows(KC_PROP, v.data, v.len), 1);
    buf_free(&v);

    CHECK_INT(del1(k, 2, 0), 0);
    CHECK_INT(count_rows(KC_ENTITY, NULL, 0), 0);
    CHECK_INT(count_rows(KC_KIND, NULL, 0), 0);
    CHECK_INT(count_rows(KC_PROP, NULL, 0), 0);
    close_ds();
}

TEST(descending_rows_scan_in_reverse_value_order)
{
    open_ds();
    const char *names[] = { "n" };
    for (int i = 1; i <= 5; i++) {
        el k[1] = { { "N", i, NULL } };
        int64_t vals[] = { (i * 7) % 5 };   /* values 2,4,1,3,0 */
        CHECK_INT(put1(k, 1, names, vals, 1, 0, 0, NULL), 0);
    }
    buf pfx = BUF_INIT;
    kc_prop_prefix(&pfx, ds_cstr(APP), ds_cstr(""), ds_cstr("N"), ds_cstr("n"), KC_DESC);
    kv_txn *t;
    kv_cursor *c;
    char err[128];
    kv_begin(ds_kv(ds), 0, &t, err, sizeof err);
    kv_cursor_open(t, &c, err, sizeof err);
    int64_t prev = 100;
    int n = 0, ordered = 1;
    for (int rc = kv_seek(c, pfx.data, pfx.len, KV_FWD, err, sizeof err); rc == KV_OK; rc = kv_next(c, err, sizeof err)) {
        const void *k; size_t kn;
        kv_cursor_get(c, &k, &kn, NULL, NULL);
        if (kn < pfx.len || memcmp(k, pfx.data, pfx.len)) break;
        const uint8_t *p = (const uint8_t *)k + pfx.len, *end = (const uint8_t *)k + kn;
        buf pv = BUF_INIT;
        CHECK_INT(kc_get_value(&p, end, KC_DESC, &pv), 0);
        CHECK_INT(kc_get_path(&p, end, NULL), 0);
        CHECK(p == end);
        ds_value dv;
        ds_value_decode((const uint8_t *)pv.data, pv.len, &dv, err, sizeof err);
        if (dv.i >= prev) ordered = 0;
        prev = dv.i;
        n++;
        buf_free(&pv);
    }
    CHECK_INT(n, 5);
    CHECK(ordered);
    kv_cursor_close(c);
    kv_abort(t);
    buf_free(&pfx);
    close_ds();
}

TEST(ids_never_repeat)
{
    open_ds();
    el inc[1] = { { "A", 0, NULL } };
    /* Default policy: scattered ids, all distinct, in their range. */
    int64_t seen[50];
    int ok = 1;
    for (int i = 0; i < 50; i++) {
        CHECK_INT(put1(inc, 1, NULL, NULL, 0, 0, 0, &seen[i]), 0);
        if (seen[i] <= DS_MAX_SEQUENTIAL_ID || seen[i] >= (INT64_C(3) << 51)) ok = 0;
        for (int j = 0; j < i; j++) if (seen[j] == seen[i]) ok = 0;
    }
    CHECK(ok);
    /* Sequential policy counts from 1. */
    int64_t id;
    CHECK_INT(put1(inc, 1, NULL, NULL, 0, 0, 1, &id), 0);
    CHECK_INT(id, 1);
    CHECK_INT(put1(inc, 1, NULL, NULL, 0, 0, 1, &id), 0);
    CHECK_INT(id, 2);
    int64_t s = 0, e = 0;
    CHECK_INT(alloc_ids(10, 0, NULL, &s, &e), 0);
    CHECK_INT(s, 3);
    CHECK_INT(e, 12);
    /* An id the app puts itself advances the sequence. */
    el k1000[1] = { { "A", 1000, NULL } };
    CHECK_INT(put1(k1000, 1, NULL, NULL, 0, 0, 0, NULL), 0);
    CHECK_INT(alloc_ids(1, 0, NULL, &s, &e), 0);
    CHECK_INT(s, 1001);
    CHECK_INT(put1(inc, 1, NULL, NULL, 0, 0, 1, &id), 0);
    CHECK_INT(id, 1002);
    /* max reserves everything up to it; reserve skips a given id. */
    CHECK_INT(alloc_ids(0, 5000, NULL, &s, &e), 0);
    CHECK_INT(s, 1003);
    CHECK_INT(e, 5000);
    el r6000[1] = { { "A", 6000, NULL } };
    CHECK_INT(alloc_ids(0, 0, r6000, &s, &e), 0);
    CHECK_INT(alloc_ids(2, 0, NULL, &s, &e), 0);
    CHECK_INT(s, 6001);
    /* Ids survive a reopen. */
    char err[128];
    ds_close(ds);
    ds = ds_open(dir, err, sizeof err);
    CHECK_INT(alloc_ids(1, 0, NULL, &s, &e), 0);
    CHECK_INT(s, 6003);
    /* Ids allocated inside a transaction are not reused after a rollback. */
    uint64_t h = begin(0);
    CHECK_INT(put1(inc, 1, NULL, NULL, 0, h, 1, &id), 0);
    CHECK_INT(id, 6004);
    CHECK_INT(end_txn(h, 0), 0);
    CHECK_INT(put1(inc, 1, NULL, NULL, 0, 0, 1, &id), 0);
    CHECK_INT(id, 6005);
    /* Bad sizes. */
    CHECK_INT(alloc_ids(-5, 0, NULL, &s, &e), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    close_ds();
}

TEST(transactions)
{
    open_ds();
    el x[1] = { { "X", 1, NULL } }, y[1] = { { "Y", 1, NULL } };
    const char *nm[] = { "v" };
    int64_t one[] = { 1 }, two[] = { 2 }, three[] = { 3 };
    CHECK_INT(put1(x, 1, nm, one, 1, 0, 0, NULL), 0);

    /* Commit makes buffered writes visible, not before. */
    uint64_t t = begin(0);
    CHECK(t != 0);
    int64_t v = 0;
    CHECK_INT(get1(x, 1, t, "v", &v), 1);
    CHECK_INT(put1(x, 1, nm, two, 1, t, 0, NULL), 0);
    CHECK_INT(get1(x, 1, 0, "v", &v), 1);
    CHECK_INT(v, 1);
    CHECK_INT(end_txn(t, 1), 0);
    CHECK_INT(get1(x, 1, 0, "v", &v), 1);
    CHECK_INT(v, 2);
    /* The handle is gone after commit. */
    CHECK_INT(end_txn(t, 1), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);

    /* Two transactions read the same group: the second to commit loses. */
    uint64_t t1 = begin(0), t2 = begin(0);
    CHECK_INT(get1(x, 1, t1, "v", &v), 1);
    CHECK_INT(get1(x, 1, t2, "v", &v), 1);
    CHECK_INT(put1(x, 1, nm, three, 1, t1, 0, NULL), 0);
    CHECK_INT(put1(x, 1, nm, one, 1, t2, 0, NULL), 0);
    CHECK_INT(end_txn(t1, 1), 0);
    CHECK_INT(end_txn(t2, 1), -1);
    CHECK_INT(E.code, DS_CONCURRENT_TRANSACTION);
    CHECK_INT(get1(x, 1, 0, "v", &v), 1);
    CHECK_INT(v, 3);

    /* A blind write conflicts with a write that lands before its commit. */
    t = begin(0);
    CHECK_INT(put1(x, 1, nm, one, 1, t, 0, NULL), 0);
    CHECK_INT(put1(x, 1, nm, two, 1, 0, 0, NULL), 0);
    CHECK_INT(end_txn(t, 1), -1);
    CHECK_INT(E.code, DS_CONCURRENT_TRANSACTION);

    /* Writes to another group do not conflict. */
    t = begin(0);
    CHECK_INT(get1(x, 1, t, "v", &v), 1);
    CHECK_INT(put1(y, 1, nm, one, 1, 0, 0, NULL), 0);
    CHECK_INT(end_txn(t, 1), 0);

    /* Rollback discards; the handle is then invalid. */
    t = begin(0);
    CHECK_INT(del1(x, 1, t), 0);
    CHECK_INT(end_txn(t, 0), 0);
    CHECK_INT(get1(x, 1, 0, "v", &v), 1);
    CHECK_INT(end_txn(t, 1), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);

    /* Cross-group and all-or-nothing. */
    t = begin(0);
    el z[1] = { { "Z", 9, NULL } };
    CHECK_INT(get1(y, 1, t, "v", &v), 1);
    CHECK_INT(put1(x, 1, nm, three, 1, t, 0, NULL), 0);
    CHECK_INT(put1(z, 1, nm, three, 1, t, 0, NULL), 0);
    CHECK_INT(put1(y, 1, nm, two, 1, 0, 0, NULL), 0);        /* invalidates t's read of y */
    CHECK_INT(end_txn(t, 1), -1);
    CHECK_INT(E.code, DS_CONCURRENT_TRANSACTION);
    CHECK_INT(get1(z, 1, 0, NULL, NULL), 0);                  /* nothing of t applied */
    CHECK_INT(get1(x, 1, 0, "v", &v), 1);
    CHECK_INT(v, 2);
    t = begin(0);
    CHECK_INT(put1(x, 1, nm, three, 1, t, 0, NULL), 0);
    CHECK_INT(put1(z, 1, nm, three, 1, t, 0, NULL), 0);
    CHECK_INT(del1(y, 1, t), 0);
    CHECK_INT(end_txn(t, 1), 0);
    CHECK_INT(get1(z, 1, 0, "v", &v), 1);
    CHECK_INT(v, 3);
    CHECK_INT(get1(y, 1, 0, NULL, NULL), 0);

    /* Read-only transactions read but cannot write. */
    t = begin(1);
    CHECK_INT(get1(x, 1, t, "v", &v), 1);
    CHECK_INT(put1(x, 1, nm, one, 1, t, 0, NULL), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    CHECK_INT(end_txn(t, 1), 0);

    /* An unknown handle. */
    CHECK_INT(get1(x, 1, 12345, "v", &v), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    close_ds();
}

typedef struct { int done, retries; } worker_stats;

static void *incrementer(void *arg)
{
    worker_stats *st = arg;
    el c[1] = { { "Counter", 1, NULL } };
    const char *nm[] = { "n" };
    for (int i = 0; i < 25; i++) {
        for (int attempt = 0; attempt < 200; attempt++) {
            ds_err saved;
            uint64_t t = begin(0);
            int64_t v = 0;
            int r = get1(c, 1, t, "n", &v);
            int64_t nv[] = { v + 1 };
            if (r >= 0) r = put1(c, 1, nm, nv, 1, t, 0, NULL);
            if (r >= 0) r = end_txn(t, 1);
            saved = E;
            if (r == 0) { st->done++; break; }
            (void)saved;
            st->retries++;
        }
    }
    return NULL;
}

TEST(concurrent_increments_serialize)
{
    open_ds();
    el c[1] = { { "Counter", 1, NULL } };
    const char *nm[] = { "n" };
    int64_t zero[] = { 0 };
    CHECK_INT(put1(c, 1, nm, zero, 1, 0, 0, NULL), 0);
    pthread_t th[4];
    worker_stats st[4];
    memset(st, 0, sizeof st);
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, incrementer, &st[i]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    int done = 0;
    for (int i = 0; i < 4; i++) done += st[i].done;
    CHECK_INT(done, 100);
    int64_t v = 0;
    CHECK_INT(get1(c, 1, 0, "n", &v), 1);
    CHECK_INT(v, 100);
    close_ds();
}

TEST(errors_have_codes)
{
    open_ds();
    buf ent = BUF_INIT, req = BUF_INIT, resp = BUF_INIT;
    el k[1] = { { "T", 1, NULL } };
    /* Another app's key. */
    mkentity(&ent, "dev~other", "", k, 1, NULL, NULL, 0);
    put_entity_field(&req, &ent);
    CHECK_INT(ds_put(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    CHECK(strstr(E.msg, "dev~other") != NULL);
    /* Garbage. */
    CHECK_INT(ds_put(ds, APP, (const uint8_t *)"\xff\xff", 2, &resp, &E), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    CHECK_INT(ds_get(ds, APP, (const uint8_t *)"\x0a\x05zz", 4, &resp, &E), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    /* Get of an incomplete key. */
    el inc[1] = { { "T", 0, NULL } };
    CHECK_INT(get1(inc, 1, 0, NULL, NULL), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    /* Reserved kind. */
    el res[1] = { { "__Stat__", 1, NULL } };
    CHECK_INT(put1(res, 1, NULL, NULL, 0, 0, 0, NULL), -1);
    CHECK_INT(E.code, DS_BAD_REQUEST);
    /* An entity over 1 MiB. */
    buf_reset(&ent); buf_reset(&req);
    {
        ds_elem st[1];
        ds_entity e;
        memset(&e, 0, sizeof e);
        e.key = mkref(APP, "", k, 1, st);
        ds_prop p;
        memset(&p, 0, sizeof p);
        p.name = ds_cstr("blob");
        p.meaning = DS_MEANING_BLOB;
        p.stashed = -1;
        p.v.type = DSV_STRING;
        static char big[1100000];
        p.v.s.p = (const uint8_t *)big;
        p.v.s.n = sizeof big;
        e.props = &p;
        e.nprops = 1;
        ds_entity_encode(&ent, &e);
        put_entity_field(&req, &ent);
        CHECK_INT(ds_put(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E), -1);
        CHECK_INT(E.code, DS_BAD_REQUEST);
        CHECK(strstr(E.msg, "too big") != NULL);
        /* Just under the limit is fine. */
        p.v.s.n = 1000000;
        buf_reset(&ent); buf_reset(&req);
        ds_entity_encode(&ent, &e);
        put_entity_field(&req, &ent);
        CHECK_INT(ds_put(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E), 0);
        /* An indexed 1500-byte string (App Engine's limit) is indexed. */
        p.meaning = 0;
        p.indexed = 1;
        p.v.s.n = 1500;
        memset(big, 'q', 1500);
        buf_reset(&ent); buf_reset(&req);
        ds_entity_encode(&ent, &e);
        put_entity_field(&req, &ent);
        int before = count_rows(KC_PROP, NULL, 0);
        CHECK_INT(ds_put(ds, APP, (const uint8_t *)req.data, req.len, &resp, &E), 0);
        CHECK_INT(count_rows(KC_PROP, NULL, 0), before + 2);
    }
    buf_free(&ent); buf_free(&req); buf_free(&resp);
    close_ds();
}

TEST(composite_rows)
{
    open_ds();
    /* Define index 7: kind T, ancestor, a asc, b desc. */
    buf def = BUF_INIT, key = BUF_INIT;
    pb_put_str(&def, 1, APP);
    pb_put_int(&def, 2, 7);
    size_t m = pb_begin(&def, 3);
    pb_put_str(&def, 1, "T");
    pb_put_bool(&def, 5, 1);
    pb_group_begin(&def, 2); pb_put_str(&def, 3, "a"); pb_put_int(&def, 4, 1); pb_group_end(&def, 2);
    pb_group_begin(&def, 2); pb_put_str(&def, 3, "b"); pb_put_int(&def, 4, 2); pb_group_end(&def, 2);
    pb_end(&def, m);
    pb_put_int(&def, 4, 2);
    kc_meta_prefix(&key, ds_cstr(APP), "index");
    kc_put_i64(&key, 7);
    kv_txn *t;
    char err[128];
    CHECK_INT(kv_begin(ds_kv(ds), 1, &t, err, sizeof err), KV_OK);
    CHECK_INT(kv_put(t, key.data, key.len, def.data, def.len, err, sizeof err), KV_OK);
    CHECK_INT(kv_commit(t, err, sizeof err), KV_OK);

    el k[2] = { { "P", 1, NULL }, { "T", 2, NULL } };
    const char *names[] = { "a", "b", "b" };
    int64_t vals[] = { 1, 2, 3 };
    CHECK_INT(put1(k, 2, names, vals, 3, 0, 0, NULL), 0);
    /* 2 ancestors x (1 a-value x 2 b-values) */
    CHECK_INT(count_rows(KC_COMPOSITE, NULL, 0), 4);
    /* An entity lacking b has no composite rows. */
    el k2[1] = { { "T", 3, NULL } };
    CHECK_INT(put1(k2, 1, names, vals, 1, 0, 0, NULL), 0);
    CHECK_INT(count_rows(KC_COMPOSITE, NULL, 0), 4);
    /* Rows go with the entity. */
    CHECK_INT(del1(k, 2, 0), 0);
    CHECK_INT(count_rows(KC_COMPOSITE, NULL, 0), 0);
    buf_free(&def); buf_free(&key);
    close_ds();
}

int main(void)
{
    RUN(put_get_delete);
    RUN(index_rows_follow_the_entity);
    RUN(descending_rows_scan_in_reverse_value_order);
    RUN(ids_never_repeat);
    RUN(transactions);
    RUN(concurrent_increments_serialize);
    RUN(errors_have_codes);
    RUN(composite_rows);
    return test_report();
}
