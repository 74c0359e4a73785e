/* memcache_store.c - bounded, striped, LRU memcache store. See memcache_store.h.
 *
 * Layout: the store is split into stripes by a hash of (app, namespace, key).
 * Each stripe has its own mutex, a chained hash table, a doubly linked LRU list
 * (newest first) used for eviction, and a small list of per-app records. Each
 * app record holds that app's counters and a second LRU list threading the
 * app's items in this stripe, so Stats and FlushAll for one app never walk
 * other apps' items. An item is one allocation: header, namespace, key, value.
 *
 * Memory: every item is charged malloc_usable_size() of its allocation, the
 * allocator's chunk header and up to two hash slots, so the heap really used
 * stays under the cap; a stripe evicts from its LRU tail until the new item fits in
 * cap/stripes. Delete holds keep a value-less "locked" item (charged too)
 * until the hold ends. Expired items are dropped when touched, when they reach
 * the LRU tail during eviction, or when Stats walks the app's list.
 *
 * Locking: one critical section per operation on one stripe; get copies the
 * value out through a callback while the lock is held (memcpy only). */
#include "api/memcache_store.h"
#include "core/util.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mc_app mc_app;

typedef struct mc_item {
    struct mc_item *hnext;
    struct mc_item *newer, *older;          /* stripe LRU */
    struct mc_item *app_newer, *app_older;  /* app LRU within the stripe */
    mc_app  *app;
    uint64_t hash;
    uint64_t cas;
    int64_t  expires;       /* unix ms, 0 = never */
    int64_t  lock_until;    /* unix ms; > 0: delete-locked, no value */
    int64_t  last_access;   /* unix ms */
    uint32_t flags;
    uint32_t ns_len, key_len, value_len;
    size_t   charge;        /* bytes accounted for this item */
    uint8_t  data[];        /* ns, key, value */
} mc_item;

struct mc_app {
    mc_app  *next;
    uint64_t hash;
    mc_item *newest, *oldest;
    uint64_t hits, misses, byte_hits, items, bytes;
    size_t   len;
    char     id[];
};

typedef struct {
    pthread_mutex_t mu;
    mc_item **buckets;
    size_t   nbuckets, count;
    mc_item *newest, *oldest;
    size_t   used, cap;
    mc_app  *apps;
} __attribute__((aligned(64))) mc_stripe;

struct mc_store {
    int        nstripes;
    uint64_t   next_cas;    /* atomic */
    mc_stripe *stripes;
};

/* ---- hashing ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t app_hash(const char *app, size_t len)
{
    return mix(fnv(0xcbf29ce484222325ULL, app, len));
}

static uint64_t key_hash(const mc_key *k)
{
    uint64_t lens[2] = { k->ns_len, k->key_len };
    uint64_t h = fnv(0xcbf29ce484222325ULL, k->app, k->app_len);
    h = fnv(h, lens, sizeof lens);
    h = fnv(h, k->ns, k->ns_len);
    h = fnv(h, k->key, k->key_len);
    return mix(h);
}

/* ---- store ---- */

mc_store *mc_store_new(size_t cap_bytes, int stripes)
{
    if (stripes <= 0) {
        stripes = (int)(cap_bytes / (4u * MC_MAX_ITEM));
        if (stripes > 16) stripes = 16;
        if (stripes < 1) stripes = 1;
    }
    if (stripes > 64) stripes = 64;
    mc_store *s = xcalloc(1, sizeof *s);
    s->nstripes = stripes;
    s->next_cas = 1;
    if (posix_memalign((void **)&s->stripes, 64, sizeof(mc_stripe) * (size_t)stripes)) {
        fputs("cyclozzo: out of memory\n", stderr);
        abort();
    }
    memset(s->stripes, 0, sizeof(mc_stripe) * (size_t)stripes);
    for (int i = 0; i < stripes; i++) {
        mc_stripe *st = &s->stripes[i];
        pthread_mutex_init(&st->mu, NULL);
        st->nbuckets = 64;
        st->buckets = xcalloc(st->nbuckets, sizeof *st->buckets);
        st->cap = cap_bytes / (size_t)stripes;
    }
    return s;
}

void mc_store_free(mc_store *s)
{
    if (!s) return;
    for (int i = 0; i < s->nstripes; i++) {
        mc_stripe *st = &s->stripes[i];
        for (mc_item *it = st->newest, *nx; it; it = nx) { nx = it->older; free(it); }
        for (mc_app *a = st->apps, *nx; a; a = nx) { nx = a->next; free(a); }
        free(st->buckets);
        pthread_mutex_destroy(&st->mu);
    }
    free(s->stripes);
    free(s);
}

int mc_store_stripes(const mc_store *s) { return s->nstripes; }

