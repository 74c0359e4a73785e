/* memcache.h - the App Engine memcache service ("memcache") for the API
 * server: Get, Set, Delete, Increment, BatchIncrement, FlushAll and Stats,
 * decoded from Google's memcache_service messages and run against a backend
 * (memcache_backend.h), one keyspace per calling app: the in-process store
 * (memcache_store.h, the default, capped by $CYCLOZZO_MEMCACHE_MB, MiB,
 * default 64) or memcached servers, chosen by a server list shared on the
 * API server as MEMCACHE_SERVERS_SHARE (the daemon's --memcache-servers)
 * or, failing that, $CYCLOZZO_MEMCACHE_SERVERS ("host:port,host:port"). */
#ifndef CZ_MEMCACHE_H
#define CZ_MEMCACHE_H

#include "api/api.h"
#include "api/memcache_backend.h"
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

/* api_share() name of a NUL-terminated "host:port,..." list; share it
 * before api_register_all() to put memcache on memcached. */
#define MEMCACHE_SERVERS_SHARE "memcache.servers"

/* The memcached server list in force for srv (the share, else the
 * environment), or NULL for the in-process store. */
const char *memcache_servers_setting(api_server *srv);

/* Register every method on srv with a new backend (home is unused today). */
void memcache_register(api_server *srv, const char *home);

/* The method implementing `method` (e.g. "Get"), or NULL. Each expects
 * ctx->service_data to be an mc_backend and ctx->app_id to be set, so tests and
 * fuzzers can call them without a server. */
api_method_fn memcache_method(const char *method);

#endif
