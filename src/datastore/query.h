/* query.h - datastore_v3 queries: the Query message, planning, execution,
 * cursors, composite indexes (index.yaml) and metadata queries.
 *
 * A RunQuery request is decoded into a dsq_query (dsq_query_decode), which
 * owns a copy of every byte it points at, so it can outlive the request as the
 * server-side state behind a Cursor for Next. The executor (query_exec.c)
 * plans it over the kv engine's indexes, streams rows from index scans and
 * fetches entities only when needed; results are encoded as a QueryResult.
 *
 * Cursors given to the client are CompiledCursor messages whose
 * absolute_position.key holds an opaque, versioned blob: a fingerprint of the
 * query shape (a cursor from another query is refused) and the position, i.e.
 * the sort values and key of the last row returned (see cursor.c).
 *
 * Composite indexes come from the app's index.yaml (indexyaml.c) or, in
 * auto-index mode, are created on first need as the dev server does. */
#ifndef CZ_QUERY_H
#define CZ_QUERY_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"
#include "datastore/datastore.h"

/* Query.Filter.Operator */
enum {
    DSQ_LT = 1, DSQ_LE = 2, DSQ_GT = 3, DSQ_GE = 4, DSQ_EQ = 5, DSQ_IN = 6,
    DSQ_EXISTS = 7, DSQ_REGION = 8, DSQ_NE = 9, DSQ_NOT_IN = 10,
};

/* datastore_v3 Error.ErrorCode values this module raises. */
enum {
    DSQ_ERR_BAD_REQUEST = 1,
    DSQ_ERR_INTERNAL = 3,
    DSQ_ERR_NEED_INDEX = 4,
};

typedef struct { const uint8_t *p; size_t n; } dsq_bytes;

typedef struct {
    int op;                        /* DSQ_* */
    char *prop;                    /* property name ("__key__" for keys) */
    dsq_bytes *values;             /* encoded PropertyValue messages */
    size_t n_values;
} dsq_filter;

typedef struct {
    char *prop;
    int desc;                      /* 0 ascending, 1 descending */
} dsq_order;

typedef struct {
    uint8_t *raw; size_t raw_len;  /* copy of the request: every dsq_bytes points in here */
    char *app, *ns, *kind, *database_id;  /* kind NULL for kindless */
    dsq_bytes ancestor;            /* encoded Reference, n == 0 when absent */
    int has_ancestor, shallow;
    dsq_filter *filters; size_t n_filters;
    dsq_order *orders; size_t n_orders;
    int has_count; int32_t count;
    int32_t offset;
    int has_limit; int32_t limit;
    dsq_bytes start_cursor;        /* encoded CompiledCursor */
    dsq_bytes end_cursor;
    int has_start_cursor, has_end_cursor;
    int keys_only, compile, require_perfect_plan, persist_offset, strong, distinct;
    int has_transaction; uint64_t txn_handle;
    char **projection; size_t n_projection;      /* property_name */
    char **group_by; size_t n_group_by;          /* group_by_property_name */
    size_t n_composite_index;      /* composite_index entries sent (not used) */
    int64_t failover_ms, min_safe_time_seconds, read_time_us, read_time_epoch_micros;
    int hint;
    char *search_query;
} dsq_query;

/* Decode a datastore_v3 Query. 0, or -1 with one sentence in err. The query
 * keeps a private copy of data. */
int  dsq_query_decode(const uint8_t *data, size_t len, dsq_query *q, char *err, size_t errlen);
void dsq_query_free(dsq_query *q);

/* ---- cursors (cursor.c) ---- */

/* A position in a query's order: for each sort order the ascending-encoded
 * value of the row (keycodec value encoding), then the encoded key path. */
typedef struct {
    uint64_t fingerprint;          /* query shape; see dsq_fingerprint */
    uint32_t dirs;                 /* bit i set: order i descending (as created) */
    uint8_t n_orders;
    int has_position;              /* 0: the very beginning of the query */
    int inclusive;                 /* 1: the row at position is included */
    dsq_bytes values[16];          /* per order, ascending encoding */
    dsq_bytes key;                 /* encoded key path */
    uint8_t *owned;                /* storage the dsq_bytes point into */
} dsq_cursor;

