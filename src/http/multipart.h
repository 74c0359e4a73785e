/* multipart.h - a streaming multipart/form-data parser (RFC 7578, RFC 2046).
 *
 * The body is fed in pieces of any size as they arrive; the parser calls back
 * for each part's start (its headers parsed), for each span of its content,
 * and for its end. Content is never buffered beyond the few bytes that might
 * begin a delimiter, so a part of any size streams through in constant
 * memory. Part headers are limited to MP_MAX_HEAD bytes and a body to
 * MP_MAX_PARTS parts.
 *
 * Strictness: the boundary must be 1..70 characters; every part must have a
 * "Content-Disposition: form-data" header with a name; header lines end in
 * CRLF, have a token name and a colon, and are not folded; the closing
 * delimiter "--BOUNDARY--" must come before the end of the body. Anything
 * else stops the parser with one sentence (mp_error). The preamble and the
 * epilogue are ignored. */
#ifndef CZ_MULTIPART_H
#define CZ_MULTIPART_H

#include <stddef.h>

#define MP_MAX_BOUNDARY 70
#define MP_MAX_HEAD     (16 * 1024)
#define MP_MAX_PARTS    10000

enum { MP_OK = 0, MP_DONE = 1, MP_ERR = -1 };

typedef struct {
    const char *head; size_t head_len;  /* the part's header lines as sent, each ending in CRLF */
    const char *name;                   /* Content-Disposition name (NUL-terminated, unescaped) */
    const char *filename;               /* its filename, or NULL when it has none */
    const char *content_type;           /* Content-Type value, or NULL */
} mp_part;

typedef struct {
    /* Each returns 0 to go on, or -1 to stop the parser (mp_feed then
     * returns MP_ERR and mp_error gives the message set with mp_fail). */
    int (*part_begin)(void *arg, const mp_part *part);
    int (*part_data)(void *arg, const char *data, size_t n);
    int (*part_end)(void *arg);
} mp_callbacks;

typedef struct mp_parser mp_parser;

/* boundary[0, blen) is the boundary parameter's value (without "--"). NULL
 * when it is empty, longer than 70 characters or has control characters. */
mp_parser *mp_new(const char *boundary, size_t blen, const mp_callbacks *cb, void *arg);
/* MP_OK (need more), MP_DONE (closing delimiter seen; later input is
 * ignored) or MP_ERR (sticky). */
int  mp_feed(mp_parser *p, const char *data, size_t n);
/* The body ended: MP_DONE if it was complete, else MP_ERR with a message. */
int  mp_finish(mp_parser *p);
/* A callback's reason for stopping (copied). */
void mp_fail(mp_parser *p, const char *msg);
const char *mp_error(const mp_parser *p);
void mp_free(mp_parser *p);

/* The boundary parameter of a Content-Type value ct[0, n) that must be
 * multipart/form-data: 0 with *b, *blen pointing into ct (quotes removed
 * only when no escapes are inside), or -1 when the type or the boundary is
 * missing or malformed. */
int  mp_content_type_boundary(const char *ct, size_t n, const char **b, size_t *blen);

#endif
