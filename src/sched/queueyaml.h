/* queueyaml.h - an app's task queues, from its queue.yaml.
 *
 * queue.yaml lists push queues (rate, bucket_size, max_concurrent_requests,
 * retry_parameters, target) and pull queues (mode: pull). The `default` push
 * queue (5/s, bucket 5) always exists, whether or not the file names it.
 * Bad files are refused with "PATH:LINE: reason". See docs/taskqueue.md. */
#ifndef CZ_QUEUEYAML_H
#define CZ_QUEUEYAML_H

#include <stddef.h>
#include <stdint.h>

/* Retry policy. -1 in retry_limit / age_limit_s means "no limit". */
typedef struct {
    int retry_limit;
    int64_t age_limit_s;
    double min_backoff_s;      /* default 0.1 */
    double max_backoff_s;      /* default 3600 */
    int max_doublings;         /* default 16 */
} tq_retry;

#define TQ_MAX_QUEUE_NAME 100

typedef struct {
    char name[TQ_MAX_QUEUE_NAME + 1];
    int pull;                  /* mode: pull */
    double rate_per_s;         /* tokens added per second (push) */
    int bucket_size;           /* token bucket capacity (push) */
    int max_concurrent;        /* 0 = unlimited */
    tq_retry retry;
    char target[101];          /* "" = the app's default version */
} tq_queue;

typedef struct {
    tq_queue *q;
    size_t n;
} tq_config;

/* The defaults App Engine applies to a push queue's retries. */
void tq_retry_default(tq_retry *r);

/* Parse queue.yaml text; path is used in messages. NULL + err on failure. */
tq_config *queueyaml_parse(const char *text, size_t len, const char *path, char *err, size_t errlen);
/* Load dir/queue.yaml (or queue.yml); a missing file gives just `default`. */
tq_config *queueyaml_load(const char *dir, char *err, size_t errlen);
void tq_config_free(tq_config *c);
const tq_queue *tq_find(const tq_config *c, const char *name);

/* Parse a rate ("5/s", "10/m", "1/h", "1/d", "0/s") into tokens per second; 0 or -1. */
int tq_parse_rate(const char *s, double *per_s);
/* Seconds to wait before the retry that follows `failures` failed attempts
 * (failures >= 1): min_backoff doubled (failures-1) times but at most
 * max_doublings times, then growing linearly by the last doubled step, capped
 * at max_backoff. */
double tq_backoff_s(const tq_retry *r, int failures);
/* 1 when a task that failed `failures` times and was first tried
 * first_try_us ago (age_us) may not be retried any more: both limits given
 * must be exceeded (App Engine's rule), or either when only one is set. */
int tq_retry_exhausted(const tq_retry *r, int failures, int64_t age_us);
/* App Engine's name rule for queues: [a-zA-Z0-9_-]{1,100}. */
int tq_valid_queue_name(const char *s, size_t n);
/* Task names: [a-zA-Z0-9_-]{1,500}. */
int tq_valid_task_name(const char *s, size_t n);

#endif
