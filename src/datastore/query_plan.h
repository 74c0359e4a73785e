/* query_plan.h - internal: the plan a query runs with, shared by the planner
 * (query_plan.c), the executor (query_exec.c) and metadata queries
 * (query_meta.c). Not part of the public interface. */
#ifndef CZ_QUERY_PLAN_H
#define CZ_QUERY_PLAN_H

#include "datastore/query.h"
#include "datastore/datastore.h"
#include "datastore/keycodec.h"

typedef enum {
    PLAN_ENTITY = 1,   /* E rows: kindless queries */
    PLAN_KIND,         /* K rows: kind (and ancestor, __key__) only */
    PLAN_MERGE,        /* merge-join of P scans on equality values */
    PLAN_INDEX,        /* one P or C index scan, postfix values then path */
    PLAN_META,         /* __kind__, __namespace__, __property__ */
} plan_kind;

#define PLAN_MAX_SCANS 16

typedef struct {
    buf prefix;        /* bytes before the row suffix */
    buf range;         /* every row of the scan starts with this (prefix + ancestor) */
} plan_scan;

typedef struct {
    plan_kind type;
    int meta;                        /* PLAN_META: 1 kind, 2 namespace, 3 property */
    int reverse;                     /* scan backwards (key descending) */
    plan_scan scans[PLAN_MAX_SCANS]; /* 1 except PLAN_MERGE */
    size_t n_scans;
    /* Row suffix (PLAN_INDEX): n_post values, then the path. */
    size_t n_post;
    char *post_prop[DSQ_MAX_ORDERS];
    int post_dir[DSQ_MAX_ORDERS];    /* KC_ASC / KC_DESC */
    /* Bounds on the first postfix value, in row encoding. */
    buf lo, hi;
    int has_lo, has_hi, lo_incl, hi_incl;
    /* __key__ filters, as encoded paths. */
    buf key_lo, key_hi, key_eq;
    int has_key_lo, has_key_hi, has_key_eq, key_lo_incl, key_hi_incl;
    /* Multi-valued rows may repeat an entity: keep only its first row. */
    int dedup;
    size_t n_group;                  /* distinct: leading postfix values forming the group */
    int64_t index_id;                /* PLAN_INDEX over a composite index, else 0 */
    const char *app, *ns, *kind;     /* borrowed from the query */
    buf ancestor_path;               /* encoded ancestor path prefix, empty if none */
    int shallow_depth;               /* >0: only paths with this many elements */
} plan;

void plan_free(plan *p);

/* Build the plan for q (app already checked) reading through kt. When a
 * composite index is missing: strict mode fails with NEED_INDEX, auto mode
 * creates it (in its own write transaction) and sets *retry so the caller
 * starts a fresh snapshot. */
int plan_build(datastore *ds, kv_txn *kt, const dsq_query *q, plan *p, int *retry, ds_err *e);

/* Index definitions and mode stored for an app (M rows). */
int  dsq_read_indexes(kv_txn *kt, const char *app, dsq_index_list *out, ds_err *e);
int  dsq_read_mode(kv_txn *kt, const char *app);   /* 1 strict, 0 auto */
/* Create an index in a write transaction of its own and fill it. */
int  dsq_create_index(datastore *ds, const char *app, const dsq_index *ix, ds_err *e);
void dsq_index_def_encode(const dsq_index *ix, buf *out);   /* storage Index message */
/* Fills e with code and a printf-formatted sentence for the client. */
void ds_err_set(ds_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Decode a stored CompositeIndex (as M rows hold) into ix. */
int  dsq_index_def_decode(const uint8_t *p, size_t n, dsq_index *ix);

/* Metadata queries: fill the whole QueryResult in one batch. */
int meta_run(datastore *ds, kv_txn *kt, const dsq_query *q, buf *resp, ds_err *e);

#endif
