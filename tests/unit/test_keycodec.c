/* test_keycodec.c - the key codec orders values as App Engine does: a
 * ladder of values of every type, listed in App Engine's order, must encode
 * to strictly increasing byte strings (and strictly decreasing when
 * inverted for descending order); random integers and doubles must order as
 * numbers; every encoding must decode back; paths order ancestors first. */
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "datastore/keycodec.h"
#include "proto/pb.h"

static ds_bytes S(const char *s) { return ds_cstr(s); }
static ds_bytes B(const char *s, size_t n) { ds_bytes b = { (const uint8_t *)s, n }; return b; }

static ds_elem E_id(const char *kind, int64_t id) { ds_elem e = { S(kind), id, {0, 0}, 1, 0 }; return e; }
static ds_elem E_nm(const char *kind, const char *nm) { ds_elem e = { S(kind), 0, S(nm), 0, 1 }; return e; }

#define MAXV 80
static ds_value ladder[MAXV];
static ds_elem paths[16][4];
static int nl;

static ds_value *nv(ds_vtype t) { ds_value *v = &ladder[nl++]; memset(v, 0, sizeof *v); v->type = t; return v; }
static void add_int(int64_t i) { nv(DSV_INT)->i = i; }
static void add_str(const char *s, size_t n) { nv(DSV_STRING)->s = B(s, n); }
static void add_dbl(double d) { nv(DSV_DOUBLE)->d = d; }
static void add_pt(double x, double y) { ds_value *v = nv(DSV_POINT); v->x = x; v->y = y; }
static void add_user(const char *email, const char *dom) { ds_value *v = nv(DSV_USER); v->user.email = S(email); v->user.auth_domain = S(dom); }
static int np;
static void add_key(const char *app, const char *ns, int n, ds_elem a, ds_elem b)
{
    ds_value *v = nv(DSV_REF);
    v->ref.app = S(app);
    v->ref.ns = S(ns);
    paths[np][0] = a;
    paths[np][1] = b;
    v->ref.elems = paths[np++];
    v->ref.nelems = (size_t)n;
}

static void build_ladder(void)
{
    nl = np = 0;
    nv(DSV_NULL);
    add_int(INT64_MIN); add_int(-1000000); add_int(-1); add_int(0); add_int(1);
    add_int(1700000000000000LL);   /* a date (microseconds) sorts among integers */
    add_int(INT64_MAX);
    nv(DSV_BOOL)->b = 0; nv(DSV_BOOL)->b = 1;
    add_str("", 0); add_str("\0", 1); add_str("\0\0", 2); add_str("\0\1", 2); add_str("\1", 1);
    add_str("A", 1); add_str("a", 1); add_str("a\0", 2); add_str("a\0b", 3); add_str("ab", 2);
    add_str("b", 1); add_str("\xc3\xa9", 2); add_str("\xff", 1); add_str("\xff\xff", 2);
    add_dbl(-INFINITY); add_dbl(-1e300); add_dbl(-1.5); add_dbl(-1e-300); add_dbl(-0.0);
    add_dbl(0.0); add_dbl(5e-324); add_dbl(1); add_dbl(1.5); add_dbl(1e300); add_dbl(INFINITY); add_dbl(NAN);
    add_pt(-90, 180); add_pt(0, -180); add_pt(0, 0); add_pt(0, 1); add_pt(45.5, -3);
    add_user("", ""); add_user("a@example.com", "example.com"); add_user("a@example.com", "gmail.com");
    add_user("b@example.com", "a");
    add_key("a", "", 1, E_id("A", 1), E_id("", 0));
    add_key("a", "", 2, E_id("A", 1), E_id("B", 1));
    add_key("a", "", 2, E_id("A", 1), E_nm("B", "x"));
    add_key("a", "", 2, E_id("A", 1), E_id("C", 1));
    add_key("a", "", 1, E_id("A", 2), E_id("", 0));
    add_key("a", "", 1, E_id("A", INT64_MAX), E_id("", 0));
    add_key("a", "", 1, E_nm("A", "a"), E_id("", 0));
    add_key("a", "", 1, E_nm("A", "b"), E_id("", 0));
    add_key("a", "", 1, E_id("AB", 1), E_id("", 0));
    add_key("a", "", 1, E_id("B", 1), E_id("", 0));
    add_key("a", "ns", 1, E_id("A", 1), E_id("", 0));
    add_key("b", "", 1, E_id("A", 1), E_id("", 0));
}

