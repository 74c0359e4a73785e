/* store.c - the per-app request log in LMDB. See store.h.
 *
 * Three databases in HOME/applogs/PROJECT/:
 *   req   seq (8 bytes, big-endian; grows with every write) -> header + RequestLog
 *         header: 8 bytes time (end, or start while incomplete, Unix us, BE),
 *         1 byte finished, 1 byte highest app log level + 1 (0: none), 6 spare;
 *         then the RequestLog protobuf (log_service.proto) without offset,
 *         combined and lines, which are added when it is read.
 *   rid   request id -> seq of its record
 *   line  request id, 0, 8-byte line sequence -> UserAppLogLine (the same
 *         fields as LogLine: 1 time, 2 level, 3 message, so it is copied as is)
 * A request's record moves to a new seq when it is rewritten (lines arrive
 * first: an incomplete record; then the router's: the finished one), so seq
 * order is the order requests finished, and reading newest first is a
 * backwards cursor walk. An offset is the seq of the last record returned.
 *
 * Writes go through a queue to one writer thread, which lets a batch gather
 * for 20 ms (or 5000 records, or until a reader asks for everything written
 * so far with logstore_sync), commits it in one transaction and then prunes: records whose time is older
 * than max_age, then the oldest records while the used pages exceed
 * max_bytes. The environment is opened MDB_NOSYNC: a commit reaches the
 * kernel at once (it survives the daemon's crash and restart) and is synced
 * to disk when the store closes and every few seconds by the writer. */
#include "logs/store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"

#define HDR          16
#define QUEUE_MAX    100000
#define MAX_RID      64
#define PRUNE_BATCH  2000
#define SYNC_EVERY_US (5LL * 1000000)
#define BATCH_WAIT_US 20000       /* a batch gathers this long... */
#define BATCH_MAX     5000        /* ...or until this many are queued */

enum { Q_REQUEST = 1, Q_LINES };

typedef struct qitem {
    int kind;
    char rid[MAX_RID + 1];
    int64_t time_us;              /* end (request) or start (lines) */
    int64_t start_us, size;       /* Q_REQUEST */
    int status;
    buf data;                     /* Q_REQUEST: packed strings; Q_LINES: UserAppLogGroup */
    buf meta;                     /* Q_LINES: app id and version for an incomplete record */
    struct qitem *next;
} qitem;

struct logstore {
    MDB_env *env;
    MDB_dbi req, rid, line;
    int writable;
    logstore_limits lim;
    char *project;
    uint64_t next_seq, next_line;

    pthread_mutex_t mu;
    pthread_cond_t cv, done_cv;
    qitem *head, *tail;
    long queued, dropped;
    uint64_t enq_gen, done_gen;   /* items handed in / committed */
    int stop, started;
    int sync_wanted;              /* logstore_sync waits: commit now */
    pthread_t writer;
    int64_t last_sync_us;
    buf enc;                      /* writer thread: a record being encoded */
};

static void put_be64(uint8_t *p, uint64_t v) { for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; } }
static uint64_t get_be64(const uint8_t *p) { uint64_t v = 0; for (int i = 0; i < 8; i++) v = v << 8 | p[i]; return v; }

int logstore_offset_decode(const uint8_t *p, size_t n, uint64_t *seq)
{
    if (n != 8) return -1;
    *seq = get_be64(p);
    return 0;
}

void logstore_limits_from_env(logstore_limits *l)
{
    l->max_age_s = 7 * 86400;
    l->max_bytes = 256LL << 20;
    const char *a = getenv("CYCLOZZO_LOG_MAX_AGE"), *m = getenv("CYCLOZZO_LOG_MAX_MB");
    if (a && *a) { char *e; long long v = strtoll(a, &e, 10); if (!*e && v > 0) l->max_age_s = v; }
    if (m && *m) { char *e; long long v = strtoll(m, &e, 10); if (!*e && v > 0) l->max_bytes = v << 20; }
}

/* ---- writing (the writer thread) ---- */

static void put_opt(buf *b, uint32_t f, const char *s)
{
    if (s && *s) pb_put_str(b, f, s);
}

static void encode_request(const qitem *it, buf *b);

