/* range.h - byte ranges, validators and conditional requests for static
 * files (RFC 9110 sections 8.8, 13 and 14). Pure functions: no I/O, no
 * allocation, no state.
 *
 * Typical use in the router for GET/HEAD of a file with struct stat st:
 *
 *   char etag[HTTP_ETAG_MAX];
 *   http_etag(etag, st.st_ino, st.st_size, st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
 *   uint64_t first, last;
 *   int status = http_static_status(req->method, req->method_len, req->headers, req->nheaders,
 *                                   etag, st.st_mtime, st.st_size, &first, &last);
 *   200: whole file; 206: bytes first..last with Content-Range;
 *   304: no body (send ETag, Last-Modified); 412: no body;
 *   416: Content-Range "bytes * /size" (http_content_range builds both).
 */
#ifndef CZ_RANGE_H
#define CZ_RANGE_H

#include <stddef.h>
#include <stdint.h>

#include "http/http.h"

enum {
    HTTP_RANGE_FULL = 0,           /* no usable Range: serve the whole representation */
    HTTP_RANGE_PARTIAL = 1,        /* one satisfiable range [first, last] */
    HTTP_RANGE_UNSATISFIABLE = 2,  /* answer 416 */
};

/* Evaluate a Range header value v[0, n) against a representation of `size`
 * bytes. Accepts "bytes=first-last", "bytes=first-" and "bytes=-suffix"
 * (unit case-insensitive, OWS around list elements). last is clamped to
 * size-1; a suffix longer than the file means the whole file (still 206).
 * Several ranges: if exactly one is satisfiable it is used, if none is the
 * result is UNSATISFIABLE, otherwise FULL (no multipart responses). A
 * malformed value or another unit gives FULL (the header is ignored), as
 * does first > last. On PARTIAL, *first and *last (inclusive) are set. */
int http_range_parse(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last);

/* Content-Range value into out (HTTP_CONTENT_RANGE_MAX bytes): for
 * PARTIAL "bytes first-last/size", for UNSATISFIABLE "bytes *" "/size".
 * Returns the length written. */
#define HTTP_CONTENT_RANGE_MAX 80
int http_content_range(char *out, int result, uint64_t first, uint64_t last, uint64_t size);

/* A strong entity-tag, quotes included, from a file's inode, size and
 * modification time in nanoseconds: "\"<ino>-<size>-<mtime>\"" in hex.
 * out holds HTTP_ETAG_MAX bytes; returns the length. */
#define HTTP_ETAG_MAX 64
int http_etag(char *out, uint64_t ino, uint64_t size, int64_t mtime_ns);

/* Whether the entity-tag `etag` (quotes included, e.g. from http_etag)
 * appears in an If-Match / If-None-Match value v[0, n): "*" matches any;
 * otherwise a comma list of entity-tags ("x", W/"x"). weak=1 uses the weak
 * comparison (If-None-Match: W/ prefixes ignored), weak=0 the strong one
 * (If-Match, If-Range: weak tags never match). A malformed list matches
 * nothing. */
int http_etag_match(const char *v, size_t n, const char *etag, int weak);

/* If-Range value v[0, n) (v NULL = absent): 1 if a Range header should be
 * honoured, i.e. the header is absent, or it is an entity-tag strongly
 * equal to etag, or an HTTP-date equal to mtime (seconds). */
int http_if_range(const char *v, size_t n, const char *etag, int64_t mtime);

/* Decide the status for a GET or HEAD of a static representation with
 * strong `etag`, modification time `mtime` (seconds since the epoch) and
 * `size` bytes, from the request's headers, in the order of RFC 9110 13.2.2:
 *   If-Match fails (strong)                   -> 412
 *   else If-Unmodified-Since < mtime          -> 412 (only without If-Match)
 *   If-None-Match matches (weak)              -> 304
 *   else If-Modified-Since >= mtime           -> 304 (only without If-None-Match)
 *   Range on GET, If-Range passing            -> 206 (*first, *last) or 416
 *   otherwise                                 -> 200
 * Unparseable dates are ignored; for each header only its first line is
 * read. Range is ignored for methods other than GET (HEAD gets 200). */
int http_static_status(const char *method, size_t method_len,
                       const http_header *h, size_t nh,
                       const char *etag, int64_t mtime, uint64_t size,
                       uint64_t *first, uint64_t *last);

#endif