static int cmp_enc(const buf *a, const buf *b)
{
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->data, b->data, m);
    if (c) return c < 0 ? -1 : 1;
    return a->len < b->len ? -1 : a->len > b->len;
}

TEST(type_and_value_order)
{
    build_ladder();
    buf asc[MAXV], desc[MAXV];
    for (int i = 0; i < nl; i++) {
        memset(&asc[i], 0, sizeof asc[i]);
        memset(&desc[i], 0, sizeof desc[i]);
        kc_put_value(&asc[i], &ladder[i], KC_ASC);
        kc_put_value(&desc[i], &ladder[i], KC_DESC);
    }
    int bad = 0;
    for (int i = 0; i < nl; i++)
        for (int j = 0; j < nl; j++) {
            int want = i < j ? -1 : i > j;
            if (cmp_enc(&asc[i], &asc[j]) != want || cmp_enc(&desc[i], &desc[j]) != -want) {
                if (bad++ < 5) printf("  ladder %d vs %d misordered\n", i, j);
            }
        }
    CHECK_INT(bad, 0);
    /* A value followed by more bytes (the row's path) keeps its order. */
    for (int i = 0; i + 1 < nl; i++) {
        buf_putc(&asc[i], (char)0xff);
        buf_putc(&desc[i], (char)0xff);
        buf_putc(&desc[i + 1], 0);
        CHECK(cmp_enc(&asc[i], &asc[i + 1]) < 0);
        CHECK(cmp_enc(&desc[i], &desc[i + 1]) > 0);
        desc[i + 1].len--;
    }
    for (int i = 0; i < nl; i++) { buf_free(&asc[i]); buf_free(&desc[i]); }
}

