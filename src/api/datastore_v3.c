/* datastore_v3.c - the datastore_v3 API service: Get, Put, Delete,
 * AllocateIds, BeginTransaction, Commit and Rollback, plus the query
 * methods (RunQuery, Next, ...) registered by the query module.
 *
 * This file is glue: each method hands the request bytes and the calling
 * app (from the verified ticket) to the datastore core (datastore/datastore.h)
 * and turns its ds_err into a datastore_v3 application error with the
 * service's own code (BAD_REQUEST=1, CONCURRENT_TRANSACTION=2, ...), which
 * is what the SDKs map to their exceptions and retry on. The datastore lives
 * in CYCLOZZO_HOME/datastore/ and stays open until api_server_stop. */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include "core/log.h"
#include "core/util.h"
#include "datastore/datastore.h"
#include "datastore/query.h"      /* datastore_query_register (query_api.c) */


typedef int (*ds_method)(datastore *, const char *, const uint8_t *, size_t, buf *, ds_err *);

typedef struct {
    datastore *ds;
    char open_err[400];     /* why the datastore could not be opened, if it could not */
} dsv3;

static void run(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply, ds_method fn, const char *name)
{
    dsv3 *s = ctx->service_data;
    if (!s->ds) {
        api_app_error(reply, DS_INTERNAL_ERROR, "%s", s->open_err);
        return;
    }
    ds_err e = {0, ""};
    if (fn(s->ds, ctx->app_id, req, len, &reply->response, &e) == 0) return;
    buf_reset(&reply->response);
    if (e.code == DS_INTERNAL_ERROR)
        log_error("datastore", "app=%s request=%s method=%s msg=%s", log_q(ctx->app_id),
                  log_q(ctx->request_id ? ctx->request_id : ""), name, log_q(e.msg));
    else
        log_debug("datastore", "app=%s method=%s code=%d msg=%s", log_q(ctx->app_id), name, e.code, log_q(e.msg));
    api_app_error(reply, e.code ? e.code : DS_INTERNAL_ERROR, "%s", e.msg);
}

#define METHOD(fname, impl) \
    static void fname(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply) \
    { run(ctx, req, len, reply, impl, #fname); }

METHOD(Get, ds_get)
METHOD(Put, ds_put)
METHOD(Delete, ds_delete)
METHOD(AllocateIds, ds_allocate_ids)
METHOD(BeginTransaction, ds_begin_transaction)
METHOD(Commit, ds_commit)
METHOD(Rollback, ds_rollback)

static void dsv3_free(void *p)
{
    dsv3 *s = p;
    ds_close(s->ds);
    free(s);
}

void datastore_v3_register(api_server *srv, const char *home)
{
    dsv3 *s = xcalloc(1, sizeof *s);   /* freed by api_server_stop (dsv3_free) */
    char err[300];
    s->ds = ds_open(home, err, sizeof err);
    if (!s->ds) {
        snprintf(s->open_err, sizeof s->open_err, "the datastore is unavailable: %s", err);
        log_error("datastore", "msg=\"cannot open the datastore\" home=%s err=%s", log_q(home), log_q(err));
    } else {
        log_info("datastore", "msg=\"datastore open\" home=%s engine=%s", log_q(home), kv_engine_name(ds_kv(s->ds)));
    }
    api_register(srv, "datastore_v3", "Get", Get, s);
    api_register(srv, "datastore_v3", "Put", Put, s);
    api_register(srv, "datastore_v3", "Delete", Delete, s);
    api_register(srv, "datastore_v3", "AllocateIds", AllocateIds, s);
    api_register(srv, "datastore_v3", "BeginTransaction", BeginTransaction, s);
    api_register(srv, "datastore_v3", "Commit", Commit, s);
    api_register(srv, "datastore_v3", "Rollback", Rollback, s);
    /* Registered before the query module so that its cleanup, if any,
     * runs first (newest first) while the datastore is still open. */
    api_on_stop(srv, dsv3_free, s);
    if (s->ds) api_share(srv, "kv", ds_kv(s->ds));   /* the task queue's rows live here too */
    if (s->ds) api_share(srv, "datastore", s->ds);   /* transactional task adds (ds_txn_on_commit) */
    if (s->ds) datastore_query_register(srv, s->ds);
}
