/* remote_api.c - decode the remote_api Request and encode the Response that
 * wrap every App Engine API call. See remote_api.h for the field numbers.
 *
 * The decoder walks the fields once with the pb.h reader, remembers where
 * each known field's bytes lie in the input, and checks the required ones at
 * the end. The encoder writes fields in field-number order, as the official
 * protobuf libraries do. */
#include "proto/remote_api.h"

#include <string.h>

#include "core/util.h"
#include "proto/pb.h"

int remote_api_request_decode(const void *data, size_t len, remote_api_request *r,
                              char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    pb_reader rd;
    pb_reader_init(&rd, data, len);
    int have_service = 0, have_method = 0;
    uint32_t field;
    int wt, st;
    while ((st = pb_next(&rd, &field, &wt)) == 1) {
        const uint8_t *p;
        size_t n;
        switch (field) {
        case 2: case 3: case 4: case 5: case 6:
            if (pb_bytes(&rd, wt, &p, &n) < 0) {
                set_err(err, errlen, "remote_api Request field %u is not length-delimited or is truncated", field);
                return -1;
            }
            if (field == 2) { r->service = (const char *)p; r->service_len = n; have_service = 1; }
            else if (field == 3) { r->method = (const char *)p; r->method_len = n; have_method = 1; }
            else if (field == 4) { r->request = p; r->request_len = n; }
            else if (field == 5) { r->request_id = (const char *)p; r->request_id_len = n; }
            else { r->trace_context = p; r->trace_context_len = n; }
            break;
        default:
            if (pb_skip(&rd, wt, field) < 0) {
                set_err(err, errlen, "remote_api Request has a malformed field %u", field);
                return -1;
            }
        }
    }
    if (st < 0 || rd.err) {
        set_err(err, errlen, "remote_api Request is not a valid protocol buffer");
        return -1;
    }
    if (!have_service) { set_err(err, errlen, "remote_api Request has no service_name"); return -1; }
    if (!have_method) { set_err(err, errlen, "remote_api Request has no method"); return -1; }
    if (!r->request) r->request = (const uint8_t *)"";
    return 0;
}

void remote_api_request_encode(buf *b, const remote_api_request *r)
{
    pb_put_bytes(b, 2, r->service, r->service_len);
    pb_put_bytes(b, 3, r->method, r->method_len);
    pb_put_bytes(b, 4, r->request, r->request_len);
    if (r->request_id) pb_put_bytes(b, 5, r->request_id, r->request_id_len);
    if (r->trace_context) pb_put_bytes(b, 6, r->trace_context, r->trace_context_len);
}

void remote_api_response_encode(buf *b, const remote_api_response *r)
{
    size_t mark;
    switch (r->kind) {
    case REMOTE_API_OK:
        pb_put_bytes(b, 1, r->response, r->response_len);
        break;
    case REMOTE_API_EXCEPTION:
        pb_put_bytes(b, 2, r->response, r->response_len);
        break;
    case REMOTE_API_APP_ERROR:
        mark = pb_begin(b, 3);
        pb_put_int(b, 1, r->code);
        pb_put_bytes(b, 2, r->detail, r->detail_len);
        pb_end(b, mark);
        break;
    case REMOTE_API_RPC_ERROR:
        mark = pb_begin(b, 5);
        pb_put_int(b, 1, r->code);
        if (r->detail_len) {
            pb_put_tag(b, 2, PB_LEN);
            pb_put_varint_raw(b, r->detail_len);
            size_t at = b->len;
            buf_append(b, r->detail, r->detail_len);
            for (size_t i = at; i < b->len; i++)
                if (b->data[i] == '%') b->data[i] = '?';
        }
        pb_end(b, mark);
        break;
    }
}

/* Reads ApplicationError / RpcError: code (1) and detail (2). */
static int decode_error(pb_reader *sub, remote_api_response *r, int detail_required)
{
    int have_code = 0, have_detail = 0;
    uint32_t field;
    int wt, st;
    while ((st = pb_next(sub, &field, &wt)) == 1) {
        if (field == 1) {
            if (pb_int32(sub, wt, &r->code) < 0) return -1;
            have_code = 1;
        } else if (field == 2) {
            const uint8_t *p;
            if (pb_bytes(sub, wt, &p, &r->detail_len) < 0) return -1;
            r->detail = (const char *)p;
            have_detail = 1;
        } else if (pb_skip(sub, wt, field) < 0) {
            return -1;
        }
    }
    if (st < 0 || !have_code || (detail_required && !have_detail)) return -1;
    if (!r->detail) r->detail = "";
    return 0;
}

int remote_api_response_decode(const void *data, size_t len, remote_api_response *r,
                               char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    pb_reader rd, sub;
    pb_reader_init(&rd, data, len);
    int have_app = 0, have_rpc = 0, have_exc = 0;
    remote_api_response app = {0}, rpc = {0};
    uint32_t field;
    int wt, st;
    while ((st = pb_next(&rd, &field, &wt)) == 1) {
        const uint8_t *p;
        size_t n;
        switch (field) {
        case 1:
            if (pb_bytes(&rd, wt, &p, &n) < 0) goto bad;
            r->response = p; r->response_len = n;
            break;
        case 2: case 4:
            if (pb_bytes(&rd, wt, &p, &n) < 0) goto bad;
            have_exc = 1;
            break;
        case 3:
            if (pb_sub(&rd, wt, &sub) < 0 || decode_error(&sub, &app, 1) < 0) goto bad;
            have_app = 1;
            break;
        case 5:
            if (pb_sub(&rd, wt, &sub) < 0 || decode_error(&sub, &rpc, 0) < 0) goto bad;
            have_rpc = 1;
            break;
        default:
            if (pb_skip(&rd, wt, field) < 0) goto bad;
        }
    }
    if (st < 0 || rd.err) goto bad;
    /* Precedence as the SDKs read it: rpc_error, then application_error. */
    if (have_rpc) { rpc.kind = REMOTE_API_RPC_ERROR; *r = rpc; }
    else if (have_app) { app.kind = REMOTE_API_APP_ERROR; *r = app; }
    else if (have_exc && !r->response) r->kind = REMOTE_API_EXCEPTION;
    else {
        r->kind = REMOTE_API_OK;
        if (!r->response) r->response = (const uint8_t *)"";
    }
    return 0;
bad:
    set_err(err, errlen, "remote_api Response is not a valid protocol buffer");
    return -1;
}
