/* api.h - the App Engine API server: the /rpc_http endpoint that Google's
 * official SDKs call, and the registry its services plug into.
 *
 * A request is an HTTP POST of a remote_api Request protobuf (service_name,
 * method, request bytes, request_id = the security ticket). The server checks
 * the ticket (ticket.h), finds the method registered for (service, method),
 * and calls it with an api_ctx describing the calling app and request. The
 * method fills an api_reply: response bytes, or an application error with the
 * service's own error code, or an RPC error. The server encodes the remote_api
 * Response.
 *
 * Services register at start-up with api_register(); one file per service
 * under src/api/ (datastore_v3.c, memcache.c, ...), each exposing
 * `void <service>_register(api_server *srv, const char *home)`, all called
 * from api_register_all() in services.c, which is what the daemon calls.
 *
 * Error mapping (what the SDKs see): unknown service or method ->
 * CALL_NOT_FOUND; undecodable Request -> PARSE_ERROR; body larger than
 * max_request -> REQUEST_TOO_LARGE; missing, malformed, forged, expired or
 * wrong-app ticket -> SECURITY_VIOLATION; call started or finished after the
 * X-Google-RPC-Service-Deadline (seconds, default 60) -> DEADLINE_EXCEEDED.
 * All of these travel in an HTTP 200 Response, as the SDKs expect; only
 * non-API traffic gets HTTP errors (404 other paths, 405 other methods, 400
 * and close for malformed HTTP). See docs/api-server.md. */
#ifndef CZ_API_H
#define CZ_API_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

typedef struct api_server api_server;

/* remote_api RpcError codes (apphosting/ext/remote_api/remote_api.proto). */
enum {
    RPC_UNKNOWN = 0,
    RPC_CALL_NOT_FOUND = 1,
    RPC_PARSE_ERROR = 2,
    RPC_SECURITY_VIOLATION = 3,
    RPC_OVER_QUOTA = 4,
    RPC_REQUEST_TOO_LARGE = 5,
    RPC_CAPABILITY_DISABLED = 6,
    RPC_FEATURE_DISABLED = 7,
    RPC_BAD_REQUEST = 8,
    RPC_RESPONSE_TOO_LARGE = 9,
    RPC_CANCELLED = 10,
    RPC_REPLAY_ERROR = 11,
    RPC_DEADLINE_EXCEEDED = 12,
};

/* Who is calling: filled from the verified ticket. */
typedef struct {
    const char *app_id;          /* full id with partition, e.g. "dev~guestbook" */
    const char *version;         /* "default.1" style version id, or "" */
    const char *ns;              /* default namespace, usually "" */
    const char *user_email;      /* "" when no user is logged in */
    const char *user_id;
    int user_is_admin;
    const char *request_id;      /* request log id the ticket was minted for */
    int64_t deadline_us;         /* absolute CLOCK_MONOTONIC deadline (now_us()) */
    api_server *server;
    void *service_data;          /* the pointer given to api_register */
} api_ctx;

typedef enum { API_REPLY_OK = 0, API_REPLY_APP_ERROR, API_REPLY_RPC_ERROR } api_reply_kind;

typedef struct {
    api_reply_kind kind;
    int code;                    /* application error code or RPC_* code */
    char detail[512];            /* one sentence for the client */
    buf response;                /* encoded response message when kind == OK */
} api_reply;

/* Helpers for methods. */
void api_app_error(api_reply *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void api_rpc_error(api_reply *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef void (*api_method_fn)(api_ctx *ctx, const uint8_t *req, size_t req_len, api_reply *reply);

/* Register a method. service_data reaches the method as ctx->service_data. */
void api_register(api_server *srv, const char *service, const char *method,
                  api_method_fn fn, void *service_data);

typedef struct {
    const char *home;            /* CYCLOZZO_HOME: data and the ticket secret live here */
    const char *host;            /* listen address, default 127.0.0.1 */
    int port;                    /* 0 = pick a free port */
    int threads;                 /* worker threads, default 16 */
    size_t max_request;          /* default 32 MiB (REQUEST_TOO_LARGE above) */
    const char *app_id;          /* non-NULL: refuse tickets of any other app */
    int idle_timeout_s;          /* close idle keep-alive connections, default 120 */
} api_server_config;

/* Create the server (services may then register), then start it listening.
 * Both return NULL / -1 with one sentence in err on failure. */
api_server *api_server_new(const api_server_config *cfg, char *err, size_t errlen);
int  api_server_start(api_server *srv, char *err, size_t errlen);
int  api_server_port(const api_server *srv);
void api_server_stop(api_server *srv);     /* stops threads, frees everything */

/* Register every service Cyclozzo provides (services.c): the one call the
 * daemon and bin/cz-apiserver make. home is CYCLOZZO_HOME. */
void api_register_all(api_server *srv, const char *home);

/* capability_service (capability.c): IsEnabled answers ENABLED for all. */
void capability_register(api_server *srv, const char *home);

/* datastore_v3 (datastore_v3.c): Get, Put, Delete, AllocateIds, transactions
 * and queries over the datastore in home/datastore/. */
void datastore_v3_register(api_server *srv, const char *home);

/* The protocol engine of one connection, without sockets (the socket layer,
 * the unit tests and the fuzzer all drive it). Feed it the bytes received;
 * it appends every complete response to out, running API calls inline.
 * Returns 1 once the connection must be closed after out is sent, else 0.
 * api_register must be done before the first call; api_server_start is not
 * needed. */
typedef struct api_conn api_conn;
api_conn *api_conn_new(api_server *srv);
int  api_conn_feed(api_conn *c, const void *data, size_t len, buf *out);
void api_conn_free(api_conn *c);

/* Call fn(data) in api_server_stop once no method can run any more (after
 * the workers are joined), newest registration first: services free their
 * service_data here. */
void api_on_stop(api_server *srv, void (*fn)(void *), void *data);

/* Named pointers shared between services of one server (not owned by the
 * server: whoever shares a pointer frees it in its api_on_stop callback).
 * datastore_v3 shares its kv engine as "kv" so that the task queue keeps its
 * rows in the same engine; the task queue shares itself as "taskqueue". */
void  api_share(api_server *srv, const char *name, void *p);
void *api_shared(api_server *srv, const char *name);

/* Plain HTTP GETs other than /rpc_http (the metadata server of
 * app_identity.c): fn gets the request target and fills body, returning the
 * HTTP status (200 answers application/json). Set before api_server_start. */
typedef int (*api_http_fn)(void *data, const char *target, size_t len, buf *body);
void api_set_http_get(api_server *srv, api_http_fn fn, void *data);

/* A method about to wait a long time on the outside world (a network
 * fetch, a mail relay) calls api_blocking_begin(ctx) first and
 * api_blocking_end(ctx) after: while calls wait, the server keeps `threads`
 * workers free for other calls by starting more (see server.c). */
void api_blocking_begin(api_ctx *ctx);
void api_blocking_end(api_ctx *ctx);
/* 1 once api_server_stop has begun: long waits should give up. */
int  api_server_stopping(const api_server *srv);

/* urlfetch (urlfetch.c, netguard.c) and mail (mail.c): see urlfetch.h and
 * mail.h. */

/* taskqueue (taskqueue.c): push and pull queues stored in the "kv" engine.
 * Registered after datastore_v3. */
void taskqueue_register(api_server *srv, const char *home);
/* search.c: the Search API (src/search/, SQLite FTS5 per app). */
void search_register(api_server *srv, const char *home);

#endif