static int get_seq_of(MDB_txn *txn, logstore *ls, const char *rid, uint64_t *seq)
{
    MDB_val k = {strlen(rid), (void *)rid}, v;
    if (mdb_get(txn, ls->rid, &k, &v) != 0 || v.mv_size != 8) return -1;
    *seq = get_be64(v.mv_data);
    return 0;
}

/* Store value (header + pb) for rid at a new seq, removing its old record
 * (at old_seq, when has_old: the caller has looked it up already). */
static int put_record(MDB_txn *txn, logstore *ls, const char *rid, const uint8_t *hdr, const void *pb, size_t n,
                      int has_old, uint64_t old_seq)
{
    if (has_old) {
        uint8_t ok[8];
        put_be64(ok, old_seq);
        MDB_val k = {8, ok};
        mdb_del(txn, ls->req, &k, NULL);
    }
    uint8_t sk[8];
    uint64_t seq = ls->next_seq++;
    put_be64(sk, seq);
    MDB_val k = {8, sk}, v = {HDR + n, NULL};
    int rc = mdb_put(txn, ls->req, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc) return rc;
    memcpy(v.mv_data, hdr, HDR);
    memcpy((uint8_t *)v.mv_data + HDR, pb, n);
    MDB_val rk = {strlen(rid), (void *)rid}, rv = {8, sk};
    return mdb_put(txn, ls->rid, &rk, &rv, 0);
}

/* The record of rid as (header copy, pb view) and its seq; -1 if none. */
static int get_record(MDB_txn *txn, logstore *ls, const char *rid, uint8_t *hdr, MDB_val *pb, uint64_t *seq_out)
{
    uint64_t seq;
    if (get_seq_of(txn, ls, rid, &seq) < 0) return -1;
    uint8_t sk[8];
    put_be64(sk, seq);
    MDB_val k = {8, sk}, v;
    if (mdb_get(txn, ls->req, &k, &v) != 0 || v.mv_size < HDR) return -1;
    memcpy(hdr, v.mv_data, HDR);
    pb->mv_data = (uint8_t *)v.mv_data + HDR;
    pb->mv_size = v.mv_size - HDR;
    *seq_out = seq;
    return 0;
}

static int write_request(MDB_txn *txn, logstore *ls, qitem *it)
{
    uint8_t hdr[HDR] = {0}, old[HDR];
    MDB_val pb;
    uint64_t old_seq = 0;
    int has_old = get_record(txn, ls, it->rid, old, &pb, &old_seq) == 0;
    if (has_old) hdr[9] = old[9];   /* keep the lines' level */
    put_be64(hdr, (uint64_t)it->time_us);
    hdr[8] = 1;
    buf_reset(&ls->enc);            /* the writer's buffer, reused record to record */
    encode_request(it, &ls->enc);
    return put_record(txn, ls, it->rid, hdr, ls->enc.data, ls->enc.len, has_old, old_seq);
}

