/* test_kv.c - the kv engine contract: reads and writes, abort, snapshot
 * isolation, cursors both ways with seek, limits, persistence across
 * reopen, several processes and threads at once. On LMDB by default (plus
 * its map growth); on PostgreSQL when CZ_TEST_KV_PG holds a libpq
 * connection string (tests/integration/test_kv_postgres.py starts a server
 * and runs this binary so), each test starting from an emptied table. */
#include "test.h"
#include "tmpdir.h"

#include <stdint.h>
#include <pthread.h>
#include <sys/wait.h>
#include "kv/kv.h"

static char dir[256];
static char spec[300];
static char err[256];

static const char *pg;    /* CZ_TEST_KV_PG, or NULL for LMDB */

/* Deletes every row (PostgreSQL keeps its table between tests). */
static void wipe(kv_engine *e)
{
    kv_txn *t;
    kv_cursor *c;
    if (kv_begin(e, 1, &t, err, sizeof err) != KV_OK) return;
    kv_cursor_open(t, &c, err, sizeof err);
    char k[KV_MAX_KEY];
    for (int rc = kv_seek(c, NULL, 0, KV_FWD, err, sizeof err); rc == KV_OK; rc = kv_seek(c, NULL, 0, KV_FWD, err, sizeof err)) {
        const void *kp; size_t kn;
        kv_cursor_get(c, &kp, &kn, NULL, NULL);
        memcpy(k, kp, kn);
        kv_del(t, k, kn, err, sizeof err);
    }
    kv_cursor_close(c);
    CHECK_INT(kv_commit(t, err, sizeof err), KV_OK);
}

static kv_engine *open_fresh(const char *suffix)
{
    test_mkdtemp(dir, sizeof dir);
    if (pg) snprintf(spec, sizeof spec, "postgres:%s", pg);
    else snprintf(spec, sizeof spec, "lmdb:%s/db%s", dir, suffix);
    kv_engine *e = kv_open(spec, err, sizeof err);
    if (!e) printf("  open: %s\n", err);
    if (e && pg) wipe(e);
    return e;
}

/* Runs one read-modify-write increment of key "ctr", retrying conflicts. */
static int increment(kv_engine *e, char *kerr, size_t kerrlen)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        kv_txn *t;
        int rc = kv_begin(e, 1, &t, kerr, kerrlen);
        if (rc != KV_OK) return rc;
        const void *v; size_t vn;
        uint64_t n = 0;
        rc = kv_get(t, "ctr", 3, &v, &vn, kerr, kerrlen);
        if (rc == KV_OK && vn == 8) memcpy(&n, v, 8);
        n++;
        if (rc == KV_OK || rc == KV_NOTFOUND) rc = kv_put(t, "ctr", 3, &n, 8, kerr, kerrlen);
        if (rc == KV_OK) rc = kv_commit(t, kerr, kerrlen);
        else kv_abort(t);
        if (rc != KV_CONFLICT) return rc;
    }
    return KV_CONFLICT;
}

static int put_s(kv_txn *t, const char *k, const char *v)
{
    return kv_put(t, k, strlen(k), v, strlen(v), err, sizeof err);
}

static int get_s(kv_txn *t, const char *k, char *out, size_t n)
{
    const void *v;
    size_t vn;
    int rc = kv_get(t, k, strlen(k), &v, &vn, err, sizeof err);
    if (rc == KV_OK) { if (vn >= n) vn = n - 1; memcpy(out, v, vn); out[vn] = 0; }
    return rc;
}

