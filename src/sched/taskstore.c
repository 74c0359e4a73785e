/* taskstore.c - task rows in the kv engine (see taskstore.h for the layout).
 *
 * A task record is a small protobuf of our own (field numbers below, never
 * reused). Every public call runs one kv transaction through run_txn(),
 * which retries the whole body on KV_CONFLICT; bodies return a TQE_* code
 * and never keep engine memory past their transaction. */
#include "sched/taskstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"
#include "proto/pb.h"

struct tq_store {
    kv_engine *kv;
};

/* Record fields. */
enum {
    F_NAME = 1, F_ETA = 2, F_METHOD = 3, F_URL = 4, F_HEADER = 5, F_BODY = 6, F_RETRY_COUNT = 7,
    F_EXEC_COUNT = 8, F_CREATED = 9, F_FIRST_TRY = 10, F_TAG = 11, F_PULL = 12, F_RETRY = 13, F_CRON = 14,
};

tq_store *tq_store_new(kv_engine *kv)
{
    tq_store *s = xcalloc(1, sizeof *s);
    s->kv = kv;
    return s;
}

void tq_store_free(tq_store *s) { free(s); }

void tq_task_free(tq_task *t)
{
    if (!t) return;
    free(t->name);
    free(t->url);
    for (size_t i = 0; i < t->nheaders; i++) { free(t->hkey[i]); free(t->hval[i]); }
    free(t->hkey);
    free(t->hval);
    free(t->body);
    free(t->tag);
    memset(t, 0, sizeof *t);
}

static void encode(const tq_task *t, buf *b)
{
    pb_put_str(b, F_NAME, t->name);
    pb_put_int(b, F_ETA, t->eta_us);
    pb_put_int(b, F_METHOD, t->method);
    if (t->url) pb_put_str(b, F_URL, t->url);
    for (size_t i = 0; i < t->nheaders; i++) {
        size_t m = pb_begin(b, F_HEADER);
        pb_put_str(b, 1, t->hkey[i]);
        pb_put_str(b, 2, t->hval[i]);
        pb_end(b, m);
    }
    pb_put_bytes(b, F_BODY, t->body, t->body_len);
    pb_put_int(b, F_RETRY_COUNT, t->retry_count);
    pb_put_int(b, F_EXEC_COUNT, t->execution_count);
    pb_put_int(b, F_CREATED, t->created_us);
    pb_put_int(b, F_FIRST_TRY, t->first_try_us);
    if (t->tag) pb_put_str(b, F_TAG, t->tag);
    pb_put_bool(b, F_PULL, t->pull);
    if (t->has_retry) {
        size_t m = pb_begin(b, F_RETRY);
        pb_put_int(b, 1, t->retry.retry_limit);
        pb_put_int(b, 2, t->retry.age_limit_s);
        pb_put_double(b, 3, t->retry.min_backoff_s);
        pb_put_double(b, 4, t->retry.max_backoff_s);
        pb_put_int(b, 5, t->retry.max_doublings);
        pb_end(b, m);
    }
    if (t->cron) pb_put_bool(b, F_CRON, 1);
}

static char *dupn(const uint8_t *p, size_t n) { return xstrndup((const char *)p, n); }

