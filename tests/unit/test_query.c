/* test_query.c - datastore queries over a real LMDB datastore in a temp dir:
 * every query shape the planner knows, ordering across value types, cursors
 * and batches, composite indexes (strict and auto), projection, distinct,
 * metadata queries, and the Query/cursor decoders on malformed input. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/util.h"
#include "datastore/datastore.h"
#include "datastore/query.h"
#include "proto/pb.h"

#define APP "dev~qtest"

static char tmpdir[256];
static datastore *ds;
static dsq_engine *eng;

/* ---- building messages ---- */

typedef struct { const char *kind; int64_t id; const char *name; } pe;

static void put_path(buf *b, const pe *path, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pb_group_begin(b, 1);
        pb_put_str(b, 2, path[i].kind);
        if (path[i].name) pb_put_str(b, 4, path[i].name);
        else pb_put_int(b, 3, path[i].id);
        pb_group_end(b, 1);
    }
}

static void put_ref(buf *b, uint32_t field, const char *ns, const pe *path, size_t n)
{
    size_t m = pb_begin(b, field);
    pb_put_str(b, 13, APP);
    if (ns && *ns) pb_put_str(b, 20, ns);
    size_t pm = pb_begin(b, 14);
    put_path(b, path, n);
    pb_end(b, pm);
    pb_end(b, m);
}

/* PropertyValue bodies. */
typedef struct { int type; int64_t i; const char *s; double d; } val;
enum { V_NULL, V_INT, V_BOOL, V_STR, V_DBL };
static val I(int64_t i) { val v = {V_INT, i, NULL, 0}; return v; }
static val S(const char *s) { val v = {V_STR, 0, s, 0}; return v; }
static val D(double d) { val v = {V_DBL, 0, NULL, d}; return v; }
static val B(int b) { val v = {V_BOOL, b, NULL, 0}; return v; }
static val N(void) { val v = {V_NULL, 0, NULL, 0}; return v; }

static void put_value(buf *b, uint32_t field, val v)
{
    size_t m = pb_begin(b, field);
    if (v.type == V_INT) pb_put_int(b, 1, v.i);
    else if (v.type == V_BOOL) pb_put_bool(b, 2, (int)v.i);
    else if (v.type == V_STR) pb_put_str(b, 3, v.s);
    else if (v.type == V_DBL) pb_put_double(b, 4, v.d);
    pb_end(b, m);
}

static void put_prop(buf *b, const char *name, val v, int multiple)
{
    size_t m = pb_begin(b, 14);
    pb_put_str(b, 3, name);
    pb_put_bool(b, 4, multiple);
    put_value(b, 5, v);
    pb_end(b, m);
}

typedef struct { const char *name; val v; int multiple; } prop;

static void put_entity(const char *ns, const pe *path, size_t n, const prop *props, size_t np)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    size_t m = pb_begin(&req, 1);
    put_ref(&req, 13, ns, path, n);
    size_t g = pb_begin(&req, 16);
    put_path(&req, path, 1);
    pb_end(&req, g);
    for (size_t i = 0; i < np; i++) put_prop(&req, props[i].name, props[i].v, props[i].multiple);
    pb_end(&req, m);
    ds_err e = {0};
    int rc = ds_put(ds, APP, (uint8_t *)req.data, req.len, &resp, &e);
    if (rc != 0) printf("  put failed: %s\n", e.msg);
    CHECK(rc == 0);
    buf_free(&req); buf_free(&resp);
}

static void delete_entity(const pe *path, size_t n)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    put_ref(&req, 6, "", path, n);
    ds_err e = {0};
    CHECK(ds_delete(ds, APP, (uint8_t *)req.data, req.len, &resp, &e) == 0);
    buf_free(&req); buf_free(&resp);
}

/* A query under construction. */
typedef struct { buf b; } qb;

static void q_init(qb *q, const char *kind)
{
    memset(q, 0, sizeof *q);
    pb_put_str(&q->b, 1, APP);
    if (kind) pb_put_str(&q->b, 3, kind);
}
static void q_filter(qb *q, const char *prop, int op, val v)
{
    pb_group_begin(&q->b, 4);
    pb_put_int(&q->b, 6, op);
    size_t m = pb_begin(&q->b, 14);
    pb_put_str(&q->b, 3, prop);
    pb_put_bool(&q->b, 4, 0);
    put_value(&q->b, 5, v);
    pb_end(&q->b, m);
    pb_group_end(&q->b, 4);
}
static void q_key_filter(qb *q, int op, const pe *path, size_t n)
{
    pb_group_begin(&q->b, 4);
    pb_put_int(&q->b, 6, op);
    size_t m = pb_begin(&q->b, 14);
    pb_put_str(&q->b, 3, "__key__");
    pb_put_bool(&q->b, 4, 0);
    size_t v = pb_begin(&q->b, 5);
    pb_group_begin(&q->b, 12);
    pb_put_str(&q->b, 13, APP);
    for (size_t i = 0; i < n; i++) {
        pb_group_begin(&q->b, 14);
        pb_put_str(&q->b, 15, path[i].kind);
        if (path[i].name) pb_put_str(&q->b, 17, path[i].name);
        else pb_put_int(&q->b, 16, path[i].id);
        pb_group_end(&q->b, 14);
    }
    pb_group_end(&q->b, 12);
    pb_end(&q->b, v);
    pb_end(&q->b, m);
    pb_group_end(&q->b, 4);
}
static void q_order(qb *q, const char *prop, int desc)
{
    pb_group_begin(&q->b, 9);
    pb_put_str(&q->b, 10, prop);
    pb_put_int(&q->b, 11, desc ? 2 : 1);
    pb_group_end(&q->b, 9);
}