static int write_lines(MDB_txn *txn, logstore *ls, qitem *it)
{
    /* The lines, and their highest level. */
    int maxlvl = -1, rc;
    pb_reader r;
    pb_reader_init(&r, it->data.data, it->data.len);
    uint32_t f;
    int wt;
    size_t rl = strlen(it->rid);
    uint8_t key[MAX_RID + 9];
    memcpy(key, it->rid, rl);
    key[rl] = 0;
    while (pb_next(&r, &f, &wt) > 0) {
        const uint8_t *p;
        size_t n;
        if (f != 2 || pb_bytes(&r, wt, &p, &n) < 0) { if (pb_skip(&r, wt, f) < 0) break; continue; }
        pb_reader lr;
        pb_reader_init(&lr, p, n);
        uint32_t lf;
        int lwt;
        while (pb_next(&lr, &lf, &lwt) > 0) {
            int64_t v;
            if (lf == 2 && pb_int64(&lr, lwt, &v) == 0) { if (v > maxlvl) maxlvl = (int)(v > 250 ? 250 : v); }
            else if (pb_skip(&lr, lwt, lf) < 0) break;
        }
        put_be64(key + rl + 1, ls->next_line++);
        MDB_val k = {rl + 9, key}, v = {n, (void *)p};
        if ((rc = mdb_put(txn, ls->line, &k, &v, 0)) != 0) return rc;
    }
    uint8_t hdr[HDR];
    MDB_val pb;
    uint64_t seq;
    if (get_record(txn, ls, it->rid, hdr, &pb, &seq) == 0) {
        if (maxlvl + 1 <= hdr[9]) return 0;
        hdr[9] = (uint8_t)(maxlvl + 1);
        /* rewrite in place (same seq): a finished record keeps its order */
        uint8_t sk[8];
        put_be64(sk, seq);
        buf copy = BUF_INIT;
        buf_append(&copy, hdr, HDR);
        buf_append(&copy, pb.mv_data, pb.mv_size);
        MDB_val k = {8, sk}, v = {copy.len, copy.data};
        rc = mdb_put(txn, ls->req, &k, &v, 0);
        buf_free(&copy);
        return rc;
    }
    /* Not finished yet: an incomplete record from what the ticket said. */
    memset(hdr, 0, HDR);
    put_be64(hdr, (uint64_t)it->time_us);
    hdr[8] = 0;
    hdr[9] = (uint8_t)(maxlvl + 1);
    buf b = BUF_INIT;
    const char *app = it->meta.data ? it->meta.data : "";
    const char *ver = app + strlen(app) + 1;
    pb_put_str(&b, 1, app);
    pb_put_str(&b, 2, it->meta.len ? ver : "");
    pb_put_bytes(&b, 3, it->rid, rl);
    pb_put_int(&b, 6, it->time_us);
    pb_put_bool(&b, 27, 0);
    rc = put_record(txn, ls, it->rid, hdr, b.data, b.len, 0, 0);
    buf_free(&b);
    return rc;
}

static void free_items(qitem *it)
{
    while (it) {
        qitem *nx = it->next;
        buf_free(&it->data);
        buf_free(&it->meta);
        free(it);
        it = nx;
    }
}

static int commit_batch(logstore *ls, qitem *items)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
    if (rc) return rc;
    uint64_t seq0 = ls->next_seq, line0 = ls->next_line;
    for (qitem *it = items; it && !rc; it = it->next)
        rc = it->kind == Q_REQUEST ? write_request(txn, ls, it) : write_lines(txn, ls, it);
    if (rc) { mdb_txn_abort(txn); ls->next_seq = seq0; ls->next_line = line0; return rc; }
    return mdb_txn_commit(txn);
}

static void *writer_main(void *arg)
{
    logstore *ls = arg;
    pthread_mutex_lock(&ls->mu);
    for (;;) {
        while (!ls->head && !ls->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&ls->cv, &ls->mu, &ts);
            if (!ls->head) break;
        }
        if (ls->head && !ls->stop && !ls->sync_wanted) {
            /* Let a batch gather: one commit per BATCH_WAIT_US under load,
             * not one per request. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += BATCH_WAIT_US * 1000;
            if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
            while (!ls->stop && !ls->sync_wanted && ls->queued < BATCH_MAX &&
                   pthread_cond_timedwait(&ls->cv, &ls->mu, &ts) == 0) {}
        }
        ls->sync_wanted = 0;
        qitem *items = ls->head;
        uint64_t gen = ls->enq_gen;
        long dropped = ls->dropped;
        ls->head = ls->tail = NULL;
        ls->queued = 0;
        ls->dropped = 0;
        int stop = ls->stop;
        pthread_mutex_unlock(&ls->mu);

        if (dropped) log_warn("logs", "app=%s msg=\"request log queue full; records dropped\" dropped=%ld", log_q(ls->project), dropped);
        if (items) {
            int rc = commit_batch(ls, items);
            if (rc == MDB_MAP_FULL) {
                /* Make room, then try once more. */
                logstore_limits keep = ls->lim;
                ls->lim.max_bytes /= 2;
                logstore_prune(ls, wall_us());
                ls->lim = keep;
                rc = commit_batch(ls, items);
            }
            if (rc) log_error("logs", "app=%s msg=\"cannot write the request log\" err=%s", log_q(ls->project), log_q(mdb_strerror(rc)));
            free_items(items);
        }
        /* Prune in rounds until under the limits, so that a store taking
         * more records per batch than one round deletes still keeps to
         * max_bytes (bounded: the next batch goes on pruning). */
        for (int round = 0; round < 8 && logstore_prune(ls, wall_us()) == PRUNE_BATCH; round++) {}
        int64_t now = now_us();
        if (now - ls->last_sync_us > SYNC_EVERY_US) { mdb_env_sync(ls->env, 1); ls->last_sync_us = now; }

        pthread_mutex_lock(&ls->mu);
        if (gen > ls->done_gen) ls->done_gen = gen;
        pthread_cond_broadcast(&ls->done_cv);
        if (stop && !ls->head) break;
    }
    pthread_mutex_unlock(&ls->mu);
    return NULL;
}

