/* query_api.c - the datastore_v3 query methods on the API server:
 * RunQuery, Next, DeleteCursor and GetIndices, each a thin wrapper mapping
 * the query engine's ds_err to an application error of the service. */
#include "datastore/query.h"

#include "api/api.h"

static void reply(api_reply *r, int rc, const ds_err *e)
{
    if (rc < 0) api_app_error(r, e->code ? e->code : DS_INTERNAL_ERROR, "%s", e->msg);
}

#define METHOD(fn, impl) \
    static void fn(api_ctx *ctx, const uint8_t *req, size_t n, api_reply *r) \
    { \
        ds_err e = {0}; \
        reply(r, impl((dsq_engine *)ctx->service_data, ctx->app_id, req, n, &r->response, &e), &e); \
    }

METHOD(m_run_query, dsq_run_query)
METHOD(m_next, dsq_next)
METHOD(m_delete_cursor, dsq_delete_cursor)
METHOD(m_get_indices, dsq_get_indices)

static void free_engine(void *eng) { dsq_engine_free(eng); }

void datastore_query_register(struct api_server *srv, void *ds)
{
    /* The engine lives as long as the server's registrations. */
    dsq_engine *eng = dsq_engine_new((datastore *)ds);
    api_register(srv, "datastore_v3", "RunQuery", m_run_query, eng);
    api_register(srv, "datastore_v3", "Next", m_next, eng);
    api_register(srv, "datastore_v3", "DeleteCursor", m_delete_cursor, eng);
    api_register(srv, "datastore_v3", "GetIndices", m_get_indices, eng);
    api_on_stop(srv, free_engine, eng);
}
