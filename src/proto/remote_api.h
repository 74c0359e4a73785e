/* remote_api.h - the envelope of every App Engine API call: the remote_api
 * Request an SDK POSTs to /rpc_http and the Response it reads back.
 *
 * Field numbers (from the SDKs' remote_api.proto, package remote_api /
 * google.appengine.ext.remote_api_bytes):
 *
 *   Request          2 service_name (string, required)  3 method (string, required)
 *                    4 request (bytes, required)        5 request_id (string: the ticket)
 *                    6 trace_context (bytes, Python SDK only, optional)
 *   Response         1 response (bytes)  2 exception (bytes)
 *                    3 application_error (ApplicationError)
 *                    4 java_exception (bytes)  5 rpc_error (RpcError)
 *   ApplicationError 1 code (int32, required)  2 detail (string, required)
 *   RpcError         1 code (int32, required)  2 detail (string, optional)
 *
 * Decoding is zero-copy: the decoded struct points into the input. A missing
 * service_name or method, a wrong wire type, or a truncated field is a parse
 * error; a missing `request` decodes as empty bytes; unknown fields are
 * skipped, as proto2 does. */
#ifndef CZ_REMOTE_API_H
#define CZ_REMOTE_API_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

typedef struct {
    const char *service;   size_t service_len;
    const char *method;    size_t method_len;
    const uint8_t *request; size_t request_len;
    const char *request_id; size_t request_id_len;   /* NULL when absent */
    const uint8_t *trace_context; size_t trace_context_len; /* NULL when absent */
} remote_api_request;

/* 0, or -1 with one sentence in err. */
int  remote_api_request_decode(const void *data, size_t len, remote_api_request *r,
                               char *err, size_t errlen);
/* Append the encoded Request to b (used by tests, fuzz seeds and clients). */
void remote_api_request_encode(buf *b, const remote_api_request *r);

typedef enum {
    REMOTE_API_OK = 0,          /* response holds the service's reply */
    REMOTE_API_APP_ERROR,       /* application_error{code, detail} */
    REMOTE_API_RPC_ERROR,       /* rpc_error{code, detail} */
    REMOTE_API_EXCEPTION,       /* exception or java_exception only (legacy);
                                   encode writes `response` as the exception */
} remote_api_kind;

typedef struct {
    remote_api_kind kind;
    const uint8_t *response; size_t response_len;
    int32_t code;                              /* app or rpc error code */
    const char *detail; size_t detail_len;     /* app or rpc error detail */
} remote_api_response;

/* Append the encoded Response to b. An OK response always carries the
 * response field (possibly empty); an error response carries only its error
 * message. RpcError details have '%' replaced by '?', because the Python SDK
 * pastes the detail into a printf-style format string before formatting it. */
void remote_api_response_encode(buf *b, const remote_api_response *r);
/* Decode a Response (tests and clients). 0, or -1 with one sentence in err. */
int  remote_api_response_decode(const void *data, size_t len, remote_api_response *r,
                                char *err, size_t errlen);

#endif
