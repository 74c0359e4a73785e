/* Unit tests for the memcache protocol glue (src/api/memcache.c): requests
 * encoded by hand on the wire format, run through the registered method
 * functions without a server, responses decoded field by field. Covers what
 * the Python SDK does not show: field order, error kinds, statuses, and the
 * shape of an Increment miss. */
#include "api/memcache.h"
#include "proto/pb.h"
#include "test.h"

#include <stdlib.h>

static mc_backend *store;

static api_reply call(const char *app, const char *method, buf *req)
{
    api_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.app_id = app;
    ctx.version = ctx.ns = ctx.user_email = ctx.user_id = ctx.request_id = "";
    ctx.service_data = store;
    api_reply r;
    memset(&r, 0, sizeof r);
    memcache_method(method)(&ctx, (const uint8_t *)req->data, req->len, &r);
    buf_reset(req);
    return r;
}

/* Collect every varint of one field of a response. */
static int varints(api_reply *r, uint32_t field, uint64_t *out, int max)
{
    pb_reader rd;
    pb_reader_init(&rd, r->response.data, r->response.len);
    uint32_t f; int wt, n = 0;
    while (pb_next(&rd, &f, &wt) > 0) {
        if (f == field && wt == PB_VARINT && n < max) pb_varint(&rd, wt, &out[n++]);
        else pb_skip(&rd, wt, f);
    }
    return rd.err ? -1 : n;
}

static void set_item(buf *b, const char *key, const char *val, int policy, uint64_t cas)
{
    pb_group_begin(b, 1);
    pb_put_bytes(b, 2, key, strlen(key));
    pb_put_bytes(b, 3, val, strlen(val));
    pb_put_fixed32(b, 4, 77);
    if (policy) pb_put_uint(b, 5, (uint64_t)policy);
    if (cas) pb_put_fixed64(b, 8, cas);
    pb_group_end(b, 1);
}