static int decode(const void *data, size_t len, tq_task *t)
{
    memset(t, 0, sizeof *t);
    pb_reader r;
    pb_reader_init(&r, data, len);
    uint32_t f;
    int wt;
    const uint8_t *p;
    size_t n;
    int64_t v;
    while (pb_next(&r, &f, &wt) == 1) {
        switch (f) {
        case F_NAME: if (pb_bytes(&r, wt, &p, &n) == 0) { free(t->name); t->name = dupn(p, n); } break;
        case F_ETA: pb_int64(&r, wt, &t->eta_us); break;
        case F_METHOD: if (pb_int64(&r, wt, &v) == 0) t->method = (int)v; break;
        case F_URL: if (pb_bytes(&r, wt, &p, &n) == 0) { free(t->url); t->url = dupn(p, n); } break;
        case F_HEADER: {
            pb_reader h;
            if (pb_sub(&r, wt, &h) < 0) break;
            char *k = NULL, *val = NULL;
            uint32_t hf;
            int hw;
            while (pb_next(&h, &hf, &hw) == 1) {
                if ((hf == 1 || hf == 2) && pb_bytes(&h, hw, &p, &n) == 0) {
                    if (hf == 1) { free(k); k = dupn(p, n); } else { free(val); val = dupn(p, n); }
                } else pb_skip(&h, hw, hf);
            }
            t->hkey = xrealloc(t->hkey, (t->nheaders + 1) * sizeof *t->hkey);
            t->hval = xrealloc(t->hval, (t->nheaders + 1) * sizeof *t->hval);
            t->hkey[t->nheaders] = k ? k : xstrdup("");
            t->hval[t->nheaders++] = val ? val : xstrdup("");
            break;
        }
        case F_BODY:
            if (pb_bytes(&r, wt, &p, &n) == 0) {
                free(t->body);
                t->body = xmalloc(n + 1);
                memcpy(t->body, p, n);
                t->body_len = n;
            }
            break;
        case F_RETRY_COUNT: if (pb_int64(&r, wt, &v) == 0) t->retry_count = (int)v; break;
        case F_EXEC_COUNT: if (pb_int64(&r, wt, &v) == 0) t->execution_count = (int)v; break;
        case F_CREATED: pb_int64(&r, wt, &t->created_us); break;
        case F_FIRST_TRY: pb_int64(&r, wt, &t->first_try_us); break;
        case F_TAG: if (pb_bytes(&r, wt, &p, &n) == 0) { free(t->tag); t->tag = dupn(p, n); } break;
        case F_PULL: pb_bool(&r, wt, &t->pull); break;
        case F_CRON: pb_bool(&r, wt, &t->cron); break;
        case F_RETRY: {
            pb_reader q;
            if (pb_sub(&r, wt, &q) < 0) break;
            t->has_retry = 1;
            tq_retry_default(&t->retry);
            uint32_t qf;
            int qw;
            while (pb_next(&q, &qf, &qw) == 1) {
                if (qf == 3 || qf == 4) pb_double(&q, qw, qf == 3 ? &t->retry.min_backoff_s : &t->retry.max_backoff_s);
                else if (qf == 2) pb_int64(&q, qw, &t->retry.age_limit_s);
                else if ((qf == 1 || qf == 5) && pb_int64(&q, qw, &v) == 0) {
                    if (qf == 1) t->retry.retry_limit = (int)v; else t->retry.max_doublings = (int)v;
                } else pb_skip(&q, qw, qf);
            }
            if (q.err) r.err = 1;
            break;
        }
        default: pb_skip(&r, wt, f);
        }
    }
    if (r.err || !t->name) { tq_task_free(t); return -1; }
    return 0;
}

/* ---- keys ---- */

static void key_prefix(buf *k, const char *app, const char *queue)
{
    buf_reset(k);
    buf_printf(k, "Q/%s/%s/", app, queue);
}

static void key_task(buf *k, const char *app, const char *queue, const char *name)
{
    key_prefix(k, app, queue);
    buf_printf(k, "t/%s", name);
}

static void key_tomb(buf *k, const char *app, const char *queue, const char *name)
{
    key_prefix(k, app, queue);
    buf_printf(k, "x/%s", name);
}

static void put_be64(buf *k, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (56 - 8 * i));
    buf_append(k, b, 8);
}

static uint64_t get_be64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
    return v;
}

/* ETAs are stored offset so negative values still sort. */
static uint64_t eta_bits(int64_t eta) { return (uint64_t)eta ^ (UINT64_C(1) << 63); }

static void key_eta(buf *k, const char *app, const char *queue, int64_t eta, const char *name)
{
    key_prefix(k, app, queue);
    buf_puts(k, "e/");
    put_be64(k, eta_bits(eta));
    buf_puts(k, name);
}

/* ---- transactions ---- */

typedef int (*txn_body)(kv_txn *txn, void *arg, char *err, size_t errlen);

#define TXN_INTERNAL (-100)

/* Runs body in a write (or read) transaction, retrying on conflict. Returns
 * the body's TQE_* code, or TQE_INTERNAL_ERROR with err set. */
