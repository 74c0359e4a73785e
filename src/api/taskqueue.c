/* taskqueue.c - the taskqueue API service (what google.appengine.api.taskqueue
 * calls): Add, BulkAdd, Delete, PurgeQueue, PauseQueue, UpdateQueue,
 * QueryAndOwnTasks, ModifyTaskLease, FetchQueueStats, QueryTasks.
 *
 * Messages are decoded by hand (field numbers from taskqueue_service.proto);
 * storage is sched/taskstore.c over datastore_v3's kv engine (shared as
 * "kv"). Queues come from the app's queue.yaml, handed over by the daemon
 * with taskqueue_configure(); without it only `default` exists. A
 * transactional add (the request carries the datastore_v3 transaction) is
 * validated at once and handed to the datastore (ds_txn_on_commit), which
 * writes it in the same engine transaction as the commit, or drops it when
 * the transaction does not commit (docs/taskqueue.md). After every add the
 * daemon's scheduler is woken through the callback set with
 * taskqueue_set_wake(). */
#include "api/taskqueue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "datastore/datastore.h"
#include "proto/pb.h"

struct tq_service {
    tq_store *store;
    datastore *ds;             /* for transactional adds; NULL = refused */
    pthread_mutex_t mu;
    tq_config *cfg;            /* guarded by mu */
    void (*wake)(void *);
    void *wake_arg;
    void (*update)(void *, const tq_queue *);   /* guarded by mu */
    void *update_arg;
};

#define MAX_ETA_AHEAD_US (30LL * 86400 * 1000000)
#define MAX_TASK_BYTES   (1024 * 1024)
#define MAX_TXN_TASKS    5     /* App Engine's limit of transactional tasks per transaction */

static int find_queue(tq_service *s, const char *name, tq_queue *out)
{
    pthread_mutex_lock(&s->mu);
    const tq_queue *q = tq_find(s->cfg, name);
    if (q) *out = *q;
    pthread_mutex_unlock(&s->mu);
    return q ? 0 : -1;
}

static void wake(tq_service *s)
{
    if (s->wake) s->wake(s->wake_arg);
}

static char *dupn(const uint8_t *p, size_t n) { return xstrndup((const char *)p, n); }

typedef struct {
    char *queue;
    tq_task t;
    int has_eta;
    int pull_mode;
    int transactional;         /* field 10: a datastore_v3 Transaction */
    uint64_t txn_handle;
    int cloud_txn;             /* field 21: a Cloud Datastore transaction */
    int defer_store;           /* do_add validates only; the caller stores */
} add_req;

static void add_req_free(add_req *a)
{
    free(a->queue);
    tq_task_free(&a->t);
}

static void read_retry(pb_reader *r, tq_retry *out)
{
    tq_retry_default(out);
    uint32_t f;
    int wt;
    int64_t v;
    while (pb_next(r, &f, &wt) == 1) {
        if (f == 3 || f == 4) pb_double(r, wt, f == 3 ? &out->min_backoff_s : &out->max_backoff_s);
        else if ((f == 1 || f == 2 || f == 5) && pb_int64(r, wt, &v) == 0) {
            if (f == 1) out->retry_limit = (int)v;
            else if (f == 2) out->age_limit_s = v;
            else out->max_doublings = (int)v;
        } else pb_skip(r, wt, f);
    }
}