static void enqueue(logstore *ls, qitem *it)
{
    pthread_mutex_lock(&ls->mu);
    if (ls->queued >= QUEUE_MAX || ls->stop) {
        ls->dropped++;
        pthread_mutex_unlock(&ls->mu);
        free_items(it);
        return;
    }
    if (ls->tail) ls->tail->next = it; else ls->head = it;
    ls->tail = it;
    ls->queued++;
    ls->enq_gen++;
    if (ls->queued == 1 || ls->queued == BATCH_MAX) pthread_cond_signal(&ls->cv);
    pthread_mutex_unlock(&ls->mu);
}

/* The router's thread only copies the record into the queue item (strings
 * packed NUL-separated in data, in this order); the writer encodes it. */
enum { RS_APP, RS_MODULE, RS_VERSION, RS_IP, RS_NICK, RS_METHOD, RS_RESOURCE, RS_HTTPV, RS_REF, RS_UA, RS_HOST, RS_N };

void logstore_add_request(logstore *ls, const logrec *r)
{
    if (!ls || !ls->writable || !r->request_id || strlen(r->request_id) > MAX_RID) return;
    qitem *it = xcalloc(1, sizeof *it);
    it->kind = Q_REQUEST;
    snprintf(it->rid, sizeof it->rid, "%s", r->request_id);
    it->time_us = r->end_us;
    it->start_us = r->start_us;
    it->status = r->status;
    it->size = r->response_size;
    const char *v[RS_N] = {r->app_id, r->module, r->version, r->ip, r->nickname, r->method, r->resource,
                           r->http_version, r->referrer, r->user_agent, r->host};
    size_t len[RS_N], total = 0;
    for (int i = 0; i < RS_N; i++) total += (len[i] = v[i] ? strlen(v[i]) : 0) + 1;
    buf_reserve(&it->data, total);          /* one allocation for the strings */
    for (int i = 0; i < RS_N; i++) buf_append(&it->data, v[i] ? v[i] : "", len[i] + 1);
    enqueue(ls, it);
}

/* Turn a packed Q_REQUEST item into the RequestLog it stores. */
static void encode_request(const qitem *it, buf *b)
{
    const char *v[RS_N];
    const char *p = it->data.data;
    for (int i = 0; i < RS_N; i++) { v[i] = p; p += strlen(p) + 1; }
    pb_put_str(b, 1, v[RS_APP]);
    pb_put_str(b, 37, *v[RS_MODULE] ? v[RS_MODULE] : "default");
    pb_put_str(b, 2, v[RS_VERSION]);
    pb_put_str(b, 3, it->rid);
    pb_put_str(b, 4, v[RS_IP]);
    put_opt(b, 5, v[RS_NICK]);
    pb_put_int(b, 6, it->start_us);
    pb_put_int(b, 7, it->time_us);
    pb_put_int(b, 8, it->time_us - it->start_us);
    pb_put_int(b, 9, 0);
    pb_put_str(b, 10, v[RS_METHOD]);
    pb_put_str(b, 11, v[RS_RESOURCE]);
    pb_put_str(b, 12, v[RS_HTTPV]);
    pb_put_int(b, 13, it->status);
    pb_put_int(b, 14, it->size);
    put_opt(b, 15, v[RS_REF]);
    put_opt(b, 16, v[RS_UA]);
    pb_put_str(b, 17, "");
    put_opt(b, 20, v[RS_HOST]);
    pb_put_bool(b, 27, 1);
}

