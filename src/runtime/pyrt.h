/* pyrt.h - internals shared by the files of bin/cyclozzo-pyrt, the Python
 * runtime host (see docs/runtime.md for its contract with the instance
 * manager).
 *
 *   main.c      command line, start-up order, exit codes
 *   server.c    Unix socket; worker threads that take turns waiting in epoll
 *               (leader/followers), frame requests and run them
 *   wsgi.c      the embedded interpreter: start-up, the WSGI environ, the
 *               responder object that frames the HTTP response
 *   deadline.c  per-request deadlines: DeadlineExceededError, then exit
 *   glue.c/py   the Python half (sys.path, os.environ, logging, serve())
 *
 * Ownership of a connection is passed, never shared: epoll holds it (armed
 * EPOLLONESHOT) while it waits for bytes; the thread that wakes for it owns
 * it until it is re-armed or closed. */
#ifndef CZ_PYRT_H
#define CZ_PYRT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "core/buf.h"
#include "http/http.h"

/* Exit codes. */
enum {
    PYRT_EXIT_USAGE = 2,        /* bad command line */
    PYRT_EXIT_START = 1,        /* interpreter or app failed to start, socket failed */
    PYRT_EXIT_DEADLINE = 3,     /* a request ignored DeadlineExceededError */
};

#define PYRT_MAX_BODY   (32u << 20)   /* App Engine's request size limit */
#define PYRT_MAX_THREADS 256

typedef struct {
    const char *socket_path;
    const char *app_dir;        /* absolute */
    const char *venv;           /* "" or NULL: none */
    const char *entry;          /* "main:app" */
    int threads;                /* workers when threadsafe */
    int threadsafe;
    double grace_s;             /* after DeadlineExceededError, before exit */
    int debug;
    const char *app_id;         /* GAE_APPLICATION, for log lines */
} pyrt_opts;

typedef struct pyrt_conn {
    int fd;
    buf in;                     /* bytes read, the current request at the front */
    http_request req;           /* parsed head of that request (points into in) */
    size_t need;                /* head + body bytes of that request */
} pyrt_conn;

/* Provided by glue.c. */
extern const char pyrt_glue_source[];

/* server.c */
int  server_run(const pyrt_opts *o, char *err, size_t errlen);
/* Write all of iov to the connection (blocking, with a stall timeout).
 * 0, or -1 when the peer went away or stalled. Call without the GIL. */
int  conn_send(pyrt_conn *c, struct iovec *iov, int n);

/* wsgi.c */
int  wsgi_start(const pyrt_opts *o, char *err, size_t errlen);
void *wsgi_worker_init(int slot);          /* per worker thread; returns its state */
/* Run the request at the front of c->in and write its response. Returns 1
 * when the connection may carry another request, 0 when it must close. */
int  wsgi_handle(void *worker, pyrt_conn *c);

/* deadline.c */
int  deadline_start(int nslots, double grace_s, void *exc_class, const char *app_id,
                    char *err, size_t errlen);
void deadline_begin(int slot, unsigned long py_thread_id, double seconds,
                    const char *rid, const char *path);
/* Returns 1 when DeadlineExceededError was raised in the request: the caller
 * (holding the GIL) must then clear any still-pending async exception. */
int  deadline_end(int slot);

#endif
