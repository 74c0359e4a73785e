/* router.h - Cyclozzo's HTTP/1.1 front end for one app.
 *
 * The router accepts client connections, parses requests (src/http), matches
 * them to app.yaml handlers in order, serves static handlers itself
 * (sendfile, ETag/Last-Modified/304, Range, Cache-Control from expiration,
 * http_headers) and proxies script handlers to instances (instance manager),
 * adding App Engine's X-AppEngine-* headers and stripping any a client sent.
 * It runs N threads, each an independent epoll loop with its own SO_REUSEPORT
 * listening socket, connections, and idle upstream connections. One access
 * log line per request. With https_port, every thread also has a TLS
 * listener, served from the same loop (tls.c, tlsconn.c); app.yaml secure:
 * redirects and custom-domain host checks are in tlsconn.c/hostroute.c.
 *
 * Limits: request line 8 KiB (414), head 64 KiB (431), body 32 MiB (413;
 * Blobstore uploads stream to the blob store instead, see upload.c);
 * a head must arrive within 20 s, idle keep-alive connections close after
 * 60 s, a stalled body read after 30 s. Malformed requests get 400 and the
 * connection is closed. */
#ifndef CZ_ROUTER_H
#define CZ_ROUTER_H

#include <stddef.h>
#include "appcfg/appyaml.h"
#include "instance/manager.h"

typedef struct router router;

/* What the router knows about the request when it asks for a ticket. */
typedef struct {
    const char *request_log_id;
    const char *user_email;      /* "" when none */
    const char *user_id;
    int user_is_admin;
    int deadline_s;
} router_reqinfo;

typedef struct {
    const app_config *cfg;
    instmgr *im;
    const char *host;            /* listen address */
    int port;
    int threads;                 /* 0 = number of CPUs */
    const char *app_id;          /* "dev~guestbook" */
    const char *default_hostname;/* "127.0.0.1:8080" */
    int deadline_s;              /* request deadline, default 60 */
    size_t max_body;             /* default 32 MiB */
    /* Mints the API ticket for a request into out; returns 0 or -1. */
    int (*mint_ticket)(void *arg, const router_reqinfo *ri, char *out, size_t outlen);
    void *mint_arg;
    /* Verifies an X-Cyclozzo-Internal header value (the scheduler's proof);
     * returns 1 when valid. Such a request keeps its X-AppEngine-* task
     * headers (QueueName, TaskName, TaskRetryCount, TaskExecutionCount,
     * TaskETA, Cron, User-IP, namespaces) and passes login: admin/required
     * handlers. NULL = no request is ever trusted. */
    int (*verify_internal)(void *arg, const char *value, size_t len);
    void *internal_arg;
    /* The users service (src/users/login.h): session cookies, /_ah/login and
     * /_ah/logout. NULL: no one can sign in (login: handlers always redirect). */
    struct users_ctx *users;
    /* HTTPS (src/router/tls.h): a second listener on https_port (0 = none)
     * speaking TLS with the certificates in tls, in the same threads. */
    int https_port;
    struct tls_ctx *tls;
    /* Custom domain (src/router/hostroute.h): NULL = none. version and
     * service (NULL = "default") name the app for VERSION-dot-APP.DOMAIN
     * host names and in request log records. */
    const char *domain;
    const char *version;
    const char *service;
    /* The Blobstore (api/blobstore.h): uploads to /_ah/upload/SESSION and
     * responses carrying X-AppEngine-BlobKey. NULL: neither is handled. */
    struct blob_service *blob;
    /* The images service's serving URLs (images/serving.h): /_ah/img/.
     * NULL: not handled. */
    struct img_server *images;
    /* The app's request log (src/logs/store.h; NULL: none). */
    struct logstore *logs;
} router_config;

/* Binds the listening sockets (so a busy port fails here, with a sentence). */
router *router_new(const router_config *c, char *err, size_t errlen);
/* Runs the router threads; returns after router_stop(). */
int  router_run(router *r);
/* Asks the threads to stop; safe from a signal handler. */
void router_stop(router *r);
void router_free(router *r);

#endif
