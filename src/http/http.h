/* http.h - HTTP/1.1 message parsing shared by the router, the API server and
 * the Python runtime.
 *
 * The parsers are incremental and zero-copy: they are given everything read
 * so far, return HTTP_INCOMPLETE until a whole head (start line + headers +
 * empty line) is present, and then fill a struct whose strings point into the
 * caller's buffer. Bodies are framed by the caller from the derived fields
 * (content_length / chunked) and, for chunked bodies, http_chunked_feed().
 *
 * Strictness (requests): exactly one way of framing. Both Content-Length and
 * Transfer-Encoding, several differing Content-Lengths, a Transfer-Encoding
 * other than "chunked" (last), obs-folded headers, whitespace before the colon,
 * bare CR, control bytes, or a malformed request line all fail with
 * HTTP_ERR_BAD_REQUEST (so no request smuggling). A request line longer than
 * limits->max_request_line gives HTTP_ERR_URI_TOO_LONG (414); a head longer than
 * limits->max_head or more than HTTP_MAX_HEADERS headers gives
 * HTTP_ERR_HEADERS_TOO_LARGE (431); HTTP/2+ or other versions give
 * HTTP_ERR_VERSION (505). Bare LF line endings are accepted. An HTTP/1.1
 * request without Host, or any with two Host lines, is HTTP_ERR_BAD_REQUEST;
 * a Transfer-Encoding of other codings followed by chunked is
 * HTTP_ERR_NOT_IMPLEMENTED. A malformed response is reported with the same
 * codes (HTTP_ERR_BAD_REQUEST meaning "malformed message"). */
#ifndef CZ_HTTP_H
#define CZ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 100

enum {
    HTTP_OK = 0,
    HTTP_INCOMPLETE = 1,
    HTTP_CHUNK_DATA = 2,             /* http_chunked_feed: a data span is ready */
    HTTP_CHUNK_DONE = 3,             /* http_chunked_feed: last chunk + trailers read */
    HTTP_ERR_BAD_REQUEST = -400,
    HTTP_ERR_URI_TOO_LONG = -414,
    HTTP_ERR_HEADERS_TOO_LARGE = -431,
    HTTP_ERR_NOT_IMPLEMENTED = -501,  /* unknown transfer coding */
    HTTP_ERR_VERSION = -505,
};

typedef struct {
    const char *name;  size_t name_len;
    const char *value; size_t value_len;   /* leading/trailing OWS trimmed */
} http_header;

typedef struct {
    size_t max_request_line;   /* default 8192 */
    size_t max_head;           /* default 65536 (request line + headers) */
} http_limits;

typedef struct {
    const char *method; size_t method_len;
    const char *target; size_t target_len;   /* as sent: origin-form or absolute-form */
    const char *path;   size_t path_len;     /* target up to '?' (absolute-form: the path part,
                                                "/" (a static string) when it has none) */
    const char *query;  size_t query_len;    /* after '?', excluding it; query==NULL if none */
    int version_minor;                        /* HTTP/1.<minor>: 0 or 1 */
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    /* derived from the headers */
    int64_t content_length;                   /* -1 when absent */
    int chunked;                              /* Transfer-Encoding: chunked */
    int keep_alive;                           /* HTTP/1.1 unless "close"; 1.0 only with "keep-alive" */
    int expect_continue;                      /* Expect: 100-continue */
    const char *host; size_t host_len;        /* Host header, or NULL; for an
                                                 absolute-form target its authority */
    size_t head_len;                          /* bytes consumed by the head */
} http_request;

typedef struct {
    int version_minor;
    int status;
    const char *reason; size_t reason_len;
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length;                   /* -1 when absent */
    int chunked;
    int keep_alive;
    size_t head_len;
} http_response;

/* Parse a request head from buf[0, len). lim may be NULL for defaults. */
int http_parse_request(const char *buf, size_t len, http_request *req, const http_limits *lim);

/* Parse a response head (as a proxy reading an upstream). Framing follows
 * RFC 9112: the caller knows the request method; a response to HEAD, and 1xx,
 * 204 and 304 responses have no body regardless of headers; otherwise chunked,
 * else content_length, else the body runs until the connection closes.
 * For 1xx/204/304 content_length is set to 0 and chunked to 0; for a
 * response to HEAD the caller ignores both. A body that runs until close
 * gives content_length -1, chunked 0 and keep_alive 0. */
int http_parse_response(const char *buf, size_t len, http_response *resp, const http_limits *lim);

/* Case-insensitive header lookup; returns the first match or NULL. */
const http_header *http_find_header(const http_header *h, size_t n, const char *name);

/* Incremental chunked-body decoder. Zero the struct to start. Each call reads
 * from in[0, len), sets *consumed to the bytes it used, and returns:
 *   HTTP_CHUNK_DATA   *data, *data_len point at body bytes inside `in`
 *   HTTP_INCOMPLETE   all input used, no data span ready: read more
 *   HTTP_CHUNK_DONE   terminal chunk and trailers consumed
 *   HTTP_ERR_BAD_REQUEST  malformed framing (bad hex, size overflow, missing CRLF)
 * Chunk extensions are skipped; trailers are read and discarded. */
typedef struct {
    int state;
    uint64_t remaining;     /* bytes left in the current chunk */
    size_t line_len;        /* guards against endless size/trailer lines */
} http_chunked;

int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *consumed,
                      const char **data, size_t *data_len);

/* Reason phrase for a status code ("OK", "Not Found", ...; "Unknown" otherwise). */
const char *http_reason(int status);

/* Percent-decode src[0, n) into dst (which holds n+1 bytes). Returns the decoded
 * length, or -1 on a malformed escape or an encoded NUL. Does not map '+'. */
long http_url_decode(const char *src, size_t n, char *dst);

/* Today's date in IMF-fixdate form ("Sun, 06 Nov 1994 08:49:37 GMT") for
 * time t; out must hold 30 bytes. Parse returns -1 on a bad date. */
void   http_format_date(int64_t t, char *out);
int64_t http_parse_date(const char *s, size_t n);

#endif
