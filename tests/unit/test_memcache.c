/* Unit tests for the memcache store (src/api/memcache_store.c): set policies,
 * CAS, delete holds, expiry, increments and their wrap, LRU order and
 * eviction under the memory cap, per-app isolation and statistics, and a
 * multi-threaded run that must keep the accounting exact. */
#include "api/memcache_store.h"
#include "test.h"

#include <pthread.h>
#include <stdlib.h>

#define SEC 1000LL
#define T0 (1700000000LL * SEC)   /* a fixed "now" in unix milliseconds */

static mc_key K(const char *app, const char *ns, const char *key)
{
    mc_key k = { app, strlen(app), ns, strlen(ns), (const uint8_t *)key, strlen(key) };
    return k;
}

typedef struct { char value[256]; size_t len; uint32_t flags; uint64_t cas; int64_t lock_until; } got;

static void grab(void *arg, const mc_view *v)
{
    got *g = arg;
    g->len = v->value_len < sizeof g->value - 1 ? v->value_len : sizeof g->value - 1;
    memcpy(g->value, v->value, g->len);
    g->value[g->len] = 0;
    g->flags = v->flags;
    g->cas = v->cas;
    g->lock_until = v->lock_until;
}

static int get(mc_store *s, mc_key k, int64_t now, got *g)
{
    memset(g, 0, sizeof *g);
    return mc_get(s, &k, 0, now, grab, g);
}

static int set(mc_store *s, mc_key k, const char *v, int policy, uint32_t exp, int64_t now)
{
    return mc_set(s, &k, v, strlen(v), 0, policy, 0, 0, exp, now);
}

TEST(set_get_flags)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    mc_key k = K("a", "", "k");
    CHECK_INT(get(s, k, T0, &g), 0);
    CHECK_INT(mc_set(s, &k, "v1", 2, 0xdeadbeef, MC_SET, 0, 0, 0, T0), MC_STORED);
    CHECK_INT(get(s, k, T0, &g), 1);
    CHECK_STR(g.value, "v1");
    CHECK(g.flags == 0xdeadbeef);
    mc_store_free(s);
}

TEST(policies)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    mc_key k = K("a", "", "k");
    CHECK_INT(set(s, k, "x", MC_REPLACE, 0, T0), MC_NOT_STORED);
    CHECK_INT(set(s, k, "x", MC_ADD, 0, T0), MC_STORED);
    CHECK_INT(set(s, k, "y", MC_ADD, 0, T0), MC_NOT_STORED);
    CHECK_INT(set(s, k, "z", MC_REPLACE, 0, T0), MC_STORED);
    get(s, k, T0, &g);
    CHECK_STR(g.value, "z");
    CHECK_INT(set(s, k, "w", 9, 0, T0), MC_ERROR);
    mc_store_free(s);
}

TEST(cas)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    mc_key k = K("a", "", "k");
    /* CAS on a missing item, and CAS without an id, are NOT_STORED. */
    CHECK_INT(mc_set(s, &k, "a", 1, 0, MC_CAS, 1, 1, 0, T0), MC_NOT_STORED);
    set(s, k, "a", MC_SET, 0, T0);
    CHECK_INT(mc_set(s, &k, "b", 1, 0, MC_CAS, 0, 0, 0, T0), MC_NOT_STORED);
    get(s, k, T0, &g);
    uint64_t id = g.cas;
    CHECK(id != 0);
    CHECK_INT(mc_set(s, &k, "b", 1, 0, MC_CAS, id + 1000, 1, 0, T0), MC_EXISTS);
    CHECK_INT(mc_set(s, &k, "b", 1, 0, MC_CAS, id, 1, 0, T0), MC_STORED);
    /* The id changed with the store: the old one no longer matches. */
    CHECK_INT(mc_set(s, &k, "c", 1, 0, MC_CAS, id, 1, 0, T0), MC_EXISTS);
    get(s, k, T0, &g);
    CHECK_STR(g.value, "b");
    CHECK(g.cas != id);
    /* An increment also changes the id. */
    uint64_t before = g.cas, nv;
    set(s, k, "5", MC_SET, 0, T0);
    get(s, k, T0, &g);
    before = g.cas;
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_OK);
    CHECK_INT(mc_set(s, &k, "9", 1, 0, MC_CAS, before, 1, 0, T0), MC_EXISTS);
    mc_store_free(s);
}