TEST(numbers_order_like_numbers)
{
    srand(7);
    for (int i = 0; i < 20000; i++) {
        int64_t a = (int64_t)(((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand());
        int64_t b = (int64_t)(((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand());
        if ((rand() & 1) && a != INT64_MIN) a = -a;
        if (i % 7 == 0 && a > INT64_MIN + 1 && a < INT64_MAX - 1) b = a + (rand() % 3) - 1;
        buf x = BUF_INIT, y = BUF_INIT;
        kc_put_i64(&x, a);
        kc_put_i64(&y, b);
        CHECK_INT(cmp_enc(&x, &y), a < b ? -1 : a > b);
        double da, db;
        uint64_t ua = ((uint64_t)rand() << 40) ^ ((uint64_t)rand() << 20) ^ (uint64_t)rand();
        uint64_t ub = ((uint64_t)rand() << 40) ^ ((uint64_t)rand() << 20) ^ (uint64_t)rand();
        memcpy(&da, &ua, 8);
        memcpy(&db, &ub, 8);
        if (isnan(da) || isnan(db)) { buf_free(&x); buf_free(&y); continue; }
        buf_reset(&x); buf_reset(&y);
        kc_put_double(&x, da);
        kc_put_double(&y, db);
        int want = da < db ? -1 : da > db;
        if (da == 0 && db == 0) want = signbit(da) == signbit(db) ? 0 : signbit(da) ? -1 : 1;
        CHECK_INT(cmp_enc(&x, &y), want);
        const uint8_t *p = (const uint8_t *)x.data;
        double back;
        CHECK_INT(kc_get_double(&p, p + x.len, &back), 0);
        CHECK(memcmp(&back, &da, 8) == 0);
        buf_free(&x);
        buf_free(&y);
    }
}

TEST(values_decode_back)
{
    build_ladder();
    for (int i = 0; i < nl; i++) {
        for (int dir = KC_ASC; dir <= KC_DESC; dir++) {
            buf enc = BUF_INIT, pv = BUF_INIT, again = BUF_INIT, pv2 = BUF_INIT;
            kc_put_value(&enc, &ladder[i], dir);
            buf_puts(&enc, "TAIL");
            const uint8_t *p = (const uint8_t *)enc.data, *end = p + enc.len;
            CHECK_INT(kc_get_value(&p, end, dir, &pv), 0);
            CHECK_INT(end - p, 4);                      /* stops right at the tail */
            p = (const uint8_t *)enc.data;
            CHECK_INT(kc_skip_value(&p, end, dir), 0);
            CHECK_INT(end - p, 4);
            ds_value v;
            char err[128];
            CHECK_INT(ds_value_decode((const uint8_t *)pv.data, pv.len, &v, err, sizeof err), 0);
            kc_put_value(&again, &v, dir);
            buf_puts(&again, "TAIL");
            CHECK(again.len == enc.len && memcmp(again.data, enc.data, enc.len) == 0);
            ds_value_free(&v);
            buf_free(&enc); buf_free(&pv); buf_free(&again); buf_free(&pv2);
        }
    }
    /* Damaged encodings are refused, never over-read. */
    for (int i = 0; i < nl; i++) {
        buf enc = BUF_INIT;
        kc_put_value(&enc, &ladder[i], KC_ASC);
        for (size_t cut = 0; cut < enc.len; cut++) {
            const uint8_t *p = (const uint8_t *)enc.data;
            if (kc_skip_value(&p, p + cut, KC_ASC) == 0) {
                /* Only a complete shorter value may parse. */
                CHECK(p <= (const uint8_t *)enc.data + cut);
            }
        }
        buf_free(&enc);
    }
}

TEST(strings_escape)
{
    srand(11);
    for (int i = 0; i < 2000; i++) {
        uint8_t a[12];
        size_t n = (size_t)(rand() % 12);
        for (size_t j = 0; j < n; j++) a[j] = (uint8_t)(rand() % 4 == 0 ? 0 : rand());
        buf enc = BUF_INIT, out = BUF_INIT;
        kc_put_str(&enc, a, n);
        const uint8_t *p = (const uint8_t *)enc.data;
        CHECK_INT(kc_get_str(&p, p + enc.len, &out), 0);
        CHECK(p == (const uint8_t *)enc.data + enc.len);
        CHECK(out.len == n && (n == 0 || memcmp(out.data, a, n) == 0));
        buf_free(&enc);
        buf_free(&out);
    }
}

TEST(paths_and_rows)
{
    ds_elem parent[1] = { E_id("Parent", 5) };
    ds_elem child[2] = { E_id("Parent", 5), E_nm("Child", "c") };
    ds_elem sibling[1] = { E_id("Parent", 6) };
    ds_bytes app = S("dev~app"), ns = S("");
    buf a = BUF_INIT, b = BUF_INIT, c = BUF_INIT, pre = BUF_INIT;
    kc_entity_key(&a, app, ns, parent, 1);
    kc_entity_key(&b, app, ns, child, 2);
    kc_entity_key(&c, app, ns, sibling, 1);
    CHECK(cmp_enc(&a, &b) < 0);
    CHECK(cmp_enc(&b, &c) < 0);
    /* The ancestor prefix covers the entity and its descendants only. */
    kc_ns_prefix(&pre, KC_ENTITY, app, ns);
    kc_put_path_prefix(&pre, parent, 1);
    CHECK(a.len >= pre.len && !memcmp(a.data, pre.data, pre.len));
    CHECK(b.len >= pre.len && !memcmp(b.data, pre.data, pre.len));
    CHECK(!(c.len >= pre.len && !memcmp(c.data, pre.data, pre.len)));
    /* Namespaces never share a prefix: "" vs "a" vs "a\0". */
    buf n1 = BUF_INIT, n2 = BUF_INIT;
    kc_ns_prefix(&n1, KC_ENTITY, app, S("a"));
    kc_ns_prefix(&n2, KC_ENTITY, app, B("a\0", 2));
    CHECK(!(n2.len >= n1.len && !memcmp(n1.data, n2.data, n1.len)));
    /* A property row decodes: prefix, value, path. */
    ds_value v = { .type = DSV_STRING, .s = S("hello") };
    buf row = BUF_INIT, rp = BUF_INIT, path = BUF_INIT, pv = BUF_INIT;
    kc_prop_key(&row, app, ns, S("Child"), S("name"), KC_DESC, &v, child, 2);
    kc_prop_prefix(&rp, app, ns, S("Child"), S("name"), KC_DESC);
    CHECK(row.len > rp.len && !memcmp(row.data, rp.data, rp.len));
    const uint8_t *p = (const uint8_t *)row.data + rp.len, *end = (const uint8_t *)row.data + row.len;
    CHECK_INT(kc_get_value(&p, end, KC_DESC, &pv), 0);
    CHECK_INT(kc_get_path(&p, end, &path), 0);
    CHECK(p == end);
    ds_elem *el; size_t nel; char err[64];
    CHECK_INT(ds_path_decode((const uint8_t *)path.data, path.len, &el, &nel, err, sizeof err), 0);
    CHECK_INT(nel, 2);
    if (nel == 2) {
        CHECK_INT(el[0].id, 5);
        CHECK(el[1].has_name && el[1].name.n == 1 && el[1].name.p[0] == 'c');
    }
    free(el);
    buf_free(&a); buf_free(&b); buf_free(&c); buf_free(&pre); buf_free(&n1); buf_free(&n2);
    buf_free(&row); buf_free(&rp); buf_free(&path); buf_free(&pv);
}

/* Strings longer than the index keeps: cut, hashed, still ordered against
 * everything that differs in the kept bytes, still distinct for equality. */
TEST(long_strings)
{
    static char a[1500], b[1500];
    memset(a, 'x', sizeof a);
    memcpy(b, a, sizeof b);
    b[1400] = 'y';                                   /* differs far past the cut */
    ds_value va = { .type = DSV_STRING, .s = { (const uint8_t *)a, sizeof a } };
    ds_value vb = { .type = DSV_STRING, .s = { (const uint8_t *)b, sizeof b } };
    buf ea = BUF_INIT, eb = BUF_INIT, e2 = BUF_INIT;
    kc_put_value(&ea, &va, KC_ASC);
    kc_put_value(&eb, &vb, KC_ASC);
    CHECK(ea.len < 300);                             /* fits in a row key */
    CHECK(cmp_enc(&ea, &eb) != 0);                   /* equality stays exact */
    kc_put_value(&e2, &va, KC_ASC);
    CHECK(cmp_enc(&ea, &e2) == 0);
    /* Against shorter values and values differing early, order is exact. */
    const size_t lens[] = { 0, 1, 100, 255, 256 };
    for (size_t i = 0; i < 5; i++) {
        ds_value vs = { .type = DSV_STRING, .s = { (const uint8_t *)a, lens[i] } };
        buf es = BUF_INIT;
        kc_put_value(&es, &vs, KC_ASC);
        CHECK(cmp_enc(&es, &ea) < 0);
        buf_reset(&es);
        kc_put_value(&es, &vs, KC_DESC);
        buf_reset(&e2);
        kc_put_value(&e2, &va, KC_DESC);
        CHECK(cmp_enc(&es, &e2) > 0);
        buf_free(&es);
    }
    static char c[1500];
    memcpy(c, a, sizeof c);
    c[10] = 'y';
    ds_value vc = { .type = DSV_STRING, .s = { (const uint8_t *)c, sizeof c } };
    buf ec = BUF_INIT;
    kc_put_value(&ec, &vc, KC_ASC);
    CHECK(cmp_enc(&ea, &ec) < 0);
    /* A cut value with NULs near the cut still orders by its kept bytes. */
    static char d[400];
    memset(d, 'x', sizeof d);
    d[255] = 0;
    ds_value vd = { .type = DSV_STRING, .s = { (const uint8_t *)d, sizeof d } };
    buf ed = BUF_INIT;
    kc_put_value(&ed, &vd, KC_ASC);
    CHECK(cmp_enc(&ed, &ea) < 0);                     /* "x"*255 "\0" < "x"*256 */
    /* Decoding says the value was cut and gives its kept bytes. */
    for (int dir = KC_ASC; dir <= KC_DESC; dir++) {
        buf enc = BUF_INIT, pv = BUF_INIT;
        kc_put_value(&enc, &va, dir);
        buf_puts(&enc, "T");
        const uint8_t *p = (const uint8_t *)enc.data, *end = p + enc.len;
        CHECK_INT(kc_get_value(&p, end, dir, &pv), 1);
        CHECK_INT(end - p, 1);
        p = (const uint8_t *)enc.data;
        CHECK_INT(kc_skip_value(&p, end, dir), 0);
        CHECK_INT(end - p, 1);
        ds_value back;
        char err[64];
        CHECK_INT(ds_value_decode((const uint8_t *)pv.data, pv.len, &back, err, sizeof err), 0);
        CHECK(back.type == DSV_STRING && back.s.n == KC_MAX_INDEXED_STRING && !memcmp(back.s.p, a, back.s.n));
        buf_free(&enc);
        buf_free(&pv);
    }
    buf_free(&ea); buf_free(&eb); buf_free(&e2); buf_free(&ec); buf_free(&ed);
}

int main(void)
{
    RUN(type_and_value_order);
    RUN(numbers_order_like_numbers);
    RUN(values_decode_back);
    RUN(strings_escape);
    RUN(paths_and_rows);
    RUN(long_strings);
    return test_report();
}
