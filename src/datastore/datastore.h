/* datastore.h - the datastore core: datastore_v3 Get, Put, Delete,
 * AllocateIds and transactions over an ordered key-value engine (kv.h).
 *
 * Each operation takes the request message bytes the SDK sent and appends
 * the response message bytes, so the service glue (api/datastore_v3.c) only
 * maps errors. Rows follow the layout in keycodec.h: entities are stored as
 * the SDK sent them; Put rewrites the kind, single-property (ascending and
 * descending) and composite index rows of every entity it writes.
 *
 * Transactions are optimistic: a transaction remembers the version of every
 * entity group it reads or writes (the 'G' row) and buffers its mutations;
 * Commit applies them in one engine transaction only if none of those
 * versions changed, else fails with CONCURRENT_TRANSACTION (the SDKs retry).
 * Groups may be mixed freely (the engine gives multi-key transactions).
 * Reads inside a transaction see committed data, not the transaction's own
 * buffered writes, as on App Engine.
 *
 * Ids: sequential ids count up from 1 (AllocateIds, and Put with
 * auto_id_policy SEQUENTIAL); scattered ids (the default policy) are
 * 2^52 + the bit-reversed 51-bit counter of a second sequence. An id the
 * application puts itself advances the sequence it belongs to, so an id is
 * never handed out twice. */
#ifndef CZ_DATASTORE_H
#define CZ_DATASTORE_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"
#include "kv/kv.h"
#include "datastore/entity.h"

typedef struct datastore datastore;

/* datastore_v3 Error.ErrorCode (application error codes of the service). */
enum {
    DS_OK = 0,
    DS_BAD_REQUEST = 1,
    DS_CONCURRENT_TRANSACTION = 2,
    DS_INTERNAL_ERROR = 3,
    DS_NEED_INDEX = 4,
    DS_TIMEOUT = 5,
    DS_PERMISSION_DENIED = 6,
    DS_BIGTABLE_ERROR = 7,
    DS_COMMITTED_BUT_STILL_APPLYING = 8,
    DS_CAPABILITY_DISABLED = 9,
    DS_TRY_ALTERNATE_BACKEND = 10,
    DS_SAFE_TIME_TOO_OLD = 11,
    DS_RESOURCE_EXHAUSTED = 12,
    DS_NOT_FOUND = 13,
    DS_ALREADY_EXISTS = 14,
    DS_FAILED_PRECONDITION = 15,
    DS_UNAUTHENTICATED = 16,
    DS_ABORTED = 17,
    DS_SNAPSHOT_VERSION_TOO_OLD = 18,
};

/* Largest EntityProto accepted by Put (App Engine's 1 MiB entity limit). */
#define DS_MAX_ENTITY_BYTES 1048572
/* Sequential ids stay below 2^52; scattered ids live in [2^52, 2^52 + 2^51). */
#define DS_MAX_SEQUENTIAL_ID ((INT64_C(1) << 52) - 1)

typedef struct {
    int code;              /* DS_* */
    char msg[480];         /* one sentence for the client */
} ds_err;

/* Open the datastore under home (LMDB in home/datastore/), or on the kv
 * engine the environment variable CYCLOZZO_DATASTORE names when it is set
 * (a kv_open spec such as "postgresql://host/db"; set by the daemon's and
 * cz-apiserver's --datastore), or over an engine (own=1: ds_close closes
 * it). NULL + err on failure. */
datastore *ds_open(const char *home, char *err, size_t errlen);
datastore *ds_open_engine(kv_engine *kv, int own);
void ds_close(datastore *ds);
kv_engine *ds_kv(datastore *ds);

/* The operations. app is the calling application's full id; every key in the
 * request must belong to it. Return 0, or -1 with e filled. */
int ds_get(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_put(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
/* ds_put for Cyclozzo's own services: may write reserved __*__ kinds (the
 * Blobstore's __BlobInfo__ and __BlobUploadSession__); never for app calls. */
int ds_put_reserved(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_delete(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_allocate_ids(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_begin_transaction(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_commit(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int ds_rollback(datastore *ds, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);

/* For the query engine: a datastore_v3 Transaction message (handle, app). */
int ds_txn_decode(const uint8_t *p, size_t n, uint64_t *handle, ds_bytes *app);
/* A query inside transaction `handle` read the entity group of key: remember
 * its version as of kt (the engine transaction the query reads with), so
 * Commit fails if the group changes. Unknown or finished transaction =>
 * BAD_REQUEST. Safe to call while holding kt. */
int ds_txn_note_read(datastore *ds, const char *app, uint64_t handle, kv_txn *kt,
                     const ds_ref *key, ds_err *e);

/* Work tied to transaction `handle` (transactional task adds): fn runs in
 * the engine transaction that commits it, after its mutations, and returns
 * KV_OK, KV_CONFLICT (the commit is retried) or another KV_* result with err
 * set (the commit fails); done(arg, committed) runs exactly once, when the
 * transaction has committed (1) or ended any other way (0: rolled back,
 * conflicted, expired, datastore closed; it must not call the datastore,
 * and may run under its locks). When the transaction already
 * carries `limit` such items (limit > 0) nothing is added and 1 is returned;
 * else 0, or -1 with e (unknown or finished transaction). */
typedef int (*ds_commit_fn)(void *arg, kv_txn *kt, char *err, size_t errlen);
int ds_txn_on_commit(datastore *ds, const char *app, uint64_t handle, size_t limit,
                     ds_commit_fn fn, void (*done)(void *arg, int committed), void *arg, ds_err *e);

/* Index rows Put writes for one entity (for the query engine's backfill and
 * for tests): appends each row key to *rows as a length-prefixed record
 * (uint32 native-endian length, then bytes). Composite indexes are read
 * from the 'M' rows through kt (NULL: none). */
int ds_index_rows(datastore *ds, kv_txn *kt, const ds_entity *ent, buf *rows, ds_err *e);

#endif