/* ---- reading results ---- */

typedef struct {
    int n;
    int64_t ids[2000];           /* last path element id (or -1 for names) */
    char names[2000][24];        /* last path element name */
    int64_t ival[2000];          /* value of the int property asked for, or INT64_MIN */
    int more;
    uint64_t cursor;
    int has_cursor;
    int skipped;
    buf compiled;                /* compiled_cursor message */
    int has_compiled;
    int nprops[2000];
    char rep[2000][64];          /* property_representation values, comma-joined */
} res;

static void read_path_last(const uint8_t *p, size_t n, int64_t *id, char *name)
{
    pb_reader r; pb_reader_init(&r, p, n);
    uint32_t f; int wt;
    *id = -1; name[0] = 0;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) {
            pb_reader g;
            pb_group(&r, wt, f, &g);
            uint32_t gf; int gwt;
            *id = -1; name[0] = 0;
            while (pb_next(&g, &gf, &gwt) > 0) {
                if (gf == 3) pb_int64(&g, gwt, id);
                else if (gf == 4) {
                    const uint8_t *s; size_t sn;
                    pb_bytes(&g, gwt, &s, &sn);
                    if (sn > 23) sn = 23;
                    memcpy(name, s, sn); name[sn] = 0;
                }
                else pb_skip(&g, gwt, gf);
            }
        } else pb_skip(&r, wt, f);
    }
}

static void read_entity(res *out, const uint8_t *p, size_t n, const char *intprop)
{
    int i = out->n++;
    out->ival[i] = INT64_MIN;
    out->nprops[i] = 0;
    out->rep[i][0] = 0;
    pb_reader r; pb_reader_init(&r, p, n);
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 13) {
            pb_reader k;
            pb_sub(&r, wt, &k);
            uint32_t kf; int kwt;
            while (pb_next(&k, &kf, &kwt) > 0) {
                if (kf == 14) { const uint8_t *pp; size_t pn; pb_bytes(&k, kwt, &pp, &pn); read_path_last(pp, pn, &out->ids[i], out->names[i]); }
                else pb_skip(&k, kwt, kf);
            }
        } else if (f == 14) {
            out->nprops[i]++;
            pb_reader pr;
            pb_sub(&r, wt, &pr);
            uint32_t pf; int pwt;
            const uint8_t *nm = NULL; size_t nn = 0;
            int64_t iv = INT64_MIN;
            char sv[32] = "";
            while (pb_next(&pr, &pf, &pwt) > 0) {
                if (pf == 3) pb_bytes(&pr, pwt, &nm, &nn);
                else if (pf == 5) {
                    pb_reader v; pb_sub(&pr, pwt, &v);
                    uint32_t vf; int vwt;
                    while (pb_next(&v, &vf, &vwt) > 0) {
                        if (vf == 1) pb_int64(&v, vwt, &iv);
                        else if (vf == 3) {
                            const uint8_t *s; size_t sn; pb_bytes(&v, vwt, &s, &sn);
                            if (sn > 31) sn = 31;
                            memcpy(sv, s, sn); sv[sn] = 0;
                        } else pb_skip(&v, vwt, vf);
                    }
                } else pb_skip(&pr, pwt, pf);
            }
            if (intprop && nm && nn == strlen(intprop) && !memcmp(nm, intprop, nn) && iv != INT64_MIN) out->ival[i] = iv;
            if (nm && nn == 23 && !memcmp(nm, "property_representation", 23)) {
                if (out->rep[i][0]) strcat(out->rep[i], ",");
                strncat(out->rep[i], sv, 63 - strlen(out->rep[i]));
            }
        } else pb_skip(&r, wt, f);
    }
}

static void read_result(res *out, const buf *resp, const char *intprop)
{
    pb_reader r; pb_reader_init(&r, resp->data, resp->len);
    uint32_t f; int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 1) {
            pb_reader c; pb_sub(&r, wt, &c);
            uint32_t cf; int cwt;
            while (pb_next(&c, &cf, &cwt) > 0) {
                if (cf == 1) { pb_fixed64(&c, cwt, &out->cursor); out->has_cursor = 1; }
                else pb_skip(&c, cwt, cf);
            }
        } else if (f == 2) {
            const uint8_t *p; size_t n; pb_bytes(&r, wt, &p, &n);
            read_entity(out, p, n, intprop);
        } else if (f == 3) pb_bool(&r, wt, &out->more);
        else if (f == 7) { int32_t s; pb_int32(&r, wt, &s); out->skipped += s; }
        else if (f == 6) {
            const uint8_t *p; size_t n; pb_bytes(&r, wt, &p, &n);
            buf_reset(&out->compiled); buf_append(&out->compiled, p, n); out->has_compiled = 1;
        } else pb_skip(&r, wt, f);
    }
    CHECK(!r.err);
}

static res R;

