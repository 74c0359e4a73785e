/* scheduler.c - the delivery thread for push tasks and cron (scheduler.h).
 *
 * One loop thread wakes every 100 ms (or when an add or a finished delivery
 * signals it), refills each push queue's token bucket, and leases as many
 * due tasks as tokens and free concurrency allow (lease = delivery timeout +
 * 60 s: if the daemon dies mid-delivery the task comes back when the lease
 * ends). Leased tasks go on a work list served by a fixed pool of delivery
 * threads, each keeping one libcurl handle, so its connection to the router
 * is reused from task to task. Finished deliveries come back on a done list
 * that the loop settles in batches: the 2xx ones are deleted per queue in
 * one kv transaction (one synced commit for many tasks), failures are
 * rescheduled with backoff or dropped. On stop, tasks still waiting or cut
 * short get their lease released, so they run again right after a restart.
 * Cron jobs keep their next run time in memory; when one is due it is added
 * to "__cron" as a task named after the job and the run time, so a run is
 * stored once even when the daemon restarts around it. */
#include "sched/scheduler.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/ticket.h"
#include "core/log.h"
#include "core/util.h"

#define TICK_MS 100
#define MAX_INFLIGHT 64        /* deliveries waiting or under way, all queues */
#define WORKERS 32             /* delivery threads */
#define BATCH_MS 5             /* shortest loop turn while deliveries are in flight */
#define CRON_QUEUE "__cron"

typedef struct {
    tq_queue q;
    double tokens;
    int inflight;
} qstate;

typedef struct delivery delivery;

struct scheduler {
    tq_store *store;
    char *app_id;
    char *base_url;            /* http://host:port */
    uint8_t key[SCHED_KEY_LEN];
    int64_t timeout_s;
    qstate *qs;
    size_t nq;
    cron_config cron;          /* deep copy */
    int64_t *cron_next;        /* Unix seconds, -1 = never */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int woken;
    atomic_int stopping;
    int inflight;              /* all queues; guarded by mu */
    int64_t last_refill_us;
    delivery *todo, *todo_tail;   /* leased, waiting for a worker; guarded by mu */
    delivery *done;               /* sent, waiting to be settled; guarded by mu */
    pthread_cond_t work_cv;
    pthread_t workers[WORKERS];
    int nworkers;
};

/* ---- internal token ---- */

int sched_internal_key(const char *home, uint8_t key[SCHED_KEY_LEN], char *err, size_t errlen)
{
    ticket_key tk;
    if (ticket_key_load(home, &tk, err, errlen) < 0) return -1;
    unsigned int n = SCHED_KEY_LEN;
    static const char label[] = "cyclozzo-internal-v1";
    if (!HMAC(EVP_sha256(), tk.k, sizeof tk.k, (const unsigned char *)label, sizeof label - 1, key, &n)) {
        set_err(err, errlen, "cannot derive the internal request key");
        return -1;
    }
    OPENSSL_cleanse(&tk, sizeof tk);
    return 0;
}

static void token_mac(const uint8_t key[SCHED_KEY_LEN], const char *ts, char hex[65])
{
    uint8_t mac[32];
    unsigned int n = sizeof mac;
    char msg[64];
    int l = snprintf(msg, sizeof msg, "internal:%s", ts);
    HMAC(EVP_sha256(), key, SCHED_KEY_LEN, (const unsigned char *)msg, (size_t)l, mac, &n);
    hex_encode(mac, sizeof mac, hex);
}

void sched_internal_token(const uint8_t key[SCHED_KEY_LEN], int64_t now_s, char *out, size_t outlen)
{
    char ts[24], hex[65];
    snprintf(ts, sizeof ts, "%lld", (long long)now_s);
    token_mac(key, ts, hex);
    snprintf(out, outlen, "%s.%s", ts, hex);
}

int sched_internal_verify(const uint8_t key[SCHED_KEY_LEN], const char *v, size_t n, int64_t now_s)
{
    const char *dot = memchr(v, '.', n);
    if (!dot || dot == v || dot - v > 20 || n - (size_t)(dot - v) - 1 != 64) return 0;
    char ts[24];
    memcpy(ts, v, (size_t)(dot - v));
    ts[dot - v] = 0;
    for (const char *p = ts; *p; p++) if (*p < '0' || *p > '9') return 0;
    long long t = strtoll(ts, NULL, 10);
    if (t < now_s - 300 || t > now_s + 300) return 0;
    char hex[65];
    token_mac(key, ts, hex);
    return CRYPTO_memcmp(hex, dot + 1, 64) == 0;
}