/* TaskQueueAddRequest. 0, or -1 on a malformed message. */
static int decode_add(pb_reader *r, add_req *a)
{
    memset(a, 0, sizeof *a);
    a->t.method = TQ_POST;
    uint32_t f;
    int wt;
    const uint8_t *p;
    size_t n;
    int64_t v;
    while (pb_next(r, &f, &wt) == 1) {
        switch (f) {
        case 1: if (pb_bytes(r, wt, &p, &n) == 0) { free(a->queue); a->queue = dupn(p, n); } break;
        case 2: if (pb_bytes(r, wt, &p, &n) == 0) { free(a->t.name); a->t.name = dupn(p, n); } break;
        case 3: if (pb_int64(r, wt, &a->t.eta_us) == 0) a->has_eta = 1; break;
        case 4: if (pb_bytes(r, wt, &p, &n) == 0) { free(a->t.url); a->t.url = dupn(p, n); } break;
        case 5: if (pb_int64(r, wt, &v) == 0) a->t.method = (int)v; break;
        case 6: {
            pb_reader g;
            if (pb_group(r, wt, 6, &g) < 0) break;
            char *k = NULL, *val = NULL;
            uint32_t gf;
            int gw;
            while (pb_next(&g, &gf, &gw) == 1) {
                if ((gf == 7 || gf == 8) && pb_bytes(&g, gw, &p, &n) == 0) {
                    if (gf == 7) { free(k); k = dupn(p, n); } else { free(val); val = dupn(p, n); }
                } else pb_skip(&g, gw, gf);
            }
            if (g.err) r->err = 1;
            a->t.hkey = xrealloc(a->t.hkey, (a->t.nheaders + 1) * sizeof *a->t.hkey);
            a->t.hval = xrealloc(a->t.hval, (a->t.nheaders + 1) * sizeof *a->t.hval);
            a->t.hkey[a->t.nheaders] = k ? k : xstrdup("");
            a->t.hval[a->t.nheaders++] = val ? val : xstrdup("");
            break;
        }
        case 9:
            if (pb_bytes(r, wt, &p, &n) == 0) {
                free(a->t.body);
                a->t.body = xmalloc(n + 1);
                memcpy(a->t.body, p, n);
                a->t.body_len = n;
            }
            break;
        case 10:
            if (pb_bytes(r, wt, &p, &n) == 0) {
                ds_bytes tapp;
                if (ds_txn_decode(p, n, &a->txn_handle, &tapp) < 0) r->err = 1;
                else a->transactional = 1;
            }
            break;
        case 21: a->cloud_txn = 1; pb_skip(r, wt, f); break;
        case 17: {
            pb_reader q;
            if (pb_sub(r, wt, &q) == 0) { read_retry(&q, &a->t.retry); a->t.has_retry = 1; if (q.err) r->err = 1; }
            break;
        }
        case 18: if (pb_int64(r, wt, &v) == 0) a->pull_mode = v == 1; break;
        case 19: if (pb_bytes(r, wt, &p, &n) == 0) { free(a->t.tag); a->t.tag = dupn(p, n); } break;
        case 12: { pb_reader g; pb_group(r, wt, 12, &g); break; }
        default: pb_skip(r, wt, f);
        }
    }
    return r->err ? -1 : 0;
}

/* A task waiting for its datastore transaction to commit. */
typedef struct {
    tq_service *s;
    char *app, *queue;
    tq_task t;
} txn_task;

/* In the commit's engine transaction: store the task. */
static int txn_task_write(void *arg, kv_txn *kt, char *err, size_t errlen)
{
    txn_task *p = arg;
    return tq_store_add_in(kt, p->app, p->queue, &p->t, err, errlen);
}

static void txn_task_done(void *arg, int committed)
{
    txn_task *p = arg;
    if (committed) {
        log_debug("taskqueue", "app=%s queue=%s task=%s msg=\"added by commit\"", log_q(p->app), p->queue, p->t.name);
        wake(p->s);
    }
    free(p->app);
    free(p->queue);
    tq_task_free(&p->t);
    free(p);
}

/* Ties a validated task to its datastore transaction (a->t is taken over). */
static int add_transactional(tq_service *s, api_ctx *ctx, const char *qname, add_req *a, char *err, size_t errlen)
{
    if (!s->ds) { set_err(err, errlen, "transactional tasks need the datastore, which is unavailable"); return TQE_INTERNAL_ERROR; }
    txn_task *p = xcalloc(1, sizeof *p);
    p->s = s;
    p->app = xstrdup(ctx->app_id);
    p->queue = xstrdup(qname);
    p->t = a->t;
    ds_err e = {0, ""};
    int r = ds_txn_on_commit(s->ds, ctx->app_id, a->txn_handle, MAX_TXN_TASKS, txn_task_write, txn_task_done, p, &e);
    if (r != 0) {
        free(p->app);
        free(p->queue);
        free(p);         /* p->t still belongs to a */
        if (r > 0) { set_err(err, errlen, "at most %d tasks may be added in one transaction", MAX_TXN_TASKS); return TQE_TOO_MANY_TASKS; }
        set_err(err, errlen, "the task's transaction is not active: %s", e.msg);
        return TQE_INVALID_REQUEST;
    }
    memset(&a->t, 0, sizeof a->t);   /* now owned by the transaction */
    return TQE_OK;
}