TEST(delete_hold)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    mc_key k = K("a", "", "k");
    CHECK_INT(mc_delete(s, &k, 0, T0), 0);
    set(s, k, "v", MC_SET, 0, T0);
    CHECK_INT(mc_delete(s, &k, 10, T0), 1);
    CHECK_INT(get(s, k, T0, &g), 0);
    CHECK_INT(mc_delete(s, &k, 0, T0), 0);           /* already gone */
    CHECK_INT(set(s, k, "v", MC_ADD, 0, T0 + 5 * SEC), MC_NOT_STORED);
    CHECK_INT(set(s, k, "v", MC_REPLACE, 0, T0 + 5 * SEC), MC_NOT_STORED);
    /* A peek reports the lock. */
    memset(&g, 0, sizeof g);
    CHECK_INT(mc_get(s, &k, 1, T0 + 5 * SEC, grab, &g), 1);
    CHECK_INT(g.lock_until, T0 + 10 * SEC);
    CHECK_INT(g.len, 0);
    /* After the hold ADD works again. */
    CHECK_INT(set(s, k, "v2", MC_ADD, 0, T0 + 10 * SEC), MC_STORED);
    CHECK_INT(get(s, k, T0 + 10 * SEC, &g), 1);
    CHECK_STR(g.value, "v2");
    /* SET always works during a hold. */
    mc_delete(s, &k, 100, T0 + 10 * SEC);
    CHECK_INT(set(s, k, "v3", MC_SET, 0, T0 + 11 * SEC), MC_STORED);
    CHECK_INT(get(s, k, T0 + 11 * SEC, &g), 1);
    /* An absolute hold time. */
    mc_delete(s, &k, (uint32_t)(T0 / SEC + 20), T0 + 11 * SEC);
    CHECK_INT(set(s, k, "v", MC_ADD, 0, T0 + 19 * SEC), MC_NOT_STORED);
    CHECK_INT(set(s, k, "v", MC_ADD, 0, T0 + 20 * SEC), MC_STORED);
    mc_store_free(s);
}

TEST(expiry)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    mc_key a = K("a", "", "rel"), b = K("a", "", "abs"), c = K("a", "", "never");
    set(s, a, "1", MC_SET, 5, T0);                          /* relative */
    set(s, b, "2", MC_SET, (uint32_t)(T0 / SEC + 100), T0);       /* absolute */
    set(s, c, "3", MC_SET, 0, T0);
    CHECK_INT(get(s, a, T0 + 4 * SEC, &g), 1);
    CHECK_INT(get(s, a, T0 + 5 * SEC, &g), 0);
    CHECK_INT(get(s, b, T0 + 99 * SEC, &g), 1);
    CHECK_INT(get(s, b, T0 + 100 * SEC, &g), 0);
    CHECK_INT(get(s, c, T0 + 1000000 * SEC, &g), 1);
    /* 30 days is still relative; one second more is an absolute time (long past). */
    set(s, a, "1", MC_SET, MC_RELATIVE_LIMIT, T0);
    CHECK_INT(get(s, a, T0 + (MC_RELATIVE_LIMIT - 1) * SEC, &g), 1);
    set(s, a, "1", MC_SET, MC_RELATIVE_LIMIT + 1, T0);
    CHECK_INT(get(s, a, T0, &g), 0);
    /* An expired item does not block ADD. */
    set(s, a, "1", MC_SET, 1, T0);
    CHECK_INT(set(s, a, "n", MC_ADD, 0, T0 + 1 * SEC), MC_STORED);
    /* A relative time counts from the moment of the set, not the whole second. */
    set(s, a, "1", MC_SET, 1, T0 + 999);
    CHECK_INT(get(s, a, T0 + 1998, &g), 1);
    CHECK_INT(get(s, a, T0 + 1999, &g), 0);
    mc_store_free(s);
}

