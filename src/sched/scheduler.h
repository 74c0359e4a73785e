/* scheduler.h - delivers push tasks and fires cron jobs for one app.
 *
 * A thread in the daemon leases due tasks from the task store, queue by
 * queue, within each queue's token bucket (rate, bucket_size) and
 * max_concurrent_requests, skipping paused queues, and sends each one as an
 * HTTP request to the router's own port with App Engine's task headers and
 * an X-Cyclozzo-Internal token that the router verifies (the router then
 * trusts the X-AppEngine-* task headers and lets the request into
 * login: admin handlers). A 2xx deletes the task; anything else, or no
 * answer within 10 minutes, reschedules it with the queue's backoff until
 * its retry limits are spent. Cron jobs become tasks in the internal queue
 * "__cron" when due, so they take the same path. See docs/taskqueue.md and
 * docs/cron.md. */
#ifndef CZ_SCHEDULER_H
#define CZ_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include "sched/cron.h"
#include "sched/queueyaml.h"
#include "sched/taskstore.h"

typedef struct scheduler scheduler;

typedef struct {
    tq_store *store;
    const char *app_id;         /* "dev~guestbook" */
    const tq_config *queues;    /* copied */
    const cron_config *cron;    /* copied; may be NULL */
    const char *router_host;    /* where the router listens (0.0.0.0 = loopback) */
    int router_port;
    const char *home;           /* CYCLOZZO_HOME: the internal key */
    int64_t delivery_timeout_s; /* default 600 */
} sched_config;

scheduler *scheduler_start(const sched_config *c, char *err, size_t errlen);
/* Look for due tasks now (the taskqueue service calls it after adds). */
void scheduler_wake(void *s);
/* Apply a queue's new rate, bucket size, concurrency limit and retry
 * parameters (UpdateQueue; the taskqueue service's update hook). */
void scheduler_update_queue(void *s, const tq_queue *q);
/* Stops the thread and waits for deliveries in flight (they are cut short;
 * their tasks stay leased and are delivered again later). */
void scheduler_stop(scheduler *s);

/* The internal-request key: HMAC-SHA256 of the installation's ticket key
 * (CYCLOZZO_HOME/secrets/ticket.key), so it needs no file of its own. */
#define SCHED_KEY_LEN 32
int  sched_internal_key(const char *home, uint8_t key[SCHED_KEY_LEN], char *err, size_t errlen);
/* Token for X-Cyclozzo-Internal: "<unix seconds>.<hex HMAC>". out >= 96 bytes. */
void sched_internal_token(const uint8_t key[SCHED_KEY_LEN], int64_t now_s, char *out, size_t outlen);
/* 1 when v[0,n) is a token minted with key within 5 minutes of now_s. */
int  sched_internal_verify(const uint8_t key[SCHED_KEY_LEN], const char *v, size_t n, int64_t now_s);

#endif