#define DSQ_MAX_ORDERS 16

uint64_t dsq_fingerprint(const dsq_query *q);
/* Encode a CompiledCursor (the whole message) into out. */
void dsq_cursor_encode(const dsq_cursor *c, buf *out);
/* Decode a CompiledCursor. 0, or -1 with a sentence in err. */
int  dsq_cursor_decode(const uint8_t *p, size_t n, dsq_cursor *c, char *err, size_t errlen);
void dsq_cursor_free(dsq_cursor *c);

/* ---- composite index definitions (indexyaml.c) ---- */

typedef struct {
    char *name;
    int desc;
} dsq_index_prop;

typedef struct {
    int64_t id;                    /* stable: a hash of the definition */
    char *kind;
    int ancestor;
    dsq_index_prop *props; size_t n_props;
} dsq_index;

typedef struct {
    dsq_index *v; size_t n;
} dsq_index_list;

/* Parse index.yaml text. 0, or -1 with "PATH:LINE: reason" in err. */
int  dsq_indexyaml_parse(const char *text, size_t len, const char *path,
                         dsq_index_list *out, char *err, size_t errlen);
/* Load DIR/index.yaml; a missing file is an empty list. */
int  dsq_indexyaml_load(const char *app_dir, dsq_index_list *out, char *err, size_t errlen);
void dsq_index_list_free(dsq_index_list *l);
void dsq_index_list_add(dsq_index_list *l, const dsq_index *ix);  /* deep copy, dedup by id */
const dsq_index *dsq_index_list_find(const dsq_index_list *l, int64_t id);
/* Fill ix->id from the definition. */
void dsq_index_set_id(dsq_index *ix);
/* The index as index.yaml text ("- kind: K\n  ancestor: yes\n  properties: ..."). */
void dsq_index_yaml(const dsq_index *ix, buf *out);
/* Encode as a storage CompositeIndex message (state READ_WRITE). */
void dsq_index_encode(const dsq_index *ix, const char *app, buf *out);
void dsq_index_free(dsq_index *ix);

/* ---- the query service (query_exec.c) ---- */

typedef struct dsq_engine dsq_engine;

/* A query engine over ds: holds the server-side state of open query cursors
 * (freed by DeleteCursor, or after ttl without use; default 10 minutes). */
dsq_engine *dsq_engine_new(datastore *ds);
void dsq_engine_free(dsq_engine *eng);
void dsq_engine_set_ttl(dsq_engine *eng, int64_t ttl_us);
size_t dsq_engine_open_cursors(dsq_engine *eng);

/* datastore_v3 methods: request bytes in, response bytes appended to resp.
 * app is the calling app's full id. 0, or -1 with e filled (DS_* code). */
int dsq_run_query(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int dsq_next(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int dsq_delete_cursor(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);
int dsq_get_indices(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e);

/* Set an app's composite index mode and declare the indexes of
 * app_dir/index.yaml (app_dir may be NULL: mode only). require_indexes=1:
 * a query needing an undeclared index fails with NEED_INDEX (App Engine's
 * behaviour); 0: the index is created on first use (the dev server's).
 * -1: keep the mode stored for the app (auto when never set).
 * Declared indexes are created and filled before this returns. */
int dsq_configure_app(datastore *ds, const char *app, const char *app_dir, int require_indexes, ds_err *e);
/* The same on the datastore under home, opened and closed around the call
 * (for start-up, before the API server opens it). 0, or -1 with err. */
int dsq_configure_home(const char *home, const char *app, const char *app_dir, int require_indexes,
                       char *err, size_t errlen);

/* Register RunQuery, Next, DeleteCursor and GetIndices of datastore_v3 on
 * srv; ds is the datastore (datastore *). */
struct api_server;
void datastore_query_register(struct api_server *srv, void *ds);

#endif
