/* lmdb.c - the embedded kv engine: one LMDB environment in a directory.
 *
 * LMDB gives ordered keys, cursors both ways and ACID transactions; it lets
 * one writer at a time in (across threads and processes), so write
 * transactions are serializable and never conflict, and readers work on a
 * snapshot without blocking. A commit returns only once it is on disk, so an
 * acknowledged write survives kill -9 and power loss: LMDB syncs the data
 * pages inside the commit (MDB_NOMETASYNC), and the meta page is synced by a
 * group sync shared by every commit that finished meanwhile (group_sync()),
 * which halves the fsyncs a writer waits for under the write lock and never
 * lets the meta page reach disk before the data it points to. Several processes may
 * open the same directory: LMDB coordinates them through its lock file.
 *
 * Spec: "DIR", or "DIR?map=BYTES&nosync=1" (starting map size; no fsync,
 * for throwaway data only).
 *
 * Growth: the map starts at KV_LMDB_MAP0 (or the spec's) and doubles whenever a write hits
 * MDB_MAP_FULL. LMDB only allows resizing while this process has no
 * transaction open, so transactions hold a process-wide rwlock for reading
 * and a resize takes it for writing; the write that hit the limit reports
 * KV_CONFLICT, the caller retries, and the retry's kv_begin grows the map.
 * When another process grew the file, mdb_txn_begin says MDB_MAP_RESIZED and
 * we adopt the new size the same way. Because the rwlock prefers writers, a
 * thread must not begin a second transaction while it holds one.
 *
 * MDB_NOTLS lets a read transaction move between the API server's worker
 * threads (and lets one thread hold several read transactions). */
#include "kv/kv_engine.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "core/log.h"
#include "core/util.h"

#define KV_LMDB_MAP0   ((size_t)1 << 30)    /* 1 GiB of address space to start */
#define KV_LMDB_MAPMAX ((size_t)1 << 40)    /* stop doubling at 1 TiB */

typedef struct {
    kv_engine base;
    MDB_env *env;
    MDB_dbi dbi;
    pthread_rwlock_t lock;        /* read: a txn is open; write: resizing */
    atomic_int need_grow;
    char *dir;
    int group_sync;               /* MDB_NOMETASYNC: meta pages synced by group_sync() */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t committed;           /* commits finished (sequence numbers) */
    uint64_t synced;              /* every commit <= this is on disk */
    int syncing;
} lmdb_engine;

typedef struct {
    kv_txn base;
    MDB_txn *txn;
    int write;
    int ncursors;
} lmdb_txn;

typedef struct {
    kv_cursor base;
    MDB_cursor *cur;
    MDB_val k, v;
} lmdb_cursor;

static const kv_ops lmdb_ops;

static int fail(int rc, char *err, size_t errlen, const char *what)
{
    set_err(err, errlen, "the datastore's LMDB %s failed: %s", what, mdb_strerror(rc));
    return KV_ERROR;
}

/* Resize the map with no transaction of this process open. grow=1 doubles
 * it; grow=0 adopts the size another process set. */
static int resize(lmdb_engine *le, int grow, char *err, size_t errlen)
{
    pthread_rwlock_wrlock(&le->lock);
    int rc = 0;
    if (grow && atomic_load(&le->need_grow)) {
        MDB_envinfo info;
        mdb_env_info(le->env, &info);
        size_t sz = info.me_mapsize * 2;
        if (sz > KV_LMDB_MAPMAX) sz = KV_LMDB_MAPMAX;
        rc = mdb_env_set_mapsize(le->env, sz);
        if (rc == 0) log_info("kv", "msg=\"datastore map grown\" dir=%s bytes=%zu", log_q(le->dir), sz);
        atomic_store(&le->need_grow, 0);
    } else if (!grow) {
        rc = mdb_env_set_mapsize(le->env, 0);
    }
    pthread_rwlock_unlock(&le->lock);
    return rc ? fail(rc, err, errlen, "map resize") : KV_OK;
}