/* Validate and store one add; returns a TQE code and the chosen name. */
static int do_add(tq_service *s, api_ctx *ctx, add_req *a, char **chosen, char *err, size_t errlen)
{
    *chosen = NULL;
    const char *qname = a->queue ? a->queue : "default";
    tq_queue q;
    if (!tq_valid_queue_name(qname, strlen(qname))) { set_err(err, errlen, "invalid queue name"); return TQE_INVALID_QUEUE_NAME; }
    if (find_queue(s, qname, &q) < 0) { set_err(err, errlen, "queue %s is not defined in queue.yaml", qname); return TQE_UNKNOWN_QUEUE; }
    if (q.pull != a->pull_mode) {
        set_err(err, errlen, "a %s task cannot be added to %s queue %s", a->pull_mode ? "pull" : "push",
                q.pull ? "pull" : "push", qname);
        return TQE_INVALID_QUEUE_MODE;
    }
    int64_t now = wall_us();
    if (!a->has_eta) a->t.eta_us = now;
    if (a->t.eta_us > now + MAX_ETA_AHEAD_US) { set_err(err, errlen, "the task's ETA is more than 30 days ahead"); return TQE_INVALID_ETA; }
    if (a->t.body_len > MAX_TASK_BYTES) { set_err(err, errlen, "the task is larger than 1 MiB"); return TQE_TASK_TOO_LARGE; }
    if (!a->pull_mode) {
        if (!a->t.url || a->t.url[0] != '/' || strpbrk(a->t.url, " \r\n")) { set_err(err, errlen, "the task URL must be a path starting with /"); return TQE_INVALID_URL; }
        if (a->t.method < TQ_GET || a->t.method > TQ_DELETE) { set_err(err, errlen, "unknown task method"); return TQE_INVALID_REQUEST; }
        for (size_t i = 0; i < a->t.nheaders; i++)
            if (strpbrk(a->t.hkey[i], ":\r\n") || strpbrk(a->t.hval[i], "\r\n") || !a->t.hkey[i][0]) {
                set_err(err, errlen, "a task header has a malformed name or value");
                return TQE_INVALID_REQUEST;
            }
    } else if (a->t.tag && strlen(a->t.tag) > 500) {
        set_err(err, errlen, "the tag is longer than 500 bytes");
        return TQE_INVALID_TAG;
    }
    if (a->t.name && a->t.name[0]) {
        if (!tq_valid_task_name(a->t.name, strlen(a->t.name))) {
            set_err(err, errlen, "task names are 1 to 500 letters, digits, - or _");
            return TQE_INVALID_TASK_NAME;
        }
    } else {
        uint8_t rnd[12];
        char hex[25];
        random_bytes(rnd, sizeof rnd);
        hex_encode(rnd, sizeof rnd, hex);
        free(a->t.name);
        a->t.name = xasprintf("task%s", hex);
        *chosen = xstrdup(a->t.name);
    }
    a->t.pull = a->pull_mode;
    a->t.created_us = now;
    if (a->cloud_txn) {
        set_err(err, errlen, "tasks bound to a Cloud Datastore transaction are not supported; use the datastore_v3 (ndb/db) transaction");
        free(*chosen);
        *chosen = NULL;
        return TQE_INVALID_REQUEST;
    }
    if (a->defer_store) return TQE_OK;     /* BulkAdd stores (or ties) the batch itself */
    if (a->transactional) {
        int rc = add_transactional(s, ctx, qname, a, err, errlen);
        if (rc != TQE_OK) { free(*chosen); *chosen = NULL; }
        return rc;
    }
    int rc = tq_store_add(s->store, ctx->app_id, qname, &a->t, err, errlen);
    if (rc != TQE_OK) { free(*chosen); *chosen = NULL; }
    else log_debug("taskqueue", "app=%s queue=%s task=%s msg=\"added\"", log_q(ctx->app_id), qname, a->t.name);
    return rc;
}