static int run_txn(tq_store *s, int write, txn_body body, void *arg, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        kv_txn *t;
        int rc = kv_begin(s->kv, write, &t, err, errlen);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) return TQE_INTERNAL_ERROR;
        int r = body(t, arg, err, errlen);
        if (r == TXN_INTERNAL - KV_CONFLICT) { kv_abort(t); continue; }
        if (r == TXN_INTERNAL) { kv_abort(t); return TQE_INTERNAL_ERROR; }
        if (r != TQE_OK || !write) { kv_abort(t); return r; }
        rc = kv_commit(t, err, errlen);
        if (rc == KV_CONFLICT) continue;
        if (rc != KV_OK) return TQE_INTERNAL_ERROR;
        return TQE_OK;
    }
    set_err(err, errlen, "the task queue could not commit after repeated conflicts");
    return TQE_TRANSIENT_ERROR;
}

/* Map a kv result inside a body. */
#define KVCHECK(expr) do { int kr_ = (expr); if (kr_ == KV_CONFLICT) return TXN_INTERNAL - KV_CONFLICT; \
                           if (kr_ != KV_OK && kr_ != KV_NOTFOUND) return TXN_INTERNAL; } while (0)

static int write_task(kv_txn *txn, const char *app, const char *queue, const tq_task *t, char *err, size_t errlen)
{
    buf k = BUF_INIT, v = BUF_INIT;
    encode(t, &v);
    key_task(&k, app, queue, t->name);
    int rc = kv_put(txn, buf_rp(&k), buf_unread(&k), buf_rp(&v), buf_unread(&v), err, errlen);
    if (rc == KV_OK) {
        key_eta(&k, app, queue, t->eta_us, t->name);
        rc = kv_put(txn, buf_rp(&k), buf_unread(&k), "", 0, err, errlen);
    }
    buf_free(&k);
    buf_free(&v);
    if (rc == KV_CONFLICT) return TXN_INTERNAL - KV_CONFLICT;
    return rc == KV_OK ? TQE_OK : TXN_INTERNAL;
}