kv_engine *kv_lmdb_open(const char *spec, char *err, size_t errlen)
{
    /* "DIR", optionally followed by "?opt=v&opt=v": map=BYTES (the starting
     * map size; tests use a small one), nosync=1 (no fsync at commit: only
     * for throwaway data such as fuzzing, never for an app's datastore). */
    char dir[4096];
    size_t map0 = KV_LMDB_MAP0;
    unsigned flags = MDB_NOTLS | MDB_NOMETASYNC;
    const char *q = strchr(spec, '?');
    size_t dn = q ? (size_t)(q - spec) : strlen(spec);
    if (dn == 0 || dn >= sizeof dir) { set_err(err, errlen, "the datastore directory \"%s\" is not usable", spec); return NULL; }
    memcpy(dir, spec, dn);
    dir[dn] = 0;
    while (q && *q) {
        q++;
        char *end;
        if (!strncmp(q, "map=", 4)) {
            unsigned long long m = strtoull(q + 4, &end, 10);
            if ((*end && *end != '&') || m < 16384 || m > KV_LMDB_MAPMAX) {
                set_err(err, errlen, "the datastore map size in \"%s\" must be a number of bytes from 16384 up", spec);
                return NULL;
            }
            map0 = (size_t)m;
        } else if (!strncmp(q, "nosync=1", 8) && (q[8] == 0 || q[8] == '&')) {
            flags = (flags & ~(unsigned)MDB_NOMETASYNC) | MDB_NOSYNC;
            end = (char *)q + 8;
        } else {
            set_err(err, errlen, "the datastore spec \"%s\" has an unknown option", spec);
            return NULL;
        }
        q = end;
    }
    if (mkdir_p(dir, 0700) < 0) {
        set_err(err, errlen, "cannot create the datastore directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    lmdb_engine *le = xcalloc(1, sizeof *le);
    le->base.ops = &lmdb_ops;
    le->dir = xstrdup(dir);
    le->group_sync = (flags & MDB_NOMETASYNC) != 0;
    pthread_mutex_init(&le->sync_mu, NULL);
    pthread_cond_init(&le->sync_cv, NULL);
    pthread_rwlockattr_t at;
    pthread_rwlockattr_init(&at);
    pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&le->lock, &at);
    pthread_rwlockattr_destroy(&at);

    int rc = mdb_env_create(&le->env);
    if (rc) { fail(rc, err, errlen, "environment creation"); goto bad; }
    mdb_env_set_maxreaders(le->env, 1024);
    /* A map smaller than the file would refuse to open; LMDB raises it to
     * the file's size when we ask for less. */
    mdb_env_set_mapsize(le->env, map0);
    rc = mdb_env_open(le->env, dir, flags, 0600);
    if (rc) {
        set_err(err, errlen, "cannot open the datastore in %s: %s", dir, mdb_strerror(rc));
        goto bad;
    }
    int dead = 0;
    mdb_reader_check(le->env, &dead);
    MDB_txn *t;
    rc = mdb_txn_begin(le->env, NULL, 0, &t);
    if (rc == MDB_MAP_RESIZED) { mdb_env_set_mapsize(le->env, 0); rc = mdb_txn_begin(le->env, NULL, 0, &t); }
    if (rc) { fail(rc, err, errlen, "first transaction"); goto bad; }
    rc = mdb_dbi_open(t, NULL, 0, &le->dbi);
    if (rc) { mdb_txn_abort(t); fail(rc, err, errlen, "database open"); goto bad; }
    rc = mdb_txn_commit(t);
    if (rc) { fail(rc, err, errlen, "first commit"); goto bad; }
    return &le->base;
bad:
    if (le->env) mdb_env_close(le->env);
    pthread_rwlock_destroy(&le->lock);
    pthread_mutex_destroy(&le->sync_mu);
    pthread_cond_destroy(&le->sync_cv);
    free(le->dir);
    free(le);
    return NULL;
}

static void l_close(kv_engine *e)
{
    lmdb_engine *le = (lmdb_engine *)e;
    mdb_env_close(le->env);
    pthread_rwlock_destroy(&le->lock);
    pthread_mutex_destroy(&le->sync_mu);
    pthread_cond_destroy(&le->sync_cv);
    free(le->dir);
    free(le);
}

static int l_begin(kv_engine *e, int write, kv_txn **out, char *err, size_t errlen)
{
    lmdb_engine *le = (lmdb_engine *)e;
    for (int attempt = 0; attempt < 8; attempt++) {
        if (atomic_load(&le->need_grow) && resize(le, 1, err, errlen) != KV_OK) return KV_ERROR;
        pthread_rwlock_rdlock(&le->lock);
        MDB_txn *txn;
        int rc = mdb_txn_begin(le->env, NULL, write ? 0 : MDB_RDONLY, &txn);
        if (rc == 0) {
            lmdb_txn *lt = xcalloc(1, sizeof *lt);
            lt->base.e = e;
            lt->txn = txn;
            lt->write = write;
            *out = &lt->base;
            return KV_OK;
        }
        pthread_rwlock_unlock(&le->lock);
        if (rc == MDB_MAP_RESIZED) {
            if (resize(le, 0, err, errlen) != KV_OK) return KV_ERROR;
            continue;
        }
        return fail(rc, err, errlen, "transaction begin");
    }
    set_err(err, errlen, "the datastore's LMDB map kept changing size; giving up");
    return KV_ERROR;
}

static void txn_done(lmdb_txn *lt)
{
    lmdb_engine *le = (lmdb_engine *)lt->base.e;
    pthread_rwlock_unlock(&le->lock);
    free(lt);
}

static int full(lmdb_txn *lt, int rc, char *err, size_t errlen, const char *what)
{
    if (rc == MDB_MAP_FULL) {
        atomic_store(&((lmdb_engine *)lt->base.e)->need_grow, 1);
        set_err(err, errlen, "the datastore's LMDB map is full; it grows on retry");
        return KV_CONFLICT;
    }
    return fail(rc, err, errlen, what);
}

/* Make every commit up to and including this one durable. With
 * MDB_NOMETASYNC, mdb_txn_commit has synced the data pages and written
 * (not synced) the meta page; one fdatasync covers the meta pages of every
 * commit that finished before it started, so concurrent committers share it:
 * the first to arrive syncs, the others wait for a sync that began after
 * their commit. */
static int group_sync(lmdb_engine *le, char *err, size_t errlen)
{
    pthread_mutex_lock(&le->sync_mu);
    uint64_t mine = ++le->committed;
    int rc = 0;
    while (le->synced < mine && rc == 0) {
        if (le->syncing) { pthread_cond_wait(&le->sync_cv, &le->sync_mu); continue; }
        le->syncing = 1;
        uint64_t target = le->committed;
        pthread_mutex_unlock(&le->sync_mu);
        pthread_rwlock_rdlock(&le->lock);        /* no map resize meanwhile */
        rc = mdb_env_sync(le->env, 1);
        pthread_rwlock_unlock(&le->lock);
        pthread_mutex_lock(&le->sync_mu);
        le->syncing = 0;
        if (rc == 0 && target > le->synced) le->synced = target;
        pthread_cond_broadcast(&le->sync_cv);
    }
    pthread_mutex_unlock(&le->sync_mu);
    return rc ? fail(rc, err, errlen, "sync to disk") : KV_OK;
}

static int l_commit(kv_txn *t, char *err, size_t errlen)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    lmdb_engine *le = (lmdb_engine *)t->e;
    int rc = lt->write ? mdb_txn_commit(lt->txn) : (mdb_txn_abort(lt->txn), 0);
    int r = rc ? full(lt, rc, err, errlen, "commit") : KV_OK;
    int synced = r == KV_OK && lt->write && le->group_sync;
    txn_done(lt);
    if (synced) r = group_sync(le, err, errlen);
    return r;
}

