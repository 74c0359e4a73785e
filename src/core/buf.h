/* buf.h - a growable byte buffer with a read offset.
 *
 * Data lives in [data+off, data+len). Appends grow the allocation; consume
 * advances off, and compact() moves the unread bytes to the front. The buffer
 * always keeps one spare byte so buf_cstr() can NUL-terminate in place.
 * Allocation failure aborts (the process cannot do anything useful then). */
#ifndef CZ_BUF_H
#define CZ_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char  *data;
    size_t len;   /* end of valid data */
    size_t off;   /* start of unread data */
    size_t cap;
} buf;

#define BUF_INIT {0, 0, 0, 0}

void   buf_free(buf *b);
void   buf_reset(buf *b);                 /* empty, keep allocation */
void   buf_reserve(buf *b, size_t extra);  /* room for extra bytes after len */
void   buf_append(buf *b, const void *p, size_t n);
void   buf_puts(buf *b, const char *s);
void   buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void   buf_putc(buf *b, char c);
/* Integers without printf (the hot paths format many per request). */
void   buf_put_dec(buf *b, uint64_t v);
void   buf_put_hex(buf *b, uint64_t v);
/* Base64 of p[0, n): url=0 the standard alphabet with '=' padding, url=1
 * base64url (RFC 4648 section 5) without padding. */
void   buf_put_b64(buf *b, const void *p, size_t n, int url);
/* Appends the bytes of base64url text s[0, n), strictly: the URL alphabet
 * only, no padding, zero trailing bits. 0, or -1 (b may hold a part). */
int    buf_get_b64url(buf *b, const char *s, size_t n);
/* Several C strings in a row; the list ends with NULL. */
void   buf_cat(buf *b, ...) __attribute__((sentinel));
void   buf_consume(buf *b, size_t n);
void   buf_compact(buf *b);
char  *buf_cstr(buf *b);                   /* NUL-terminated view of unread data */
char  *buf_detach(buf *b, size_t *len);    /* take ownership; b becomes empty */
static inline size_t buf_unread(const buf *b) { return b->len - b->off; }
static inline char *buf_rp(const buf *b) { return b->data + b->off; }
static inline char *buf_wp(const buf *b) { return b->data + b->len; }
static inline size_t buf_room(const buf *b) { return b->cap ? b->cap - b->len - 1 : 0; }

#endif