/* Reads the task row into *t: TQE_OK, TQE_UNKNOWN_TASK, or internal. */
static int read_task(kv_txn *txn, const char *app, const char *queue, const char *name, tq_task *t, char *err, size_t errlen)
{
    buf k = BUF_INIT;
    key_task(&k, app, queue, name);
    const void *v;
    size_t vn;
    int rc = kv_get(txn, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
    buf_free(&k);
    if (rc == KV_NOTFOUND) return TQE_UNKNOWN_TASK;
    if (rc == KV_CONFLICT) return TXN_INTERNAL - KV_CONFLICT;
    if (rc != KV_OK) return TXN_INTERNAL;
    if (decode(v, vn, t) < 0) { set_err(err, errlen, "the stored task %s is damaged", name); return TXN_INTERNAL; }
    return TQE_OK;
}

static int remove_task(kv_txn *txn, const char *app, const char *queue, const tq_task *t, int tombstone,
                       char *err, size_t errlen)
{
    buf k = BUF_INIT;
    key_task(&k, app, queue, t->name);
    int rc = kv_del(txn, buf_rp(&k), buf_unread(&k), err, errlen);
    if (rc == KV_OK || rc == KV_NOTFOUND) {
        key_eta(&k, app, queue, t->eta_us, t->name);
        rc = kv_del(txn, buf_rp(&k), buf_unread(&k), err, errlen);
    }
    if ((rc == KV_OK || rc == KV_NOTFOUND) && tombstone) {
        key_tomb(&k, app, queue, t->name);
        buf v = BUF_INIT;
        put_be64(&v, (uint64_t)wall_us());
        rc = kv_put(txn, buf_rp(&k), buf_unread(&k), buf_rp(&v), buf_unread(&v), err, errlen);
        buf_free(&v);
    }
    buf_free(&k);
    if (rc == KV_CONFLICT) return TXN_INTERNAL - KV_CONFLICT;
    return rc == KV_OK || rc == KV_NOTFOUND ? TQE_OK : TXN_INTERNAL;
}

/* ---- add ---- */

typedef struct { const char *app, *queue; const tq_task *t; } add_arg;

static int add_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    add_arg *a = p;
    buf k = BUF_INIT;
    const void *v;
    size_t vn;
    key_task(&k, a->app, a->queue, a->t->name);
    int rc = kv_get(txn, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
    if (rc == KV_OK) { buf_free(&k); set_err(err, errlen, "a task named %s already exists in queue %s", a->t->name, a->queue); return TQE_TASK_ALREADY_EXISTS; }
    if (rc != KV_NOTFOUND) { buf_free(&k); return rc == KV_CONFLICT ? TXN_INTERNAL - KV_CONFLICT : TXN_INTERNAL; }
    key_tomb(&k, a->app, a->queue, a->t->name);
    rc = kv_get(txn, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
    buf_free(&k);
    /* Names are remembered for TQ_TOMBSTONE_DAYS, as App Engine does; an older tombstone is overwritten. */
    if (rc == KV_OK && vn == 8 && wall_us() - (int64_t)get_be64(v) > TQ_TOMBSTONE_DAYS * 86400LL * 1000000) rc = KV_NOTFOUND;
    if (rc == KV_OK) { set_err(err, errlen, "the task name %s was used by a task that was already deleted or run", a->t->name); return TQE_TOMBSTONED_TASK; }
    if (rc != KV_NOTFOUND) return rc == KV_CONFLICT ? TXN_INTERNAL - KV_CONFLICT : TXN_INTERNAL;
    return write_task(txn, a->app, a->queue, a->t, err, errlen);
}

static int key_fits(const char *app, const char *queue, const char *name, char *err, size_t errlen)
{
    if (strlen(app) + strlen(queue) + strlen(name) + 16 > KV_MAX_KEY) {
        set_err(err, errlen, "the task name %.40s... is too long for this application and queue", name);
        return 0;
    }
    return 1;
}

int tq_store_add(tq_store *s, const char *app, const char *queue, const tq_task *t, char *err, size_t errlen)
{
    if (!key_fits(app, queue, t->name, err, errlen)) return TQE_INVALID_TASK_NAME;
    add_arg a = {app, queue, t};
    return run_txn(s, 1, add_body, &a, err, errlen);
}

typedef struct { const char *app; const char *const *queues; const tq_task *const *tasks; size_t n; int *const *rc; } addmany_arg;

static int addmany_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    addmany_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        if (!key_fits(a->app, a->queues[i], a->tasks[i]->name, err, errlen)) { *a->rc[i] = TQE_INVALID_TASK_NAME; continue; }
        add_arg one = {a->app, a->queues[i], a->tasks[i]};
        int r = add_body(txn, &one, err, errlen);
        if (r <= TXN_INTERNAL) return r;          /* conflict or internal: the whole batch again / fails */
        *a->rc[i] = r;
        /* a task named twice in one batch: the second sees the first */
    }
    return TQE_OK;
}

int tq_store_add_many(tq_store *s, const char *app, const char *const *queues, const tq_task *const *tasks, size_t n,
                      int *const *rc, char *err, size_t errlen)
{
    addmany_arg a = {app, queues, tasks, n, rc};
    int r = run_txn(s, 1, addmany_body, &a, err, errlen);
    if (r != TQE_OK)
        for (size_t i = 0; i < n; i++) *rc[i] = r;
    return r;
}

int tq_store_add_in(kv_txn *txn, const char *app, const char *queue, const tq_task *t, char *err, size_t errlen)
{
    if (errlen) err[0] = 0;
    if (!key_fits(app, queue, t->name, err, errlen)) return KV_ERROR;
    add_arg a = {app, queue, t};
    int r = add_body(txn, &a, err, errlen);
    if (r == TQE_OK) return KV_OK;
    if (r == TXN_INTERNAL - KV_CONFLICT) return KV_CONFLICT;
    if (r != TXN_INTERNAL && !*err) set_err(err, errlen, "the task %s could not be added (error %d)", t->name, r);
    return KV_ERROR;
}

/* ---- delete ---- */

typedef struct { const char *app, *queue, *name; } del_arg;

