/* router_int.h - internals shared by router.c (event loop, client
 * connections, dispatch), static.c (static handlers) and proxy.c (upstream
 * connections to instances). Not part of the router's public interface. */
#ifndef CZ_ROUTER_INT_H
#define CZ_ROUTER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include "core/buf.h"
#include "http/http.h"
#include "router/hostroute.h"
#include "router/router.h"
#include "router/tls.h"
#include "users/login.h"

enum { EV_LISTEN = 1, EV_CLIENT, EV_UP, EV_WAKE, EV_LISTEN_TLS };

enum {
    CS_HEAD = 0,     /* reading a request head */
    CS_BODY,         /* reading a request body (to forward or to discard) */
    CS_QUEUED,       /* body read; waiting for a free instance */
    CS_PROXY,        /* request on an upstream; relaying its response */
    CS_SEND,         /* writing a response the router made (out + file) */
};

typedef struct rthread rthread;
typedef struct upconn upconn;

typedef struct rconn {
    int kind;                      /* EV_CLIENT */
    int dead;                      /* closed; freed at the end of the loop turn */
    int fd;
    rthread *t;
    struct rconn *prev, *next;     /* all connections of the thread (timeouts) */
    struct rconn *qnext;           /* queue of requests waiting for an instance */
    int state;
    int can_read, can_write, eof;
    buf in, out;
    int64_t last_io_us;
    int64_t head_start_us;         /* first byte of the current head */

    /* current request */
    char method[16];
    char *path;                    /* raw path (malloc'ed), for the log */
    int is_head;
    int version_minor;
    int keep_alive;                /* client wants keep-alive */
    int close_after;               /* close once this response is written */
    int64_t req_start_us;
    char log_id[40];
    int handler;                   /* handler index, -1 none */
    int status;
    uint64_t bytes_out;
    int instance_id;
    int trusted;                   /* carried a valid X-Cyclozzo-Internal (scheduler) */

    /* users service */
    int has_user;                  /* a valid session cookie came with the request */
    users_user user;
    int users_page;                /* USERS_PAGE_LOGIN/LOGOUT: the router answers it */
    char *u_query, *u_host, *u_origin; /* copies for the page (malloc'ed, may be NULL) */

    /* request body */
    int discard_body;              /* read the body and drop it (static, errors) */
    int body_chunked;
    int64_t body_left;             /* for Content-Length bodies */
    http_chunked ck;
    size_t body_len;
    buf upreq;                     /* head for the instance (then Content-Length) */
    buf upbody;                    /* body for the instance */
    int expect_continue;

    /* static file */
    int file_fd;
    off_t file_off, file_end;

    /* proxy */
    upconn *up;
    int retried;

    /* TLS (tlsconn.c): NULL on the plain listener */
    tls_conn *tls;
    int tls_ready;                 /* handshake complete */
    /* blobstore (upload.c) */
    struct upload *upload;         /* a POST to /_ah/upload/SESSION being streamed */
    char *range;                   /* the client's Range header (malloc'ed), for send_blob */
    /* request log (reqlog.c) */
    char peer[48];                 /* client address, looked up once */
    buf rlinfo;                    /* User-Agent, Referer, Host (NUL-separated) */
    size_t rl_ua, rl_ref, rl_host;
    int rl_minor;
    int64_t rl_start_wall;         /* Unix us */
} rconn;

struct upconn {
    int kind;                      /* EV_UP */
    int dead;                      /* closed; freed at the end of the loop turn */
    int fd;
    rthread *t;
    struct instance *inst;
    unsigned generation;
    int can_read, can_write, connected;
    int reused;                    /* taken from the idle pool */
    upconn *next_idle;
    rconn *c;                      /* client being served, NULL when idle */
    buf in;                        /* response head (then unparsed body bytes) */
    size_t sent;                   /* bytes of c->upreq + c->upbody written */
    int head_done;
    int framing;                   /* 0 length, 1 chunked, 2 until close, 3 none */
    int64_t left;
    http_chunked ck;
    int rechunk;                   /* re-encode body as chunked for the client */
    int blob_discard;              /* send_blob: the router serves the blob; drop the app's body */
    buf sink;                      /* where the dropped body goes (reset every call) */
    int64_t idle_since_us;
};