/* Run a query to the end through Next; results accumulate in R. */
static int run(qb *q, const char *intprop, ds_err *e)
{
    buf resp = BUF_INIT;
    buf_reset(&R.compiled);
    buf keep = R.compiled;
    memset(&R, 0, sizeof R);
    R.compiled = keep;
    memset(e, 0, sizeof *e);
    int rc = dsq_run_query(eng, APP, (uint8_t *)q->b.data, q->b.len, &resp, e);
    if (rc == 0) read_result(&R, &resp, intprop);
    while (rc == 0 && R.more && R.has_cursor) {
        buf req = BUF_INIT;
        size_t m = pb_begin(&req, 1);
        pb_put_fixed64(&req, 1, R.cursor);
        pb_end(&req, m);
        buf_reset(&resp);
        R.more = 0; R.has_cursor = 0;
        rc = dsq_next(eng, APP, (uint8_t *)req.data, req.len, &resp, e);
        buf_free(&req);
        if (rc == 0) read_result(&R, &resp, intprop);
    }
    buf_free(&resp);
    return rc;
}

static int run_ok(qb *q, const char *intprop)
{
    ds_err e;
    int rc = run(q, intprop, &e);
    if (rc) printf("  query failed (%d): %s\n", e.code, e.msg);
    buf_free(&q->b);
    return rc;
}

static void ids_str(char *out, size_t n)
{
    out[0] = 0;
    for (int i = 0; i < R.n; i++) {
        char t[32];
        if (R.ids[i] >= 0) snprintf(t, sizeof t, "%s%lld", i ? " " : "", (long long)R.ids[i]);
        else snprintf(t, sizeof t, "%s%s", i ? " " : "", R.names[i]);
        strncat(out, t, n - strlen(out) - 1);
    }
}

static char got[8192];
#define IDS() (ids_str(got, sizeof got), got)

/* ---- fixtures ---- */

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cz-test-query-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    char err[256];
    ds = ds_open(tmpdir, err, sizeof err);
    if (!ds) printf("ds_open: %s\n", err);
    CHECK(ds != NULL);
    eng = dsq_engine_new(ds);
    /* Person 1..20: age = id % 5, name "p<id>", score (double) = id / 2.0;
     * even ids also carry tags ["t<id%3>", "all"]. */
    for (int i = 1; i <= 20; i++) {
        pe path[1] = {{"Person", i, NULL}};
        char name[16]; snprintf(name, sizeof name, "p%02d", i);
        char tag[8]; snprintf(tag, sizeof tag, "t%d", i % 3);
        prop props[5] = {{"age", I(i % 5), 0}, {"name", S(xstrdup(name)), 0}, {"score", D(i / 2.0), 0},
                         {"tags", S(xstrdup(tag)), 1}, {"tags", S("all"), 1}};
        put_entity("", path, 1, props, i % 2 == 0 ? 5 : 3);
        free((char *)props[1].v.s); free((char *)props[3].v.s);
    }
}

static void teardown(void)
{
    dsq_engine_free(eng);
    ds_close(ds);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    buf_free(&R.compiled);
}

/* ---- tests ---- */

TEST(kind_query_in_key_order)
{
    qb q; q_init(&q, "Person");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_INT(R.n, 20);
    CHECK_STR(IDS(), "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20");
    q_init(&q, "Person"); q_order(&q, "__key__", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 19 18 17 16 15 14 13 12 11 10 9 8 7 6 5 4 3 2 1");
    q_init(&q, "Nobody");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_INT(R.n, 0);
}

TEST(limit_offset_count)
{
    qb q; q_init(&q, "Person");
    pb_put_int(&q.b, 16, 5); pb_put_int(&q.b, 12, 3);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "4 5 6 7 8");
    CHECK_INT(R.skipped, 3);
    /* A count as the SDK runs it: keys only, offset = max, limit 0. */
    q_init(&q, "Person");
    pb_put_bool(&q.b, 21, 1); pb_put_int(&q.b, 12, 1000); pb_put_int(&q.b, 16, 0);
    q_filter(&q, "age", DSQ_EQ, I(2));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_INT(R.n, 0);
    CHECK_INT(R.skipped, 4);
    CHECK(!R.more);
}

TEST(equality_and_merge_join)
{
    qb q; q_init(&q, "Person");
    q_filter(&q, "age", DSQ_EQ, I(3));
    CHECK(run_ok(&q, "age") == 0);
    CHECK_STR(IDS(), "3 8 13 18");
    for (int i = 0; i < R.n; i++) CHECK_INT(R.ival[i], 3);
    /* Two properties: merge-join of their single-property indexes. */
    q_init(&q, "Person");
    q_filter(&q, "age", DSQ_EQ, I(3));
    q_filter(&q, "tags", DSQ_EQ, S("all"));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "8 18");
    /* Two values of one multi-valued property. */
    q_init(&q, "Person");
    q_filter(&q, "tags", DSQ_EQ, S("t1"));
    q_filter(&q, "tags", DSQ_EQ, S("all"));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "4 10 16");
    /* Descending key order over the same join. */
    q_init(&q, "Person");
    q_filter(&q, "tags", DSQ_EQ, S("all"));
    q_filter(&q, "age", DSQ_EQ, I(0));
    q_order(&q, "__key__", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 10");
}