size_t mc_store_used(mc_store *s)
{
    size_t n = 0;
    for (int i = 0; i < s->nstripes; i++) {
        pthread_mutex_lock(&s->stripes[i].mu);
        n += s->stripes[i].used;
        pthread_mutex_unlock(&s->stripes[i].mu);
    }
    return n;
}

int64_t mc_abs_time(uint32_t t, int64_t now)
{
    if (t == 0) return 0;
    if (t <= MC_RELATIVE_LIMIT) return now + (int64_t)t * 1000;
    return (int64_t)t * 1000;
}

static mc_stripe *stripe_of(mc_store *s, uint64_t h)
{
    return &s->stripes[(h >> 40) % (uint64_t)s->nstripes];
}

static mc_app *find_app(mc_stripe *st, const char *id, size_t len, int create)
{
    uint64_t h = app_hash(id, len);
    for (mc_app *a = st->apps; a; a = a->next)
        if (a->hash == h && a->len == len && !memcmp(a->id, id, len)) return a;
    if (!create) return NULL;
    mc_app *a = xcalloc(1, sizeof *a + len + 1);
    a->hash = h;
    a->len = len;
    memcpy(a->id, id, len);
    a->next = st->apps;
    st->apps = a;
    return a;
}

/* ---- item lists ---- */

static int is_live(const mc_item *it) { return it->lock_until == 0; }

static void lru_push(mc_stripe *st, mc_item *it)
{
    it->newer = NULL;
    it->older = st->newest;
    if (st->newest) st->newest->newer = it; else st->oldest = it;
    st->newest = it;
    mc_app *a = it->app;
    it->app_newer = NULL;
    it->app_older = a->newest;
    if (a->newest) a->newest->app_newer = it; else a->oldest = it;
    a->newest = it;
}

static void lru_unlink(mc_stripe *st, mc_item *it)
{
    if (it->newer) it->newer->older = it->older; else st->newest = it->older;
    if (it->older) it->older->newer = it->newer; else st->oldest = it->newer;
    mc_app *a = it->app;
    if (it->app_newer) it->app_newer->app_older = it->app_older; else a->newest = it->app_older;
    if (it->app_older) it->app_older->app_newer = it->app_newer; else a->oldest = it->app_newer;
}

static void grow(mc_stripe *st)
{
    size_t n = st->nbuckets * 2;
    mc_item **nb = xcalloc(n, sizeof *nb);
    for (size_t i = 0; i < st->nbuckets; i++) {
        for (mc_item *it = st->buckets[i], *nx; it; it = nx) {
            nx = it->hnext;
            size_t b = it->hash & (n - 1);
            it->hnext = nb[b];
            nb[b] = it;
        }
    }
    free(st->buckets);
    st->buckets = nb;
    st->nbuckets = n;
}

/* Put a new item in the hash table and at the head of both LRU lists. */
static void link_item(mc_stripe *st, mc_item *it)
{
    if (st->count >= st->nbuckets) grow(st);
    size_t b = it->hash & (st->nbuckets - 1);
    it->hnext = st->buckets[b];
    st->buckets[b] = it;
    st->count++;
    st->used += it->charge;
    lru_push(st, it);
    if (is_live(it)) {
        it->app->items++;
        it->app->bytes += it->key_len + it->value_len;
    }
}

/* Take an item out of everything (the caller frees or reuses it). */
static void unlink_item(mc_stripe *st, mc_item *it)
{
    mc_item **pp = &st->buckets[it->hash & (st->nbuckets - 1)];
    while (*pp != it) pp = &(*pp)->hnext;
    *pp = it->hnext;
    st->count--;
    st->used -= it->charge;
    lru_unlink(st, it);
    if (is_live(it)) {
        it->app->items--;
        it->app->bytes -= it->key_len + it->value_len;
    }
}

static void drop_item(mc_stripe *st, mc_item *it)
{
    unlink_item(st, it);
    free(it);
}

static void touch(mc_stripe *st, mc_item *it, int64_t now)
{
    it->last_access = now;
    if (st->newest == it && it->app->newest == it) return;
    lru_unlink(st, it);
    lru_push(st, it);
}

/* Is the item gone by now (expired, or a finished delete hold)? */
static int is_stale(const mc_item *it, int64_t now)
{
    if (it->lock_until) return now >= it->lock_until;
    return it->expires && now >= it->expires;
}

static mc_item *new_item(mc_app *a, uint64_t hash, const mc_key *k,
                         const void *value, size_t value_len)
{
    mc_item *it = xmalloc(sizeof *it + k->ns_len + k->key_len + value_len);
    memset(it, 0, sizeof *it);
    it->app = a;
    it->hash = hash;
    it->ns_len = (uint32_t)k->ns_len;
    it->key_len = (uint32_t)k->key_len;
    it->value_len = (uint32_t)value_len;
    if (k->ns_len) memcpy(it->data, k->ns, k->ns_len);
    if (k->key_len) memcpy(it->data + k->ns_len, k->key, k->key_len);
    if (value_len) memcpy(it->data + k->ns_len + k->key_len, value, value_len);
    /* The allocation, the allocator's chunk header, and the hash slot (the
     * table is kept between half and fully loaded: up to two slots an item). */
    it->charge = malloc_usable_size(it) + sizeof(size_t) + 2 * sizeof(mc_item *);
    return it;
}

