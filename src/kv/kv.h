/* kv.h - the ordered, transactional key-value engine under the datastore.
 *
 * The datastore core needs three things from storage: byte-ordered keys
 * (memcmp order, shorter prefix first), range scans in both directions, and
 * serializable transactions over many keys. This header is that contract;
 * engines implement it behind a small table of operations (kv_ops in kv.c):
 *
 *   lmdb.c      the embedded default: one LMDB environment under
 *               CYCLOZZO_HOME/datastore/. Writers are serialized by LMDB, so
 *               every write transaction is serializable and never conflicts;
 *               readers see a snapshot. Commits are synced to disk.
 *   postgres.c  one `kv(k bytea primary key, v bytea)` table used at
 *               SERIALIZABLE isolation (reads: REPEATABLE READ READ ONLY); a
 *               serialization failure surfaces as KV_CONFLICT from any call,
 *               and callers retry.
 *
 * Usage: begin a transaction, get/put/del and scan with cursors, then
 * commit (or abort). Any call may return KV_CONFLICT: the caller aborts the
 * transaction and runs it again from the start (kv_commit included). A
 * read-only transaction is simply aborted when done.
 *
 * Memory: bytes returned by kv_get and the cursor accessors belong to the
 * engine. They stay valid until the first of: the next call on the same
 * transaction (or its cursors) that modifies data, the 8th kv_get after it
 * (for kv_get results), the cursor's 16th step after it (for cursor rows),
 * the end of the transaction. Copy what you keep. Keys are at most
 * KV_MAX_KEY bytes.
 *
 * Threads: an engine is shared by all threads; a transaction and its cursors
 * are used by one thread at a time, and a thread must not begin a second
 * transaction while it holds one (the LMDB engine may need all of a
 * process's transactions closed to grow its map). Several processes may open the same
 * engine at once (an environment is opened once per process). */
#ifndef CZ_KV_H
#define CZ_KV_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_engine kv_engine;
typedef struct kv_txn kv_txn;
typedef struct kv_cursor kv_cursor;

/* Results. Functions return KV_OK or one of these; err gets one sentence. */
enum {
    KV_OK = 0,
    KV_NOTFOUND = 1,    /* get/del: no such key; cursor: ran off the end */
    KV_CONFLICT = 2,    /* serialization failure: abort and retry the transaction */
    KV_ERROR = -1,      /* anything else (I/O, corruption, full disk, misuse) */
};

/* Longest key every engine accepts (LMDB's default limit is 511). */
#define KV_MAX_KEY 511

/* Open an engine. spec is "lmdb:DIR" (optionally "lmdb:DIR?map=BYTES" for
 * the starting map size, "&nosync=1" to skip fsync for throwaway data), a
 * plain directory path (LMDB), or PostgreSQL: a libpq URI
 * "postgresql://..." / "postgres://...", or "postgres:" + libpq keywords.
 * The directory is created if missing. NULL + err on failure. */
kv_engine *kv_open(const char *spec, char *err, size_t errlen);
void kv_close(kv_engine *e);
/* Short engine name for logs: "lmdb" or "postgres". */
const char *kv_engine_name(const kv_engine *e);

/* Begin a transaction: write=0 read-only snapshot, write=1 read-write. */
int kv_begin(kv_engine *e, int write, kv_txn **out, char *err, size_t errlen);
/* Commit a write transaction durably (or end a read one). The transaction
 * is freed in every case; KV_CONFLICT means nothing was written. */
int kv_commit(kv_txn *t, char *err, size_t errlen);
/* Discard the transaction and everything it wrote; frees it. NULL is fine. */
void kv_abort(kv_txn *t);

int kv_get(kv_txn *t, const void *k, size_t kn, const void **v, size_t *vn,
           char *err, size_t errlen);
int kv_put(kv_txn *t, const void *k, size_t kn, const void *v, size_t vn,
           char *err, size_t errlen);
/* Delete; KV_NOTFOUND when the key was absent (not an error for most callers). */
int kv_del(kv_txn *t, const void *k, size_t kn, char *err, size_t errlen);

/* Cursors. A fresh cursor is unpositioned; position it with a seek.
 *   kv_seek(c, k, kn, KV_FWD): first key >= k
 *   kv_seek(c, k, kn, KV_BWD): last key <= k
 *   kv_seek(c, NULL, 0, KV_FWD/KV_BWD): first / last key
 * kv_next / kv_prev step by one. All return KV_OK when positioned on a key,
 * KV_NOTFOUND when there is none. Closing is required before the
 * transaction ends. */
enum { KV_FWD = 0, KV_BWD = 1 };
int  kv_cursor_open(kv_txn *t, kv_cursor **out, char *err, size_t errlen);
void kv_cursor_close(kv_cursor *c);
int  kv_seek(kv_cursor *c, const void *k, size_t kn, int dir, char *err, size_t errlen);
int  kv_next(kv_cursor *c, char *err, size_t errlen);
int  kv_prev(kv_cursor *c, char *err, size_t errlen);
/* Key and value at the cursor (valid after KV_OK from a seek/next/prev). */
void kv_cursor_get(kv_cursor *c, const void **k, size_t *kn, const void **v, size_t *vn);

/* Smallest key greater than every key that starts with prefix (for range
 * ends): prefix with trailing 0xff bytes dropped and the last byte
 * incremented. Returns the new length, 0 when no such key exists (prefix
 * empty or all 0xff: scan to the end). out must hold n bytes. */
size_t kv_prefix_end(const void *prefix, size_t n, void *out);

#endif