/* ---- delivery ---- */

struct delivery {
    scheduler *s;
    qstate *qs;
    tq_task t;
    char queue[TQ_MAX_QUEUE_NAME + 1];
    tq_retry retry;
    long status;               /* HTTP status, 0 = no answer */
    int64_t elapsed_ms;
    delivery *next;
};

static const char *method_name(int m)
{
    switch (m) {
    case TQ_GET: return "GET";
    case TQ_HEAD: return "HEAD";
    case TQ_PUT: return "PUT";
    case TQ_DELETE: return "DELETE";
    default: return "POST";
    }
}

static size_t discard(char *p, size_t sz, size_t n, void *arg) { return sz * n; }

static int progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    scheduler *s = arg;
    return atomic_load(&s->stopping) ? 1 : 0;
}

static int skip_task_header(const char *k)
{
    static const char *no[] = {"host", "content-length", "connection", "transfer-encoding", "expect",
                               "x-cyclozzo-internal", NULL};
    for (int i = 0; no[i]; i++) if (!strcasecmp(k, no[i])) return 1;
    return 0;
}

/* Sends the task; returns the HTTP status, or 0 when no answer came. */
static long send_task(scheduler *s, CURL *h, delivery *d, int64_t *elapsed_ms)
{
    tq_task *t = &d->t;
    curl_easy_reset(h);        /* keeps the live connection */
    char *url = xasprintf("%s%s", s->base_url, t->url ? t->url : "/");
    struct curl_slist *hl = NULL;
    char line[1024];
    for (size_t i = 0; i < t->nheaders; i++) {
        if (skip_task_header(t->hkey[i])) continue;
        char *x = xasprintf("%s: %s", t->hkey[i], t->hval[i]);
        hl = curl_slist_append(hl, x);
        free(x);
    }
    char tok[128];
    sched_internal_token(s->key, wall_us() / 1000000, tok, sizeof tok);
    snprintf(line, sizeof line, "X-Cyclozzo-Internal: %s", tok); hl = curl_slist_append(hl, line);
    if (t->cron) {
        hl = curl_slist_append(hl, "X-AppEngine-Cron: true");
    } else {
        snprintf(line, sizeof line, "X-AppEngine-QueueName: %s", d->queue); hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "X-AppEngine-TaskName: %s", t->name); hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "X-AppEngine-TaskRetryCount: %d", t->retry_count); hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "X-AppEngine-TaskExecutionCount: %d", t->execution_count); hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "X-AppEngine-TaskETA: %.6f", (double)t->orig_eta_us / 1e6); hl = curl_slist_append(hl, line);
    }
    hl = curl_slist_append(hl, "X-AppEngine-User-IP: 0.1.0.2");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)s->timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    switch (t->method) {
    case TQ_GET: curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); break;
    case TQ_HEAD: curl_easy_setopt(h, CURLOPT_NOBODY, 1L); break;
    default:
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, t->body ? (char *)t->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len);
        if (t->method != TQ_POST) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method_name(t->method));
    }
    int64_t t0 = now_ms();
    long status = 0;
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    *elapsed_ms = now_ms() - t0;
    curl_slist_free_all(hl);
    free(url);
    return status;
}

static void *worker(void *arg)
{
    scheduler *s = arg;
    CURL *h = NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->todo && !atomic_load(&s->stopping)) pthread_cond_wait(&s->work_cv, &s->mu);
        if (atomic_load(&s->stopping)) { pthread_mutex_unlock(&s->mu); break; }
        delivery *d = s->todo;
        s->todo = d->next;
        if (!s->todo) s->todo_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        if (!h) h = curl_easy_init();
        d->status = h ? send_task(s, h, d, &d->elapsed_ms) : 0;
        pthread_mutex_lock(&s->mu);
        d->next = s->done;
        s->done = d;
        d->qs->inflight--;
        s->inflight--;
        s->woken = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    if (h) curl_easy_cleanup(h);
    return NULL;
}

/* Give a task that was leased but not (fully) delivered back to its queue at
 * its old ETA, counters unchanged. */