static int del_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    del_arg *a = p;
    tq_task t;
    int rc = read_task(txn, a->app, a->queue, a->name, &t, err, errlen);
    if (rc == TQE_UNKNOWN_TASK) {
        buf k = BUF_INIT;
        const void *v;
        size_t vn;
        key_tomb(&k, a->app, a->queue, a->name);
        int kr = kv_get(txn, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
        buf_free(&k);
        if (kr == KV_OK) return TQE_TOMBSTONED_TASK;
        if (kr != KV_NOTFOUND) return kr == KV_CONFLICT ? TXN_INTERNAL - KV_CONFLICT : TXN_INTERNAL;
        return TQE_UNKNOWN_TASK;
    }
    if (rc != TQE_OK) return rc;
    rc = remove_task(txn, a->app, a->queue, &t, 1, err, errlen);
    tq_task_free(&t);
    return rc;
}

int tq_store_delete(tq_store *s, const char *app, const char *queue, const char *name, char *err, size_t errlen)
{
    if (!key_fits(app, queue, name, err, errlen)) return TQE_UNKNOWN_TASK;
    del_arg a = {app, queue, name};
    return run_txn(s, 1, del_body, &a, err, errlen);
}

typedef struct { const char *app, *queue; const char *const *names; size_t n; } delmany_arg;

static int delmany_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    delmany_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        if (!key_fits(a->app, a->queue, a->names[i], err, errlen)) continue;
        del_arg d = {a->app, a->queue, a->names[i]};
        int rc = del_body(txn, &d, err, errlen);
        if (rc != TQE_OK && rc != TQE_UNKNOWN_TASK && rc != TQE_TOMBSTONED_TASK) return rc;
    }
    return TQE_OK;
}

int tq_store_delete_many(tq_store *s, const char *app, const char *queue, const char *const *names, size_t n,
                         char *err, size_t errlen)
{
    delmany_arg a = {app, queue, names, n};
    return run_txn(s, 1, delmany_body, &a, err, errlen);
}

/* ---- scans ---- */

/* Calls fn for every row under prefix+sub, in key order, until fn returns nonzero. */
typedef int (*row_fn)(kv_txn *txn, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn, void *arg);

static int scan(kv_txn *txn, const buf *prefix, const void *start, size_t start_len, row_fn fn, void *arg,
                char *err, size_t errlen)
{
    kv_cursor *c;
    int rc = kv_cursor_open(txn, &c, err, errlen);
    if (rc != KV_OK) return rc == KV_CONFLICT ? TXN_INTERNAL - KV_CONFLICT : TXN_INTERNAL;
    const uint8_t *pp = (const uint8_t *)buf_rp(prefix);
    size_t pn = buf_unread(prefix);
    rc = start ? kv_seek(c, start, start_len, KV_FWD, err, errlen) : kv_seek(c, pp, pn, KV_FWD, err, errlen);
    int out = TQE_OK;
    while (rc == KV_OK) {
        const void *k, *v;
        size_t kn, vn;
        kv_cursor_get(c, &k, &kn, &v, &vn);
        if (kn < pn || memcmp(k, pp, pn)) break;
        int r = fn(txn, k, kn, v, vn, arg);
        if (r) { out = r > 0 ? TQE_OK : r; break; }
        rc = kv_next(c, err, errlen);
    }
    if (rc != KV_OK && rc != KV_NOTFOUND) out = rc == KV_CONFLICT ? TXN_INTERNAL - KV_CONFLICT : TXN_INTERNAL;
    kv_cursor_close(c);
    return out;
}

/* Collects (eta, name) pairs from the ETA index. */
typedef struct {
    size_t pn;
    int64_t upto;              /* only ETA <= upto */
    size_t max;
    int64_t *etas;
    char **names;
    size_t n;
} eta_collect;

static int collect_eta(kv_txn *txn, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn, void *arg)
{
    eta_collect *e = arg;
    if (kn < e->pn + 8) return 0;
    int64_t eta = (int64_t)(get_be64(k + e->pn) ^ (UINT64_C(1) << 63));
    if (eta > e->upto) return 1;
    e->etas = xrealloc(e->etas, (e->n + 1) * sizeof *e->etas);
    e->names = xrealloc(e->names, (e->n + 1) * sizeof *e->names);
    e->etas[e->n] = eta;
    e->names[e->n++] = xstrndup((const char *)k + e->pn + 8, kn - e->pn - 8);
    return e->n >= e->max;
}

