/* Unit tests for the remote_api envelope (src/proto/remote_api.c). The byte
 * vectors were produced by the official Python SDK's remote_api protobuf
 * classes, so these tests pin our codec to the SDK's wire format. */
#include "proto/remote_api.h"
#include "test.h"

#define V(s) (const uint8_t *)(s), sizeof(s) - 1

/* Request(service_name='memcache', method='Get', request=b'\n\x01k',
 *         request_id='cz1.abc', trace_context=b'T') */
static const char sdk_request[] =
    "\x12\x08memcache\x1a\x03Get\x22\x03\x0a\x01k\x2a\x07" "cz1.abc\x32\x01T";

static int eq(const void *p, size_t n, const char *s) { return n == strlen(s) && !memcmp(p, s, n); }

TEST(decode_sdk_request)
{
    remote_api_request r;
    char err[128];
    CHECK_INT(remote_api_request_decode(sdk_request, sizeof sdk_request - 1, &r, err, sizeof err), 0);
    CHECK(eq(r.service, r.service_len, "memcache"));
    CHECK(eq(r.method, r.method_len, "Get"));
    CHECK(r.request_len == 3 && !memcmp(r.request, "\x0a\x01k", 3));
    CHECK(eq(r.request_id, r.request_id_len, "cz1.abc"));
    CHECK(r.trace_context_len == 1 && r.trace_context[0] == 'T');
}

TEST(encode_request_matches_sdk)
{
    remote_api_request r = {
        .service = "memcache", .service_len = 8, .method = "Get", .method_len = 3,
        .request = (const uint8_t *)"\x0a\x01k", .request_len = 3,
        .request_id = "cz1.abc", .request_id_len = 7,
        .trace_context = (const uint8_t *)"T", .trace_context_len = 1,
    };
    buf b = BUF_INIT;
    remote_api_request_encode(&b, &r);
    CHECK(b.len == sizeof sdk_request - 1 && !memcmp(b.data, sdk_request, b.len));
    buf_free(&b);
}

TEST(request_optional_and_unknown_fields)
{
    remote_api_request r;
    char err[128];
    /* No request_id, no request; an unknown varint field 9 and fixed64 field 10. */
    static const char in[] = "\x12\x01s\x1a\x01m\x48\x05\x51\x01\x02\x03\x04\x05\x06\x07\x08";
    CHECK_INT(remote_api_request_decode(in, sizeof in - 1, &r, err, sizeof err), 0);
    CHECK(r.request_id == NULL);
    CHECK(r.request != NULL && r.request_len == 0);
    CHECK(eq(r.service, r.service_len, "s") && eq(r.method, r.method_len, "m"));
    /* Empty strings are present, not missing. */
    static const char empty[] = "\x12\x00\x1a\x00\x22\x00\x2a\x00";
    CHECK_INT(remote_api_request_decode(empty, sizeof empty - 1, &r, err, sizeof err), 0);
    CHECK(r.service_len == 0 && r.request_id != NULL && r.request_id_len == 0);
}

TEST(request_errors)
{
    remote_api_request r;
    char err[128];
    static const char no_service[] = "\x1a\x03Get\x22\x00";
    CHECK_INT(remote_api_request_decode(no_service, sizeof no_service - 1, &r, err, sizeof err), -1);
    CHECK(strstr(err, "service_name") != NULL);
    static const char no_method[] = "\x12\x01s\x22\x00";
    CHECK_INT(remote_api_request_decode(no_method, sizeof no_method - 1, &r, err, sizeof err), -1);
    CHECK(strstr(err, "method") != NULL);
    static const char truncated[] = "\x12\x08mem";
    CHECK_INT(remote_api_request_decode(truncated, sizeof truncated - 1, &r, err, sizeof err), -1);
    static const char wrong_type[] = "\x10\x05\x1a\x01m";      /* service_name as varint */
    CHECK_INT(remote_api_request_decode(wrong_type, sizeof wrong_type - 1, &r, err, sizeof err), -1);
    static const char bad_tag[] = "\x12\x01s\x1a\x01m\x07";     /* wire type 7 */
    CHECK_INT(remote_api_request_decode(bad_tag, sizeof bad_tag - 1, &r, err, sizeof err), -1);
    CHECK_INT(remote_api_request_decode("", 0, &r, err, sizeof err), -1);
    static const char garbage[] = "GET / HTTP/1.1\r\n";
    CHECK_INT(remote_api_request_decode(garbage, sizeof garbage - 1, &r, err, sizeof err), -1);
}

