/* store.h - the durable request log of one app: request records written by
 * the router, app log lines flushed by instances, read back newest first
 * by the logservice API and `cyclozzo --logs`.
 *
 * One LMDB environment per app, CYCLOZZO_HOME/applogs/PROJECT/, separate
 * from the datastore. Writers never touch it themselves: they hand a record
 * to a queue (one malloc and a mutex) and a writer thread commits the queue
 * in batches, then prunes by age and size (logstore_limits). Readers (other
 * threads, other processes) read consistent snapshots. See docs/logs.md. */
#ifndef CZ_LOGSTORE_H
#define CZ_LOGSTORE_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

typedef struct logstore logstore;

/* What the router knows of a finished request (strings may be NULL). */
typedef struct {
    const char *app_id, *module, *version, *request_id;
    const char *ip, *method, *resource, *http_version;
    const char *user_agent, *referrer, *host, *nickname;
    int status;
    int64_t response_size;
    int64_t start_us, end_us;       /* Unix microseconds */
} logrec;

typedef struct {
    int64_t max_age_s;              /* records older than this go; default 7 days */
    int64_t max_bytes;              /* the store is kept under this; default 256 MiB */
} logstore_limits;

/* Limits from CYCLOZZO_LOG_MAX_AGE (seconds) and CYCLOZZO_LOG_MAX_MB, else defaults. */
void logstore_limits_from_env(logstore_limits *l);

/* Open (writable: create, and start the writer thread) the store of
 * project. NULL with one sentence in err. */
logstore *logstore_open(const char *home, const char *project, int writable,
                        const logstore_limits *lim, char *err, size_t errlen);
void logstore_close(logstore *ls);      /* writes what is queued, then frees */

/* Queue a finished request (copied). Never blocks on disk; drops the record
 * (counted in the daemon log) when the queue holds more than 100000. */
void logstore_add_request(logstore *ls, const logrec *r);
/* Queue app log lines of request_id: group is a UserAppLogGroup (field 2:
 * UserAppLogLine 1 timestamp_usec, 2 level, 3 message). A request not yet
 * finished is listed as incomplete from start_us on. */
void logstore_add_lines(logstore *ls, const char *app_id, const char *version, const char *request_id,
                        int64_t start_us, const uint8_t *group, size_t n);
/* Wait until everything queued so far is committed. */
void logstore_sync(logstore *ls);

typedef struct {
    int has_start, has_end;
    int64_t start_us, end_us;       /* end time (start time if incomplete) in [start, end) */
    int min_level;                  /* -1: any; else requests with an app line >= it */
    int include_incomplete, include_app_logs;
    const uint8_t **versions; const size_t *version_lens; size_t nversions;
    const uint8_t **request_ids; const size_t *request_id_lens; size_t nrequest_ids;
    uint64_t before;                /* offset: only records older than this (0: from the newest) */
    uint64_t after;                 /* only records newer than this (0: no bound) */
    int count;                      /* at most this many (1..1000) */
} logquery;

/* Append a LogReadResponse (1 RequestLog each with its LogOffset, 2 offset
 * when more may follow, 3 last_end_time) to out. 0, or -1 with err. */
int logstore_read(logstore *ls, const logquery *q, buf *out, char *err, size_t errlen);

/* Delete what the limits say must go now (the writer does this after each
 * batch); returns how many records were deleted, -1 on error. */
int logstore_prune(logstore *ls, int64_t now_us);

/* Offsets are opaque bytes to clients: 8 big-endian bytes of a sequence. */
int logstore_offset_decode(const uint8_t *p, size_t n, uint64_t *seq);

#endif
