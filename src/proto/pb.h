/* pb.h - protobuf (proto2) wire-format reader and writer.
 *
 * The App Engine service messages are hand-decoded with this: a reader walks
 * the fields of one message (pb_next), the caller switches on field number,
 * and reads the value with the accessor matching the wire type. Groups (wire
 * types 3/4, used by datastore_v3 and memcache) are read as a sub-reader over
 * the group body. Errors are sticky: after any malformed input r->err is set
 * and every later call fails, so a decoder can check once at the end.
 *
 * The writer appends to a buf. Nested messages are written in place:
 * pb_begin(b, field) ... pb_end(b, mark). */
#ifndef CZ_PB_H
#define CZ_PB_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_SGROUP = 3, PB_EGROUP = 4, PB_FIXED32 = 5 };

typedef struct {
    const uint8_t *p, *end;
    int err;             /* sticky: nonzero after malformed input */
    int depth;           /* group/message nesting guard */
} pb_reader;

void pb_reader_init(pb_reader *r, const void *data, size_t len);

/* Next field: returns 1 and sets *field and *wt, 0 at the end of input (or at the
 * end-group tag closing a group reader), -1 on error. */
int pb_next(pb_reader *r, uint32_t *field, int *wt);

/* Value accessors for the field just returned by pb_next. Each returns 0 on
 * success, -1 on error (and sets r->err). A wire type that does not match
 * the accessor is an error. */
int pb_varint(pb_reader *r, int wt, uint64_t *v);
int pb_int64(pb_reader *r, int wt, int64_t *v);
int pb_int32(pb_reader *r, int wt, int32_t *v);
int pb_bool(pb_reader *r, int wt, int *v);
int pb_double(pb_reader *r, int wt, double *v);
int pb_fixed32(pb_reader *r, int wt, uint32_t *v);
int pb_fixed64(pb_reader *r, int wt, uint64_t *v);
int pb_bytes(pb_reader *r, int wt, const uint8_t **p, size_t *n);
/* Length-delimited embedded message as a sub-reader. */
int pb_sub(pb_reader *r, int wt, pb_reader *sub);
/* Group started by the field just read: sub reads the body; r continues after
 * the matching end-group tag. */
int pb_group(pb_reader *r, int wt, uint32_t field, pb_reader *sub);
/* Skip the value of any field (groups included). */
int pb_skip(pb_reader *r, int wt, uint32_t field);

/* Writer. */
void pb_put_tag(buf *b, uint32_t field, int wt);
void pb_put_varint_raw(buf *b, uint64_t v);
void pb_put_uint(buf *b, uint32_t field, uint64_t v);
void pb_put_int(buf *b, uint32_t field, int64_t v);      /* int32/int64: two's complement varint */
void pb_put_bool(buf *b, uint32_t field, int v);
void pb_put_double(buf *b, uint32_t field, double v);
void pb_put_fixed64(buf *b, uint32_t field, uint64_t v);
void pb_put_fixed32(buf *b, uint32_t field, uint32_t v);
void pb_put_bytes(buf *b, uint32_t field, const void *p, size_t n);
void pb_put_str(buf *b, uint32_t field, const char *s);
size_t pb_begin(buf *b, uint32_t field);                  /* nested message */
void pb_end(buf *b, size_t mark);
void pb_group_begin(buf *b, uint32_t field);
void pb_group_end(buf *b, uint32_t field);

#endif
