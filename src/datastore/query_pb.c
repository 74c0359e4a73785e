/* query_pb.c - decoding of the datastore_v3 Query message.
 *
 * Field numbers are those of apphosting_datastore_v3.Query as published in
 * the SDK's descriptors. Filters and orders are groups (fields 4 and 9);
 * every other sub-message (ancestor, cursors, transaction) is kept as its
 * encoded bytes, pointing into the query's private copy of the request, and
 * decoded by whoever uses it. Unknown fields are skipped, as proto2 does. */
#include "datastore/query.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "proto/pb.h"

static char *dup_bytes(const uint8_t *p, size_t n) { return xstrndup((const char *)p, n); }

static int read_str(pb_reader *r, int wt, char **out)
{
    const uint8_t *p; size_t n;
    if (pb_bytes(r, wt, &p, &n) < 0) return -1;
    free(*out);
    *out = dup_bytes(p, n);
    return 0;
}

static int push_str(pb_reader *r, int wt, char ***v, size_t *n)
{
    const uint8_t *p; size_t len;
    if (pb_bytes(r, wt, &p, &len) < 0) return -1;
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = dup_bytes(p, len);
    return 0;
}

/* storage Property: name (3) and value (5); we keep the value bytes. */
static int decode_filter_property(pb_reader *r, dsq_filter *f, char *err, size_t errlen)
{
    uint32_t field; int wt, rc;
    const uint8_t *p; size_t n;
    int have_value = 0;
    dsq_bytes value = {0, 0};
    char *name = NULL;
    while ((rc = pb_next(r, &field, &wt)) > 0) {
        if (field == 3) {
            if (read_str(r, wt, &name) < 0) break;
        } else if (field == 5) {
            if (pb_bytes(r, wt, &p, &n) < 0) break;
            value.p = p; value.n = n; have_value = 1;
        } else if (pb_skip(r, wt, field) < 0) break;
    }
    if (rc < 0 || r->err) { free(name); set_err(err, errlen, "a query filter property is malformed"); return -1; }
    if (!name) { set_err(err, errlen, "a query filter property has no name"); return -1; }
    if (!f->prop) f->prop = name;
    else if (strcmp(f->prop, name) != 0) {
        set_err(err, errlen, "a query filter names two properties (\"%s\" and \"%s\")", f->prop, name);
        free(name);
        return -1;
    } else free(name);
    if (have_value) {
        f->values = xrealloc(f->values, (f->n_values + 1) * sizeof *f->values);
        f->values[f->n_values++] = value;
    }
    return 0;
}

static int decode_filter(pb_reader *g, dsq_query *q, char *err, size_t errlen)
{
    uint32_t field; int wt, rc;
    dsq_filter f = {0};
    int has_op = 0;
    while ((rc = pb_next(g, &field, &wt)) > 0) {
        if (field == 6) {
            int32_t op;
            if (pb_int32(g, wt, &op) < 0) break;
            f.op = op; has_op = 1;
        } else if (field == 14) {
            pb_reader sub;
            if (pb_sub(g, wt, &sub) < 0) break;
            if (decode_filter_property(&sub, &f, err, errlen) < 0) goto fail;
        } else if (pb_skip(g, wt, field) < 0) break;
    }
    if (rc < 0 || g->err) { set_err(err, errlen, "a query filter is malformed"); goto fail; }
    if (!has_op) { set_err(err, errlen, "a query filter has no operator"); goto fail; }
    if (f.op < DSQ_LT || f.op > DSQ_NOT_IN) { set_err(err, errlen, "a query filter has unknown operator %d", f.op); goto fail; }
    if (!f.prop) { set_err(err, errlen, "a query filter names no property"); goto fail; }
    q->filters = xrealloc(q->filters, (q->n_filters + 1) * sizeof *q->filters);
    q->filters[q->n_filters++] = f;
    return 0;
fail:
    free(f.prop); free(f.values);
    return -1;
}

