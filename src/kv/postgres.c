/* postgres.c - the kv engine on PostgreSQL (libpq), for several machines
 * sharing one datastore.
 *
 * Storage is one table, kv(k bytea primary key, v bytea), created on first
 * open; bytea compares bytewise with the shorter prefix first, which is the
 * order kv.h promises. A write transaction runs at SERIALIZABLE, a read at
 * REPEATABLE READ READ ONLY (one snapshot). PostgreSQL's serialization
 * failures and deadlocks (SQLSTATE 40001, 40P01) surface as KV_CONFLICT from
 * whichever call met them, commit included, and callers retry, as with every
 * engine. Commits are durable when PostgreSQL acknowledges them (its own
 * synchronous_commit and fsync settings).
 *
 * Writers in one process take turns (a mutex held from kv_begin to the
 * commit or abort), as they do on LMDB: PostgreSQL's serializable
 * checks lock index pages, not keys, so concurrent writers of neighbouring
 * keys would otherwise fail each other often. Across processes and
 * machines, PostgreSQL alone decides, and conflicts are retried.
 *
 * Connections: a transaction takes a connection from a pool (a new one when
 * none is idle; at most POOL_IDLE are kept) and gives it back when it ends;
 * every connection prepares its statements once. Keys and values travel in
 * binary, never quoted into SQL.
 *
 * Cursors read in batches (16 rows, doubling to 512 while the scan goes on)
 * with `k > $1 ORDER BY k LIMIT n` and the mirror for backward scans; a step
 * inside the batch costs no round trip. A put or delete in the same
 * transaction makes every open cursor fetch again from its key on its next
 * step, so a scan sees the transaction's own writes as LMDB's do.
 *
 * Memory: a kv_get result stays valid until the next put/delete or until
 * GET_KEEP further gets; a cursor's row stays valid until the cursor has
 * moved past the next batch. Callers copy what they keep (kv.h). */
#include "kv/kv_engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "core/log.h"
#include "core/util.h"

#define POOL_IDLE 32
#define GET_KEEP 8
#define BATCH_MIN 16
#define BATCH_MAX 512

typedef struct {
    kv_engine base;
    char *conninfo;
    pthread_mutex_t mu;          /* guards idle */
    pthread_mutex_t wmu;         /* held by this process's write transaction */
    PGconn *idle[POOL_IDLE];
    size_t n_idle;
} pg_engine;

typedef struct {
    kv_txn base;
    PGconn *conn;
    int write;
    int failed;            /* 0, or the KV_* result of the error that broke it */
    unsigned gen;          /* bumped by every put/delete */
    PGresult *gets[GET_KEEP];
    size_t n_gets;
} pg_txn;

typedef struct {
    kv_cursor base;
    PGresult *cur, *prev;  /* current batch, and the one before it */
    int row, rows;         /* position in cur */
    int dir;               /* direction cur was read in */
    int complete;          /* cur holds every remaining row in dir */
    int batch;             /* rows to ask for next */
    unsigned gen;          /* txn->gen when cur was read */
} pg_cursor;

static const struct { const char *name, *sql; int nparams; } STMTS[] = {
    {"kv_get", "SELECT v FROM kv WHERE k = $1", 1},
    {"kv_put", "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", 2},
    {"kv_del", "DELETE FROM kv WHERE k = $1", 1},
    {"kv_ge", "SELECT k, v FROM kv WHERE k >= $1 ORDER BY k LIMIT $2", 2},
    {"kv_gt", "SELECT k, v FROM kv WHERE k > $1 ORDER BY k LIMIT $2", 2},
    {"kv_le", "SELECT k, v FROM kv WHERE k <= $1 ORDER BY k DESC LIMIT $2", 2},
    {"kv_lt", "SELECT k, v FROM kv WHERE k < $1 ORDER BY k DESC LIMIT $2", 2},
    {"kv_first", "SELECT k, v FROM kv ORDER BY k LIMIT $1", 1},
    {"kv_last", "SELECT k, v FROM kv ORDER BY k DESC LIMIT $1", 1},
};

/* One line from libpq's message (it ends in a newline). */
static void pg_msg(char *err, size_t errlen, const char *what, const char *msg)
{
    char m[400];
    snprintf(m, sizeof m, "%s", msg ? msg : "");
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) m[--n] = 0;
    set_err(err, errlen, "PostgreSQL %s failed: %s", what, m[0] ? m : "no reason given");
}

