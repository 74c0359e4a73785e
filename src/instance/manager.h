/* manager.h - the instance manager: starts, watches and restarts the
 * processes that run an app's code (its instances).
 *
 * An instance is either Cyclozzo's Python runtime (bin/cyclozzo-pyrt, serving
 * HTTP on a Unix socket) or the app's own `entrypoint:` server (any language,
 * serving HTTP on 127.0.0.1:$PORT). The manager runs one thread that spawns
 * instances, waits for them to accept connections (sending /_ah/warmup first
 * when app.yaml asks for it), reaps them when they exit, restarts them with
 * exponential backoff, and adds instances when every ready one is at its
 * concurrency limit (up to the scaling settings). Each instance's stdout and
 * stderr are read by that thread and logged line by line with app and
 * instance, so a crash or an import error is visible in the app's log.
 *
 * Router threads take a slot on a ready instance with instmgr_acquire() and
 * give it back with instmgr_release(); both are lock-free. */
#ifndef CZ_MANAGER_H
#define CZ_MANAGER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include "appcfg/appyaml.h"

enum { INST_STARTING = 0, INST_READY, INST_DEAD };

typedef struct instance {
    int id;                          /* 1, 2, ... within the app */
    _Atomic int state;
    _Atomic int inflight;            /* requests currently on this instance */
    _Atomic unsigned generation;     /* bumped on every (re)start */
    int max_concurrent;              /* 1 unless threadsafe */
    int is_unix;                     /* Unix socket (pyrt) or TCP (entrypoint) */
    char sock_path[108];
    int tcp_port;
    pid_t pid;
    int64_t started_us;
    int64_t ready_us;
    int restarts;
    int64_t next_start_us;           /* backoff: not before this (monotonic us) */
    int out_fd;                      /* read end of its stdout/stderr pipe */
    char outbuf[4096]; size_t outlen;
    char last_lines[2048];           /* tail of its output, for start errors */
    int warmed;
} instance;

typedef struct instmgr instmgr;

typedef struct {
    const app_config *cfg;
    const char *app_id;              /* full id, e.g. "dev~guestbook" */
    const char *project;             /* without partition: "guestbook" */
    const char *version;             /* e.g. "1" */
    const char *run_dir;             /* sockets live here */
    const char *pyrt_path;           /* bin/cyclozzo-pyrt */
    const char *venv;                /* "" when the app has no requirements */
    const char *api_host;
    int api_port;
    const char *default_hostname;    /* host:port apps are served on */
    int min_instances;               /* default 1 */
    int max_instances;               /* default 4 (manual scaling: fixed) */
    int no_sandbox;                  /* 1: run instances unconfined (operator's --no-sandbox) */
    int tmp_mb;                      /* size of each instance's private /tmp; 0 = 128 */
    const char *metadata_host;       /* NULL, or GCE_METADATA_HOST for instances (app_identity.h) */
} instmgr_config;

instmgr *instmgr_new(const instmgr_config *c, char *err, size_t errlen);
/* Start the manager thread and the first instances; returns once one instance
 * answers (0), or -1 with a sentence (and the instance's last output) in err. */
int instmgr_start(instmgr *m, int timeout_ms, char *err, size_t errlen);
/* A ready instance with a free slot (its inflight already incremented), or
 * NULL when all are busy or none is ready (scale-up is then requested). */
instance *instmgr_acquire(instmgr *m);
void instmgr_release(instmgr *m, instance *in);
/* The router saw this instance fail (connect refused, reset mid-request). */
void instmgr_report_failure(instmgr *m, instance *in, unsigned generation);
int  instmgr_ready_count(instmgr *m);
int  instmgr_count(instmgr *m);
int  instmgr_has_ready(instmgr *m);   /* any instance ready or starting? 0 = all dead */
void instmgr_stop(instmgr *m);
/* The pids of the instances that run now (at most max); returns how many. */
int  instmgr_pids(instmgr *m, pid_t *out, int max);        /* kills every instance, joins the thread, frees */

#endif