TEST(inequality_and_sort)
{
    qb q; q_init(&q, "Person");
    q_filter(&q, "score", DSQ_GT, D(3.0));
    q_filter(&q, "score", DSQ_LE, D(5.0));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "7 8 9 10");
    q_init(&q, "Person");
    q_filter(&q, "score", DSQ_GE, D(8.0));
    q_order(&q, "score", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 19 18 17 16");
    q_init(&q, "Person");
    q_order(&q, "name", 1);
    pb_put_int(&q.b, 16, 3);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 19 18");
    /* The first sort order must be the inequality property. */
    q_init(&q, "Person");
    q_filter(&q, "score", DSQ_GT, D(3.0));
    q_order(&q, "name", 0);
    ds_err e;
    CHECK(run(&q, NULL, &e) != 0);
    CHECK_INT(e.code, DS_BAD_REQUEST);
    CHECK(strstr(e.msg, "first sort property") != NULL);
    buf_free(&q.b);
    /* Two inequality properties are refused. */
    q_init(&q, "Person");
    q_filter(&q, "score", DSQ_GT, D(3.0));
    q_filter(&q, "age", DSQ_LT, I(3));
    CHECK(run(&q, NULL, &e) != 0);
    CHECK_INT(e.code, DS_BAD_REQUEST);
    buf_free(&q.b);
}

TEST(multi_valued_returned_once)
{
    /* Sorting by a list property: each entity once, at its smallest value. */
    qb q; q_init(&q, "Person");
    q_order(&q, "tags", 0);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_INT(R.n, 10);
    CHECK_STR(IDS(), "2 4 6 8 10 12 14 16 18 20");
    q_init(&q, "Person");
    q_filter(&q, "tags", DSQ_GE, S("t0"));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "6 12 18 4 10 16 2 8 14 20");
}

