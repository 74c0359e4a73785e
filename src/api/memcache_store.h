/* memcache_store.h - the in-process memcache store behind Cyclozzo's memcache
 * service: a bounded, thread-safe hash table of items with LRU eviction,
 * App Engine's set policies, CAS ids, delete holds, increments and per-app
 * statistics. It knows nothing about protobuf or RPCs (memcache.c does).
 *
 * Every item is addressed by (app, namespace, key): apps never see each
 * other's items and each app has its own statistics and flush.
 *
 * Times are wall-clock unix milliseconds passed in by the caller (`now`), so
 * tests can drive expiry without sleeping and a relative expiration of N
 * seconds lasts N seconds, not "until the clock's second ticks over".
 * Expirations and delete holds use memcache's convention: 0 = none, up to 30
 * days = relative seconds, larger = an absolute unix time in seconds. */
#ifndef CZ_MEMCACHE_STORE_H
#define CZ_MEMCACHE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define MC_MAX_KEY        250
#define MC_MAX_ITEM       (1024 * 1024)                 /* key + value + 73 overhead */
#define MC_MAX_VALUE      (MC_MAX_ITEM - MC_MAX_KEY - 73)
#define MC_RELATIVE_LIMIT (86400 * 30)

typedef struct mc_store mc_store;

typedef struct {
    const char    *app;  size_t app_len;
    const char    *ns;   size_t ns_len;
    const uint8_t *key;  size_t key_len;
} mc_key;

enum { MC_SET = 1, MC_ADD = 2, MC_REPLACE = 3, MC_CAS = 4 };                 /* set policies */
enum { MC_STORED = 1, MC_NOT_STORED = 2, MC_ERROR = 3, MC_EXISTS = 4 };     /* set results */
enum { MC_INCR_OK = 0, MC_INCR_MISS = 1, MC_INCR_NOT_NUMERIC = 2, MC_INCR_TOO_BIG = 3 };

/* What a get sees; pointers are valid only during the callback. */
typedef struct {
    const uint8_t *key;  size_t key_len;
    const uint8_t *value; size_t value_len;   /* empty for a delete-locked peek */
    uint32_t flags;
    uint64_t cas;
    int64_t  expires;          /* unix ms, 0 = never */
    int64_t  last_access;      /* unix ms */
    int64_t  lock_until;       /* unix ms, > 0 while delete-locked (peek only) */
} mc_view;

typedef void (*mc_emit_fn)(void *arg, const mc_view *v);

typedef struct {
    uint64_t hits, misses, byte_hits, items, bytes;
    uint32_t oldest_item_age;  /* seconds since the least recently used item was used */
} mc_stats;

/* cap_bytes bounds all memory held for items (keys, values, headers, hash
 * slots, allocator overhead as malloc reports it). stripes (1..64) splits the
 * store into independently locked parts, each with cap_bytes/stripes and its
 * own LRU; 0 picks a count that leaves every stripe room for a largest item. */
mc_store *mc_store_new(size_t cap_bytes, int stripes);
void      mc_store_free(mc_store *s);
int       mc_store_stripes(const mc_store *s);
size_t    mc_store_used(mc_store *s);       /* accounted bytes, all apps */

/* Absolute unix time in ms for a memcache-style time t (0 stays 0). */
int64_t mc_abs_time(uint32_t t, int64_t now);

/* Get: on a hit calls emit (under the stripe lock: copy what you need) and
 * returns 1; a miss returns 0. peek = App Engine's for_peek: does not move the
 * item in the LRU and also reports delete-locked items (with no value).
 * Hits, misses and byte_hits count towards the app's stats. */
int mc_get(mc_store *s, const mc_key *k, int peek, int64_t now, mc_emit_fn emit, void *arg);

/* Set with a policy; cas is compared for MC_CAS when has_cas. Returns MC_*. */
int mc_set(mc_store *s, const mc_key *k, const void *value, size_t value_len,
           uint32_t flags, int policy, uint64_t cas, int has_cas,
           uint32_t exptime, int64_t now);

/* Delete; hold > 0 keeps the key delete-locked until then (ADD, REPLACE and
 * CAS fail, SET works). Returns 1 deleted, 0 not found. */
int mc_delete(mc_store *s, const mc_key *k, uint32_t hold, int64_t now);

/* Increment (decr = 0) or decrement the decimal value at k by delta: unsigned
 * 64-bit, increments wrap, decrements stop at 0. A missing (or delete-locked)
 * item is created from initial/initial_flags when has_initial. Returns MC_INCR_*;
 * *out gets the new value on MC_INCR_OK. */
int mc_incr(mc_store *s, const mc_key *k, int decr, uint64_t delta,
            int has_initial, uint64_t initial, uint32_t initial_flags,
            int64_t now, uint64_t *out);

/* Drop every item of one app and reset its counters. */
void mc_flush_app(mc_store *s, const char *app, size_t app_len);

/* Statistics of one app (items and bytes count live items: key + value). */
void mc_get_stats(mc_store *s, const char *app, size_t app_len, int64_t now, mc_stats *out);

#endif