static void fail_code(api_reply *reply, int code, const char *err)
{
    api_app_error(reply, code, "%s", err && *err ? err : "the task queue refused the request");
}

static void Add(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    add_req a;
    if (decode_add(&r, &a) < 0) { add_req_free(&a); api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueAddRequest"); return; }
    char err[300] = "", *chosen;
    int rc = do_add(s, ctx, &a, &chosen, err, sizeof err);
    add_req_free(&a);
    if (rc != TQE_OK) { fail_code(reply, rc, err); return; }
    if (chosen) pb_put_str(&reply->response, 1, chosen);
    free(chosen);
    wake(s);
}

/* BulkAdd: every task is validated on its own; the valid non-transactional
 * ones are then stored in one kv transaction (one synced commit for up to
 * 100 tasks), each still getting its own result code. Transactional ones are
 * tied to their datastore transaction only when all of them are valid. */
static void BulkAdd(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    size_t count = 0;
    add_req a[100];
    int rcs[100];
    char *chosen[100];
    int ok = 1;
    while (pb_next(&r, &f, &wt) == 1) {
        if (f != 1) { pb_skip(&r, wt, f); continue; }
        pb_reader sub;
        if (pb_sub(&r, wt, &sub) < 0) break;
        if (count == 100) { ok = 0; api_app_error(reply, TQE_TOO_MANY_TASKS, "at most 100 tasks may be added at once"); break; }
        add_req *x = &a[count];
        chosen[count] = NULL;
        if (decode_add(&sub, x) < 0) rcs[count] = TQE_INVALID_REQUEST;
        else {
            char err[300] = "";
            x->defer_store = 1;
            rcs[count] = do_add(s, ctx, x, &chosen[count], err, sizeof err);
            if (rcs[count] == TQE_INTERNAL_ERROR || rcs[count] == TQE_TRANSIENT_ERROR)
                log_error("taskqueue", "app=%s msg=\"add failed\" err=%s", log_q(ctx->app_id), log_q(err));
        }
        count++;
    }
    if (ok && r.err) { ok = 0; api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueBulkAddRequest"); }
    if (ok) {
        const char *queues[100];
        const tq_task *tasks[100];
        int *out[100];
        size_t m = 0;
        for (size_t i = 0; i < count; i++) {
            if (rcs[i] != TQE_OK || a[i].transactional) continue;
            queues[m] = a[i].queue ? a[i].queue : "default";
            tasks[m] = &a[i].t;
            out[m++] = &rcs[i];
        }
        /* Transactional tasks go all together or not at all: one failure
         * skips the rest (SKIPPED), as App Engine does. */
        int txn_failed = 0;
        for (size_t i = 0; i < count; i++) if (a[i].transactional && rcs[i] != TQE_OK) txn_failed = 1;
        for (size_t i = 0; i < count; i++) {
            if (!a[i].transactional || rcs[i] != TQE_OK) continue;
            if (txn_failed) { rcs[i] = TQE_SKIPPED; continue; }
            char terr[300] = "";
            rcs[i] = add_transactional(s, ctx, a[i].queue ? a[i].queue : "default", &a[i], terr, sizeof terr);
            if (rcs[i] != TQE_OK) txn_failed = 1;
        }
        char err[300] = "";
        if (m && tq_store_add_many(s->store, ctx->app_id, queues, tasks, m, out, err, sizeof err) != TQE_OK)
            log_error("taskqueue", "app=%s msg=\"bulk add failed\" err=%s", log_q(ctx->app_id), log_q(err));
        for (size_t i = 0; i < count; i++) {
            pb_group_begin(&reply->response, 1);
            pb_put_int(&reply->response, 2, rcs[i]);
            if (chosen[i] && rcs[i] == TQE_OK) pb_put_str(&reply->response, 3, chosen[i]);
            pb_group_end(&reply->response, 1);
        }
    }
    for (size_t i = 0; i < count; i++) { add_req_free(&a[i]); free(chosen[i]); }
    if (ok) wake(s);
}

/* queue_name (field 1 or 2 depending on message) as a C string; "default" when absent. */
static char *field_str(const uint8_t *req, size_t n, uint32_t field, int *malformed)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    char *out = NULL;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == field && wt == PB_LEN && pb_bytes(&r, wt, &p, &l) == 0) { free(out); out = dupn(p, l); }
        else pb_skip(&r, wt, f);
    }
    if (malformed) *malformed = r.err;
    return out;
}