static void eta_collect_free(eta_collect *e)
{
    for (size_t i = 0; i < e->n; i++) free(e->names[i]);
    free(e->names);
    free(e->etas);
    e->names = NULL;
    e->etas = NULL;
    e->n = 0;
}

/* ---- lease ---- */

typedef struct {
    const char *app, *queue;
    int64_t now, lease;
    size_t max;
    int pull, group_by_tag;
    const char *tag;
    tq_task *out;
    size_t n;
} lease_arg;

static int lease_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    lease_arg *a = p;
    for (size_t i = 0; i < a->n; i++) tq_task_free(&a->out[i]);
    a->n = 0;
    buf pre = BUF_INIT;
    key_prefix(&pre, a->app, a->queue);
    buf_puts(&pre, "e/");
    /* Without tag filtering the first max due rows are the answer; with it,
     * every due row may have to be looked at. */
    int filtering = a->pull && (a->tag || a->group_by_tag);
    eta_collect e = {.pn = buf_unread(&pre), .upto = a->now, .max = filtering ? (size_t)1 << 30 : a->max};
    int rc = scan(txn, &pre, NULL, 0, collect_eta, &e, err, errlen);
    buf_free(&pre);
    if (rc != TQE_OK) { eta_collect_free(&e); return rc; }
    char *want = a->tag ? xstrdup(a->tag) : NULL;
    for (size_t i = 0; i < e.n && a->n < a->max; i++) {
        tq_task t;
        rc = read_task(txn, a->app, a->queue, e.names[i], &t, err, errlen);
        if (rc == TQE_UNKNOWN_TASK) continue;
        if (rc != TQE_OK) break;
        if (a->pull && (want || a->group_by_tag)) {
            if (!want) want = xstrdup(t.tag ? t.tag : "");
            if (strcmp(want, t.tag ? t.tag : "")) { tq_task_free(&t); continue; }
        }
        int64_t old = t.eta_us;
        rc = remove_task(txn, a->app, a->queue, &t, 0, err, errlen);
        if (rc != TQE_OK) { tq_task_free(&t); break; }
        t.orig_eta_us = old;
        t.eta_us = a->now + a->lease;
        if (a->pull) t.retry_count++;
        if (!t.first_try_us) t.first_try_us = a->now;
        rc = write_task(txn, a->app, a->queue, &t, err, errlen);
        if (rc != TQE_OK) { tq_task_free(&t); break; }
        a->out = xrealloc(a->out, (a->n + 1) * sizeof *a->out);
        a->out[a->n++] = t;
    }
    free(want);
    eta_collect_free(&e);
    return rc == TQE_UNKNOWN_TASK ? TQE_OK : rc;
}

int tq_store_lease(tq_store *s, const char *app, const char *queue, int64_t now_us, int64_t lease_us,
                   size_t max, int pull, const char *tag, int group_by_tag,
                   tq_task **out, size_t *n, char *err, size_t errlen)
{
    lease_arg a = {app, queue, now_us, lease_us, max, pull, group_by_tag, tag, NULL, 0};
    int rc = run_txn(s, 1, lease_body, &a, err, errlen);
    if (rc != TQE_OK) {
        for (size_t i = 0; i < a.n; i++) tq_task_free(&a.out[i]);
        free(a.out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = a.out;
    *n = a.n;
    return TQE_OK;
}

/* ---- modify lease ---- */

typedef struct { const char *app, *queue, *name; int64_t eta, now, lease, new_eta; } mod_arg;

static int mod_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    mod_arg *a = p;
    tq_task t;
    int rc = read_task(txn, a->app, a->queue, a->name, &t, err, errlen);
    if (rc != TQE_OK) return rc;
    if (t.eta_us != a->eta || t.eta_us <= a->now) {
        tq_task_free(&t);
        set_err(err, errlen, "the lease on task %s has expired or was taken by another lease", a->name);
        return TQE_TASK_LEASE_EXPIRED;
    }
    rc = remove_task(txn, a->app, a->queue, &t, 0, err, errlen);
    if (rc == TQE_OK) {
        t.eta_us = a->now + a->lease;
        a->new_eta = t.eta_us;
        rc = write_task(txn, a->app, a->queue, &t, err, errlen);
    }
    tq_task_free(&t);
    return rc;
}

int tq_store_modify_lease(tq_store *s, const char *app, const char *queue, const char *name,
                          int64_t eta_us, int64_t now_us, int64_t lease_us, int64_t *new_eta,
                          char *err, size_t errlen)
{
    if (!key_fits(app, queue, name, err, errlen)) return TQE_UNKNOWN_TASK;
    mod_arg a = {app, queue, name, eta_us, now_us, lease_us, 0};
    int rc = run_txn(s, 1, mod_body, &a, err, errlen);
    *new_eta = a.new_eta;
    return rc;
}

/* ---- reschedule ---- */

typedef struct { const char *app, *queue; const tq_task *t; int64_t old_eta; } resched_arg;

static int resched_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    resched_arg *a = p;
    tq_task cur;
    int rc = read_task(txn, a->app, a->queue, a->t->name, &cur, err, errlen);
    if (rc != TQE_OK) return rc;      /* deleted or purged meanwhile: nothing to do */
    if (cur.eta_us != a->old_eta) { tq_task_free(&cur); return TQE_TASK_LEASE_EXPIRED; }
    rc = remove_task(txn, a->app, a->queue, &cur, 0, err, errlen);
    tq_task_free(&cur);
    if (rc != TQE_OK) return rc;
    return write_task(txn, a->app, a->queue, a->t, err, errlen);
}