void logstore_add_lines(logstore *ls, const char *app_id, const char *version, const char *request_id,
                        int64_t start_us, const uint8_t *group, size_t n)
{
    if (!ls || !ls->writable || !request_id || !*request_id || strlen(request_id) > MAX_RID || !n) return;
    qitem *it = xcalloc(1, sizeof *it);
    it->kind = Q_LINES;
    snprintf(it->rid, sizeof it->rid, "%s", request_id);
    it->time_us = start_us;
    buf_append(&it->data, group, n);
    buf_append(&it->meta, app_id ? app_id : "", strlen(app_id ? app_id : "") + 1);
    buf_append(&it->meta, version ? version : "", strlen(version ? version : "") + 1);
    enqueue(ls, it);
}

void logstore_sync(logstore *ls)
{
    if (!ls || !ls->started) return;
    pthread_mutex_lock(&ls->mu);
    uint64_t want = ls->enq_gen;
    if (ls->done_gen < want) { ls->sync_wanted = 1; pthread_cond_signal(&ls->cv); }
    while (ls->done_gen < want) pthread_cond_wait(&ls->done_cv, &ls->mu);
    pthread_mutex_unlock(&ls->mu);
}

/* ---- pruning ---- */

static int64_t used_bytes(logstore *ls, MDB_txn *txn)
{
    int64_t total = 0;
    MDB_dbi dbis[3] = {ls->req, ls->rid, ls->line};
    for (int i = 0; i < 3; i++) {
        MDB_stat st;
        if (mdb_stat(txn, dbis[i], &st) == 0)
            total += (int64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
    }
    return total;
}

static void delete_record(logstore *ls, MDB_txn *txn, MDB_cursor *cur, MDB_val *val)
{
    /* its request id (field 3) */
    const uint8_t *rid = NULL;
    size_t rl = 0;
    if (val->mv_size > HDR) {
        pb_reader r;
        pb_reader_init(&r, (uint8_t *)val->mv_data + HDR, val->mv_size - HDR);
        uint32_t f;
        int wt;
        while (pb_next(&r, &f, &wt) > 0) {
            if (f == 3) { pb_bytes(&r, wt, &rid, &rl); break; }
            if (pb_skip(&r, wt, f) < 0) break;
        }
    }
    char ridbuf[MAX_RID + 1];
    int have = rid && rl && rl <= MAX_RID;
    if (have) { memcpy(ridbuf, rid, rl); ridbuf[rl] = 0; }
    mdb_cursor_del(cur, 0);
    if (!have) return;
    MDB_val k = {rl, ridbuf};
    mdb_del(txn, ls->rid, &k, NULL);
    MDB_cursor *lc;
    if (mdb_cursor_open(txn, ls->line, &lc) != 0) return;
    uint8_t pre[MAX_RID + 1];
    memcpy(pre, ridbuf, rl);
    pre[rl] = 0;
    MDB_val lk = {rl + 1, pre}, lv;
    int rc = mdb_cursor_get(lc, &lk, &lv, MDB_SET_RANGE);
    while (rc == 0 && lk.mv_size > rl && !memcmp(lk.mv_data, pre, rl + 1)) {
        mdb_cursor_del(lc, 0);
        rc = mdb_cursor_get(lc, &lk, &lv, MDB_GET_CURRENT);
        if (rc == 0) continue;
        rc = mdb_cursor_get(lc, &lk, &lv, MDB_NEXT);
    }
    mdb_cursor_close(lc);
}

int logstore_prune(logstore *ls, int64_t now)
{
    if (!ls->writable) return 0;
    MDB_txn *txn;
    if (mdb_txn_begin(ls->env, NULL, 0, &txn) != 0) return -1;
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, ls->req, &cur) != 0) { mdb_txn_abort(txn); return -1; }
    int deleted = 0;
    int64_t cutoff = now - ls->lim.max_age_s * 1000000;
    MDB_val k, v;
    while (deleted < PRUNE_BATCH && mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0) {
        int64_t t = v.mv_size >= 8 ? (int64_t)get_be64(v.mv_data) : 0;
        if (t >= cutoff && used_bytes(ls, txn) <= ls->lim.max_bytes) break;
        delete_record(ls, txn, cur, &v);
        deleted++;
    }
    mdb_cursor_close(cur);
    if (!deleted) { mdb_txn_abort(txn); return 0; }
    if (mdb_txn_commit(txn) != 0) return -1;
    log_info("logs", "app=%s msg=\"pruned old request logs\" records=%d", log_q(ls->project), deleted);
    return deleted;
}