TEST(ordering_across_types)
{
    const char *k = "Mixed";
    val vs[6] = {D(-1.5), S("abc"), B(1), I(-7), N(), I(42)};
    for (int i = 0; i < 6; i++) {
        pe path[1] = {{k, i + 1, NULL}};
        prop p[1] = {{"v", vs[i], 0}};
        put_entity("", path, 1, p, 1);
    }
    qb q; q_init(&q, k); q_order(&q, "v", 0);
    CHECK(run_ok(&q, NULL) == 0);
    /* null < integers < booleans < strings < doubles */
    CHECK_STR(IDS(), "5 4 6 3 2 1");
    q_init(&q, k); q_order(&q, "v", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1 2 3 6 4 5");
}

TEST(ancestor_and_key_filters)
{
    pe parent[1] = {{"Family", 0, "smith"}};
    for (int i = 1; i <= 4; i++) {
        pe path[2] = {{"Family", 0, "smith"}, {"Member", i, NULL}};
        prop p[1] = {{"age", I(10 * i), 0}};
        put_entity("", path, 2, p, 1);
    }
    pe other[2] = {{"Family", 0, "jones"}, {"Member", 9, NULL}};
    prop p[1] = {{"age", I(20), 0}};
    put_entity("", other, 2, p, 1);

    qb q; q_init(&q, "Member");
    put_ref(&q.b, 17, "", parent, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1 2 3 4");
    /* Ancestor with an equality filter (merge join with a key prefix). */
    q_init(&q, "Member");
    put_ref(&q.b, 17, "", parent, 1);
    q_filter(&q, "age", DSQ_EQ, I(20));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "2");
    /* Kindless ancestor query: the parent has no entity, its children do. */
    q_init(&q, NULL);
    put_ref(&q.b, 17, "", parent, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1 2 3 4");
    /* __key__ range. */
    pe lo[1] = {{"Person", 5, NULL}}, hi[1] = {{"Person", 9, NULL}};
    q_init(&q, "Person");
    q_key_filter(&q, DSQ_GT, lo, 1);
    q_key_filter(&q, DSQ_LE, hi, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "6 7 8 9");
    q_init(&q, "Person");
    q_key_filter(&q, DSQ_EQ, lo, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "5");
    q_init(&q, "Person");
    q_filter(&q, "age", DSQ_EQ, I(4));
    q_key_filter(&q, DSQ_GE, lo, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "9 14 19");
}

TEST(keys_only_and_projection)
{
    qb q; q_init(&q, "Person");
    pb_put_bool(&q.b, 21, 1);
    q_filter(&q, "age", DSQ_EQ, I(1));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1 6 11 16");
    for (int i = 0; i < R.n; i++) CHECK_INT(R.nprops[i], 0);
    /* Projection on one property: values from its index, in its order. */
    q_init(&q, "Person");
    pb_put_str(&q.b, 33, "age");
    q_order(&q, "age", 1);
    pb_put_int(&q.b, 16, 6);
    CHECK(run_ok(&q, "age") == 0);
    CHECK_INT(R.n, 6);
    CHECK_STR(IDS(), "4 9 14 19 3 8");
    CHECK_INT(R.ival[0], 4);
    CHECK_INT(R.ival[5], 3);
    CHECK_INT(R.nprops[0], 1);
    /* Distinct on it. */
    q_init(&q, "Person");
    pb_put_str(&q.b, 33, "age");
    pb_put_str(&q.b, 34, "age");
    CHECK(run_ok(&q, "age") == 0);
    CHECK_INT(R.n, 5);
    for (int i = 0; i < R.n; i++) CHECK_INT(R.ival[i], i);
    CHECK_STR(IDS(), "5 1 2 3 4");
    /* A long string, cut short in its index row, is projected whole. */
    static char longs[601];
    memset(longs, 'x', 600);
    longs[599] = 'y';
    pe lp[1] = {{"Long", 1, NULL}};
    prop lpr[1] = {{"s", S(longs), 0}};
    put_entity("", lp, 1, lpr, 1);
    q_init(&q, "Long");
    pb_put_str(&q.b, 33, "s");
    buf resp = BUF_INIT;
    ds_err le = {0};
    CHECK(dsq_run_query(eng, APP, (uint8_t *)q.b.data, q.b.len, &resp, &le) == 0);
    CHECK(memmem(resp.data, resp.len, longs, 600) != NULL);
    buf_free(&resp);
    buf_free(&q.b);
    q_init(&q, "Long");
    q_filter(&q, "s", DSQ_EQ, S(longs));
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1");
    /* Distinct pages resumed from cursors never repeat a group. */
    char seen[64] = "";
    buf cur = BUF_INIT;
    for (int page = 0; page < 5; page++) {
        q_init(&q, "Person");
        pb_put_str(&q.b, 33, "age");
        pb_put_str(&q.b, 34, "age");
        pb_put_int(&q.b, 16, 2);
        pb_put_bool(&q.b, 25, 1);
        if (page) pb_put_bytes(&q.b, 30, cur.data, cur.len);
        CHECK(run_ok(&q, "age") == 0);
        if (!R.n) break;
        for (int i = 0; i < R.n; i++) { char t[8]; snprintf(t, sizeof t, "%lld", (long long)R.ival[i]); strcat(seen, t); }
        buf_reset(&cur);
        buf_append(&cur, R.compiled.data, R.compiled.len);
    }
    CHECK_STR(seen, "01234");
    buf_free(&cur);
}

static buf page_cursor;

TEST(cursors_resume_exactly)
{
    /* Pages of 3 over age order with compiled cursors, like fetch_page. */
    static char all[8192], pages[8192];
    all[0] = pages[0] = 0;
    qb q; q_init(&q, "Person"); q_order(&q, "age", 0);
    CHECK(run_ok(&q, NULL) == 0);
    snprintf(all, sizeof all, "%s", IDS());
    buf_reset(&page_cursor);
    int has = 0;
    for (int page = 0; page < 10; page++) {
        q_init(&q, "Person"); q_order(&q, "age", 0);
        pb_put_int(&q.b, 16, 3); pb_put_bool(&q.b, 25, 1);
        if (has) pb_put_bytes(&q.b, 30, page_cursor.data, page_cursor.len);
        CHECK(run_ok(&q, NULL) == 0);
        if (!R.n) break;
        CHECK(R.has_compiled);
        if (pages[0]) strcat(pages, " ");
        strcat(pages, IDS());
        buf_reset(&page_cursor);
        buf_append(&page_cursor, R.compiled.data, R.compiled.len);
        has = 1;
    }
    CHECK_STR(pages, all);
    /* Reversing the query with a cursor walks back from the same point. */
    q_init(&q, "Person"); q_order(&q, "age", 0);
    pb_put_int(&q.b, 16, 4); pb_put_bool(&q.b, 25, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "5 10 15 20");
    buf fwd = BUF_INIT;
    buf_append(&fwd, R.compiled.data, R.compiled.len);
    /* ... and with unique values, the reversed query walks back over the page. */
    q_init(&q, "Person"); q_order(&q, "name", 0);
    pb_put_int(&q.b, 16, 4); pb_put_bool(&q.b, 25, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "1 2 3 4");
    buf byname = BUF_INIT;
    buf_append(&byname, R.compiled.data, R.compiled.len);
    q_init(&q, "Person"); q_order(&q, "name", 1);
    pb_put_bytes(&q.b, 30, byname.data, byname.len);
    pb_put_int(&q.b, 16, 3);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "4 3 2");
    buf_free(&byname);
    /* Ties broken by key descending (a composite index ending in __key__). */
    q_init(&q, "Person"); q_order(&q, "age", 0); q_order(&q, "__key__", 1);
    pb_put_int(&q.b, 16, 5);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 15 10 5 16");
    /* Reverse paging over ties: order(age) then order(-age, -key) from the
     * same cursor walks the page back exactly. */
    q_init(&q, "Person"); q_order(&q, "age", 1); q_order(&q, "__key__", 1);
    pb_put_bytes(&q.b, 30, fwd.data, fwd.len);
    pb_put_int(&q.b, 16, 6);
    pb_put_bool(&q.b, 25, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 15 10 5");
    /* ... and that cursor resumes the forward query where it was. */
    buf back = BUF_INIT;
    buf_append(&back, R.compiled.data, R.compiled.len);
    q_init(&q, "Person"); q_order(&q, "age", 0);
    pb_put_bytes(&q.b, 30, back.data, back.len);
    pb_put_int(&q.b, 16, 3);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "5 10 15");
    buf_free(&back);
    /* A cursor from another query is refused. */
    q_init(&q, "Person"); q_order(&q, "name", 0);
    pb_put_bytes(&q.b, 30, fwd.data, fwd.len);
    ds_err e;
    CHECK(run(&q, NULL, &e) != 0);
    CHECK_INT(e.code, DS_BAD_REQUEST);
    buf_free(&q.b);
    /* An end cursor stops where the page did. */
    q_init(&q, "Person"); q_order(&q, "age", 0);
    pb_put_bytes(&q.b, 31, fwd.data, fwd.len);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "5 10 15 20");
    /* Garbage cursors are refused with a sentence, not a crash. */
    q_init(&q, "Person"); q_order(&q, "age", 0);
    pb_put_bytes(&q.b, 30, "\x1a\x03\x0a\x01z", 6);
    CHECK(run(&q, NULL, &e) != 0);
    CHECK_INT(e.code, DS_BAD_REQUEST);
    buf_free(&q.b);
    buf_free(&fwd);
}

