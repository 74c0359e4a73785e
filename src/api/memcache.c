/* memcache.c - protocol glue between the API server and the memcache store.
 *
 * Each method decodes its request (google.appengine.Memcache*Request, proto2
 * with groups for Get/Set/Delete items) fully into a small struct first, since
 * fields such as name_space may follow the items, then runs it against the
 * backend (memcache_backend.h: the in-process store, or memcached servers)
 * under the calling app's id and encodes the response. Per-item
 * outcomes (NOT_STORED, NOT_FOUND, a miss) are statuses in the response, as
 * App Engine reports them; only a malformed request, a foreign AppOverride or
 * a non-numeric Increment are errors of the whole call. */
#include "api/memcache.h"
#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"

#include <stdlib.h>
#include <string.h>

typedef struct { const uint8_t *p; size_t n; } bytes;

/* Response status codes (memcache_service.proto). */
enum { SET_STORED = 1, SET_NOT_STORED = 2, SET_ERROR = 3, SET_EXISTS = 4 };
enum { DEL_DELETED = 1, DEL_NOT_FOUND = 2 };
enum { INC_OK = 1, INC_NOT_CHANGED = 2, INC_ERROR = 3 };

static int64_t unix_now(void) { return wall_us() / 1000; }   /* ms */

/* ---- shared decoding ---- */

typedef struct {
    bytes ns;
    bytes override_app;
    int has_override;
} common;

/* AppOverride { optional string app_id = 1; } */
static int read_override(pb_reader *r, int wt, common *c)
{
    pb_reader sub;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    uint32_t f; int w;
    c->has_override = 1;
    int rc;
    while ((rc = pb_next(&sub, &f, &w)) > 0) {
        if (f == 1) { if (pb_bytes(&sub, w, &c->override_app.p, &c->override_app.n) < 0) return -1; }
        else if (pb_skip(&sub, w, f) < 0) return -1;
    }
    return rc;
}

/* The app id without its partition ("dev~app" -> "app"). */
static bytes bare_app(const char *p, size_t n)
{
    const char *t = memchr(p, '~', n);
    if (t) { n -= (size_t)(t + 1 - p); p = t + 1; }
    return (bytes){ (const uint8_t *)p, n };
}

/* 0 when the call may proceed; an AppOverride naming another app is refused. */
static int check_override(api_ctx *ctx, const common *c, api_reply *reply)
{
    if (!c->has_override) return 0;
    bytes mine = bare_app(ctx->app_id, strlen(ctx->app_id));
    bytes theirs = bare_app((const char *)c->override_app.p, c->override_app.n);
    if (theirs.n == mine.n && (mine.n == 0 || !memcmp(theirs.p, mine.p, mine.n))) return 0;
    api_app_error(reply, MEMCACHE_PERMISSION_DENIED,
                  "Memcache of another application may not be accessed.");
    return -1;
}

static mc_key make_key(api_ctx *ctx, const common *c, bytes key)
{
    mc_key k = { ctx->app_id, strlen(ctx->app_id), (const char *)c->ns.p, c->ns.n, key.p, key.n };
    return k;
}

static void parse_error(api_reply *reply, const char *what)
{
    api_rpc_error(reply, RPC_PARSE_ERROR, "The memcache %s request could not be parsed.", what);
}

/* A growable array of fixed-size records. */
typedef struct { void *v; size_t n, cap, size; } vec;

static void *vec_push(vec *a)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->v = xrealloc(a->v, a->cap * a->size);
    }
    void *p = (char *)a->v + a->n++ * a->size;
    memset(p, 0, a->size);
    return p;
}

/* ---- Get ---- */

typedef struct {
    common c;
    vec keys;             /* bytes */
    int for_cas, for_peek;
} get_req;

static int decode_get(const uint8_t *in, size_t len, get_req *q)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1: { bytes *b = vec_push(&q->keys); rc = pb_bytes(&r, wt, &b->p, &b->n); break; }
        case 2: rc = pb_bytes(&r, wt, &q->c.ns.p, &q->c.ns.n); break;
        case 4: rc = pb_bool(&r, wt, &q->for_cas); break;
        case 5: rc = read_override(&r, wt, &q->c); break;
        case 6: rc = pb_bool(&r, wt, &q->for_peek); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

typedef struct { buf *out; int for_cas, for_peek; } get_emit;