static void l_abort(kv_txn *t)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    mdb_txn_abort(lt->txn);
    txn_done(lt);
}

static int l_get(kv_txn *t, const void *k, size_t kn, const void **v, size_t *vn, char *err, size_t errlen)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    MDB_val key = { kn, (void *)k }, val;
    int rc = mdb_get(lt->txn, ((lmdb_engine *)t->e)->dbi, &key, &val);
    if (rc == MDB_NOTFOUND) return KV_NOTFOUND;
    if (rc) return fail(rc, err, errlen, "read");
    *v = val.mv_data;
    *vn = val.mv_size;
    return KV_OK;
}

static int l_put(kv_txn *t, const void *k, size_t kn, const void *v, size_t vn, char *err, size_t errlen)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    if (!lt->write) { set_err(err, errlen, "a write was attempted in a read-only datastore transaction"); return KV_ERROR; }
    MDB_val key = { kn, (void *)k }, val = { vn, (void *)v };
    int rc = mdb_put(lt->txn, ((lmdb_engine *)t->e)->dbi, &key, &val, 0);
    return rc ? full(lt, rc, err, errlen, "write") : KV_OK;
}

static int l_del(kv_txn *t, const void *k, size_t kn, char *err, size_t errlen)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    if (!lt->write) { set_err(err, errlen, "a delete was attempted in a read-only datastore transaction"); return KV_ERROR; }
    MDB_val key = { kn, (void *)k };
    int rc = mdb_del(lt->txn, ((lmdb_engine *)t->e)->dbi, &key, NULL);
    if (rc == MDB_NOTFOUND) return KV_NOTFOUND;
    return rc ? full(lt, rc, err, errlen, "delete") : KV_OK;
}

