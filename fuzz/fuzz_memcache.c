/* fuzz_memcache.c - libFuzzer target for the memcache service's request
 * decoders and the store behind them.
 *
 * The first input byte picks the method (Get, Set, Delete, Increment,
 * BatchIncrement, FlushAll, Stats), the second the calling app (one of two),
 * and the rest is the request message. Methods run exactly as the API server
 * runs them, against one small store kept across inputs so evictions, holds
 * and increments meet each other. Replies must be well formed: either an
 * error with a code, or a response that parses as protobuf. */
#include "api/memcache.h"
#include "proto/pb.h"

#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {
    "Get", "Set", "Delete", "Increment", "BatchIncrement", "FlushAll", "Stats",
};

static int well_formed(const uint8_t *p, size_t n)
{
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0)
        if (pb_skip(&r, wt, f) < 0) return 0;
    return rc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mc_backend *store;
    if (!store) store = mc_backend_embedded(2u << 20, 2);
    if (size < 2) return 0;
    const char *name = method_names[data[0] % (sizeof method_names / sizeof method_names[0])];
    api_method_fn fn = memcache_method(name);
    if (!fn) abort();
    api_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.app_id = (data[1] & 1) ? "dev~one" : "dev~two";
    ctx.version = ctx.ns = ctx.user_email = ctx.user_id = ctx.request_id = "";
    ctx.service_data = store;
    api_reply reply;
    memset(&reply, 0, sizeof reply);
    fn(&ctx, data + 2, size - 2, &reply);
    if (reply.kind == API_REPLY_OK && !well_formed((const uint8_t *)reply.response.data, reply.response.len))
        abort();
    buf_free(&reply.response);
    if (mc_store_used(mc_backend_store(store)) > (2u << 20)) abort();
    return 0;
}