static void check_encoding(const remote_api_response *r, const uint8_t *want, size_t n)
{
    buf b = BUF_INIT;
    remote_api_response_encode(&b, r);
    CHECK_INT(b.len, n);
    CHECK(b.len == n && !memcmp(b.data, want, n));
    buf_free(&b);
}

TEST(encode_response_matches_sdk)
{
    remote_api_response ok = { .kind = REMOTE_API_OK, .response = (const uint8_t *)"\x08\x01", .response_len = 2 };
    check_encoding(&ok, V("\x0a\x02\x08\x01"));
    remote_api_response empty = { .kind = REMOTE_API_OK, .response = (const uint8_t *)"", .response_len = 0 };
    check_encoding(&empty, V("\x0a\x00"));
    remote_api_response app = { .kind = REMOTE_API_APP_ERROR, .code = 2, .detail = "conflict", .detail_len = 8 };
    check_encoding(&app, V("\x1a\x0c\x08\x02\x12\x08" "conflict"));
    remote_api_response rpc = { .kind = REMOTE_API_RPC_ERROR, .code = 3, .detail = "no ticket", .detail_len = 9 };
    check_encoding(&rpc, V("\x2a\x0d\x08\x03\x12\x09no ticket"));
    remote_api_response bare = { .kind = REMOTE_API_RPC_ERROR, .code = 1, .detail = "", .detail_len = 0 };
    check_encoding(&bare, V("\x2a\x02\x08\x01"));
}

TEST(rpc_detail_percent_is_neutralised)
{
    remote_api_response rpc = { .kind = REMOTE_API_RPC_ERROR, .code = 1, .detail = "a%sb", .detail_len = 4 };
    check_encoding(&rpc, V("\x2a\x08\x08\x01\x12\x04" "a?sb"));
    /* Application error details reach the app verbatim. */
    remote_api_response app = { .kind = REMOTE_API_APP_ERROR, .code = 1, .detail = "5%", .detail_len = 2 };
    check_encoding(&app, V("\x1a\x06\x08\x01\x12\x02" "5%"));
}

TEST(response_roundtrip)
{
    remote_api_response in[] = {
        { .kind = REMOTE_API_OK, .response = (const uint8_t *)"abc", .response_len = 3 },
        { .kind = REMOTE_API_APP_ERROR, .code = -7, .detail = "x", .detail_len = 1 },
        { .kind = REMOTE_API_RPC_ERROR, .code = 12, .detail = "late", .detail_len = 4 },
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        buf b = BUF_INIT;
        remote_api_response_encode(&b, &in[i]);
        remote_api_response out;
        char err[128];
        CHECK_INT(remote_api_response_decode(b.data, b.len, &out, err, sizeof err), 0);
        CHECK_INT(out.kind, in[i].kind);
        if (in[i].kind == REMOTE_API_OK) {
            CHECK(out.response_len == 3 && !memcmp(out.response, "abc", 3));
        } else {
            CHECK_INT(out.code, in[i].code);
            CHECK(out.detail_len == in[i].detail_len && !memcmp(out.detail, in[i].detail, out.detail_len));
        }
        buf_free(&b);
    }
    remote_api_response out;
    char err[128];
    /* ApplicationError without its required detail is invalid. */
    CHECK_INT(remote_api_response_decode("\x1a\x02\x08\x02", 4, &out, err, sizeof err), -1);
    CHECK_INT(remote_api_response_decode("\x0a\x05\x01", 3, &out, err, sizeof err), -1);
}

int main(void)
{
    RUN(decode_sdk_request);
    RUN(encode_request_matches_sdk);
    RUN(request_optional_and_unknown_fields);
    RUN(request_errors);
    RUN(encode_response_matches_sdk);
    RUN(rpc_detail_percent_is_neutralised);
    RUN(response_roundtrip);
    return test_report();
}