static int check_queue(tq_service *s, const char *qname, int want_pull, tq_queue *q, api_reply *reply)
{
    if (!qname || find_queue(s, qname, q) < 0) {
        api_app_error(reply, TQE_UNKNOWN_QUEUE, "queue %s is not defined in queue.yaml", qname ? qname : "(none)");
        return -1;
    }
    if (want_pull >= 0 && q->pull != want_pull) {
        api_app_error(reply, TQE_INVALID_QUEUE_MODE, "queue %s is a %s queue", qname, q->pull ? "pull" : "push");
        return -1;
    }
    return 0;
}

static void Delete(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    int bad = 0;
    char *qname = field_str(req, n, 1, &bad);
    tq_queue q;
    if (bad) { free(qname); api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueDeleteRequest"); return; }
    if (check_queue(s, qname, -1, &q, reply) < 0) { free(qname); return; }
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 2 && pb_bytes(&r, wt, &p, &l) == 0) {
            char *name = dupn(p, l);
            char err[300] = "";
            int rc = tq_valid_task_name(name, l) ? tq_store_delete(s->store, ctx->app_id, qname, name, err, sizeof err)
                                                 : TQE_INVALID_TASK_NAME;
            pb_put_int(&reply->response, 3, rc);
            free(name);
        } else pb_skip(&r, wt, f);
    }
    free(qname);
}

static void PurgeQueue(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    char *qname = field_str(req, n, 2, NULL);
    tq_queue q;
    if (!qname) qname = xstrdup("default");
    if (check_queue(s, qname, -1, &q, reply) < 0) { free(qname); return; }
    char err[300] = "";
    int rc = tq_store_purge(s->store, ctx->app_id, qname, err, sizeof err);
    if (rc != TQE_OK) fail_code(reply, rc, err);
    else log_info("taskqueue", "app=%s queue=%s msg=\"purged\"", log_q(ctx->app_id), qname);
    free(qname);
}

static void PauseQueue(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    char *qname = field_str(req, n, 2, NULL);
    tq_queue q;
    if (check_queue(s, qname, -1, &q, reply) < 0) { free(qname); return; }
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt, pause = 0;
    while (pb_next(&r, &f, &wt) == 1) {
        if (f == 3) pb_bool(&r, wt, &pause); else pb_skip(&r, wt, f);
    }
    char err[300] = "";
    int rc = tq_store_set_paused(s->store, ctx->app_id, qname, pause, err, sizeof err);
    if (rc != TQE_OK) fail_code(reply, rc, err);
    else log_info("taskqueue", "app=%s queue=%s msg=\"%s\"", log_q(ctx->app_id), qname, pause ? "paused" : "resumed");
    free(qname);
    wake(s);
}

/* UpdateQueue: changes a queue's rate, bucket size, concurrency limit and
 * retry parameters while the app runs (queue.yaml is read again at the next
 * start). The scheduler is told through the hook set with
 * taskqueue_set_update(). Queues that queue.yaml does not define are not
 * created here. */