/* ---- reading ---- */

static int has_value(const uint8_t *const *vals, const size_t *lens, size_t n, const uint8_t *p, size_t l)
{
    for (size_t i = 0; i < n; i++)
        if (lens[i] == l && !memcmp(vals[i], p, l)) return 1;
    return 0;
}

/* Field f (bytes) of a RequestLog. */
static int pb_field(const uint8_t *p, size_t n, uint32_t want, const uint8_t **out, size_t *ol)
{
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == want) return pb_bytes(&r, wt, out, ol);
        if (pb_skip(&r, wt, f) < 0) return -1;
    }
    return -1;
}

/* Field 18, the Apache combined log line, made from the stored fields
 * (not stored: it would double the writer's work). */
static void put_combined(buf *out, const uint8_t *pb, size_t pn)
{
    const uint8_t *sv[17] = {0};
    size_t sl[17] = {0};
    int64_t start = 0, status = 0, size = 0;
    pb_reader r;
    pb_reader_init(&r, pb, pn);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        if (f == 6) pb_int64(&r, wt, &start);
        else if (f == 13) pb_int64(&r, wt, &status);
        else if (f == 14) pb_int64(&r, wt, &size);
        else if (f < 17 && wt == 2) pb_bytes(&r, wt, &sv[f], &sl[f]);
        else if (pb_skip(&r, wt, f) < 0) break;
    }