TEST(put_get_commit_abort)
{
    kv_engine *e = open_fresh("");
    CHECK(e != NULL);
    if (!e) return;
    CHECK_STR(kv_engine_name(e), pg ? "postgres" : "lmdb");
    kv_txn *t;
    CHECK_INT(kv_begin(e, 1, &t, err, sizeof err), KV_OK);
    CHECK_INT(put_s(t, "a", "1"), KV_OK);
    CHECK_INT(put_s(t, "b", "2"), KV_OK);
    char v[64];
    CHECK_INT(get_s(t, "a", v, sizeof v), KV_OK);   /* own writes are visible */
    CHECK_STR(v, "1");
    CHECK_INT(kv_commit(t, err, sizeof err), KV_OK);

    CHECK_INT(kv_begin(e, 1, &t, err, sizeof err), KV_OK);
    CHECK_INT(put_s(t, "a", "changed"), KV_OK);
    CHECK_INT(kv_del(t, "b", 1, err, sizeof err), KV_OK);
    CHECK_INT(kv_del(t, "zz", 2, err, sizeof err), KV_NOTFOUND);
    kv_abort(t);

    CHECK_INT(kv_begin(e, 0, &t, err, sizeof err), KV_OK);
    CHECK_INT(get_s(t, "a", v, sizeof v), KV_OK);
    CHECK_STR(v, "1");
    CHECK_INT(get_s(t, "b", v, sizeof v), KV_OK);
    CHECK_INT(get_s(t, "c", v, sizeof v), KV_NOTFOUND);
    /* Writes in a read-only transaction are refused. */
    CHECK_INT(put_s(t, "x", "y"), KV_ERROR);
    CHECK(strstr(err, "read-only") != NULL);
    kv_abort(t);
    kv_close(e);

    /* Committed data survives a reopen. */
    e = kv_open(spec, err, sizeof err);
    CHECK(e != NULL);
    CHECK_INT(kv_begin(e, 0, &t, err, sizeof err), KV_OK);
    CHECK_INT(get_s(t, "b", v, sizeof v), KV_OK);
    CHECK_STR(v, "2");
    kv_abort(t);
    kv_close(e);
    test_rmtree(dir);
}

TEST(snapshot_isolation)
{
    kv_engine *e = open_fresh("");
    if (!e) { CHECK(0); return; }
    kv_txn *w, *r;
    kv_begin(e, 1, &w, err, sizeof err);
    put_s(w, "k", "old");
    kv_commit(w, err, sizeof err);

    CHECK_INT(kv_begin(e, 0, &r, err, sizeof err), KV_OK);
    kv_begin(e, 1, &w, err, sizeof err);
    put_s(w, "k", "new");
    put_s(w, "k2", "x");
    CHECK_INT(kv_commit(w, err, sizeof err), KV_OK);
    char v[64];
    CHECK_INT(get_s(r, "k", v, sizeof v), KV_OK);
    CHECK_STR(v, "old");                          /* reader keeps its snapshot */
    CHECK_INT(get_s(r, "k2", v, sizeof v), KV_NOTFOUND);
    kv_abort(r);
    kv_begin(e, 0, &r, err, sizeof err);
    CHECK_INT(get_s(r, "k", v, sizeof v), KV_OK);
    CHECK_STR(v, "new");
    kv_abort(r);
    kv_close(e);
    test_rmtree(dir);
}

static void cur_key(kv_cursor *c, char *out, size_t n)
{
    const void *k;
    size_t kn;
    kv_cursor_get(c, &k, &kn, NULL, NULL);
    if (kn >= n) kn = n - 1;
    memcpy(out, k, kn);
    out[kn] = 0;
}