/* MemcacheGetResponse.Item group (field 1). */
static void emit_item(void *arg, const mc_view *v)
{
    get_emit *e = arg;
    buf *b = e->out;
    pb_group_begin(b, 1);
    pb_put_bytes(b, 2, v->key, v->key_len);
    pb_put_bytes(b, 3, v->value, v->value_len);
    pb_put_fixed32(b, 4, v->flags);
    if (e->for_cas) pb_put_fixed64(b, 5, v->cas);
    if (e->for_peek) {
        size_t m = pb_begin(b, 8);
        if (v->expires) pb_put_int(b, 1, v->expires / 1000);
        pb_put_int(b, 2, v->last_access / 1000);
        if (v->lock_until) pb_put_int(b, 3, v->lock_until / 1000);
        pb_end(b, m);
        pb_put_bool(b, 9, v->lock_until != 0);
    }
    pb_group_end(b, 1);
}

static void m_get(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    get_req q = { .keys = { .size = sizeof(bytes) } };
    if (decode_get(in, len, &q) < 0) { parse_error(reply, "Get"); goto out; }
    if (check_override(ctx, &q.c, reply) < 0) goto out;
    int64_t now = unix_now();
    get_emit e = { &reply->response, q.for_cas, q.for_peek };
    mc_key *keys = xmalloc((q.keys.n ? q.keys.n : 1) * sizeof *keys);
    for (size_t i = 0; i < q.keys.n; i++) keys[i] = make_key(ctx, &q.c, ((bytes *)q.keys.v)[i]);
    mc_backend *b = ctx->service_data;
    b->ops->get(b, keys, q.keys.n, q.for_peek, now, emit_item, &e);     /* one batch: multi-get */
    free(keys);
out:
    free(q.keys.v);
}

/* ---- Set ---- */

typedef struct {
    bytes key, value;
    uint32_t flags, exptime;
    int32_t policy;
    uint64_t cas;
    int has_cas;
} set_item;

typedef struct { common c; vec items; } set_req;

