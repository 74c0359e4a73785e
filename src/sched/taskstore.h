/* taskstore.h - durable task queues in the datastore's kv engine.
 *
 * Every task is a row in the same ordered, transactional engine as the
 * datastore (kv.h), under the prefix "Q/" (layout in docs/taskqueue.md):
 *
 *   Q/<app>/<queue>/t/<name>              the task (our own protobuf record)
 *   Q/<app>/<queue>/e/<eta:8 BE><name>    ETA index, empty value
 *   Q/<app>/<queue>/x/<name>              tombstone: 8-byte BE time it died
 *   Q/<app>/<queue>/s                     queue state ("p" = paused)
 *
 * A push task is delivered by leasing it (its ETA moves past the delivery
 * deadline) and deleted only after a 2xx, so a crash mid-delivery leaves it
 * to be delivered again when the lease runs out: at-least-once. Pull tasks
 * are leased the same way by QueryAndOwnTasks. Each operation is one kv
 * transaction, retried on KV_CONFLICT. */
#ifndef CZ_TASKSTORE_H
#define CZ_TASKSTORE_H

#include <stddef.h>
#include <stdint.h>
#include "kv/kv.h"
#include "sched/queueyaml.h"

/* TaskQueueServiceError codes (taskqueue_service.proto) used here. */
enum {
    TQE_OK = 0, TQE_UNKNOWN_QUEUE = 1, TQE_TRANSIENT_ERROR = 2, TQE_INTERNAL_ERROR = 3,
    TQE_TASK_TOO_LARGE = 4, TQE_INVALID_TASK_NAME = 5, TQE_INVALID_QUEUE_NAME = 6,
    TQE_INVALID_URL = 7, TQE_INVALID_QUEUE_RATE = 8, TQE_PERMISSION_DENIED = 9,
    TQE_TASK_ALREADY_EXISTS = 10, TQE_TOMBSTONED_TASK = 11, TQE_INVALID_ETA = 12,
    TQE_INVALID_REQUEST = 13, TQE_UNKNOWN_TASK = 14, TQE_DUPLICATE_TASK_NAME = 16,
    TQE_SKIPPED = 17, TQE_TOO_MANY_TASKS = 18, TQE_INVALID_PAYLOAD = 19,
    TQE_INVALID_RETRY_PARAMETERS = 20, TQE_INVALID_QUEUE_MODE = 21,
    TQE_TASK_LEASE_EXPIRED = 25, TQE_QUEUE_PAUSED = 26, TQE_INVALID_TAG = 27,
};

/* A deleted or completed task's name cannot be reused for this many days. */
#define TQ_TOMBSTONE_DAYS 7

/* Method numbers as in TaskQueueAddRequest.RequestMethod. */
enum { TQ_GET = 1, TQ_POST = 2, TQ_HEAD = 3, TQ_PUT = 4, TQ_DELETE = 5 };

typedef struct {
    char *name;
    int64_t eta_us;            /* Unix microseconds */
    int method;
    char *url;
    size_t nheaders;
    char **hkey, **hval;
    uint8_t *body;
    size_t body_len;
    int retry_count;           /* failed attempts (push) / leases (pull) so far */
    int execution_count;       /* deliveries that got an HTTP answer */
    int64_t created_us;
    int64_t first_try_us;      /* 0 = never tried */
    char *tag;                 /* pull tasks; NULL = none */
    int pull;
    int has_retry;
    tq_retry retry;
    int cron;                  /* delivered with X-AppEngine-Cron: true */
    int64_t orig_eta_us;       /* set by tq_store_lease: the ETA before the lease (not stored) */
} tq_task;

void tq_task_free(tq_task *t);     /* the fields, not t itself */

typedef struct tq_store tq_store;

tq_store *tq_store_new(kv_engine *kv);
void tq_store_free(tq_store *s);   /* does not close kv */

/* Add t to app/queue. Returns a TQE_* code; err has one sentence when not OK. */
int tq_store_add(tq_store *s, const char *app, const char *queue, const tq_task *t, char *err, size_t errlen);
/* Add n tasks (task i to queues[i]) in one transaction: *rc[i] gets each
 * task's own code (TQE_OK, TQE_TASK_ALREADY_EXISTS, TQE_TOMBSTONED_TASK,
 * TQE_INVALID_TASK_NAME). Returns TQE_OK, or an error for the whole batch,
 * which is then not stored (every *rc[i] of a stored-to-be task set to it). */
int tq_store_add_many(tq_store *s, const char *app, const char *const *queues, const tq_task *const *tasks, size_t n,
                      int *const *rc, char *err, size_t errlen);
/* The same, inside the caller's write transaction txn (a datastore commit:
 * transactional adds). KV_OK, KV_CONFLICT (retry the whole transaction), or
 * another KV_* result with err set (also for a name in use or tombstoned). */
int tq_store_add_in(kv_txn *txn, const char *app, const char *queue, const tq_task *t, char *err, size_t errlen);
/* Delete a task (tombstoning its name). TQE_OK, TQE_UNKNOWN_TASK, TQE_TOMBSTONED_TASK or internal. */
int tq_store_delete(tq_store *s, const char *app, const char *queue, const char *name, char *err, size_t errlen);
/* Delete (and tombstone) several tasks of one queue in one transaction;
 * names already gone are skipped. TQE_OK or an error for the whole batch. */
int tq_store_delete_many(tq_store *s, const char *app, const char *queue, const char *const *names, size_t n,
                         char *err, size_t errlen);
/* Remove every task in the queue (no tombstones). */
int tq_store_purge(tq_store *s, const char *app, const char *queue, char *err, size_t errlen);
int tq_store_set_paused(tq_store *s, const char *app, const char *queue, int paused, char *err, size_t errlen);
int tq_store_paused(tq_store *s, const char *app, const char *queue);
/* Number of tasks and the oldest ETA (0 when empty). */
int tq_store_stats(tq_store *s, const char *app, const char *queue, int64_t *count, int64_t *oldest_eta_us,
                   char *err, size_t errlen);

/* Lease up to max tasks whose ETA <= now_us: each task's ETA becomes
 * now_us + lease_us. For pull leases (pull=1) retry_count is incremented
 * and tag filtering applies: tag non-NULL = only that tag; group_by_tag with
 * tag NULL = the tag of the first due task. The caller frees out[i] with
 * tq_task_free and out with free(). Returns TQE_OK or an error code. */
int tq_store_lease(tq_store *s, const char *app, const char *queue, int64_t now_us, int64_t lease_us,
                   size_t max, int pull, const char *tag, int group_by_tag,
                   tq_task **out, size_t *n, char *err, size_t errlen);
/* Pull leases: extend/shorten the lease of a task leased with ETA eta_us. */
int tq_store_modify_lease(tq_store *s, const char *app, const char *queue, const char *name,
                          int64_t eta_us, int64_t now_us, int64_t lease_us, int64_t *new_eta,
                          char *err, size_t errlen);
/* After a delivery: rewrite the task with its new counters and ETA. */
int tq_store_reschedule(tq_store *s, const char *app, const char *queue, const tq_task *t, int64_t old_eta_us,
                        char *err, size_t errlen);
/* Up to max tasks in ETA order (QueryTasks), starting at ETA >= start_eta_us. */
int tq_store_list(tq_store *s, const char *app, const char *queue, int64_t start_eta_us, size_t max,
                  tq_task **out, size_t *n, char *err, size_t errlen);
/* Earliest ETA in the queue, or INT64_MAX when empty. */
int64_t tq_store_next_eta(tq_store *s, const char *app, const char *queue);

#endif
