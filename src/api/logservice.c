/* logservice.c - the "logservice" API service: an app writes its log lines
 * (Flush) and reads its request logs (Read).
 *
 * Flush  FlushRequest{1 logs: UserAppLogGroup} -> {}: the lines join the
 *        request the ticket was minted for (the runtime flushes a request's
 *        lines when it ends; an app may flush earlier itself).
 * Read   LogReadRequest{1 app_id, 2 version_id*, 19 module_version*{1 module_id,
 *        2 version_id}, 3 start_time, 4 end_time (us), 5 offset{1 request_id},
 *        6 request_id*, 7 minimum_log_level, 8 include_incomplete, 9 count,
 *        10 include_app_logs} -> LogReadResponse{1 log*, 2 offset, 3 last_end_time}
 * SetStatus -> {} (accepted, nothing to do).
 * Errors: INVALID_REQUEST (1) for another app's logs or a bad offset,
 * STORAGE_ERROR (2) when the store cannot be opened or read.
 *
 * The service opens one store per app (the daemon serves one) and owns it. */
#include "api/logservice.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "proto/pb.h"

enum { LS_INVALID_REQUEST = 1, LS_STORAGE_ERROR = 2 };
#define MAX_FILTERS 64

typedef struct store_ent {
    char *project;
    logstore *ls;
    struct store_ent *next;
} store_ent;

typedef struct {
    char *home;
    pthread_mutex_t lock;
    store_ent *stores;
} ls_service;

static const char *project_of(const char *app_id)
{
    const char *t = strchr(app_id, '~');
    return t ? t + 1 : app_id;
}