static int decode_set_item(pb_reader *g, set_item *it)
{
    uint32_t f; int wt, rc;
    it->policy = MC_SET;
    while ((rc = pb_next(g, &f, &wt)) > 0) {
        switch (f) {
        case 2: rc = pb_bytes(g, wt, &it->key.p, &it->key.n); break;
        case 3: rc = pb_bytes(g, wt, &it->value.p, &it->value.n); break;
        case 4: rc = pb_fixed32(g, wt, &it->flags); break;
        case 5: rc = pb_int32(g, wt, &it->policy); break;
        case 6: rc = pb_fixed32(g, wt, &it->exptime); break;
        case 8: rc = pb_fixed64(g, wt, &it->cas); it->has_cas = 1; break;
        default: rc = pb_skip(g, wt, f); break;   /* for_cas (9) needs nothing */
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || g->err ? -1 : 0;
}

static int decode_set(const uint8_t *in, size_t len, set_req *q)
{
    pb_reader r, g;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1:
            rc = pb_group(&r, wt, f, &g);
            if (rc == 0) rc = decode_set_item(&g, vec_push(&q->items));
            break;
        case 7: rc = pb_bytes(&r, wt, &q->c.ns.p, &q->c.ns.n); break;
        case 10: rc = read_override(&r, wt, &q->c); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void m_set(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    set_req q = { .items = { .size = sizeof(set_item) } };
    if (decode_set(in, len, &q) < 0) { parse_error(reply, "Set"); goto out; }
    if (check_override(ctx, &q.c, reply) < 0) goto out;
    int64_t now = unix_now();
    for (size_t i = 0; i < q.items.n; i++) {
        set_item *it = &((set_item *)q.items.v)[i];
        mc_key k = make_key(ctx, &q.c, it->key);
        mc_backend *b = ctx->service_data;
        int st = b->ops->set(b, &k, it->value.p, it->value.n, it->flags,
                        it->policy, it->cas, it->has_cas, it->exptime, now);
        pb_put_uint(&reply->response, 1, (uint64_t)st);   /* MC_* equal SET_* */
    }
out:
    free(q.items.v);
}

/* ---- Delete ---- */

typedef struct { bytes key; uint32_t hold; } del_item;
typedef struct { common c; vec items; } del_req;

static int decode_delete(const uint8_t *in, size_t len, del_req *q)
{
    pb_reader r, g;
    pb_reader_init(&r, in, len);
    uint32_t f, gf; int wt, gwt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1: {
            rc = pb_group(&r, wt, f, &g);
            if (rc < 0) break;
            del_item *it = vec_push(&q->items);
            while ((rc = pb_next(&g, &gf, &gwt)) > 0) {
                if (gf == 2) rc = pb_bytes(&g, gwt, &it->key.p, &it->key.n);
                else if (gf == 3) rc = pb_fixed32(&g, gwt, &it->hold);
                else rc = pb_skip(&g, gwt, gf);
                if (rc < 0) break;
            }
            if (g.err) rc = -1;
            break;
        }
        case 4: rc = pb_bytes(&r, wt, &q->c.ns.p, &q->c.ns.n); break;
        case 5: rc = read_override(&r, wt, &q->c); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void m_delete(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    del_req q = { .items = { .size = sizeof(del_item) } };
    if (decode_delete(in, len, &q) < 0) { parse_error(reply, "Delete"); goto out; }
    if (check_override(ctx, &q.c, reply) < 0) goto out;
    int64_t now = unix_now();
    for (size_t i = 0; i < q.items.n; i++) {
        del_item *it = &((del_item *)q.items.v)[i];
        mc_key k = make_key(ctx, &q.c, it->key);
        mc_backend *b = ctx->service_data;
        int d = b->ops->del(b, &k, it->hold, now);
        pb_put_uint(&reply->response, 1, d ? DEL_DELETED : DEL_NOT_FOUND);
    }
out:
    free(q.items.v);
}

/* ---- Increment / BatchIncrement ---- */

typedef struct {
    common c;
    bytes key;
    uint64_t delta, initial;
    int32_t direction;
    uint32_t initial_flags;
    int has_initial;
} incr_req;

/* MemcacheIncrementRequest, top level or inside a batch. */
static int decode_incr_fields(pb_reader *r, incr_req *q)
{
    uint32_t f; int wt, rc;
    q->delta = 1;
    q->direction = 1;
    while ((rc = pb_next(r, &f, &wt)) > 0) {
        switch (f) {
        case 1: rc = pb_bytes(r, wt, &q->key.p, &q->key.n); break;
        case 2: rc = pb_varint(r, wt, &q->delta); break;
        case 3: rc = pb_int32(r, wt, &q->direction); break;
        case 4: rc = pb_bytes(r, wt, &q->c.ns.p, &q->c.ns.n); break;
        case 5: rc = pb_varint(r, wt, &q->initial); q->has_initial = 1; break;
        case 6: rc = pb_fixed32(r, wt, &q->initial_flags); break;
        case 7: rc = read_override(r, wt, &q->c); break;
        default: rc = pb_skip(r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r->err ? -1 : 0;
}

static int run_incr(api_ctx *ctx, const common *c, const incr_req *q, uint64_t *nv)
{
    mc_key k = make_key(ctx, c, q->key);
    mc_backend *b = ctx->service_data;
    return b->ops->incr(b, &k, q->direction == 2, q->delta, q->has_initial,
                   q->initial, q->initial_flags, unix_now(), nv);
}

static void m_increment(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    incr_req q = {0};
    pb_reader r;
    pb_reader_init(&r, in, len);
    if (decode_incr_fields(&r, &q) < 0) { parse_error(reply, "Increment"); return; }
    if (check_override(ctx, &q.c, reply) < 0) return;
    uint64_t nv = 0;
    int rc = run_incr(ctx, &q.c, &q, &nv);
    if (rc == MC_INCR_NOT_NUMERIC || rc == MC_INCR_TOO_BIG) {
        api_app_error(reply, MEMCACHE_INVALID_VALUE, rc == MC_INCR_TOO_BIG
                      ? "The memcache value to increment exceeds an unsigned 64-bit integer."
                      : "The memcache value to increment is not an unsigned decimal integer.");
        return;
    }
    /* A miss answers without new_value, which the SDKs read as "no such key". */
    if (rc == MC_INCR_OK) pb_put_uint(&reply->response, 1, nv);
    pb_put_uint(&reply->response, 2, rc == MC_INCR_OK ? INC_OK : INC_NOT_CHANGED);
}

typedef struct { common c; vec items; } batch_req;   /* items: incr_req */

static int decode_batch(const uint8_t *in, size_t len, batch_req *q)
{
    pb_reader r, sub;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1: rc = pb_bytes(&r, wt, &q->c.ns.p, &q->c.ns.n); break;
        case 2:
            rc = pb_sub(&r, wt, &sub);
            if (rc == 0) rc = decode_incr_fields(&sub, vec_push(&q->items));
            break;
        case 3: rc = read_override(&r, wt, &q->c); break;
        default: rc = pb_skip(&r, wt, f); break;
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void m_batch_increment(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    batch_req q = { .items = { .size = sizeof(incr_req) } };
    if (decode_batch(in, len, &q) < 0) { parse_error(reply, "BatchIncrement"); goto out; }
    if (check_override(ctx, &q.c, reply) < 0) goto out;
    buf *b = &reply->response;
    for (size_t i = 0; i < q.items.n; i++) {
        incr_req *it = &((incr_req *)q.items.v)[i];
        uint64_t nv = 0;
        int rc = run_incr(ctx, &q.c, it, &nv);     /* the batch's namespace applies */
        size_t m = pb_begin(b, 1);
        if (rc == MC_INCR_OK) pb_put_uint(b, 1, nv);
        pb_put_uint(b, 2, rc == MC_INCR_OK ? INC_OK : rc == MC_INCR_MISS ? INC_NOT_CHANGED : INC_ERROR);
        pb_end(b, m);
    }
out:
    free(q.items.v);
}

/* ---- FlushAll / Stats ---- */

/* Both requests carry only override (field 1) and, for Stats, max_hotkey_count. */
static int decode_admin(const uint8_t *in, size_t len, common *c)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        rc = f == 1 ? read_override(&r, wt, c) : pb_skip(&r, wt, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void m_flush_all(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    common c = {0};
    if (decode_admin(in, len, &c) < 0) { parse_error(reply, "FlushAll"); return; }
    if (check_override(ctx, &c, reply) < 0) return;
    mc_backend *b = ctx->service_data;
    if (b->ops->flush_app(b, ctx->app_id, strlen(ctx->app_id)) < 0) {
        api_app_error(reply, MEMCACHE_UNSPECIFIED_ERROR, "Memcache could not be flushed on every server.");
        return;
    }
    log_info("memcache", "app=%s msg=\"flushed\"", log_q(ctx->app_id));
}

static void m_stats(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    common c = {0};
    if (decode_admin(in, len, &c) < 0) { parse_error(reply, "Stats"); return; }
    if (check_override(ctx, &c, reply) < 0) return;
    mc_stats st;
    mc_backend *be = ctx->service_data;
    be->ops->stats(be, ctx->app_id, strlen(ctx->app_id), unix_now(), &st);
    buf *b = &reply->response;
    size_t m = pb_begin(b, 1);
    pb_put_uint(b, 1, st.hits);
    pb_put_uint(b, 2, st.misses);
    pb_put_uint(b, 3, st.byte_hits);
    pb_put_uint(b, 4, st.items);
    pb_put_uint(b, 5, st.bytes);
    pb_put_fixed32(b, 6, st.oldest_item_age);
    pb_end(b, m);
}

/* ---- registration ---- */

static const struct { const char *name; api_method_fn fn; } methods[] = {
    { "Get", m_get },
    { "Set", m_set },
    { "Delete", m_delete },
    { "Increment", m_increment },
    { "BatchIncrement", m_batch_increment },
    { "FlushAll", m_flush_all },
    { "Stats", m_stats },
};

api_method_fn memcache_method(const char *method)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i].name, method)) return methods[i].fn;
    return NULL;
}

static void free_backend(void *b) { mc_backend_free(b); }

static size_t configured_cap(void)
{
    const char *e = getenv("CYCLOZZO_MEMCACHE_MB");
    if (!e || !*e) return MEMCACHE_DEFAULT_CAP;
    char *end;
    unsigned long long mb = strtoull(e, &end, 10);
    if (*end || mb == 0 || mb > (1ull << 20)) {
        log_warn("memcache", "msg=\"CYCLOZZO_MEMCACHE_MB is not a size in MiB; using 64\" value=%s", log_q(e));
        return MEMCACHE_DEFAULT_CAP;
    }
    return (size_t)mb << 20;
}

const char *memcache_servers_setting(api_server *srv)
{
    const char *s = srv ? api_shared(srv, MEMCACHE_SERVERS_SHARE) : NULL;
    if (!s || !*s) s = getenv("CYCLOZZO_MEMCACHE_SERVERS");
    return s && *s ? s : NULL;
}

void memcache_register(api_server *srv, const char *home)
{
    (void)home;
    mc_backend *b = NULL;
    const char *servers = memcache_servers_setting(srv);
    if (servers) {
        char err[256];
        b = mc_backend_memcached(servers, err, sizeof err);
        if (b) log_info("memcache", "msg=\"memcache on memcached\" servers=%s", log_q(servers));
        else log_error("memcache", "msg=\"memcached servers not usable; using the in-process cache\" error=%s", log_q(err));
    }
    if (!b) {
        size_t cap = configured_cap();
        b = mc_backend_embedded(cap, 0);
        log_info("memcache", "msg=\"in-process memcache ready\" cap_mb=%zu stripes=%d",
                 cap >> 20, mc_store_stripes(mc_backend_store(b)));
    }
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        api_register(srv, "memcache", methods[i].name, methods[i].fn, b);
    api_on_stop(srv, free_backend, b);
}