static int l_cursor_open(kv_txn *t, kv_cursor **out, char *err, size_t errlen)
{
    lmdb_txn *lt = (lmdb_txn *)t;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(lt->txn, ((lmdb_engine *)t->e)->dbi, &cur);
    if (rc) return fail(rc, err, errlen, "cursor open");
    lmdb_cursor *lc = xcalloc(1, sizeof *lc);
    lc->base.t = t;
    lc->cur = cur;
    lt->ncursors++;
    *out = &lc->base;
    return KV_OK;
}

static void l_cursor_close(kv_cursor *c)
{
    lmdb_cursor *lc = (lmdb_cursor *)c;
    mdb_cursor_close(lc->cur);
    ((lmdb_txn *)c->t)->ncursors--;
    free(lc);
}

static int cur_op(lmdb_cursor *lc, MDB_cursor_op op, char *err, size_t errlen)
{
    int rc = mdb_cursor_get(lc->cur, &lc->k, &lc->v, op);
    if (rc == MDB_NOTFOUND) return KV_NOTFOUND;
    if (rc) return fail(rc, err, errlen, "cursor");
    return KV_OK;
}

static int l_seek(kv_cursor *c, const void *k, size_t kn, int dir, char *err, size_t errlen)
{
    lmdb_cursor *lc = (lmdb_cursor *)c;
    if (!k || kn == 0) return cur_op(lc, dir == KV_FWD ? MDB_FIRST : MDB_LAST, err, errlen);
    lc->k.mv_data = (void *)k;
    lc->k.mv_size = kn;
    int r = cur_op(lc, MDB_SET_RANGE, err, errlen);
    if (dir == KV_FWD || r == KV_ERROR) return r;
    if (r == KV_NOTFOUND) return cur_op(lc, MDB_LAST, err, errlen);
    /* Positioned on the first key >= k: step back unless it equals k. */
    if (lc->k.mv_size == kn && memcmp(lc->k.mv_data, k, kn) == 0) return KV_OK;
    return cur_op(lc, MDB_PREV, err, errlen);
}

static int l_step(kv_cursor *c, int dir, char *err, size_t errlen)
{
    return cur_op((lmdb_cursor *)c, dir == KV_FWD ? MDB_NEXT : MDB_PREV, err, errlen);
}

static void l_cursor_get(kv_cursor *c, const void **k, size_t *kn, const void **v, size_t *vn)
{
    lmdb_cursor *lc = (lmdb_cursor *)c;
    if (k) *k = lc->k.mv_data;
    if (kn) *kn = lc->k.mv_size;
    if (v) *v = lc->v.mv_data;
    if (vn) *vn = lc->v.mv_size;
}

static const kv_ops lmdb_ops = {
    .name = "lmdb",
    .close = l_close,
    .begin = l_begin,
    .commit = l_commit,
    .abort = l_abort,
    .get = l_get,
    .put = l_put,
    .del = l_del,
    .cursor_open = l_cursor_open,
    .cursor_close = l_cursor_close,
    .seek = l_seek,
    .step = l_step,
    .cursor_get = l_cursor_get,
};
