/* memcache_backend.c - the embedded memcache backend: memcache_backend.h's
 * interface over the in-process store (memcache_store.c), one call per key.
 * The memcached backend lives in memcache_memcached.c. */
#include "api/memcache_backend.h"
#include "core/util.h"

#include <stdlib.h>

typedef struct {
    mc_backend base;
    mc_store  *store;
} embedded;

static mc_store *st(mc_backend *b) { return ((embedded *)b)->store; }

static void e_get(mc_backend *b, const mc_key *keys, size_t n, int peek, int64_t now,
                  mc_emit_fn emit, void *arg)
{
    for (size_t i = 0; i < n; i++) mc_get(st(b), &keys[i], peek, now, emit, arg);
}

static int e_set(mc_backend *b, const mc_key *k, const void *value, size_t value_len,
                 uint32_t flags, int policy, uint64_t cas, int has_cas, uint32_t exptime, int64_t now)
{
    return mc_set(st(b), k, value, value_len, flags, policy, cas, has_cas, exptime, now);
}

static int e_del(mc_backend *b, const mc_key *k, uint32_t hold, int64_t now)
{
    return mc_delete(st(b), k, hold, now);
}

static int e_incr(mc_backend *b, const mc_key *k, int decr, uint64_t delta, int has_initial,
                  uint64_t initial, uint32_t initial_flags, int64_t now, uint64_t *out)
{
    return mc_incr(st(b), k, decr, delta, has_initial, initial, initial_flags, now, out);
}

static int e_flush(mc_backend *b, const char *app, size_t app_len)
{
    mc_flush_app(st(b), app, app_len);
    return 0;
}

static void e_stats(mc_backend *b, const char *app, size_t app_len, int64_t now, mc_stats *out)
{
    mc_get_stats(st(b), app, app_len, now, out);
}

static void e_free(mc_backend *b)
{
    mc_store_free(st(b));
    free(b);
}

static const mc_backend_ops embedded_ops = {
    "embedded", e_get, e_set, e_del, e_incr, e_flush, e_stats, e_free,
};

mc_backend *mc_backend_embedded(size_t cap_bytes, int stripes)
{
    embedded *e = xcalloc(1, sizeof *e);
    e->base.ops = &embedded_ops;
    e->store = mc_store_new(cap_bytes, stripes);
    return &e->base;
}

mc_store *mc_backend_store(mc_backend *b)
{
    return b && b->ops == &embedded_ops ? st(b) : NULL;
}

void mc_backend_free(mc_backend *b)
{
    if (b) b->ops->free(b);
}