/* Classify a finished statement: KV_OK, KV_CONFLICT or KV_ERROR. */
static int res_status(PGresult *r, PGconn *c, const char *what, char *err, size_t errlen)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return KV_OK;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01"))) {
        set_err(err, errlen, "the transaction conflicted with another one (PostgreSQL %s)", state);
        return KV_CONFLICT;
    }
    pg_msg(err, errlen, what, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    return KV_ERROR;
}

static int simple(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int rc = res_status(r, c, what, err, errlen);
    PQclear(r);
    return rc;
}

static PGconn *connect_new(pg_engine *pe, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(pe->conninfo);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        pg_msg(err, errlen, "connection", c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    for (size_t i = 0; i < sizeof STMTS / sizeof STMTS[0]; i++) {
        PGresult *r = PQprepare(c, STMTS[i].name, STMTS[i].sql, STMTS[i].nparams, NULL);
        int rc = res_status(r, c, "preparing a statement", err, errlen);
        PQclear(r);
        if (rc != KV_OK) { PQfinish(c); return NULL; }
    }
    return c;
}

static PGconn *conn_take(pg_engine *pe, char *err, size_t errlen)
{
    PGconn *c = NULL;
    pthread_mutex_lock(&pe->mu);
    if (pe->n_idle) c = pe->idle[--pe->n_idle];
    pthread_mutex_unlock(&pe->mu);
    if (c && PQstatus(c) != CONNECTION_OK) { PQfinish(c); c = NULL; }
    return c ? c : connect_new(pe, err, errlen);
}

static void conn_give(pg_engine *pe, PGconn *c)
{
    if (!c) return;
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) { PQfinish(c); return; }
    pthread_mutex_lock(&pe->mu);
    if (pe->n_idle < POOL_IDLE) { pe->idle[pe->n_idle++] = c; c = NULL; }
    pthread_mutex_unlock(&pe->mu);
    PQfinish(c);
}

static void p_close(kv_engine *e)
{
    pg_engine *pe = (pg_engine *)e;
    for (size_t i = 0; i < pe->n_idle; i++) PQfinish(pe->idle[i]);
    pthread_mutex_destroy(&pe->mu);
    pthread_mutex_destroy(&pe->wmu);
    free(pe->conninfo);
    free(pe);
}

static void drop_gets(pg_txn *t)
{
    for (size_t i = 0; i < t->n_gets; i++) PQclear(t->gets[i]);
    t->n_gets = 0;
}

static void txn_end(pg_txn *t)
{
    pg_engine *pe = (pg_engine *)t->base.e;
    drop_gets(t);
    conn_give(pe, t->conn);
    if (t->write) pthread_mutex_unlock(&pe->wmu);
    free(t);
}

static int p_begin(kv_engine *e, int write, kv_txn **out, char *err, size_t errlen)
{
    pg_engine *pe = (pg_engine *)e;
    /* The SELECT takes the snapshot now (PostgreSQL would take it at the
     * first statement), so a transaction sees the data as of kv_begin, as
     * with LMDB; one round trip for both. */
    const char *sql = write ? "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1"
                            : "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1";
    /* A pooled connection may have died with a server restart: one retry
     * on a fresh connection. */
    if (write) pthread_mutex_lock(&pe->wmu);
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = conn_take(pe, err, errlen);
        if (!c) break;
        if (simple(c, sql, "starting a transaction", err, errlen) == KV_OK) {
            pg_txn *t = xcalloc(1, sizeof *t);
            t->base.e = e;
            t->conn = c;
            t->write = write;
            *out = &t->base;
            return KV_OK;
        }
        PQfinish(c);
    }
    if (write) pthread_mutex_unlock(&pe->wmu);
    return KV_ERROR;
}

static int p_commit(kv_txn *kt, char *err, size_t errlen)
{
    pg_txn *t = (pg_txn *)kt;
    int rc;
    if (t->failed) {
        rc = t->failed;
        set_err(err, errlen, rc == KV_CONFLICT ? "the transaction conflicted with another one"
                                               : "the transaction had already failed");
        char scratch[8];
        simple(t->conn, "ROLLBACK", "rollback", scratch, sizeof scratch);
    } else {
        PGresult *r = PQexec(t->conn, "COMMIT");
        rc = res_status(r, t->conn, "commit", err, errlen);
        /* A transaction PostgreSQL had already aborted "commits" as ROLLBACK. */
        if (rc == KV_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
            set_err(err, errlen, "PostgreSQL rolled the transaction back instead of committing it");
            rc = KV_ERROR;
        }
        PQclear(r);
    }
    txn_end(t);
    return rc;
}