struct rthread {
    router *r;
    int idx;
    int epfd;
    int listen_fd;
    int tls_listen_fd;             /* -1 without HTTPS */
    int wake_fd;
    pthread_t th;
    rconn *conns;                  /* list head */
    int nconns;
    rconn *q_head, *q_tail;        /* waiting for an instance */
    upconn *idle;                  /* idle upstream connections */
    rconn *dead_conns;             /* closed in this loop turn (linked by qnext) */
    upconn *dead_ups;              /* closed in this loop turn (linked by next_idle) */
    char date[40];                 /* "Date: ...\r\n" for this second */
    int64_t date_sec;
    struct fcache *fcache;         /* open-file cache (static.c) */
    int64_t exp_at;                /* cache: the last Expires date formatted */
    char exp_str[32];
    uint64_t seq;
    buf alog;                      /* access log lines, flushed once per loop turn */
    int64_t alog_sec;              /* second formatted in alog_ts */
    char alog_ts[40];
};

struct router {
    router_config c;
    int nthreads;
    rthread *threads;
    int appdir_fd;                 /* O_PATH descriptor of the app directory */
    hostroute hosts;               /* custom domain rules */
    _Atomic int queued;            /* requests waiting for an instance, all threads */
    volatile int stopping;
};

/* router.c */
void conn_send_error(rconn *c, int status, const char *detail);
void conn_close(rconn *c);
int  conn_kick(rconn *c);                /* drive c on; -1 if it was closed */
void thread_date(rthread *t);

/* tlsconn.c: TLS on client connections, secure redirects. */
int     tlsconn_handshake(rconn *c);                       /* 1 done, 0 wait, -1 failed */
ssize_t tlsconn_send(rconn *c, const void *p, size_t n);   /* like send(); EAGAIN sets readiness */
ssize_t tlsconn_recv(rconn *c, void *p, size_t n);         /* like recv() */
int     tlsconn_fill_from_file(rconn *c);                  /* static file -> c->out; 0 or -1 */
int     tlsconn_secure_redirect(rconn *c, const http_request *req, const app_handler *h); /* 1 = sent */
void    tlsconn_host_refused(rconn *c, const http_request *req);
/* router.c: the head the instance sees (target NULL = the client's). */
int  build_upstream_head(rconn *c, const http_request *req, const app_handler *h, const char *target, size_t target_len);

/* upload.c: Blobstore uploads (POST /_ah/upload/SESSION) and send_blob. */
int  upload_is_path(const http_request *req);            /* needs r->c.blob too */
void upload_begin(rconn *c, const http_request *req);    /* from on_head: state CS_BODY or an error queued */
int  upload_read_body(rconn *c);                         /* as read_body */
void upload_complete(rconn *c);                          /* the body is in: call the app's success path */
void upload_free(rconn *c);                              /* from reset_request */
void upload_note_range(rconn *c, const http_request *req);
/* relay_head: the app's response carries X-AppEngine-BlobKey. 1 = the
 * router's own head (and blob file) are queued on c; 0 = not a blob. */
int  sendblob_head(rconn *c, const http_response *resp);

/* static.c: build the response for a static handler into c->out (+ file). */
void static_serve(rconn *c, const app_match *m, const http_request *req);
void static_cache_free(rthread *t);

/* img.c: answer /_ah/img/ (serving URLs) when the router has images;
 * returns 1 when it did (the response is in c->out). */
int  img_route(rconn *c, const http_request *req, const char *dpath, size_t dl);

/* proxy.c */
void proxy_dispatch(rconn *c);           /* c->upreq ready: find an instance and send */
void proxy_on_event(upconn *u, uint32_t events);
void proxy_client_drained(rconn *c);     /* client out buffer has room again */
void proxy_abort(rconn *c);              /* client went away mid-request */
void proxy_retry_queue(rthread *t);
void proxy_reap_idle(rthread *t, int64_t now);
void proxy_free_idle(rthread *t);
void proxy_reap_dead(rthread *t);        /* free upstreams closed this turn */
void router_wake_all(router *r);         /* nudge every thread (an instance slot freed) */

/* reqlog.c: the request log (router_config.logs) */
void reqlog_capture(rconn *c, const http_request *req);   /* at the head */
void reqlog_emit(rconn *c);                                /* response done */

#endif