/* Find (app, ns, key); stale items are dropped and reported missing. */
static mc_item *lookup(mc_stripe *st, mc_app *a, uint64_t h, const mc_key *k, int64_t now)
{
    for (mc_item *it = st->buckets[h & (st->nbuckets - 1)]; it; it = it->hnext) {
        if (it->hash != h || it->app != a || it->ns_len != k->ns_len || it->key_len != k->key_len)
            continue;
        if ((k->ns_len && memcmp(it->data, k->ns, k->ns_len)) ||
            (k->key_len && memcmp(it->data + k->ns_len, k->key, k->key_len)))
            continue;
        if (is_stale(it, now)) { drop_item(st, it); return NULL; }
        return it;
    }
    return NULL;
}

/* Evict from the LRU tail until `need` more bytes fit. 0 ok, -1 never fits. */
static int make_room(mc_stripe *st, size_t need)
{
    if (need > st->cap) return -1;
    while (st->used + need > st->cap && st->oldest) drop_item(st, st->oldest);
    return 0;
}

/* Link `it` in place of `old` (may be NULL), evicting as needed. */
static int install(mc_stripe *st, mc_item *old, mc_item *it)
{
    if (it->charge > st->cap) { free(it); return -1; }
    if (old) drop_item(st, old);
    make_room(st, it->charge);
    link_item(st, it);
    return 0;
}

/* ---- operations ---- */