static void p_abort(kv_txn *kt)
{
    pg_txn *t = (pg_txn *)kt;
    char err[8];
    simple(t->conn, "ROLLBACK", "rollback", err, sizeof err);
    txn_end(t);
}

/* Runs a prepared statement with a binary key (and value), binary results. */
static PGresult *run(pg_txn *t, const char *stmt, const void *k, size_t kn,
                     const void *v, size_t vn, int limit)
{
    char lim[16];
    const char *vals[2] = {k, v};
    int lens[2] = {(int)kn, (int)vn};
    int fmts[2] = {1, 1};
    int n = 0;
    if (k) n = 1;
    if (v) n = 2;
    if (limit) {
        snprintf(lim, sizeof lim, "%d", limit);
        vals[n] = lim; lens[n] = 0; fmts[n] = 0;
        n++;
    }
    return PQexecPrepared(t->conn, stmt, n, vals, lens, fmts, 1);
}

/* Records a failed statement on the transaction; returns its KV_* code. */
static int fail(pg_txn *t, PGresult *r, const char *what, char *err, size_t errlen)
{
    int rc = res_status(r, t->conn, what, err, errlen);
    PQclear(r);
    if (rc != KV_OK && !t->failed) t->failed = rc;
    return rc;
}

static int broken(pg_txn *t, char *err, size_t errlen)
{
    if (!t->failed) return 0;
    set_err(err, errlen, "the transaction has already failed and must be retried");
    return 1;
}