int tq_store_reschedule(tq_store *s, const char *app, const char *queue, const tq_task *t, int64_t old_eta_us,
                        char *err, size_t errlen)
{
    resched_arg a = {app, queue, t, old_eta_us};
    return run_txn(s, 1, resched_body, &a, err, errlen);
}

/* ---- purge, stats, list ---- */

typedef struct { const char *app, *queue; } q_arg;

static int purge_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    q_arg *a = p;
    static const char *subs[] = {"t/", "e/"};
    for (int i = 0; i < 2; i++) {
        buf pre = BUF_INIT;
        key_prefix(&pre, a->app, a->queue);
        buf_puts(&pre, subs[i]);
        /* Deleting under a live cursor: re-seek each time by scanning one row at a time. */
        int rc;
        for (;;) {
            int got = 0;
            kv_cursor *c;
            rc = kv_cursor_open(txn, &c, err, errlen);
            if (rc != KV_OK) break;
            rc = kv_seek(c, buf_rp(&pre), buf_unread(&pre), KV_FWD, err, errlen);
            if (rc == KV_OK) {
                const void *k, *v;
                size_t kn, vn;
                kv_cursor_get(c, &k, &kn, &v, &vn);
                if (kn >= buf_unread(&pre) && !memcmp(k, buf_rp(&pre), buf_unread(&pre))) {
                    buf kk = BUF_INIT;
                    buf_append(&kk, k, kn);
                    kv_cursor_close(c);
                    c = NULL;
                    rc = kv_del(txn, buf_rp(&kk), buf_unread(&kk), err, errlen);
                    buf_free(&kk);
                    got = 1;
                }
            }
            if (c) kv_cursor_close(c);
            if (!got || (rc != KV_OK && rc != KV_NOTFOUND)) break;
        }
        buf_free(&pre);
        if (rc == KV_CONFLICT) return TXN_INTERNAL - KV_CONFLICT;
        if (rc != KV_OK && rc != KV_NOTFOUND) return TXN_INTERNAL;
    }
    return TQE_OK;
}

int tq_store_purge(tq_store *s, const char *app, const char *queue, char *err, size_t errlen)
{
    q_arg a = {app, queue};
    return run_txn(s, 1, purge_body, &a, err, errlen);
}

typedef struct { const char *app, *queue; int paused; } pause_arg;

static int pause_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    pause_arg *a = p;
    buf k = BUF_INIT;
    key_prefix(&k, a->app, a->queue);
    buf_putc(&k, 's');
    int rc = a->paused ? kv_put(txn, buf_rp(&k), buf_unread(&k), "p", 1, err, errlen)
                       : kv_del(txn, buf_rp(&k), buf_unread(&k), err, errlen);
    buf_free(&k);
    KVCHECK(rc);
    return TQE_OK;
}

