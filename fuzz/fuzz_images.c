/* fuzz_images.c - libFuzzer target for the images service's request path.
 *
 * The first input byte picks the method (Transform, Composite, Histogram),
 * the rest is the request message, run exactly as the API server runs it
 * (inline images only: no blob store). The seeds in
 * fuzz/corpus/fuzz_images/ are real requests carrying tiny JPEG, PNG, GIF,
 * WebP and TIFF images with every kind of transform, so mutations reach the
 * decoders, the transforms and the encoders. A reply must be well formed: an
 * error with an ImagesServiceError code (1..8) or RPC PARSE_ERROR, or a
 * response that parses as protobuf. */
#include "api/images.h"
#include "proto/pb.h"

#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = { "Transform", "Composite", "Histogram" };

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
    if (size < 1) return 0;
    const char *name = method_names[data[0] % (sizeof method_names / sizeof method_names[0])];
    api_method_fn fn = images_method(name);
    if (!fn) abort();
    api_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.app_id = "dev~fuzz";
    ctx.version = ctx.ns = ctx.user_email = ctx.user_id = ctx.request_id = "";
    api_reply reply;
    memset(&reply, 0, sizeof reply);
    fn(&ctx, data + 1, size - 1, &reply);
    if (reply.kind == API_REPLY_OK && !well_formed((const uint8_t *)reply.response.data, reply.response.len))
        abort();
    if (reply.kind == API_REPLY_APP_ERROR && (reply.code < 1 || reply.code > 8)) abort();
    if (reply.kind == API_REPLY_RPC_ERROR && reply.code != RPC_PARSE_ERROR) abort();
    buf_free(&reply.response);
    return 0;
}