static void UpdateQueue(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    char *qname = NULL, *rate_s = NULL;
    double rate = -1;
    int64_t bucket = -1, maxc = -1, mode = -1;
    int has_retry = 0;
    tq_retry retry;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 2 && pb_bytes(&r, wt, &p, &l) == 0) { free(qname); qname = dupn(p, l); }
        else if (f == 3) pb_double(&r, wt, &rate);
        else if (f == 4) pb_int64(&r, wt, &bucket);
        else if (f == 5 && pb_bytes(&r, wt, &p, &l) == 0) { free(rate_s); rate_s = dupn(p, l); }
        else if (f == 6) {
            pb_reader q;
            if (pb_sub(&r, wt, &q) == 0) { read_retry(&q, &retry); has_retry = 1; if (q.err) r.err = 1; }
        } else if (f == 7) pb_int64(&r, wt, &maxc);
        else if (f == 8) pb_int64(&r, wt, &mode);
        else pb_skip(&r, wt, f);
    }
    tq_queue q;
    if (r.err) { api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueUpdateQueueRequest"); goto out; }
    if (check_queue(s, qname, -1, &q, reply) < 0) goto out;
    if (mode >= 0 && (mode == 1) != q.pull) {
        api_app_error(reply, TQE_INVALID_QUEUE_MODE, "queue %s is a %s queue", qname, q.pull ? "pull" : "push");
        goto out;
    }
    if (rate < 0 && rate_s && tq_parse_rate(rate_s, &rate) < 0) rate = -2;
    if (rate == -2 || (rate != -1 && (rate < 0 || rate > 500)) || bucket == 0 || bucket > 500 || maxc > 5000) {
        api_app_error(reply, TQE_INVALID_QUEUE_RATE, "queue %s: the rate must be 0..500/s, the bucket size 1..500 "
                      "and max_concurrent_requests at most 5000", qname);
        goto out;
    }
    if (has_retry && (retry.min_backoff_s < 0 || retry.max_backoff_s < retry.min_backoff_s || retry.max_doublings < 0)) {
        api_app_error(reply, TQE_INVALID_RETRY_PARAMETERS, "queue %s: the retry parameters are inconsistent", qname);
        goto out;
    }
    pthread_mutex_lock(&s->mu);
    tq_queue *live = NULL;
    for (size_t i = 0; i < s->cfg->n; i++) if (!strcmp(s->cfg->q[i].name, qname)) live = &s->cfg->q[i];
    if (live) {
        if (rate >= 0) live->rate_per_s = rate;
        if (bucket > 0) live->bucket_size = (int)bucket;
        if (maxc >= 0) live->max_concurrent = (int)maxc;
        if (has_retry) live->retry = retry;
        q = *live;
    }
    void (*hook)(void *, const tq_queue *) = s->update;
    void *harg = s->update_arg;
    if (live && hook) hook(harg, &q);    /* under mu: a stop clears the hook under it too */
    pthread_mutex_unlock(&s->mu);
    log_info("taskqueue", "app=%s queue=%s rate=%.3f bucket=%d max_concurrent=%d msg=\"queue updated\"",
             log_q(ctx->app_id), qname, q.rate_per_s, q.bucket_size, q.max_concurrent);
    wake(s);
out:
    free(qname);
    free(rate_s);
}

static void FetchQueueStats(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    buf out = BUF_INIT;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 2 && pb_bytes(&r, wt, &p, &l) == 0) {
            char *qname = dupn(p, l);
            tq_queue q;
            if (find_queue(s, qname, &q) < 0) {
                free(qname);
                buf_free(&out);
                api_app_error(reply, TQE_UNKNOWN_QUEUE, "a queue named in the request is not defined in queue.yaml");
                return;
            }
            int64_t count = 0, oldest = 0;
            char err[300];
            tq_store_stats(s->store, ctx->app_id, qname, &count, &oldest, err, sizeof err);
            pb_group_begin(&out, 1);
            pb_put_int(&out, 2, count);
            pb_put_int(&out, 3, count ? oldest : -1);
            pb_group_end(&out, 1);
            free(qname);
        } else pb_skip(&r, wt, f);
    }
    buf_append(&reply->response, buf_rp(&out), buf_unread(&out));
    buf_free(&out);
}