static logstore *get_store(ls_service *s, const char *app_id, char *err, size_t errlen)
{
    const char *p = project_of(app_id);
    pthread_mutex_lock(&s->lock);
    store_ent *e = s->stores;
    while (e && strcmp(e->project, p)) e = e->next;
    if (!e) {
        logstore *ls = logstore_open(s->home, p, 1, NULL, err, errlen);
        if (ls) {
            e = xcalloc(1, sizeof *e);
            e->project = xstrdup(p);
            e->ls = ls;
            e->next = s->stores;
            s->stores = e;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return e ? e->ls : NULL;
}

logstore *logservice_store(api_server *srv, const char *app_id, char *err, size_t errlen)
{
    ls_service *s = api_shared(srv, "logservice");
    if (!s) { set_err(err, errlen, "the logservice is not registered"); return NULL; }
    return get_store(s, app_id, err, errlen);
}

static void m_flush(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    ls_service *s = ctx->service_data;
    pb_reader r;
    pb_reader_init(&r, in, len);
    const uint8_t *logs = NULL;
    size_t n = 0;
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) rc = pb_bytes(&r, wt, &logs, &n);
        else rc = pb_skip(&r, wt, f);
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { api_rpc_error(reply, RPC_PARSE_ERROR, "The logservice Flush request could not be parsed."); return; }
    if (!logs || !n) return;
    if (!ctx->request_id || !*ctx->request_id) {
        api_app_error(reply, LS_INVALID_REQUEST, "Log lines can only be flushed during a request.");
        return;
    }
    char err[512];
    logstore *ls = get_store(s, ctx->app_id, err, sizeof err);
    if (!ls) { api_app_error(reply, LS_STORAGE_ERROR, "%s.", err); return; }
    logstore_add_lines(ls, ctx->app_id, ctx->version, ctx->request_id, wall_us(), logs, n);
}

static void m_set_status(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    (void)ctx; (void)in; (void)len; (void)reply;
}

static void m_read(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    ls_service *s = ctx->service_data;
    logquery q;
    memset(&q, 0, sizeof q);
    q.min_level = -1;
    const uint8_t *vers[MAX_FILTERS], *rids[MAX_FILTERS];
    size_t vlens[MAX_FILTERS], rlens[MAX_FILTERS];
    uint8_t mvbuf[MAX_FILTERS][256];
    const uint8_t *app = NULL;
    size_t app_len = 0;
    int bad_offset = 0, too_many = 0;
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *p;
        size_t n;
        int64_t v;
        int b;
        switch (f) {
        case 1: rc = pb_bytes(&r, wt, &app, &app_len); break;
        case 2:
            rc = pb_bytes(&r, wt, &p, &n);
            if (rc == 0) { if (q.nversions < MAX_FILTERS) { vers[q.nversions] = p; vlens[q.nversions++] = n; } else too_many = 1; }
            break;
        case 19: {
            pb_reader sub;
            rc = pb_sub(&r, wt, &sub);
            if (rc < 0) break;
            const uint8_t *mod = (const uint8_t *)"default", *ver = NULL;
            size_t ml = 7, vl = 0;
            uint32_t sf;
            int swt;
            while (pb_next(&sub, &sf, &swt) > 0) {
                if (sf == 1) pb_bytes(&sub, swt, &mod, &ml);
                else if (sf == 2) pb_bytes(&sub, swt, &ver, &vl);
                else pb_skip(&sub, swt, sf);
            }
            if (q.nversions >= MAX_FILTERS || ml + 1 + vl > 255) { too_many = 1; break; }
            uint8_t *mv = mvbuf[q.nversions];
            memcpy(mv, mod, ml); mv[ml] = ':';
            if (vl) memcpy(mv + ml + 1, ver, vl);
            vers[q.nversions] = mv;
            vlens[q.nversions++] = ml + 1 + vl;
            break;
        }
        case 3: rc = pb_int64(&r, wt, &v); q.has_start = 1; q.start_us = v; break;
        case 4: rc = pb_int64(&r, wt, &v); q.has_end = 1; q.end_us = v; break;
        case 5: {
            pb_reader sub;
            rc = pb_sub(&r, wt, &sub);
            if (rc < 0) break;
            uint32_t sf;
            int swt;
            while (pb_next(&sub, &sf, &swt) > 0) {
                if (sf == 1 && pb_bytes(&sub, swt, &p, &n) == 0) {
                    if (logstore_offset_decode(p, n, &q.before) < 0 || !q.before) bad_offset = 1;
                } else pb_skip(&sub, swt, sf);
            }
            break;
        }
        case 6:
            rc = pb_bytes(&r, wt, &p, &n);
            if (rc == 0) { if (q.nrequest_ids < MAX_FILTERS) { rids[q.nrequest_ids] = p; rlens[q.nrequest_ids++] = n; } else too_many = 1; }
            break;
        case 7: rc = pb_int64(&r, wt, &v); q.min_level = (int)(v < 0 ? 0 : v > 4 ? 4 : v); break;
        case 8: rc = pb_bool(&r, wt, &b); q.include_incomplete = b; break;
        case 9: rc = pb_int64(&r, wt, &v); q.count = (int)(v < 1 ? 1 : v > 1000 ? 1000 : v); break;
        case 10: rc = pb_bool(&r, wt, &b); q.include_app_logs = b; break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { api_rpc_error(reply, RPC_PARSE_ERROR, "The logservice Read request could not be parsed."); return; }
    const char *own = project_of(ctx->app_id);
    if (app && app_len) {
        const uint8_t *ap = app;
        size_t al = app_len;
        const uint8_t *t = memchr(ap, '~', al);
        if (t) { al -= (size_t)(t + 1 - ap); ap = t + 1; }
        if (al != strlen(own) || memcmp(ap, own, al)) {
            api_app_error(reply, LS_INVALID_REQUEST, "An app can read only its own logs.");
            return;
        }
    }
    if (bad_offset) { api_app_error(reply, LS_INVALID_REQUEST, "The offset is not one this log service returned."); return; }
    if (too_many) { api_app_error(reply, LS_INVALID_REQUEST, "A log query takes at most %d version ids and %d request ids.", MAX_FILTERS, MAX_FILTERS); return; }
    q.versions = vers; q.version_lens = vlens;
    q.request_ids = rids; q.request_id_lens = rlens;
    char err[512];
    logstore *ls = get_store(s, ctx->app_id, err, sizeof err);
    if (!ls) { api_app_error(reply, LS_STORAGE_ERROR, "%s.", err); return; }
    logstore_sync(ls);     /* read what was written before this call */
    if (logstore_read(ls, &q, &reply->response, err, sizeof err) < 0)
        api_app_error(reply, LS_STORAGE_ERROR, "%s.", err);
}

static void ls_free(void *p)
{
    ls_service *s = p;
    for (store_ent *e = s->stores, *nx; e; e = nx) {
        nx = e->next;
        logstore_close(e->ls);
        free(e->project);
        free(e);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->home);
    free(s);
}

void logservice_register(api_server *srv, const char *home)
{
    ls_service *s = xcalloc(1, sizeof *s);
    s->home = xstrdup(home ? home : cyclozzo_home());
    pthread_mutex_init(&s->lock, NULL);
    api_register(srv, "logservice", "Flush", m_flush, s);
    api_register(srv, "logservice", "Read", m_read, s);
    api_register(srv, "logservice", "SetStatus", m_set_status, s);
    api_share(srv, "logservice", s);
    api_on_stop(srv, ls_free, s);
}