#define S(i, dash) (int)(sl[i] ? sl[i] : (dash) ? 1 : 0), (sl[i] ? (const char *)sv[i] : (dash) ? "-" : "")
    time_t sec = (time_t)(start / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char ts[64];
    strftime(ts, sizeof ts, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    buf c = BUF_INIT;
    buf_printf(&c, "%.*s - %.*s [%s] \"%.*s %.*s %.*s\" %lld %lld \"%.*s\" \"%.*s\"", S(4, 1), S(5, 1), ts,
               S(10, 1), S(11, 1), S(12, 1), (long long)status, (long long)size, S(15, 1), S(16, 1));
#undef S
    pb_put_bytes(out, 18, c.data, c.len);
    buf_free(&c);
}

/* Append one record (with offset and lines) if it passes q. 1 added, 0 skipped. */
static int emit(logstore *ls, MDB_txn *txn, const logquery *q, uint64_t seq, MDB_val *v, buf *out, int64_t *last_time)
{
    if (v->mv_size < HDR) return 0;
    const uint8_t *h = v->mv_data;
    int64_t t = (int64_t)get_be64(h);
    int finished = h[8], lvl = (int)h[9] - 1;
    const uint8_t *pb = h + HDR;
    size_t pn = v->mv_size - HDR;
    if (!finished && !q->include_incomplete) return 0;
    if (q->has_start && t < q->start_us) return 0;
    if (q->has_end && t >= q->end_us) return 0;
    if (q->min_level >= 0 && lvl < q->min_level) return 0;
    if (q->nversions) {
        const uint8_t *ver; size_t vl;
        if (pb_field(pb, pn, 2, &ver, &vl) < 0) return 0;
        /* a version id may be "module:version" or "version" */
        const uint8_t *mod; size_t ml;
        int ok = has_value(q->versions, q->version_lens, q->nversions, ver, vl);
        if (!ok && pb_field(pb, pn, 37, &mod, &ml) == 0 && ml + 1 + vl < 512) {
            uint8_t mv[512];
            memcpy(mv, mod, ml); mv[ml] = ':'; memcpy(mv + ml + 1, ver, vl);
            ok = has_value(q->versions, q->version_lens, q->nversions, mv, ml + 1 + vl);
        }
        if (!ok) return 0;
    }
    size_t m = pb_begin(out, 1);
    buf_append(out, pb, pn);
    if (finished) put_combined(out, pb, pn);
    uint8_t sk[8];
    put_be64(sk, seq);
    size_t om = pb_begin(out, 35);
    pb_put_bytes(out, 1, sk, 8);
    pb_end(out, om);
    if (q->include_app_logs) {
        const uint8_t *rid; size_t rl;
        if (pb_field(pb, pn, 3, &rid, &rl) == 0 && rl <= MAX_RID) {
            MDB_cursor *lc;
            if (mdb_cursor_open(txn, ls->line, &lc) == 0) {
                uint8_t pre[MAX_RID + 1];
                memcpy(pre, rid, rl);
                pre[rl] = 0;
                MDB_val lk = {rl + 1, pre}, lv;
                int rc = mdb_cursor_get(lc, &lk, &lv, MDB_SET_RANGE);
                while (rc == 0 && lk.mv_size > rl && !memcmp(lk.mv_data, pre, rl + 1)) {
                    pb_put_bytes(out, 29, lv.mv_data, lv.mv_size);
                    rc = mdb_cursor_get(lc, &lk, &lv, MDB_NEXT);
                }
                mdb_cursor_close(lc);
            }
        }
    }
    pb_end(out, m);
    *last_time = t;
    return 1;
}

int logstore_read(logstore *ls, const logquery *q, buf *out, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(ls->env, NULL, MDB_RDONLY, &txn);
    if (rc) { set_err(err, errlen, "cannot read the request log of %s: %s", ls->project, mdb_strerror(rc)); return -1; }
    int count = q->count > 0 ? (q->count > 1000 ? 1000 : q->count) : 20;
    int n = 0, more = 0;
    uint64_t last_seq = 0;
    int64_t last_time = 0;
    if (q->nrequest_ids) {
        /* Direct lookups, newest first. */
        typedef struct { uint64_t seq; } hit;
        hit *hits = xcalloc(q->nrequest_ids, sizeof *hits);
        size_t nh = 0;
        for (size_t i = 0; i < q->nrequest_ids; i++) {
            MDB_val k = {q->request_id_lens[i], (void *)q->request_ids[i]}, v;
            if (mdb_get(txn, ls->rid, &k, &v) == 0 && v.mv_size == 8) {
                uint64_t s = get_be64(v.mv_data);
                int dup = 0;
                for (size_t j = 0; j < nh; j++) if (hits[j].seq == s) dup = 1;
                if (!dup) hits[nh++].seq = s;
            }
        }
        for (size_t i = 1; i < nh; i++)          /* descending */
            for (size_t j = i; j > 0 && hits[j].seq > hits[j - 1].seq; j--) { hit t = hits[j]; hits[j] = hits[j - 1]; hits[j - 1] = t; }
        for (size_t i = 0; i < nh; i++) {
            if (q->before && hits[i].seq >= q->before) continue;
            if (q->after && hits[i].seq <= q->after) continue;
            if (n == count) { more = 1; break; }
            uint8_t sk[8];
            put_be64(sk, hits[i].seq);
            MDB_val k = {8, sk}, v;
            if (mdb_get(txn, ls->req, &k, &v) == 0 && emit(ls, txn, q, hits[i].seq, &v, out, &last_time)) { n++; last_seq = hits[i].seq; }
        }
        free(hits);
    } else {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, ls->req, &cur)) != 0) {
            mdb_txn_abort(txn);
            set_err(err, errlen, "cannot read the request log of %s: %s", ls->project, mdb_strerror(rc));
            return -1;
        }
        MDB_val k, v;
        uint8_t sk[8];
        if (q->before) {
            put_be64(sk, q->before);
            k.mv_size = 8; k.mv_data = sk;
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV) : mdb_cursor_get(cur, &k, &v, MDB_LAST);
        } else {
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        }
        for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
            if (k.mv_size != 8) continue;
            uint64_t seq = get_be64(k.mv_data);
            if (q->before && seq >= q->before) continue;
            if (q->after && seq <= q->after) break;
            if (v.mv_size >= HDR && q->has_start && (int64_t)get_be64(v.mv_data) < q->start_us && ((const uint8_t *)v.mv_data)[8]) {
                /* finished records are in end-time order: nothing older can match */
                break;
            }
            if (n == count) { more = 1; break; }
            if (emit(ls, txn, q, seq, &v, out, &last_time)) { n++; last_seq = seq; }
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    if (more && last_seq) {
        uint8_t sk[8];
        put_be64(sk, last_seq);
        size_t om = pb_begin(out, 2);
        pb_put_bytes(out, 1, sk, 8);
        pb_end(out, om);
    }
    if (n) pb_put_int(out, 3, last_time);
    return 0;
}

