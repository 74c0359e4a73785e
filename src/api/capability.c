/* capability.c - the capability_service API: "is this API available now?"
 *
 * Cyclozzo has no scheduled maintenance windows and never switches an API to
 * read-only, so IsEnabled answers as App Engine does when everything is up:
 * one CapabilityConfig per capability asked about (package, capability,
 * status ENABLED) and summary_status ENABLED.
 *
 * Messages (google/appengine/api/capabilities/capability_service.proto and
 * base/capabilities.proto):
 *   IsEnabledRequest   1 package (string, required), 2 capability (repeated
 *                      string), 3 call (repeated string)
 *   IsEnabledResponse  1 summary_status (enum: DEFAULT 0, ENABLED 1,
 *                      SCHEDULED_FUTURE 2, SCHEDULED_NOW 3, DISABLED 4,
 *                      UNKNOWN 5), 2 time_until_scheduled (int64),
 *                      3 config (repeated CapabilityConfig)
 *   CapabilityConfig   1 package, 2 capability (strings, required),
 *                      3 status (enum: DEFAULT 0, ENABLED 1, SCHEDULED 2,
 *                      DISABLED 3, UNKNOWN 4), 7 scheduled_time, 4-6 messages
 * A request the SDK could not have produced (no package, wrong wire types) is
 * refused with PARSE_ERROR, as App Engine refuses unparsable API requests. */
#include "api/api.h"

#include "proto/pb.h"

enum { SUMMARY_ENABLED = 1, CONFIG_ENABLED = 1 };

static void put_config(buf *out, const uint8_t *pkg, size_t pkg_len, const uint8_t *cap, size_t cap_len)
{
    size_t m = pb_begin(out, 3);
    pb_put_bytes(out, 1, pkg, pkg_len);
    pb_put_bytes(out, 2, cap, cap_len);
    pb_put_int(out, 3, CONFIG_ENABLED);
    pb_end(out, m);
}

static void is_enabled(api_ctx *ctx, const uint8_t *req, size_t len, api_reply *reply)
{
    pb_reader r;
    pb_reader_init(&r, req, len);
    const uint8_t *pkg = NULL;
    size_t pkg_len = 0;
    uint32_t field;
    int wt, st;
    /* First pass: the package (it may follow the capabilities on the wire). */
    while ((st = pb_next(&r, &field, &wt)) == 1) {
        const uint8_t *p;
        size_t n;
        if (field == 1 || field == 2 || field == 3) {
            if (pb_bytes(&r, wt, &p, &n) < 0) break;
            if (field == 1) { pkg = p; pkg_len = n; }
        } else if (pb_skip(&r, wt, field) < 0) {
            break;
        }
    }
    if (st != 0 || r.err || !pkg) {
        api_rpc_error(reply, RPC_PARSE_ERROR, "The capability_service.IsEnabled request is not a valid IsEnabledRequest.");
        return;
    }
    pb_put_int(&reply->response, 1, SUMMARY_ENABLED);
    pb_reader_init(&r, req, len);
    while (pb_next(&r, &field, &wt) == 1) {
        const uint8_t *p;
        size_t n;
        if (field == 2) {
            pb_bytes(&r, wt, &p, &n);
            put_config(&reply->response, pkg, pkg_len, p, n);
        } else {
            pb_skip(&r, wt, field);
        }
    }
}

void capability_register(api_server *srv, const char *home)
{
    (void)home;
    api_register(srv, "capability_service", "IsEnabled", is_enabled, NULL);
}