TEST(cursors)
{
    kv_engine *e = open_fresh("");
    if (!e) { CHECK(0); return; }
    kv_txn *t;
    kv_begin(e, 1, &t, err, sizeof err);
    const char *keys[] = { "b", "d", "d\x01", "f", "f\xff", "h" };
    for (size_t i = 0; i < 6; i++) put_s(t, keys[i], "v");
    kv_commit(t, err, sizeof err);

    kv_begin(e, 0, &t, err, sizeof err);
    kv_cursor *c;
    CHECK_INT(kv_cursor_open(t, &c, err, sizeof err), KV_OK);
    char k[16];
    /* Forward seek: first key >= target. */
    CHECK_INT(kv_seek(c, "c", 1, KV_FWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "d");
    CHECK_INT(kv_seek(c, "d", 1, KV_FWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "d");
    CHECK_INT(kv_next(c, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "d\x01");
    CHECK_INT(kv_seek(c, "i", 1, KV_FWD, err, sizeof err), KV_NOTFOUND);
    /* Backward seek: last key <= target. */
    CHECK_INT(kv_seek(c, "e", 1, KV_BWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "d\x01");
    CHECK_INT(kv_seek(c, "f", 1, KV_BWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "f");
    CHECK_INT(kv_prev(c, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "d\x01");
    CHECK_INT(kv_seek(c, "a", 1, KV_BWD, err, sizeof err), KV_NOTFOUND);
    CHECK_INT(kv_seek(c, "z", 1, KV_BWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "h");
    /* Ends. */
    CHECK_INT(kv_seek(c, NULL, 0, KV_FWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "b");
    CHECK_INT(kv_prev(c, err, sizeof err), KV_NOTFOUND);
    CHECK_INT(kv_seek(c, NULL, 0, KV_BWD, err, sizeof err), KV_OK); cur_key(c, k, sizeof k); CHECK_STR(k, "h");
    CHECK_INT(kv_next(c, err, sizeof err), KV_NOTFOUND);
    /* A prefix scan with kv_prefix_end: every key starting with "f". */
    uint8_t end[8];
    size_t en = kv_prefix_end("f", 1, end);
    CHECK_INT(en, 1);
    CHECK_INT(end[0], 'g');
    int n = 0;
    for (int rc = kv_seek(c, "f", 1, KV_FWD, err, sizeof err); rc == KV_OK; rc = kv_next(c, err, sizeof err)) {
        const void *ck; size_t ckn;
        kv_cursor_get(c, &ck, &ckn, NULL, NULL);
        if (memcmp(ck, end, ckn < en ? ckn : en) >= 0) break;
        n++;
    }
    CHECK_INT(n, 2);
    /* Backward over the same range. */
    n = 0;
    for (int rc = kv_seek(c, end, en, KV_BWD, err, sizeof err); rc == KV_OK; rc = kv_prev(c, err, sizeof err)) {
        cur_key(c, k, sizeof k);
        if (k[0] != 'f') break;
        n++;
    }
    CHECK_INT(n, 2);
    kv_cursor_close(c);
    kv_abort(t);

    CHECK_INT(kv_prefix_end("a\xff\xff", 3, end), 1);
    CHECK_INT(end[0], 'b');
    CHECK_INT(kv_prefix_end("\xff", 1, end), 0);
    kv_close(e);
    test_rmtree(dir);
}

TEST(limits_and_errors)
{
    kv_engine *e = open_fresh("");
    if (!e) { CHECK(0); return; }
    kv_txn *t;
    kv_begin(e, 1, &t, err, sizeof err);
    char big[KV_MAX_KEY + 2];
    memset(big, 'k', sizeof big);
    CHECK_INT(kv_put(t, big, KV_MAX_KEY, "v", 1, err, sizeof err), KV_OK);
    CHECK_INT(kv_put(t, big, KV_MAX_KEY + 1, "v", 1, err, sizeof err), KV_ERROR);
    CHECK(strstr(err, "exceeds") != NULL);
    CHECK_INT(kv_put(t, "", 0, "v", 1, err, sizeof err), KV_ERROR);
    kv_abort(t);
    kv_close(e);
    CHECK(kv_open("", err, sizeof err) == NULL);
    CHECK(kv_open("postgresql://127.0.0.1:1/none", err, sizeof err) == NULL);
    CHECK(strstr(err, "PostgreSQL") != NULL);
    CHECK(kv_open("lmdb:/proc/cannot/be/here", err, sizeof err) == NULL);
    CHECK(strstr(err, "/proc/cannot/be/here") != NULL);
    test_rmtree(dir);
}

/* A 64 KiB map must grow to hold megabytes: writes report KV_CONFLICT when
 * it is full and succeed when retried. */
TEST(map_grows)
{
    kv_engine *e = open_fresh("?map=65536");
    if (!e) { CHECK(0); return; }
    char val[4000];
    memset(val, 'x', sizeof val);
    int conflicts = 0, written = 0;
    for (int i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%06d", i);
        for (int attempt = 0; attempt < 30; attempt++) {
            kv_txn *t;
            CHECK_INT(kv_begin(e, 1, &t, err, sizeof err), KV_OK);
            int rc = kv_put(t, k, strlen(k), val, sizeof val, err, sizeof err);
            if (rc == KV_OK) rc = kv_commit(t, err, sizeof err);
            else kv_abort(t);
            if (rc == KV_OK) { written++; break; }
            CHECK_INT(rc, KV_CONFLICT);
            conflicts++;
        }
    }
    CHECK_INT(written, 1000);
    CHECK(conflicts > 0);
    kv_txn *t;
    kv_begin(e, 0, &t, err, sizeof err);
    const void *v; size_t vn;
    CHECK_INT(kv_get(t, "key000999", 9, &v, &vn, err, sizeof err), KV_OK);
    CHECK_INT(vn, sizeof val);
    kv_abort(t);
    kv_close(e);
    test_rmtree(dir);
}

/* Several processes write the same environment; every increment counts. */
TEST(processes_share)
{
    kv_engine *e = open_fresh("");
    if (!e) { CHECK(0); return; }
    kv_close(e);
    enum { PROCS = 3, INCS = 100 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            kv_engine *ce = kv_open(spec, err, sizeof err);
            if (!ce) _exit(1);
            for (int i = 0; i < INCS; i++)
                if (increment(ce, err, sizeof err) != KV_OK) { fprintf(stderr, "  increment: %s\n", err); _exit(2); }
            kv_close(ce);
            _exit(0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    e = kv_open(spec, err, sizeof err);
    kv_txn *t;
    kv_begin(e, 0, &t, err, sizeof err);
    const void *v; size_t vn;
    uint64_t n = 0;
    CHECK_INT(kv_get(t, "ctr", 3, &v, &vn, err, sizeof err), KV_OK);
    if (vn == 8) memcpy(&n, v, 8);
    CHECK_INT(n, PROCS * INCS);
    kv_abort(t);
    kv_close(e);
    test_rmtree(dir);
}

/* Threads commit at once (their meta-page syncs are shared); every commit
 * is there after a reopen. */
static kv_engine *shared;
static void *committer(void *arg)
{
    long id = (long)arg;
    char kerr[128];
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "t%ld-%02d", id, i);
        kv_txn *t;
        int rc = KV_CONFLICT;
        for (int attempt = 0; attempt < 100 && rc == KV_CONFLICT; attempt++) {
            if (kv_begin(shared, 1, &t, kerr, sizeof kerr) != KV_OK) return (void *)1;
            rc = kv_put(t, k, strlen(k), "v", 1, kerr, sizeof kerr);
            if (rc == KV_OK) rc = kv_commit(t, kerr, sizeof kerr);
            else kv_abort(t);
        }
        if (rc != KV_OK) return (void *)3;
        /* Readers in between see it at once. */
        if (kv_begin(shared, 0, &t, kerr, sizeof kerr) != KV_OK) return (void *)4;
        const void *v; size_t vn;
        rc = kv_get(t, k, strlen(k), &v, &vn, kerr, sizeof kerr);
        kv_abort(t);
        if (rc != KV_OK) return (void *)5;
    }
    return NULL;
}

TEST(concurrent_commits)
{
    shared = open_fresh("");
    if (!shared) { CHECK(0); return; }
    pthread_t th[8];
    for (long i = 0; i < 8; i++) pthread_create(&th[i], NULL, committer, (void *)i);
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    kv_close(shared);
    kv_engine *e = kv_open(spec, err, sizeof err);
    CHECK(e != NULL);
    if (!e) return;
    kv_txn *t;
    kv_cursor *c;
    kv_begin(e, 0, &t, err, sizeof err);
    kv_cursor_open(t, &c, err, sizeof err);
    int n = 0;
    for (int rc = kv_seek(c, NULL, 0, KV_FWD, err, sizeof err); rc == KV_OK; rc = kv_next(c, err, sizeof err)) n++;
    CHECK_INT(n, 400);
    kv_cursor_close(c);
    kv_abort(t);
    kv_close(e);
    test_rmtree(dir);
}

int main(void)
{
    pg = getenv("CZ_TEST_KV_PG");
    if (pg && !*pg) pg = NULL;
    if (pg) printf("kv engine under test: PostgreSQL (%s)\n", pg);
    fflush(stdout);
    RUN(put_get_commit_abort);
    RUN(snapshot_isolation);
    RUN(cursors);
    RUN(limits_and_errors);
    if (!pg) RUN(map_grows);           /* LMDB's map only */
    RUN(processes_share);
    RUN(concurrent_commits);
    return test_report();
}