static int decode_order(pb_reader *g, dsq_query *q, char *err, size_t errlen)
{
    uint32_t field; int wt, rc;
    dsq_order o = {0};
    while ((rc = pb_next(g, &field, &wt)) > 0) {
        if (field == 10) {
            if (read_str(g, wt, &o.prop) < 0) break;
        } else if (field == 11) {
            int32_t d;
            if (pb_int32(g, wt, &d) < 0) break;
            if (d != 1 && d != 2) { set_err(err, errlen, "a query sort order has unknown direction %d", d); free(o.prop); return -1; }
            o.desc = d == 2;
        } else if (pb_skip(g, wt, field) < 0) break;
    }
    if (rc < 0 || g->err) { free(o.prop); set_err(err, errlen, "a query sort order is malformed"); return -1; }
    if (!o.prop) { set_err(err, errlen, "a query sort order names no property"); return -1; }
    q->orders = xrealloc(q->orders, (q->n_orders + 1) * sizeof *q->orders);
    q->orders[q->n_orders++] = o;
    return 0;
}

/* Transaction: handle (1, fixed64). */
static int decode_txn(pb_reader *r, dsq_query *q)
{
    uint32_t field; int wt, rc;
    while ((rc = pb_next(r, &field, &wt)) > 0) {
        if (field == 1) { if (pb_fixed64(r, wt, &q->txn_handle) < 0) return -1; }
        else if (pb_skip(r, wt, field) < 0) return -1;
    }
    return rc < 0 ? -1 : 0;
}