int tq_store_set_paused(tq_store *s, const char *app, const char *queue, int paused, char *err, size_t errlen)
{
    pause_arg a = {app, queue, paused};
    return run_txn(s, 1, pause_body, &a, err, errlen);
}

static int paused_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    pause_arg *a = p;
    buf k = BUF_INIT;
    key_prefix(&k, a->app, a->queue);
    buf_putc(&k, 's');
    const void *v;
    size_t vn;
    int rc = kv_get(txn, buf_rp(&k), buf_unread(&k), &v, &vn, err, errlen);
    buf_free(&k);
    KVCHECK(rc);
    a->paused = rc == KV_OK;
    return TQE_OK;
}

int tq_store_paused(tq_store *s, const char *app, const char *queue)
{
    pause_arg a = {app, queue, 0};
    char err[200];
    if (run_txn(s, 0, paused_body, &a, err, sizeof err) != TQE_OK) return 0;
    return a.paused;
}

typedef struct { size_t pn; int64_t count, oldest; } stat_acc;

static int count_row(kv_txn *txn, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn, void *arg)
{
    stat_acc *s = arg;
    if (kn < s->pn + 8) return 0;
    int64_t eta = (int64_t)(get_be64(k + s->pn) ^ (UINT64_C(1) << 63));
    if (s->count++ == 0) s->oldest = eta;
    return 0;
}

typedef struct { const char *app, *queue; stat_acc acc; } stats_arg;

static int stats_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    stats_arg *a = p;
    buf pre = BUF_INIT;
    key_prefix(&pre, a->app, a->queue);
    buf_puts(&pre, "e/");
    a->acc = (stat_acc){.pn = buf_unread(&pre)};
    int rc = scan(txn, &pre, NULL, 0, count_row, &a->acc, err, errlen);
    buf_free(&pre);
    return rc;
}

int tq_store_stats(tq_store *s, const char *app, const char *queue, int64_t *count, int64_t *oldest_eta_us,
                   char *err, size_t errlen)
{
    stats_arg a = {app, queue, {0}};
    int rc = run_txn(s, 0, stats_body, &a, err, errlen);
    *count = a.acc.count;
    *oldest_eta_us = a.acc.oldest;
    return rc;
}

int64_t tq_store_next_eta(tq_store *s, const char *app, const char *queue)
{
    char err[200];
    int64_t n, oldest;
    if (tq_store_stats(s, app, queue, &n, &oldest, err, sizeof err) != TQE_OK || n == 0) return INT64_MAX;
    return oldest;
}

typedef struct { const char *app, *queue; int64_t start; size_t max; tq_task *out; size_t n; } list_arg;

static int list_body(kv_txn *txn, void *p, char *err, size_t errlen)
{
    list_arg *a = p;
    for (size_t i = 0; i < a->n; i++) tq_task_free(&a->out[i]);
    a->n = 0;
    buf pre = BUF_INIT, start = BUF_INIT;
    key_prefix(&pre, a->app, a->queue);
    buf_puts(&pre, "e/");
    buf_append(&start, buf_rp(&pre), buf_unread(&pre));
    put_be64(&start, eta_bits(a->start));
    eta_collect e = {.pn = buf_unread(&pre), .upto = INT64_MAX, .max = a->max};
    int rc = scan(txn, &pre, buf_rp(&start), buf_unread(&start), collect_eta, &e, err, errlen);
    buf_free(&pre);
    buf_free(&start);
    for (size_t i = 0; rc == TQE_OK && i < e.n; i++) {
        tq_task t;
        int r = read_task(txn, a->app, a->queue, e.names[i], &t, err, errlen);
        if (r == TQE_UNKNOWN_TASK) continue;
        if (r != TQE_OK) { rc = r; break; }
        a->out = xrealloc(a->out, (a->n + 1) * sizeof *a->out);
        a->out[a->n++] = t;
    }
    eta_collect_free(&e);
    return rc;
}

int tq_store_list(tq_store *s, const char *app, const char *queue, int64_t start_eta_us, size_t max,
                  tq_task **out, size_t *n, char *err, size_t errlen)
{
    list_arg a = {app, queue, start_eta_us, max, NULL, 0};
    int rc = run_txn(s, 0, list_body, &a, err, errlen);
    *out = a.out;
    *n = a.n;
    return rc;
}
