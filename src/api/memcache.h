/* memcache.h - the App Engine memcache service ("memcache") for the API
 * server: Get, Set, Delete, Increment, BatchIncrement, FlushAll and Stats,
 * decoded from Google's memcache_service messages and run against an
 * in-process store (memcache_store.h), one keyspace per calling app.
 *
 * The store's cap comes from $CYCLOZZO_MEMCACHE_MB (MiB, default 64). */
#ifndef CZ_MEMCACHE_H
#define CZ_MEMCACHE_H

#include "api/api.h"
#include "api/memcache_store.h"

#define MEMCACHE_DEFAULT_CAP (64u << 20)

/* Error codes of MemcacheServiceError. */
enum {
    MEMCACHE_OK = 0,
    MEMCACHE_UNSPECIFIED_ERROR = 1,
    MEMCACHE_NAMESPACE_NOT_SET = 2,
    MEMCACHE_PERMISSION_DENIED = 3,
    MEMCACHE_INVALID_VALUE = 6,
    MEMCACHE_UNAVAILABLE = 9,
};

/* Register every method on srv with a new store (home is unused today). */
void memcache_register(api_server *srv, const char *home);

/* The method implementing `method` (e.g. "Get"), or NULL. Each expects
 * ctx->service_data to be an mc_store and ctx->app_id to be set, so tests and
 * fuzzers can call them without a server. */
api_method_fn memcache_method(const char *method);

#endif