TEST(batches_next_and_delete)
{
    qb q; q_init(&q, "Person");
    pb_put_int(&q.b, 23, 4);
    buf resp = BUF_INIT;
    ds_err e = {0};
    CHECK(dsq_run_query(eng, APP, (uint8_t *)q.b.data, q.b.len, &resp, &e) == 0);
    res *r1 = calloc(1, sizeof *r1);
    read_result(r1, &resp, NULL);
    CHECK_INT(r1->n, 4);
    CHECK(r1->more && r1->has_cursor);
    CHECK_INT(dsq_engine_open_cursors(eng), 1);
    /* Next with a batch size of 7. */
    buf req = BUF_INIT;
    size_t m = pb_begin(&req, 1); pb_put_fixed64(&req, 1, r1->cursor); pb_end(&req, m);
    pb_put_int(&req, 2, 7);
    buf_reset(&resp);
    CHECK(dsq_next(eng, APP, (uint8_t *)req.data, req.len, &resp, &e) == 0);
    res *r2 = calloc(1, sizeof *r2);
    read_result(r2, &resp, NULL);
    CHECK_INT(r2->n, 7);
    CHECK_INT(r2->ids[0], 5);
    /* Another app cannot use the cursor. */
    buf_reset(&resp);
    CHECK(dsq_next(eng, "dev~other", (uint8_t *)req.data, req.len, &resp, &e) != 0);
    /* DeleteCursor frees it; Next then fails. */
    buf del = BUF_INIT;
    pb_put_fixed64(&del, 1, r1->cursor);
    buf_reset(&resp);
    CHECK(dsq_delete_cursor(eng, APP, (uint8_t *)del.data, del.len, &resp, &e) == 0);
    CHECK_INT(dsq_engine_open_cursors(eng), 0);
    buf_reset(&resp);
    CHECK(dsq_next(eng, APP, (uint8_t *)req.data, req.len, &resp, &e) != 0);
    CHECK_INT(e.code, DS_BAD_REQUEST);
    /* Idle cursors expire. */
    dsq_engine_set_ttl(eng, 0);
    buf_reset(&resp);
    CHECK(dsq_run_query(eng, APP, (uint8_t *)q.b.data, q.b.len, &resp, &e) == 0);
    memset(r1, 0, sizeof *r1);
    read_result(r1, &resp, NULL);
    buf_reset(&req);
    m = pb_begin(&req, 1); pb_put_fixed64(&req, 1, r1->cursor); pb_end(&req, m);
    usleep(1000);
    buf_reset(&resp);
    CHECK(dsq_next(eng, APP, (uint8_t *)req.data, req.len, &resp, &e) != 0);
    dsq_engine_set_ttl(eng, 600LL * 1000000);
    buf_free(&r1->compiled); buf_free(&r2->compiled);
    free(r1); free(r2);
    buf_free(&req); buf_free(&del); buf_free(&resp); buf_free(&q.b);
}

TEST(composite_need_index_and_auto)
{
    ds_err e = {0};
    CHECK(dsq_configure_app(ds, APP, NULL, 1, &e) == 0);
    qb q; q_init(&q, "Person");
    q_filter(&q, "age", DSQ_EQ, I(2));
    q_order(&q, "score", 1);
    CHECK(run(&q, NULL, &e) != 0);
    CHECK_INT(e.code, DS_NEED_INDEX);
    CHECK(strstr(e.msg, "- kind: Person\n  properties:\n  - name: age\n  - name: score\n    direction: desc\n") != NULL);
    /* index.yaml declares it: created and filled, then served. */
    char yaml[300];
    snprintf(yaml, sizeof yaml, "%s/index.yaml", tmpdir);
    const char *text = "indexes:\n- kind: Person\n  properties:\n  - name: age\n  - name: score\n    direction: desc\n";
    CHECK(write_file_atomic(yaml, text, strlen(text), 0644) == 0);
    CHECK(dsq_configure_app(ds, APP, tmpdir, 1, &e) == 0);
    CHECK(run(&q, NULL, &e) == 0);
    CHECK_STR(IDS(), "17 12 7 2");
    /* Rows are maintained by puts and deletes. */
    pe p21[1] = {{"Person", 21, NULL}};
    prop pr[2] = {{"age", I(2), 0}, {"score", D(100), 0}};
    put_entity("", p21, 1, pr, 2);
    pe p7[1] = {{"Person", 7, NULL}};
    delete_entity(p7, 1);
    CHECK(run(&q, NULL, &e) == 0);
    CHECK_STR(IDS(), "21 17 12 2");
    buf_free(&q.b);
    /* GetIndices lists it. */
    buf resp = BUF_INIT;
    CHECK(dsq_get_indices(eng, APP, NULL, 0, &resp, &e) == 0);
    CHECK(resp.len > 0);
    CHECK(memmem(resp.data, resp.len, "score", 5) != NULL);
    buf_free(&resp);
    /* Auto mode: a missing index is created on first use. */
    CHECK(dsq_configure_app(ds, APP, NULL, 0, &e) == 0);
    q_init(&q, "Person");
    q_filter(&q, "tags", DSQ_EQ, S("all"));
    q_order(&q, "name", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "20 18 16 14 12 10 8 6 4 2");
    /* Ancestor composite. */
    pe parent[1] = {{"Family", 0, "smith"}};
    q_init(&q, "Member");
    put_ref(&q.b, 17, "", parent, 1);
    q_order(&q, "age", 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "4 3 2 1");
    resp = (buf)BUF_INIT;
    CHECK(dsq_get_indices(eng, APP, NULL, 0, &resp, &e) == 0);
    CHECK(memmem(resp.data, resp.len, "Member", 6) != NULL);
    buf_free(&resp);
}