TEST(incr)
{
    mc_store *s = mc_store_new(1 << 20, 1);
    got g;
    uint64_t nv = 12345;
    mc_key k = K("a", "", "n");
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_MISS);
    CHECK_INT(mc_incr(s, &k, 0, 5, 1, 10, 7, T0, &nv), MC_INCR_OK);
    CHECK_INT(nv, 15);
    CHECK_INT(get(s, k, T0, &g), 1);
    CHECK_STR(g.value, "15");
    CHECK_INT(g.flags, 7);
    CHECK_INT(mc_incr(s, &k, 1, 100, 0, 0, 0, T0, &nv), MC_INCR_OK);   /* floors at 0 */
    CHECK_INT(nv, 0);
    /* 64-bit unsigned wrap. */
    set(s, k, "18446744073709551615", MC_SET, 0, T0);
    CHECK_INT(mc_incr(s, &k, 0, 2, 0, 0, 0, T0, &nv), MC_INCR_OK);
    CHECK_INT(nv, 1);
    set(s, k, "18446744073709551616", MC_SET, 0, T0);
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_TOO_BIG);
    set(s, k, "12abc", MC_SET, 0, T0);
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_NOT_NUMERIC);
    set(s, k, "", MC_SET, 0, T0);
    CHECK_INT(mc_incr(s, &k, 0, 1, 1, 0, 0, T0, &nv), MC_INCR_NOT_NUMERIC);
    set(s, k, "-3", MC_SET, 0, T0);
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_NOT_NUMERIC);
    /* Flags and expiry survive an increment. */
    mc_set(s, &k, "41", 2, 3, MC_SET, 0, 0, 10, T0);
    CHECK_INT(mc_incr(s, &k, 0, 1, 0, 0, 0, T0, &nv), MC_INCR_OK);
    CHECK_INT(get(s, k, T0 + 9 * SEC, &g), 1);
    CHECK_STR(g.value, "42");
    CHECK_INT(g.flags, 3);
    CHECK_INT(get(s, k, T0 + 10 * SEC, &g), 0);
    mc_store_free(s);
}

TEST(lru_order_and_eviction)
{
    /* A cap of ~20 small items: fill well past it and check that the least
     * recently *used* items went first and the cap holds. */
    size_t cap = 20 * 200;
    mc_store *s = mc_store_new(cap, 1);
    got g;
    char key[16];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK_INT(set(s, K("a", "", key), "0123456789", MC_SET, 0, T0), MC_STORED);
    }
    CHECK_INT(get(s, K("a", "", "k0"), T0, &g), 1);    /* k0 becomes the newest */
    for (int i = 10; i < 200; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK_INT(set(s, K("a", "", key), "0123456789", MC_SET, 0, T0), MC_STORED);
        CHECK(mc_store_used(s) <= cap);
        if (i < 14) CHECK_INT(get(s, K("a", "", "k0"), T0, &g), 1);   /* keep k0 hot */
    }
    CHECK_INT(get(s, K("a", "", "k199"), T0, &g), 1);
    CHECK_INT(get(s, K("a", "", "k1"), T0, &g), 0);
    /* Evicted in LRU order: the newest ~N survive, a contiguous run. */
    int first = -1;
    for (int i = 10; i < 200; i++) {
        snprintf(key, sizeof key, "k%d", i);
        int hit = get(s, K("a", "", key), T0, &g);
        if (hit && first < 0) first = i;
        if (first >= 0) CHECK(hit);
    }
    CHECK(first > 150);
    mc_stats st;
    mc_get_stats(s, "a", 1, T0, &st);
    CHECK(st.items > 5 && st.items < 40);
    /* Exact order on three items: A, B, C; touch A; insert D over cap -> B goes. */
    mc_store_free(s);
    s = mc_store_new(1 << 20, 1);
    size_t one;
    set(s, K("a", "", "A"), "x", MC_SET, 0, T0);
    one = mc_store_used(s);
    mc_store_free(s);
    s = mc_store_new(one * 3, 1);
    set(s, K("a", "", "A"), "x", MC_SET, 0, T0);
    set(s, K("a", "", "B"), "x", MC_SET, 0, T0);
    set(s, K("a", "", "C"), "x", MC_SET, 0, T0);
    CHECK_INT(get(s, K("a", "", "A"), T0, &g), 1);
    set(s, K("a", "", "D"), "x", MC_SET, 0, T0);
    CHECK_INT(get(s, K("a", "", "B"), T0, &g), 0);
    CHECK_INT(get(s, K("a", "", "A"), T0, &g), 1);
    CHECK_INT(get(s, K("a", "", "C"), T0, &g), 1);
    CHECK_INT(get(s, K("a", "", "D"), T0, &g), 1);
    set(s, K("a", "", "E"), "x", MC_SET, 0, T0);     /* A, C, D touched in that order: A goes */
    CHECK_INT(get(s, K("a", "", "A"), T0, &g), 0);
    mc_store_free(s);
}