static void QueryAndOwnTasks(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    char *qname = NULL, *tag = NULL;
    double lease = 0;
    int64_t max = 0;
    int group = 0;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 1 && pb_bytes(&r, wt, &p, &l) == 0) { free(qname); qname = dupn(p, l); }
        else if (f == 2) pb_double(&r, wt, &lease);
        else if (f == 3) pb_int64(&r, wt, &max);
        else if (f == 4) pb_bool(&r, wt, &group);
        else if (f == 5 && pb_bytes(&r, wt, &p, &l) == 0) { free(tag); tag = dupn(p, l); }
        else pb_skip(&r, wt, f);
    }
    tq_queue q;
    if (r.err) { api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueQueryAndOwnTasksRequest"); goto out; }
    if (check_queue(s, qname, 1, &q, reply) < 0) goto out;
    if (lease < 0 || lease > 604800 || max <= 0 || max > 1000) {
        api_app_error(reply, TQE_INVALID_REQUEST, "lease_seconds must be 0..604800 and max_tasks 1..1000");
        goto out;
    }
    tq_task *tasks;
    size_t nt;
    char err[300] = "";
    int64_t now = wall_us();
    int rc = tq_store_lease(s->store, ctx->app_id, qname, now, (int64_t)(lease * 1e6), (size_t)max, 1, tag, group,
                            &tasks, &nt, err, sizeof err);
    if (rc != TQE_OK) { fail_code(reply, rc, err); goto out; }
    for (size_t i = 0; i < nt; i++) {
        pb_group_begin(&reply->response, 1);
        pb_put_str(&reply->response, 2, tasks[i].name);
        pb_put_int(&reply->response, 3, tasks[i].eta_us);
        pb_put_int(&reply->response, 4, tasks[i].retry_count);
        pb_put_bytes(&reply->response, 5, tasks[i].body, tasks[i].body_len);
        if (tasks[i].tag) pb_put_str(&reply->response, 6, tasks[i].tag);
        pb_group_end(&reply->response, 1);
        tq_task_free(&tasks[i]);
    }
    free(tasks);
out:
    free(qname);
    free(tag);
}

static void ModifyTaskLease(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    char *qname = NULL, *name = NULL;
    int64_t eta = 0;
    double lease = 0;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 1 && pb_bytes(&r, wt, &p, &l) == 0) { free(qname); qname = dupn(p, l); }
        else if (f == 2 && pb_bytes(&r, wt, &p, &l) == 0) { free(name); name = dupn(p, l); }
        else if (f == 3) pb_int64(&r, wt, &eta);
        else if (f == 4) pb_double(&r, wt, &lease);
        else pb_skip(&r, wt, f);
    }
    tq_queue q;
    if (r.err || !name) { api_app_error(reply, TQE_INVALID_REQUEST, "malformed TaskQueueModifyTaskLeaseRequest"); goto out; }
    if (check_queue(s, qname, 1, &q, reply) < 0) goto out;
    if (lease < 0 || lease > 604800) { api_app_error(reply, TQE_INVALID_REQUEST, "lease_seconds must be 0..604800"); goto out; }
    char err[300] = "";
    int64_t new_eta = 0;
    int rc = tq_store_modify_lease(s->store, ctx->app_id, qname, name, eta, wall_us(), (int64_t)(lease * 1e6),
                                   &new_eta, err, sizeof err);
    if (rc != TQE_OK) { fail_code(reply, rc, err); goto out; }
    pb_put_int(&reply->response, 1, new_eta);
out:
    free(qname);
    free(name);
}