TEST(set_get_with_namespace_after_items)
{
    buf q = BUF_INIT;
    set_item(&q, "k", "v", 0, 0);
    set_item(&q, "k", "w", MC_ADD, 0);
    pb_put_str(&q, 7, "ns");                 /* name_space after the items */
    api_reply r = call("dev~a", "Set", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    uint64_t st[4];
    CHECK_INT(varints(&r, 1, st, 4), 2);
    CHECK_INT(st[0], MC_STORED);
    CHECK_INT(st[1], MC_NOT_STORED);
    buf_free(&r.response);

    pb_put_bytes(&q, 1, "k", 1);
    pb_put_bool(&q, 4, 1);
    pb_put_str(&q, 2, "ns");
    r = call("dev~a", "Get", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    pb_reader rd, g;
    pb_reader_init(&rd, r.response.data, r.response.len);
    uint32_t f; int wt, items = 0;
    while (pb_next(&rd, &f, &wt) > 0) {
        CHECK_INT(f, 1);
        CHECK(pb_group(&rd, wt, f, &g) == 0);
        items++;
        int seen = 0;
        while (pb_next(&g, &f, &wt) > 0) {
            const uint8_t *p; size_t n; uint32_t fl; uint64_t cas;
            if (f == 2) { pb_bytes(&g, wt, &p, &n); CHECK(n == 1 && p[0] == 'k'); seen |= 1; }
            else if (f == 3) { pb_bytes(&g, wt, &p, &n); CHECK(n == 1 && p[0] == 'v'); seen |= 2; }
            else if (f == 4) { pb_fixed32(&g, wt, &fl); CHECK_INT(fl, 77); seen |= 4; }
            else if (f == 5) { pb_fixed64(&g, wt, &cas); CHECK(cas != 0); seen |= 8; }
            else pb_skip(&g, wt, f);
        }
        CHECK_INT(seen, 15);
    }
    CHECK_INT(items, 1);
    buf_free(&r.response);

    /* Without the namespace the key is not there. */
    pb_put_bytes(&q, 1, "k", 1);
    r = call("dev~a", "Get", &q);
    CHECK_INT(r.response.len, 0);
    buf_free(&q);
}

TEST(errors)
{
    buf q = BUF_INIT;
    buf_append(&q, "\x0a\xff", 2);                       /* truncated bytes field */
    api_reply r = call("dev~a", "Get", &q);
    CHECK_INT(r.kind, API_REPLY_RPC_ERROR);
    CHECK_INT(r.code, RPC_PARSE_ERROR);
    CHECK(strstr(r.detail, "Get") != NULL);

    pb_group_begin(&q, 1);                                /* group never closed */
    pb_put_bytes(&q, 2, "k", 1);
    r = call("dev~a", "Set", &q);
    CHECK_INT(r.code, RPC_PARSE_ERROR);

    size_t m = pb_begin(&q, 1);                           /* another app's memcache */
    pb_put_str(&q, 1, "b");
    pb_end(&q, m);
    r = call("dev~a", "FlushAll", &q);
    CHECK_INT(r.kind, API_REPLY_APP_ERROR);
    CHECK_INT(r.code, MEMCACHE_PERMISSION_DENIED);

    m = pb_begin(&q, 1);                                  /* its own id, with or without partition */
    pb_put_str(&q, 1, "a");
    pb_end(&q, m);
    r = call("dev~a", "Stats", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    buf_free(&r.response);
    buf_free(&q);
}

TEST(increment_shapes)
{
    buf q = BUF_INIT;
    pb_put_bytes(&q, 1, "ctr", 3);
    api_reply r = call("dev~a", "Increment", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    uint64_t v[2];
    CHECK_INT(varints(&r, 1, v, 2), 0);                   /* a miss has no new_value */
    CHECK_INT(varints(&r, 2, v, 2), 1);
    CHECK_INT(v[0], 2);                                   /* NOT_CHANGED */
    buf_free(&r.response);

    pb_put_bytes(&q, 1, "ctr", 3);
    pb_put_uint(&q, 2, 5);
    pb_put_uint(&q, 3, 2);                                /* DECREMENT */
    pb_put_uint(&q, 5, 3);                                /* initial 3 */
    r = call("dev~a", "Increment", &q);
    CHECK_INT(varints(&r, 1, v, 2), 1);
    CHECK_INT(v[0], 0);
    buf_free(&r.response);

    set_item(&q, "txt", "abc", 0, 0);
    r = call("dev~a", "Set", &q);
    buf_free(&r.response);
    pb_put_bytes(&q, 1, "txt", 3);
    r = call("dev~a", "Increment", &q);
    CHECK_INT(r.kind, API_REPLY_APP_ERROR);
    CHECK_INT(r.code, MEMCACHE_INVALID_VALUE);

    /* A batch answers each item: OK, NOT_CHANGED (miss), ERROR (not a number). */
    const char *keys[] = { "ctr", "missing", "txt" };
    for (int i = 0; i < 3; i++) {
        size_t m = pb_begin(&q, 2);
        pb_put_bytes(&q, 1, keys[i], strlen(keys[i]));
        pb_put_uint(&q, 2, 7);
        pb_end(&q, m);
    }
    r = call("dev~a", "BatchIncrement", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    pb_reader rd, sub;
    pb_reader_init(&rd, r.response.data, r.response.len);
    uint32_t f; int wt, i = 0;
    uint64_t want_status[] = { 1, 2, 3 };
    while (pb_next(&rd, &f, &wt) > 0 && i < 3) {
        CHECK(pb_sub(&rd, wt, &sub) == 0);
        uint64_t nv = 999, status = 0;
        uint32_t sf; int swt;
        while (pb_next(&sub, &sf, &swt) > 0) {
            if (sf == 1) pb_varint(&sub, swt, &nv);
            else if (sf == 2) pb_varint(&sub, swt, &status);
            else pb_skip(&sub, swt, sf);
        }
        CHECK_INT(status, want_status[i]);
        if (i == 0) CHECK_INT(nv, 7);
        else CHECK_INT(nv, 999);
        i++;
    }
    CHECK_INT(i, 3);
    buf_free(&r.response);
    buf_free(&q);
}

int main(void)
{
    store = mc_backend_embedded(1 << 20, 2);
    RUN(set_get_with_namespace_after_items);
    RUN(errors);
    RUN(increment_shapes);
    mc_backend_free(store);
    return test_report();
}