TEST(size_limits_and_honest_cap)
{
    mc_store *s = mc_store_new(8u << 20, 1);
    size_t big = MC_MAX_VALUE;
    char *v = malloc(big + 1);
    memset(v, 'x', big + 1);
    mc_key k = K("a", "", "big");
    CHECK_INT(mc_set(s, &k, v, big, 0, MC_SET, 0, 0, 0, T0), MC_STORED);
    CHECK_INT(mc_set(s, &k, v, big + 1, 0, MC_SET, 0, 0, 0, T0), MC_ERROR);
    /* The charge covers key and value and more. */
    CHECK(mc_store_used(s) >= big + 3);
    char longkey[MC_MAX_KEY + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    CHECK_INT(set(s, K("a", "", longkey), "v", MC_SET, 0, T0), MC_ERROR);
    longkey[MC_MAX_KEY] = 0;
    CHECK_INT(set(s, K("a", "", longkey), "v", MC_SET, 0, T0), MC_STORED);
    /* An item bigger than the whole cap is refused, not stored by evicting all. */
    mc_store *tiny = mc_store_new(64 * 1024, 1);
    CHECK_INT(mc_set(tiny, &k, v, 100000, 0, MC_SET, 0, 0, 0, T0), MC_ERROR);
    CHECK_INT(mc_store_used(tiny), 0);
    mc_store_free(tiny);
    free(v);
    mc_store_free(s);
}

TEST(isolation_and_namespaces)
{
    mc_store *s = mc_store_new(1 << 20, 4);
    got g;
    set(s, K("app1", "", "k"), "one", MC_SET, 0, T0);
    set(s, K("app2", "", "k"), "two", MC_SET, 0, T0);
    set(s, K("app1", "ns", "k"), "ns-one", MC_SET, 0, T0);
    get(s, K("app1", "", "k"), T0, &g);   CHECK_STR(g.value, "one");
    get(s, K("app2", "", "k"), T0, &g);   CHECK_STR(g.value, "two");
    get(s, K("app1", "ns", "k"), T0, &g); CHECK_STR(g.value, "ns-one");
    CHECK_INT(get(s, K("app2", "ns", "k"), T0, &g), 0);
    /* No ambiguity between (ns "a", key "bc") and (ns "ab", key "c"). */
    set(s, K("app1", "a", "bc"), "1", MC_SET, 0, T0);
    CHECK_INT(get(s, K("app1", "ab", "c"), T0, &g), 0);
    mc_flush_app(s, "app1", 4);
    CHECK_INT(get(s, K("app1", "", "k"), T0, &g), 0);
    CHECK_INT(get(s, K("app2", "", "k"), T0, &g), 1);
    mc_store_free(s);
}

TEST(stats)
{
    mc_store *s = mc_store_new(1 << 20, 4);
    got g;
    mc_stats st;
    mc_get_stats(s, "a", 1, T0, &st);
    CHECK_INT(st.items, 0);
    CHECK_INT(st.hits, 0);
    set(s, K("a", "", "k1"), "hello", MC_SET, 0, T0);
    set(s, K("a", "", "k2"), "xy", MC_SET, 0, T0 + 10 * SEC);
    set(s, K("b", "", "k3"), "other", MC_SET, 0, T0);
    get(s, K("a", "", "k1"), T0 + 20 * SEC, &g);
    get(s, K("a", "", "nope"), T0 + 20 * SEC, &g);
    mc_get_stats(s, "a", 1, T0 + 30 * SEC, &st);
    CHECK_INT(st.hits, 1);
    CHECK_INT(st.misses, 1);
    CHECK_INT(st.byte_hits, 2 + 5);
    CHECK_INT(st.items, 2);
    CHECK_INT(st.bytes, 2 + 5 + 2 + 2);
    CHECK_INT(st.oldest_item_age, 20);     /* k2, last used at T0+10 */
    /* Expired items leave the counts. */
    set(s, K("a", "", "k4"), "zz", MC_SET, 5, T0 + 30 * SEC);
    mc_get_stats(s, "a", 1, T0 + 30 * SEC, &st);
    CHECK_INT(st.items, 3);
    mc_get_stats(s, "a", 1, T0 + 40 * SEC, &st);
    CHECK_INT(st.items, 2);
    mc_flush_app(s, "a", 1);
    mc_get_stats(s, "a", 1, T0 + 40 * SEC, &st);
    CHECK_INT(st.items, 0);
    CHECK_INT(st.bytes, 0);
    CHECK_INT(st.hits, 0);
    mc_get_stats(s, "b", 1, T0 + 40 * SEC, &st);
    CHECK_INT(st.items, 1);
    mc_store_free(s);
}

/* Threads hammer overlapping keys; afterwards the per-app counts must agree
 * with what a single-threaded walk finds, and the counter must be exact. */
typedef struct { mc_store *s; int id; } targ;

static void *worker(void *p)
{
    targ *t = p;
    char key[32], val[64];
    got g;
    uint64_t nv;
    mc_key ck = K("t", "", "counter");
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "k%d", (i * 7 + t->id) % 500);
        snprintf(val, sizeof val, "value-%d-%d", t->id, i);
        mc_key k = K("t", "", key);
        switch (i % 4) {
        case 0: set(t->s, k, val, MC_SET, 0, T0); break;
        case 1: get(t->s, k, T0, &g); break;
        case 2: mc_delete(t->s, &k, i % 8 == 2 ? 5 : 0, T0); break;
        case 3: set(t->s, k, val, MC_ADD, 0, T0); break;
        }
        mc_incr(t->s, &ck, 0, 1, 1, 0, 0, T0, &nv);
    }
    return NULL;
}

TEST(threads)
{
    mc_store *s = mc_store_new(1 << 20, 8);
    pthread_t th[4];
    targ a[4];
    for (int i = 0; i < 4; i++) { a[i].s = s; a[i].id = i; pthread_create(&th[i], NULL, worker, &a[i]); }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    got g;
    CHECK_INT(get(s, K("t", "", "counter"), T0, &g), 1);
    CHECK_STR(g.value, "80000");
    mc_stats st;
    mc_get_stats(s, "t", 1, T0, &st);
    int live = 0;
    char key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "k%d", i);
        live += mc_get(s, &(mc_key){ "t", 1, "", 0, (const uint8_t *)key, strlen(key) }, 0, T0, NULL, NULL);
    }
    CHECK_INT(st.items, live + 1);
    CHECK(mc_store_used(s) <= (1u << 20));
    mc_store_free(s);
}

int main(void)
{
    RUN(set_get_flags);
    RUN(policies);
    RUN(cas);
    RUN(delete_hold);
    RUN(expiry);
    RUN(incr);
    RUN(lru_order_and_eviction);
    RUN(size_limits_and_honest_cap);
    RUN(isolation_and_namespaces);
    RUN(stats);
    RUN(threads);
    return test_report();
}