TEST(metadata_queries)
{
    pe np[1] = {{"Thing", 1, NULL}};
    prop p[2] = {{"size", I(3), 0}, {"label", S("x"), 0}};
    put_entity("ns1", np, 1, p, 2);
    qb q; q_init(&q, "__namespace__");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_INT(R.n, 2);
    CHECK_INT(R.ids[0], 1);              /* the default namespace */
    CHECK_STR(R.names[1], "ns1");
    q_init(&q, "__kind__");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "Long Member Mixed Person");   /* Family is only a key path */
    q_init(&q, "__kind__");
    pb_put_str(&q.b, 29, "ns1");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "Thing");
    q_init(&q, "__property__");
    pe kind[1] = {{"__kind__", 0, "Person"}};
    put_ref(&q.b, 17, "", kind, 1);
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "age name score tags");
    CHECK_STR(R.rep[0], "INT64");
    CHECK_STR(R.rep[2], "DOUBLE");
    q_init(&q, "__property__");
    CHECK(run_ok(&q, NULL) == 0);
    CHECK_STR(IDS(), "s age v age name score tags");
    CHECK_STR(R.rep[0], "STRING");
    CHECK_STR(R.rep[2], "NULL,INT64,BOOLEAN,STRING,DOUBLE");
}

TEST(decoders_refuse_garbage)
{
    dsq_query q;
    char err[200];
    CHECK(dsq_query_decode((const uint8_t *)"\x0a\x05", 2, &q, err, sizeof err) < 0);
    CHECK(dsq_query_decode((const uint8_t *)"\x80\x01\x05", 3, &q, err, sizeof err) < 0);   /* no app */
    CHECK(strstr(err, "app") != NULL);
    buf b = BUF_INIT;
    pb_put_str(&b, 1, APP);
    pb_group_begin(&b, 4); pb_put_int(&b, 6, 77); pb_group_end(&b, 4);
    CHECK(dsq_query_decode((uint8_t *)b.data, b.len, &q, err, sizeof err) < 0);
    CHECK(strstr(err, "operator") != NULL);
    buf_reset(&b);
    pb_put_str(&b, 1, APP); pb_put_str(&b, 3, "K"); pb_put_int(&b, 16, 5); pb_put_str(&b, 33, "a");
    pb_put_bool(&b, 21, 1);
    CHECK(dsq_query_decode((uint8_t *)b.data, b.len, &q, err, sizeof err) == 0);
    CHECK_STR(q.kind, "K");
    CHECK_INT(q.limit, 5);
    CHECK(q.keys_only);
    CHECK_INT(q.n_projection, 1);
    dsq_query_free(&q);
    dsq_cursor c;
    CHECK(dsq_cursor_decode((const uint8_t *)"\x1a\x02\x0a\x00", 4, &c, err, sizeof err) < 0);
    buf_free(&b);
}

TEST(indexyaml_parsing)
{
    dsq_index_list l;
    char err[200];
    const char *y = "indexes:\n\n- kind: A\n  ancestor: yes\n  properties:\n  - name: x\n    direction: desc\n  - name: y\n"
                    "- kind: B\n  properties:\n  - name: z\n";
    CHECK(dsq_indexyaml_parse(y, strlen(y), "index.yaml", &l, err, sizeof err) == 0);
    CHECK_INT(l.n, 2);
    CHECK_STR(l.v[0].kind, "A");
    CHECK(l.v[0].ancestor);
    CHECK(l.v[0].props[0].desc);
    CHECK(!l.v[0].props[1].desc);
    CHECK(l.v[0].id != l.v[1].id);
    dsq_index_list_free(&l);
    const char *bad = "indexes:\n- kind: A\n  properties:\n  - name: x\n    direction: sideways\n";
    CHECK(dsq_indexyaml_parse(bad, strlen(bad), "index.yaml", &l, err, sizeof err) < 0);
    CHECK(strstr(err, "index.yaml:5:") != NULL);
    CHECK(dsq_indexyaml_parse("", 0, "index.yaml", &l, err, sizeof err) == 0);
    CHECK_INT(l.n, 0);
}


/* ---- randomized: the planner against a brute-force model ---- */

#define RN 60
typedef struct { int a; int nb; int b[3]; int c; } rent;
static rent rents[RN];
static uint32_t rng = 12345;
static uint32_t rnd(uint32_t n) { rng = rng * 1103515245u + 12345u; return (rng >> 8) % n; }

static int rent_match(const rent *e, int eq_a, int eq_b, int ineq, int op, int v)
{
    if (eq_a >= 0 && e->a != eq_a) return 0;
    if (eq_b >= 0) { int f = 0; for (int i = 0; i < e->nb; i++) f |= e->b[i] == eq_b; if (!f) return 0; }
    if (ineq) {
        /* Inequality on c (single-valued). */
        int x = e->c;
        if (op == DSQ_LT && !(x < v)) return 0;
        if (op == DSQ_LE && !(x <= v)) return 0;
        if (op == DSQ_GT && !(x > v)) return 0;
        if (op == DSQ_GE && !(x >= v)) return 0;
    }
    return 1;
}