int dsq_query_decode(const uint8_t *data, size_t len, dsq_query *q, char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    q->persist_offset = 1;
    q->raw = xmalloc(len ? len : 1);
    if (len) memcpy(q->raw, data, len);
    q->raw_len = len;

    pb_reader r;
    pb_reader_init(&r, q->raw, len);
    uint32_t field; int wt, rc;
    const uint8_t *p; size_t n;
    int64_t i64; int32_t i32; int b;
    while ((rc = pb_next(&r, &field, &wt)) > 0) {
        switch (field) {
        case 1: if (read_str(&r, wt, &q->app) < 0) goto bad; break;
        case 42: if (read_str(&r, wt, &q->database_id) < 0) goto bad; break;
        case 29: if (read_str(&r, wt, &q->ns) < 0) goto bad; break;
        case 3: if (read_str(&r, wt, &q->kind) < 0) goto bad; break;
        case 17:
            if (pb_bytes(&r, wt, &p, &n) < 0) goto bad;
            q->ancestor.p = p; q->ancestor.n = n; q->has_ancestor = 1;
            break;
        case 43: if (pb_bool(&r, wt, &b) < 0) goto bad; q->shallow = b; break;
        case 4: {
            pb_reader g;
            if (pb_group(&r, wt, field, &g) < 0) goto bad;
            if (decode_filter(&g, q, err, errlen) < 0) goto fail;
            break;
        }
        case 9: {
            pb_reader g;
            if (pb_group(&r, wt, field, &g) < 0) goto bad;
            if (decode_order(&g, q, err, errlen) < 0) goto fail;
            break;
        }
        case 23: if (pb_int32(&r, wt, &i32) < 0) goto bad; q->count = i32; q->has_count = 1; break;
        case 12: if (pb_int32(&r, wt, &i32) < 0) goto bad; q->offset = i32; break;
        case 16: if (pb_int32(&r, wt, &i32) < 0) goto bad; q->limit = i32; q->has_limit = 1; break;
        case 30:
            if (pb_bytes(&r, wt, &p, &n) < 0) goto bad;
            q->start_cursor.p = p; q->start_cursor.n = n; q->has_start_cursor = 1;
            break;
        case 31:
            if (pb_bytes(&r, wt, &p, &n) < 0) goto bad;
            q->end_cursor.p = p; q->end_cursor.n = n; q->has_end_cursor = 1;
            break;
        case 19: if (pb_skip(&r, wt, field) < 0) goto bad; q->n_composite_index++; break;
        case 21: if (pb_bool(&r, wt, &b) < 0) goto bad; q->keys_only = b; break;
        case 22: {
            pb_reader sub;
            if (pb_sub(&r, wt, &sub) < 0 || decode_txn(&sub, q) < 0) goto bad;
            q->has_transaction = 1;
            break;
        }
        case 26: if (pb_int64(&r, wt, &i64) < 0) goto bad; q->failover_ms = i64; break;
        case 32: if (pb_bool(&r, wt, &b) < 0) goto bad; q->strong = b; break;
        case 33: if (push_str(&r, wt, &q->projection, &q->n_projection) < 0) goto bad; break;
        case 34: if (push_str(&r, wt, &q->group_by, &q->n_group_by) < 0) goto bad; break;
        case 24: if (pb_bool(&r, wt, &b) < 0) goto bad; q->distinct = b; break;
        case 35: if (pb_int64(&r, wt, &i64) < 0) goto bad; q->min_safe_time_seconds = i64; break;
        case 36: if (pb_skip(&r, wt, field) < 0) goto bad; break;   /* safe_replica_name */
        case 44: if (pb_int64(&r, wt, &i64) < 0) goto bad; q->read_time_us = i64; break;
        case 45: if (pb_int64(&r, wt, &i64) < 0) goto bad; q->read_time_epoch_micros = i64; break;
        case 18: if (pb_int32(&r, wt, &i32) < 0) goto bad; q->hint = i32; break;
        case 8: if (read_str(&r, wt, &q->search_query) < 0) goto bad; break;
        case 20: if (pb_bool(&r, wt, &b) < 0) goto bad; q->require_perfect_plan = b; break;
        case 25: if (pb_bool(&r, wt, &b) < 0) goto bad; q->compile = b; break;
        case 37: if (pb_bool(&r, wt, &b) < 0) goto bad; q->persist_offset = b; break;
        default: if (pb_skip(&r, wt, field) < 0) goto bad; break;
        }
    }
    if (rc < 0 || r.err) goto bad;
    if (!q->app) { set_err(err, errlen, "the query names no app"); goto fail; }
    if (!q->ns) q->ns = xstrdup("");
    if (q->kind && !q->kind[0]) { free(q->kind); q->kind = NULL; }
    if (q->offset < 0) { set_err(err, errlen, "the query offset %d is negative", q->offset); goto fail; }
    if (q->has_limit && q->limit < 0) { set_err(err, errlen, "the query limit %d is negative", q->limit); goto fail; }
    if (q->has_count && q->count < 0) { set_err(err, errlen, "the query batch size %d is negative", q->count); goto fail; }
    if (q->n_orders > DSQ_MAX_ORDERS - 1) { set_err(err, errlen, "the query has %zu sort orders, more than %d", q->n_orders, DSQ_MAX_ORDERS - 1); goto fail; }
    return 0;
bad:
    set_err(err, errlen, "the Query message is malformed");
fail:
    dsq_query_free(q);
    return -1;
}

void dsq_query_free(dsq_query *q)
{
    if (!q) return;
    free(q->raw); free(q->app); free(q->ns); free(q->kind); free(q->database_id);
    for (size_t i = 0; i < q->n_filters; i++) { free(q->filters[i].prop); free(q->filters[i].values); }
    free(q->filters);
    for (size_t i = 0; i < q->n_orders; i++) free(q->orders[i].prop);
    free(q->orders);
    for (size_t i = 0; i < q->n_projection; i++) free(q->projection[i]);
    free(q->projection);
    for (size_t i = 0; i < q->n_group_by; i++) free(q->group_by[i]);
    free(q->group_by);
    free(q->search_query);
    memset(q, 0, sizeof *q);
}