static void release_lease(scheduler *s, delivery *d)
{
    char err[300] = "";
    int64_t leased = d->t.eta_us;
    d->t.eta_us = d->t.orig_eta_us;
    if (tq_store_reschedule(s->store, s->app_id, d->queue, &d->t, leased, err, sizeof err) != TQE_OK)
        log_warn("taskqueue", "app=%s queue=%s task=%s msg=\"lease not released; the task runs when it ends\" err=%s",
                 log_q(s->app_id), d->queue, d->t.name, log_q(err));
}

static void settle_failure(scheduler *s, delivery *d)
{
    tq_task *t = &d->t;
    char err[300] = "";
    int64_t leased_eta = t->eta_us;
    t->retry_count++;
    if (d->status) t->execution_count++;
    int64_t now = wall_us();
    if (tq_retry_exhausted(&d->retry, t->retry_count, now - t->first_try_us)) {
        tq_store_delete(s->store, s->app_id, d->queue, t->name, err, sizeof err);
        log_warn("taskqueue", "app=%s queue=%s task=%s status=%ld retries=%d msg=\"failed; retry limit reached, task dropped\"",
                 log_q(s->app_id), d->queue, t->name, d->status, t->retry_count);
        return;
    }
    double b = tq_backoff_s(&d->retry, t->retry_count);
    t->eta_us = now + (int64_t)(b * 1e6);
    int rc = tq_store_reschedule(s->store, s->app_id, d->queue, t, leased_eta, err, sizeof err);
    log_info("taskqueue", "app=%s queue=%s task=%s status=%ld retries=%d backoff_s=%.3f msg=\"failed; will retry\"%s",
             log_q(s->app_id), d->queue, t->name, d->status, t->retry_count, b, rc == TQE_OK ? "" : " reschedule_failed=1");
}

/* Settle every finished delivery: successes deleted in one kv transaction
 * per queue, failures rescheduled one by one. */
static void settle(scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    delivery *list = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    while (list) {
        /* take every success of the first listed task's queue */
        const char *queue = NULL;
        const char *names[MAX_INFLIGHT];
        delivery *ok[MAX_INFLIGHT];
        size_t n = 0;
        for (delivery *d = list; d && n < MAX_INFLIGHT; d = d->next)
            if (d->status >= 200 && d->status < 300 && (!queue || !strcmp(queue, d->queue))) {
                queue = d->queue;
                ok[n] = d;
                names[n++] = d->t.name;
            }
        if (n) {
            char err[300] = "";
            int rc = tq_store_delete_many(s->store, s->app_id, queue, names, n, err, sizeof err);
            for (size_t i = 0; i < n; i++)
                log_info("taskqueue", "app=%s queue=%s task=%s status=%ld ms=%lld retries=%d msg=\"delivered\"%s",
                         log_q(s->app_id), ok[i]->queue, ok[i]->t.name, ok[i]->status, (long long)ok[i]->elapsed_ms,
                         ok[i]->t.retry_count, rc == TQE_OK ? "" : " delete_failed=1");
            if (rc != TQE_OK)
                log_error("taskqueue", "app=%s queue=%s msg=\"cannot delete delivered tasks; they will run again\" err=%s",
                          log_q(s->app_id), queue, log_q(err));
        }
        /* unlink the settled successes; handle one failure per round */
        delivery **pp = &list;
        size_t k = 0;
        int failure_done = 0;
        while (*pp) {
            delivery *d = *pp;
            int settled_ok = k < n && d == ok[k];
            if (settled_ok) k++;
            else if (!failure_done && !(d->status >= 200 && d->status < 300)) {
                if (atomic_load(&s->stopping) && d->status == 0) release_lease(s, d);
                else settle_failure(s, d);
                failure_done = 1;
                settled_ok = 1;
            }
            if (settled_ok) {
                *pp = d->next;
                tq_task_free(&d->t);
                free(d);
            } else pp = &d->next;
        }
    }
}

/* ---- the loop ---- */