/* An entity sorts by its smallest value ascending, its largest descending. */
static int sort_key(const rent *e, int order)
{
    if (order <= 2) return e->c;
    int k = e->b[0];
    for (int i = 1; i < e->nb; i++) k = order == 3 ? (e->b[i] < k ? e->b[i] : k) : (e->b[i] > k ? e->b[i] : k);
    return k;
}

TEST(randomized_against_model)
{
    for (int i = 0; i < RN; i++) {
        rent *e = &rents[i];
        e->a = (int)rnd(4); e->c = (int)rnd(20); e->nb = 1 + (int)rnd(3);
        for (int k = 0; k < e->nb; k++) e->b[k] = (int)rnd(6);
        pe path[1] = {{"Rnd", i + 1, NULL}};
        prop p[5] = {{"a", I(e->a), 0}, {"c", I(e->c), 0}};
        int np = 2;
        for (int k = 0; k < e->nb; k++) { p[np].name = "b"; p[np].v = I(e->b[k]); p[np].multiple = 1; np++; }
        put_entity("", path, 1, p, (size_t)np);
    }
    ds_err e0 = {0};
    CHECK(dsq_configure_app(ds, APP, NULL, 0, &e0) == 0);
    int failures = 0;
    for (int t = 0; t < 300 && failures < 3; t++) {
        int eq_a = rnd(2) ? (int)rnd(4) : -1, eq_b = rnd(2) ? (int)rnd(6) : -1;
        int ineq = (int)rnd(2), op = DSQ_LT + (int)rnd(4), v = (int)rnd(20);
        int order = (int)rnd(5);                 /* 0 none, 1 c asc, 2 c desc, 3 b asc, 4 b desc */
        if (order >= 3 && (ineq || eq_b >= 0)) order = 0;
        int keys_only = (int)rnd(2);
        /* Expected: matching ids, by c (then key) when ordered, else by key. */
        int exp[RN], ne = 0;
        for (int i = 0; i < RN; i++) if (rent_match(&rents[i], eq_a, eq_b, ineq, op, v)) exp[ne++] = i + 1;
        if (order || ineq)
            for (int i = 1; i < ne; i++)
                for (int j = i; j > 0; j--) {
                    int x = sort_key(&rents[exp[j - 1] - 1], order), y = sort_key(&rents[exp[j] - 1], order);
                    int swap = (order == 2 || order == 4) ? (x < y) : (x > y);
                    if (!swap) break;
                    int tmp = exp[j]; exp[j] = exp[j - 1]; exp[j - 1] = tmp;
                }
        char want[1024] = "";
        for (int i = 0; i < ne; i++) { char b[16]; snprintf(b, sizeof b, "%s%d", i ? " " : "", exp[i]); strcat(want, b); }
        /* The whole result, then the same query paged by cursors of 4. */
        char whole[1024] = "", paged[1024] = "";
        buf cur = BUF_INIT;
        for (int page = -1; page < 40; page++) {
            qb q; q_init(&q, "Rnd");
            if (eq_a >= 0) q_filter(&q, "a", DSQ_EQ, I(eq_a));
            if (eq_b >= 0) q_filter(&q, "b", DSQ_EQ, I(eq_b));
            if (ineq) q_filter(&q, "c", op, I(v));
            if (order) q_order(&q, order <= 2 ? "c" : "b", order == 2 || order == 4);
            if (keys_only) pb_put_bool(&q.b, 21, 1);
            if (page >= 0) {
                pb_put_int(&q.b, 16, 4); pb_put_bool(&q.b, 25, 1);
                if (page > 0) pb_put_bytes(&q.b, 30, cur.data, cur.len);
            }
            if (run_ok(&q, NULL) != 0) { failures++; break; }
            char *dst = page < 0 ? whole : paged;
            for (int i = 0; i < R.n; i++) {
                char b[16]; snprintf(b, sizeof b, "%s%lld", dst[0] ? " " : "", (long long)R.ids[i]);
                strcat(dst, b);
            }
            if (page < 0) continue;
            if (!R.n) break;
            buf_reset(&cur);
            buf_append(&cur, R.compiled.data, R.compiled.len);
        }
        buf_free(&cur);
        if (strcmp(whole, want) || strcmp(paged, want)) {
            failures++;
            printf("  query a=%d b=%d ineq=%d op=%d v=%d order=%d keys=%d\n  want  %s\n  whole %s\n  paged %s\n",
                   eq_a, eq_b, ineq, op, v, order, keys_only, want, whole, paged);
        }
    }
    CHECK_INT(failures, 0);
}

int main(void)
{
    setup();
    RUN(kind_query_in_key_order);
    RUN(limit_offset_count);
    RUN(equality_and_merge_join);
    RUN(inequality_and_sort);
    RUN(multi_valued_returned_once);
    RUN(ordering_across_types);
    RUN(ancestor_and_key_filters);
    RUN(keys_only_and_projection);
    RUN(cursors_resume_exactly);
    RUN(batches_next_and_delete);
    RUN(composite_need_index_and_auto);
    RUN(metadata_queries);
    RUN(decoders_refuse_garbage);
    RUN(indexyaml_parsing);
    RUN(randomized_against_model);
    buf_free(&page_cursor);
    teardown();
    return test_report();
}