int mc_get(mc_store *s, const mc_key *k, int peek, int64_t now, mc_emit_fn emit, void *arg)
{
    uint64_t h = key_hash(k);
    mc_stripe *st = stripe_of(s, h);
    pthread_mutex_lock(&st->mu);
    mc_app *a = find_app(st, k->app, k->app_len, 1);
    mc_item *it = lookup(st, a, h, k, now);
    int hit = it && (is_live(it) || peek);
    if (!hit) {
        a->misses++;
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
    a->hits++;
    a->byte_hits += it->key_len + it->value_len;
    if (!peek) touch(st, it, now);
    mc_view v = {
        .key = it->data + it->ns_len, .key_len = it->key_len,
        .value = it->data + it->ns_len + it->key_len, .value_len = it->value_len,
        .flags = it->flags, .cas = it->cas, .expires = it->expires,
        .last_access = it->last_access, .lock_until = it->lock_until,
    };
    if (emit) emit(arg, &v);
    pthread_mutex_unlock(&st->mu);
    return 1;
}

int mc_set(mc_store *s, const mc_key *k, const void *value, size_t value_len,
           uint32_t flags, int policy, uint64_t cas, int has_cas,
           uint32_t exptime, int64_t now)
{
    if (k->key_len > MC_MAX_KEY || value_len > MC_MAX_VALUE) return MC_ERROR;
    if (policy < MC_SET || policy > MC_CAS) return MC_ERROR;
    uint64_t h = key_hash(k);
    mc_stripe *st = stripe_of(s, h);
    pthread_mutex_lock(&st->mu);
    mc_app *a = find_app(st, k->app, k->app_len, 1);
    mc_item *old = lookup(st, a, h, k, now);
    int live = old && is_live(old);
    int status = MC_NOT_STORED;
    switch (policy) {
    case MC_SET:     status = MC_STORED; break;
    case MC_ADD:     status = old ? MC_NOT_STORED : MC_STORED; break;   /* a hold blocks ADD */
    case MC_REPLACE: status = live ? MC_STORED : MC_NOT_STORED; break;
    case MC_CAS:
        if (!has_cas || !live) status = MC_NOT_STORED;
        else status = old->cas == cas ? MC_STORED : MC_EXISTS;
        break;
    }
    if (status == MC_STORED) {
        mc_item *it = new_item(a, h, k, value, value_len);
        it->flags = flags;
        it->cas = __atomic_fetch_add(&s->next_cas, 1, __ATOMIC_RELAXED);
        it->expires = mc_abs_time(exptime, now);
        it->last_access = now;
        if (install(st, old, it) < 0) status = MC_ERROR;
    }
    pthread_mutex_unlock(&st->mu);
    return status;
}

int mc_delete(mc_store *s, const mc_key *k, uint32_t hold, int64_t now)
{
    if (k->key_len > MC_MAX_KEY) return 0;
    uint64_t h = key_hash(k);
    mc_stripe *st = stripe_of(s, h);
    pthread_mutex_lock(&st->mu);
    mc_app *a = find_app(st, k->app, k->app_len, 1);
    mc_item *it = lookup(st, a, h, k, now);
    int deleted = 0;
    if (it && is_live(it)) {
        deleted = 1;
        int64_t until = hold ? mc_abs_time(hold, now) : 0;
        if (until > now) {
            mc_item *t = new_item(a, h, k, NULL, 0);
            t->lock_until = until;
            t->last_access = now;
            if (install(st, it, t) < 0) drop_item(st, it);
        } else {
            drop_item(st, it);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return deleted;
}

/* Parse a stored counter: decimal digits, optional surrounding whitespace. */
static int parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    while (n > i && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\n' || p[n - 1] == '\r')) n--;
    if (i < n && p[i] == '+') i++;
    if (i == n) return MC_INCR_NOT_NUMERIC;
    uint64_t v = 0;
    int big = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return MC_INCR_NOT_NUMERIC;
        unsigned d = p[i] - '0';
        if (v > (UINT64_MAX - d) / 10) big = 1;
        v = v * 10 + d;
    }
    if (big) return MC_INCR_TOO_BIG;
    *out = v;
    return MC_INCR_OK;
}

int mc_incr(mc_store *s, const mc_key *k, int decr, uint64_t delta,
            int has_initial, uint64_t initial, uint32_t initial_flags,
            int64_t now, uint64_t *out)
{
    if (k->key_len > MC_MAX_KEY) return MC_INCR_MISS;
    uint64_t h = key_hash(k);
    mc_stripe *st = stripe_of(s, h);
    pthread_mutex_lock(&st->mu);
    mc_app *a = find_app(st, k->app, k->app_len, 1);
    mc_item *it = lookup(st, a, h, k, now);
    uint64_t cur;
    uint32_t flags;
    int64_t expires = 0;
    if (!it || !is_live(it)) {
        if (!has_initial) { pthread_mutex_unlock(&st->mu); return MC_INCR_MISS; }
        cur = initial;
        flags = initial_flags;
    } else {
        int rc = parse_u64(it->data + it->ns_len + it->key_len, it->value_len, &cur);
        if (rc != MC_INCR_OK) { pthread_mutex_unlock(&st->mu); return rc; }
        flags = it->flags;
        expires = it->expires;
    }
    uint64_t nv = decr ? (cur > delta ? cur - delta : 0) : cur + delta;   /* wraps mod 2^64 */
    char txt[24];
    int n = snprintf(txt, sizeof txt, "%llu", (unsigned long long)nv);
    mc_item *ni = new_item(a, h, k, txt, (size_t)n);
    ni->flags = flags;
    ni->expires = expires;
    ni->last_access = now;
    ni->cas = __atomic_fetch_add(&s->next_cas, 1, __ATOMIC_RELAXED);
    int rc = install(st, it, ni) < 0 ? MC_INCR_MISS : MC_INCR_OK;
    pthread_mutex_unlock(&st->mu);
    if (rc == MC_INCR_OK) *out = nv;
    return rc;
}

void mc_flush_app(mc_store *s, const char *app, size_t app_len)
{
    for (int i = 0; i < s->nstripes; i++) {
        mc_stripe *st = &s->stripes[i];
        pthread_mutex_lock(&st->mu);
        mc_app *a = find_app(st, app, app_len, 0);
        if (a) {
            while (a->oldest) drop_item(st, a->oldest);
            a->hits = a->misses = a->byte_hits = 0;
        }
        pthread_mutex_unlock(&st->mu);
    }
}

void mc_get_stats(mc_store *s, const char *app, size_t app_len, int64_t now, mc_stats *out)
{
    memset(out, 0, sizeof *out);
    int64_t oldest = 0;
    for (int i = 0; i < s->nstripes; i++) {
        mc_stripe *st = &s->stripes[i];
        pthread_mutex_lock(&st->mu);
        mc_app *a = find_app(st, app, app_len, 0);
        if (a) {
            /* Reap what has expired so items/bytes count only live data. */
            for (mc_item *it = a->oldest, *nx; it; it = nx) {
                nx = it->app_newer;
                if (is_stale(it, now)) drop_item(st, it);
            }
            for (mc_item *it = a->oldest; it; it = it->app_newer) {
                if (!is_live(it)) continue;
                if (!oldest || it->last_access < oldest) oldest = it->last_access;
                break;
            }
            out->hits += a->hits;
            out->misses += a->misses;
            out->byte_hits += a->byte_hits;
            out->items += a->items;
            out->bytes += a->bytes;
        }
        pthread_mutex_unlock(&st->mu);
    }
    if (oldest && now > oldest) out->oldest_item_age = (uint32_t)((now - oldest) / 1000);
}