static void fire_cron(scheduler *s, int64_t now_s)
{
    for (size_t i = 0; i < s->cron.n; i++) {
        cron_job *j = &s->cron.jobs[i];
        if (s->cron_next[i] < 0 || s->cron_next[i] > now_s) continue;
        tq_task t;
        memset(&t, 0, sizeof t);
        t.name = xasprintf("cron-%zu-%lld", i, (long long)s->cron_next[i]);
        t.url = xstrdup(j->url);
        t.method = TQ_GET;
        t.eta_us = wall_us();
        t.created_us = t.eta_us;
        t.cron = 1;
        t.has_retry = 1;
        if (j->has_retry) t.retry = j->retry;
        else { tq_retry_default(&t.retry); t.retry.retry_limit = 0; }
        char err[300] = "";
        int rc = tq_store_add(s->store, s->app_id, CRON_QUEUE, &t, err, sizeof err);
        if (rc != TQE_OK && rc != TQE_TASK_ALREADY_EXISTS && rc != TQE_TOMBSTONED_TASK)
            log_error("cron", "app=%s url=%s msg=\"cannot queue the cron run\" err=%s", log_q(s->app_id), log_q(j->url), log_q(err));
        tq_task_free(&t);
        s->cron_next[i] = cron_next(&j->sched, j->timezone, now_s);
    }
}

static void run_queues(scheduler *s)
{
    int64_t now = wall_us();
    double dt = s->last_refill_us ? (double)(now - s->last_refill_us) / 1e6 : 0;
    s->last_refill_us = now;
    for (size_t i = 0; i < s->nq && !atomic_load(&s->stopping); i++) {
        qstate *qs = &s->qs[i];
        if (qs->q.pull) continue;
        /* The queue's numbers may change under UpdateQueue: read them under mu. */
        pthread_mutex_lock(&s->mu);
        qs->tokens += qs->q.rate_per_s * dt;
        if (qs->tokens > qs->q.bucket_size) qs->tokens = qs->q.bucket_size;
        int avail = (int)qs->tokens;
        if (qs->q.max_concurrent > 0 && avail > qs->q.max_concurrent - qs->inflight) avail = qs->q.max_concurrent - qs->inflight;
        if (avail > MAX_INFLIGHT - s->inflight) avail = MAX_INFLIGHT - s->inflight;
        tq_retry qretry = qs->q.retry;
        pthread_mutex_unlock(&s->mu);
        if (avail <= 0) continue;
        if (tq_store_paused(s->store, s->app_id, qs->q.name)) continue;
        if (avail <= 0) continue;
        tq_task *tasks;
        size_t n;
        char err[300] = "";
        int rc = tq_store_lease(s->store, s->app_id, qs->q.name, now, (s->timeout_s + 60) * 1000000, (size_t)avail, 0,
                                NULL, 0, &tasks, &n, err, sizeof err);
        if (rc != TQE_OK) {
            log_error("taskqueue", "app=%s queue=%s msg=\"cannot lease tasks\" err=%s", log_q(s->app_id), qs->q.name, log_q(err));
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            delivery *d = xcalloc(1, sizeof *d);
            d->s = s;
            d->qs = qs;
            d->t = tasks[k];
            snprintf(d->queue, sizeof d->queue, "%s", qs->q.name);
            d->retry = d->t.has_retry ? d->t.retry : qretry;
            pthread_mutex_lock(&s->mu);
            qs->tokens -= 1;
            qs->inflight++;
            s->inflight++;
            if (s->todo_tail) s->todo_tail->next = d; else s->todo = d;
            s->todo_tail = d;
            pthread_cond_signal(&s->work_cv);
            pthread_mutex_unlock(&s->mu);
        }
        free(tasks);
    }
}

