/* memcache_backend.h - where the memcache service keeps its items: the
 * in-process store (memcache_store.h, the default) or a cluster of memcached
 * servers through libmemcached (memcache_memcached.c). memcache.c decodes
 * the RPCs and talks to one mc_backend; both backends give App Engine's
 * semantics (set policies, CAS, delete holds, increments with initial values,
 * per-app flush and statistics, one keyspace per app and namespace).
 *
 * Every call fails soft: a backend that cannot reach its storage answers a
 * get with a miss, a set with MC_ERROR, a delete with "not found", an
 * increment with MC_INCR_MISS, as App Engine's memcache does. */
#ifndef CZ_MEMCACHE_BACKEND_H
#define CZ_MEMCACHE_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "api/memcache_store.h"

typedef struct mc_backend mc_backend;

typedef struct {
    const char *name;   /* "embedded" or "memcached" */
    /* Look up keys[0..n-1] (same app and namespace); emit is called once for
     * every hit, with v->key the caller's key (keys[i].key). */
    void (*get)(mc_backend *b, const mc_key *keys, size_t n, int peek, int64_t now,
                mc_emit_fn emit, void *arg);
    int  (*set)(mc_backend *b, const mc_key *k, const void *value, size_t value_len,
                uint32_t flags, int policy, uint64_t cas, int has_cas, uint32_t exptime,
                int64_t now);                                    /* MC_STORED... */
    int  (*del)(mc_backend *b, const mc_key *k, uint32_t hold, int64_t now);   /* 1 deleted */
    int  (*incr)(mc_backend *b, const mc_key *k, int decr, uint64_t delta, int has_initial,
                 uint64_t initial, uint32_t initial_flags, int64_t now, uint64_t *out);
    int  (*flush_app)(mc_backend *b, const char *app, size_t app_len);       /* 0, -1 failed */
    void (*stats)(mc_backend *b, const char *app, size_t app_len, int64_t now, mc_stats *out);
    void (*free)(mc_backend *b);
} mc_backend_ops;

struct mc_backend { const mc_backend_ops *ops; };

/* The in-process store with cap_bytes (stripes as mc_store_new). */
mc_backend *mc_backend_embedded(size_t cap_bytes, int stripes);
/* The embedded backend's store (for tests), or NULL for another backend. */
mc_store   *mc_backend_store(mc_backend *b);

/* memcached servers "host:port[,host:port...]" (port defaults to 11211,
 * "[v6addr]:port" for IPv6), spread by consistent hashing (ketama). Returns
 * NULL with one sentence in err when the list is malformed; unreachable
 * servers are not an error (calls fail soft until they answer). */
mc_backend *mc_backend_memcached(const char *servers, char *err, size_t errlen);

/* Check a server list without connecting: 0, or -1 with a sentence in err. */
int mc_servers_check(const char *servers, char *err, size_t errlen);

void mc_backend_free(mc_backend *b);

/* The memcached key for (app, namespace, key), NUL-terminated in out (at
 * least MCD_KEY_MAX + 1 bytes); returns its length. Keys are printable ASCII
 * without spaces, distinct (app, namespace, key) give distinct keys, every
 * key of one app starts with mcd_app_prefix(app), and keys that would exceed
 * memcached's 250 bytes are hashed (SHA-256). Exposed for tests. */
#define MCD_KEY_MAX 250
size_t mcd_key(const mc_key *k, char *out);
size_t mcd_app_prefix(const char *app, size_t app_len, char *out);
/* The length of the caller's key encoded in a memcached key of this app's
 * form, or -1 when mkey is not one (for statistics). */
long   mcd_key_orig_len(const char *mkey, size_t len);

#endif