static int p_get(kv_txn *kt, const void *k, size_t kn, const void **v, size_t *vn, char *err, size_t errlen)
{
    pg_txn *t = (pg_txn *)kt;
    if (broken(t, err, errlen)) return t->failed;
    PGresult *r = run(t, "kv_get", k, kn, NULL, 0, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return fail(t, r, "a read", err, errlen);
    if (PQntuples(r) == 0) { PQclear(r); return KV_NOTFOUND; }
    if (t->n_gets == GET_KEEP) {
        PQclear(t->gets[0]);
        memmove(t->gets, t->gets + 1, (GET_KEEP - 1) * sizeof t->gets[0]);
        t->n_gets--;
    }
    t->gets[t->n_gets++] = r;
    *v = PQgetvalue(r, 0, 0);
    *vn = (size_t)PQgetlength(r, 0, 0);
    return KV_OK;
}

static int modify(pg_txn *t, const char *stmt, const void *k, size_t kn, const void *v, size_t vn,
                  const char *what, char *err, size_t errlen)
{
    if (broken(t, err, errlen)) return t->failed;
    if (!t->write) { set_err(err, errlen, "a write was attempted in a read-only transaction"); return KV_ERROR; }
    drop_gets(t);
    t->gen++;
    PGresult *r = run(t, stmt, k, kn, v, vn, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return fail(t, r, what, err, errlen);
    int found = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    return found ? KV_OK : KV_NOTFOUND;
}

static int p_put(kv_txn *kt, const void *k, size_t kn, const void *v, size_t vn, char *err, size_t errlen)
{
    return modify((pg_txn *)kt, "kv_put", k, kn, v ? v : "", vn, "a write", err, errlen);
}

static int p_del(kv_txn *kt, const void *k, size_t kn, char *err, size_t errlen)
{
    return modify((pg_txn *)kt, "kv_del", k, kn, NULL, 0, "a delete", err, errlen);
}

static int p_cursor_open(kv_txn *kt, kv_cursor **out, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    pg_cursor *c = xcalloc(1, sizeof *c);
    c->base.t = kt;
    c->batch = BATCH_MIN;
    *out = &c->base;
    return KV_OK;
}

static void p_cursor_close(kv_cursor *kc)
{
    pg_cursor *c = (pg_cursor *)kc;
    PQclear(c->cur);
    PQclear(c->prev);
    free(c);
}

/* Reads the next batch with stmt; on rows, it becomes the cursor's batch. */
static int fetch(pg_cursor *c, const char *stmt, const void *k, size_t kn, int dir, char *err, size_t errlen)
{
    pg_txn *t = (pg_txn *)c->base.t;
    if (broken(t, err, errlen)) return t->failed;
    PGresult *r = run(t, stmt, k, kn, NULL, 0, c->batch);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return fail(t, r, "a range read", err, errlen);
    int rows = PQntuples(r);
    if (rows == 0) { PQclear(r); return KV_NOTFOUND; }
    PQclear(c->prev);
    c->prev = c->cur;
    c->cur = r;
    c->rows = rows;
    c->row = 0;
    c->dir = dir;
    c->complete = rows < c->batch;
    c->gen = t->gen;
    if (c->batch < BATCH_MAX) c->batch *= 2;
    return KV_OK;
}

static int p_seek(kv_cursor *kc, const void *k, size_t kn, int dir, char *err, size_t errlen)
{
    pg_cursor *c = (pg_cursor *)kc;
    c->batch = BATCH_MIN;
    int rc;
    if (!k) rc = fetch(c, dir == KV_FWD ? "kv_first" : "kv_last", NULL, 0, dir, err, errlen);
    else rc = fetch(c, dir == KV_FWD ? "kv_ge" : "kv_le", k, kn, dir, err, errlen);
    if (rc == KV_NOTFOUND) { PQclear(c->cur); PQclear(c->prev); c->cur = c->prev = NULL; c->rows = 0; }
    return rc;
}

static int p_step(kv_cursor *kc, int dir, char *err, size_t errlen)
{
    pg_cursor *c = (pg_cursor *)kc;
    pg_txn *t = (pg_txn *)kc->t;
    if (!c->cur) return p_seek(kc, NULL, 0, dir, err, errlen);
    if (c->gen == t->gen) {
        if (dir == c->dir && c->row + 1 < c->rows) { c->row++; return KV_OK; }
        if (dir != c->dir && c->row > 0) { c->row--; return KV_OK; }
        if (dir == c->dir && c->complete) return KV_NOTFOUND;
    }
    /* Off the batch, or the transaction wrote since it was read: read on
     * from the current key. The current batch stays if nothing follows. */
    const char *k = PQgetvalue(c->cur, c->row, 0);
    int kn = PQgetlength(c->cur, c->row, 0);
    return fetch(c, dir == KV_FWD ? "kv_gt" : "kv_lt", k, (size_t)kn, dir, err, errlen);
}

static void p_cursor_get(kv_cursor *kc, const void **k, size_t *kn, const void **v, size_t *vn)
{
    pg_cursor *c = (pg_cursor *)kc;
    if (k) *k = c->cur ? PQgetvalue(c->cur, c->row, 0) : NULL;
    if (kn) *kn = c->cur ? (size_t)PQgetlength(c->cur, c->row, 0) : 0;
    if (v) *v = c->cur ? PQgetvalue(c->cur, c->row, 1) : NULL;
    if (vn) *vn = c->cur ? (size_t)PQgetlength(c->cur, c->row, 1) : 0;
}

static const kv_ops PG_OPS = {
    .name = "postgres",
    .close = p_close,
    .begin = p_begin,
    .commit = p_commit,
    .abort = p_abort,
    .get = p_get,
    .put = p_put,
    .del = p_del,
    .cursor_open = p_cursor_open,
    .cursor_close = p_cursor_close,
    .seek = p_seek,
    .step = p_step,
    .cursor_get = p_cursor_get,
};

kv_engine *kv_postgres_open(const char *conninfo, char *err, size_t errlen)
{
    pg_engine *pe = xcalloc(1, sizeof *pe);
    pe->base.ops = &PG_OPS;
    pe->conninfo = xstrdup(conninfo);
    pthread_mutex_init(&pe->mu, NULL);
    pthread_mutex_init(&pe->wmu, NULL);
    PGconn *c = PQconnectdb(conninfo);
    int rc = KV_ERROR;
    if (!c || PQstatus(c) != CONNECTION_OK) {
        pg_msg(err, errlen, "connection", c ? PQerrorMessage(c) : "out of memory");
    } else if (PQserverVersion(c) < 90500) {
        set_err(err, errlen, "PostgreSQL %d is too old for the datastore (9.5 or later is needed)", PQserverVersion(c));
    } else {
        /* Quiet the NOTICE that IF NOT EXISTS prints for an existing table. */
        simple(c, "SET client_min_messages = warning", "setting up the session", err, errlen);
        rc = simple(c, "CREATE TABLE IF NOT EXISTS kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
                    "creating the kv table", err, errlen);
        /* Another process may have created it at the same moment. */
        if (rc != KV_OK) rc = simple(c, "SELECT 1 FROM kv LIMIT 0", "reading the kv table", err, errlen);
    }
    PQfinish(c);
    if (rc != KV_OK) { p_close(&pe->base); return NULL; }
    return &pe->base;
}