static void *loop(void *arg)
{
    scheduler *s = arg;
    while (!atomic_load(&s->stopping)) {
        int64_t t0 = now_ms();
        settle(s);
        fire_cron(s, wall_us() / 1000000);
        run_queues(s);
        /* Under load, let finished deliveries gather for a few ms so that
         * settling and leasing take one kv commit for many tasks. */
        int64_t spent = now_ms() - t0;
        pthread_mutex_lock(&s->mu);
        int busy = s->inflight > 0;
        pthread_mutex_unlock(&s->mu);
        if (spent < BATCH_MS && busy && !atomic_load(&s->stopping)) {
            struct timespec nap = {0, (long)(BATCH_MS - spent) * 1000000L};
            nanosleep(&nap, NULL);
        }
        pthread_mutex_lock(&s->mu);
        if (!s->woken && !atomic_load(&s->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += TICK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        s->woken = 0;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

void scheduler_wake(void *arg)
{
    scheduler *s = arg;
    pthread_mutex_lock(&s->mu);
    s->woken = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void scheduler_update_queue(void *arg, const tq_queue *q)
{
    scheduler *s = arg;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->nq; i++) {
        qstate *qs = &s->qs[i];
        if (strcmp(qs->q.name, q->name) || qs->q.pull != q->pull) continue;
        qs->q.rate_per_s = q->rate_per_s;
        qs->q.bucket_size = q->bucket_size;
        qs->q.max_concurrent = q->max_concurrent;
        qs->q.retry = q->retry;
        if (qs->tokens > qs->q.bucket_size) qs->tokens = qs->q.bucket_size;
    }
    s->woken = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static char *dup0(const char *s) { return xstrdup(s ? s : ""); }

scheduler *scheduler_start(const sched_config *c, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    scheduler *s = xcalloc(1, sizeof *s);
    if (sched_internal_key(c->home, s->key, err, errlen) < 0) { free(s); return NULL; }
    s->store = c->store;
    s->app_id = xstrdup(c->app_id);
    const char *host = c->router_host && *c->router_host && strcmp(c->router_host, "0.0.0.0") && strcmp(c->router_host, "::")
                       ? c->router_host : "127.0.0.1";
    s->base_url = strchr(host, ':') ? xasprintf("http://[%s]:%d", host, c->router_port)
                                    : xasprintf("http://%s:%d", host, c->router_port);
    s->timeout_s = c->delivery_timeout_s > 0 ? c->delivery_timeout_s : 600;
    s->nq = c->queues->n + 1;
    s->qs = xcalloc(s->nq, sizeof *s->qs);
    for (size_t i = 0; i < c->queues->n; i++) {
        s->qs[i].q = c->queues->q[i];
        s->qs[i].tokens = s->qs[i].q.bucket_size;
    }
    tq_queue *cq = &s->qs[s->nq - 1].q;     /* cron runs: never throttled below one per job */
    snprintf(cq->name, sizeof cq->name, "%s", CRON_QUEUE);
    cq->rate_per_s = 100;
    cq->bucket_size = 100;
    tq_retry_default(&cq->retry);
    s->qs[s->nq - 1].tokens = 100;
    if (c->cron && c->cron->n) {
        s->cron.n = c->cron->n;
        s->cron.jobs = xcalloc(s->cron.n, sizeof *s->cron.jobs);
        s->cron_next = xcalloc(s->cron.n, sizeof *s->cron_next);
        int64_t now_s = wall_us() / 1000000;
        for (size_t i = 0; i < s->cron.n; i++) {
            const cron_job *j = &c->cron->jobs[i];
            cron_job *k = &s->cron.jobs[i];
            *k = *j;
            k->url = dup0(j->url);
            k->schedule = dup0(j->schedule);
            k->timezone = dup0(j->timezone);
            k->target = dup0(j->target);
            k->description = dup0(j->description);
            s->cron_next[i] = cron_next(&k->sched, k->timezone, now_s);
        }
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    for (int i = 0; i < WORKERS; i++) {
        if (pthread_create(&s->workers[i], NULL, worker, s) != 0) break;
        s->nworkers++;
    }
    if (s->nworkers == 0 || pthread_create(&s->th, NULL, loop, s) != 0) {
        set_err(err, errlen, "cannot start the task scheduler thread");
        s->th = pthread_self();
        atomic_store(&s->stopping, 1);
        return NULL;   /* s is leaked: the daemon is about to exit */
    }
    log_info("taskqueue", "app=%s msg=\"scheduler started\" queues=%zu cron_jobs=%zu", log_q(s->app_id), s->nq - 1, s->cron.n);
    return s;
}

void scheduler_stop(scheduler *s)
{
    if (!s) return;
    atomic_store(&s->stopping, 1);
    scheduler_wake(s);
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    for (int i = 0; i < s->nworkers; i++) pthread_join(s->workers[i], NULL);
    settle(s);                         /* finished (or cut-short) deliveries */
    while (s->todo) {                  /* never sent: back to their queues */
        delivery *d = s->todo;
        s->todo = d->next;
        release_lease(s, d);
        tq_task_free(&d->t);
        free(d);
    }
    for (size_t i = 0; i < s->cron.n; i++) {
        cron_job *k = &s->cron.jobs[i];
        free(k->url); free(k->schedule); free(k->timezone); free(k->target); free(k->description);
    }
    free(s->cron.jobs);
    free(s->cron_next);
    free(s->qs);
    free(s->app_id);
    free(s->base_url);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->work_cv);
    OPENSSL_cleanse(s->key, sizeof s->key);
    free(s);
}