/* ---- lifecycle ---- */

logstore *logstore_open(const char *home, const char *project, int writable,
                        const logstore_limits *lim, char *err, size_t errlen)
{
    char *dir = xasprintf("%s/applogs/%s", home, project);
    logstore *ls = xcalloc(1, sizeof *ls);
    ls->project = xstrdup(project);
    ls->writable = writable;
    if (lim) ls->lim = *lim; else logstore_limits_from_env(&ls->lim);
    pthread_mutex_init(&ls->mu, NULL);
    pthread_cond_init(&ls->cv, NULL);
    pthread_cond_init(&ls->done_cv, NULL);
    int rc;
    MDB_txn *txn = NULL;
    if (strchr(project, '/') || !*project) { set_err(err, errlen, "\"%s\" is not an app id", project); goto fail; }
    if (writable && mkdir_p(dir, 0700) < 0) { set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno)); goto fail; }
    if ((rc = mdb_env_create(&ls->env)) != 0) { set_err(err, errlen, "cannot open the request log %s: %s", dir, mdb_strerror(rc)); goto fail; }
    size_t map = (size_t)ls->lim.max_bytes * 2 + (64u << 20);
    if (map > ((size_t)8 << 30)) map = (size_t)8 << 30;
    mdb_env_set_mapsize(ls->env, map);
    mdb_env_set_maxdbs(ls->env, 4);
    rc = mdb_env_open(ls->env, dir, MDB_NOTLS | MDB_NOSYNC | (writable ? 0 : MDB_RDONLY), 0600);
    if (rc) {
        if (rc == ENOENT) set_err(err, errlen, "app %s has no request log yet (%s does not exist)", project, dir);
        else set_err(err, errlen, "cannot open the request log %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = mdb_txn_begin(ls->env, NULL, writable ? 0 : MDB_RDONLY, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "req", writable ? MDB_CREATE : 0, &ls->req)) != 0 ||
        (rc = mdb_dbi_open(txn, "rid", writable ? MDB_CREATE : 0, &ls->rid)) != 0 ||
        (rc = mdb_dbi_open(txn, "line", writable ? MDB_CREATE : 0, &ls->line)) != 0) {
        if (txn) mdb_txn_abort(txn);
        set_err(err, errlen, "cannot open the request log %s: %s", dir, rc == MDB_NOTFOUND ? "it holds no logs yet" : mdb_strerror(rc));
        goto fail;
    }
    MDB_cursor *cur;
    MDB_val k, v;
    ls->next_seq = 1;
    if (mdb_cursor_open(txn, ls->req, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) ls->next_seq = get_be64(k.mv_data) + 1;
        mdb_cursor_close(cur);
    }
    ls->next_line = (uint64_t)wall_us() << 4;
    /* committed even when read-only: an aborted txn would close the dbi handles */
    if ((rc = mdb_txn_commit(txn)) != 0) { set_err(err, errlen, "cannot open the request log %s: %s", dir, mdb_strerror(rc)); goto fail; }
    if (writable) {
        ls->last_sync_us = now_us();
        if (pthread_create(&ls->writer, NULL, writer_main, ls) != 0) { set_err(err, errlen, "cannot start the request log writer"); goto fail; }
        ls->started = 1;
    }
    free(dir);
    return ls;
fail:
    free(dir);
    logstore_close(ls);
    return NULL;
}

void logstore_close(logstore *ls)
{
    if (!ls) return;
    if (ls->started) {
        pthread_mutex_lock(&ls->mu);
        ls->stop = 1;
        pthread_cond_signal(&ls->cv);
        pthread_mutex_unlock(&ls->mu);
        pthread_join(ls->writer, NULL);
    }
    free_items(ls->head);
    if (ls->env) {
        if (ls->writable && ls->started) mdb_env_sync(ls->env, 1);
        mdb_env_close(ls->env);
    }
    pthread_mutex_destroy(&ls->mu);
    pthread_cond_destroy(&ls->cv);
    pthread_cond_destroy(&ls->done_cv);
    buf_free(&ls->enc);
    free(ls->project);
    free(ls);
}