static void QueryTasks(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    tq_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f;
    int wt;
    char *qname = NULL;
    int64_t start_eta = INT64_MIN, max = 100;
    while (pb_next(&r, &f, &wt) == 1) {
        const uint8_t *p;
        size_t l;
        if (f == 2 && pb_bytes(&r, wt, &p, &l) == 0) { free(qname); qname = dupn(p, l); }
        else if (f == 4) pb_int64(&r, wt, &start_eta);
        else if (f == 5) pb_int64(&r, wt, &max);
        else pb_skip(&r, wt, f);
    }
    tq_queue q;
    if (check_queue(s, qname, -1, &q, reply) < 0) { free(qname); return; }
    if (max <= 0 || max > 1000) max = 100;
    tq_task *tasks;
    size_t nt;
    char err[300] = "";
    int rc = tq_store_list(s->store, ctx->app_id, qname, start_eta, (size_t)max, &tasks, &nt, err, sizeof err);
    if (rc != TQE_OK) fail_code(reply, rc, err);
    for (size_t i = 0; i < nt; i++) {
        tq_task *t = &tasks[i];
        if (rc == TQE_OK) {
            buf *b = &reply->response;
            pb_group_begin(b, 1);
            pb_put_str(b, 2, t->name);
            pb_put_int(b, 3, t->eta_us);
            if (!t->pull) { pb_put_str(b, 4, t->url); pb_put_int(b, 5, t->method); }
            pb_put_int(b, 6, t->retry_count);
            for (size_t h = 0; h < t->nheaders; h++) {
                pb_group_begin(b, 7);
                pb_put_str(b, 8, t->hkey[h]);
                pb_put_str(b, 9, t->hval[h]);
                pb_group_end(b, 7);
            }
            pb_put_int(b, 10, (int64_t)t->body_len);
            pb_put_bytes(b, 11, t->body, t->body_len);
            pb_put_int(b, 12, t->created_us);
            if (t->tag) pb_put_str(b, 25, t->tag);
            pb_put_int(b, 26, t->execution_count);
            pb_group_end(b, 1);
        }
        tq_task_free(t);
    }
    free(tasks);
    free(qname);
}

static void tq_service_free(void *p)
{
    tq_service *s = p;
    tq_store_free(s->store);
    tq_config_free(s->cfg);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void Unavailable(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *reply)
{
    api_app_error(reply, TQE_INTERNAL_ERROR, "the task queue is unavailable because the datastore could not be opened");
}

void taskqueue_register(api_server *srv, const char *home)
{
    static const char *methods[] = {"Add", "BulkAdd", "Delete", "PurgeQueue", "PauseQueue", "UpdateQueue",
                                    "FetchQueueStats", "QueryAndOwnTasks", "ModifyTaskLease", "QueryTasks"};
    static const api_method_fn fns[] = {Add, BulkAdd, Delete, PurgeQueue, PauseQueue, UpdateQueue,
                                        FetchQueueStats, QueryAndOwnTasks, ModifyTaskLease, QueryTasks};
    kv_engine *kv = api_shared(srv, "kv");
    if (!kv) {
        log_error("taskqueue", "msg=\"no datastore engine; task queue unavailable\" home=%s", log_q(home));
        for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) api_register(srv, "taskqueue", methods[i], Unavailable, NULL);
        return;
    }
    tq_service *s = xcalloc(1, sizeof *s);
    s->store = tq_store_new(kv);
    s->ds = api_shared(srv, "datastore");
    pthread_mutex_init(&s->mu, NULL);
    char err[200];
    s->cfg = queueyaml_parse("", 0, "queue.yaml", err, sizeof err);
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) api_register(srv, "taskqueue", methods[i], fns[i], s);
    api_on_stop(srv, tq_service_free, s);
    api_share(srv, "taskqueue", s);
}

tq_service *taskqueue_service(api_server *srv) { return api_shared(srv, "taskqueue"); }

void taskqueue_configure(tq_service *s, tq_config *cfg)
{
    pthread_mutex_lock(&s->mu);
    tq_config_free(s->cfg);
    s->cfg = cfg;
    pthread_mutex_unlock(&s->mu);
}

tq_config *taskqueue_config_copy(tq_service *s)
{
    pthread_mutex_lock(&s->mu);
    tq_config *c = xcalloc(1, sizeof *c);
    c->n = s->cfg->n;
    c->q = xmalloc(c->n * sizeof *c->q);
    memcpy(c->q, s->cfg->q, c->n * sizeof *c->q);
    pthread_mutex_unlock(&s->mu);
    return c;
}

tq_store *taskqueue_store(tq_service *s) { return s->store; }

void taskqueue_set_wake(tq_service *s, void (*fn)(void *), void *arg)
{
    s->wake_arg = arg;
    s->wake = fn;
}

void taskqueue_set_update(tq_service *s, void (*fn)(void *, const tq_queue *), void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->update = fn;
    s->update_arg = arg;
    pthread_mutex_unlock(&s->mu);
}
