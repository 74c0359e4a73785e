/* keycodec.h - order-preserving byte encodings of datastore keys and values,
 * and the layout of the datastore's rows in the ordered key-value engine.
 *
 * Published interface (the query engine is written against it): the row
 * layouts below are fixed; new row kinds may be added under new tags.
 *
 * Every component is self-delimiting and compares, with memcmp, in the same
 * order App Engine compares the things it encodes; so a row key is a plain
 * concatenation of components and prefixes of it are scan ranges.
 *
 *   string   bytes with 0x00 escaped as 00 FF, then terminator 00 01
 *   int64    8 bytes big-endian with the sign bit flipped
 *   double   8 bytes: IEEE-754 big-endian, sign bit flipped when positive,
 *            every bit flipped when negative (as the SDK's sortable encoder:
 *            -0.0 sorts just before +0.0; NaN is canonicalised and sorts
 *            after +inf)
 *   path     per element: 0x02, kind string, then 0x01 int64 id or
 *            0x02 name string (0x00 for an incomplete element); then 0x01.
 *            An ancestor sorts before its descendants, ids before names.
 *            kc_path_prefix() omits the final 0x01: it prefixes the entity
 *            and all of its descendants.
 *   value    tag byte in App Engine's type order, then the payload:
 *              0x10 null
 *              0x20 integer (and date, GD_WHEN, as microseconds)  int64
 *              0x30 boolean                                      0x00 | 0x01
 *              0x40 string / bytes (compare as bytes)            string (*)
 *              0x50 double                                       double
 *              0x60 point                                        double x, double y
 *              0x70 user                                         string email, string auth_domain
 *              0x80 key                                          string app, string ns, path
 *            Descending order = every byte of the encoded value inverted
 *            (encodings are prefix-free, so inversion exactly reverses order).
 *            (*) A string value whose escaped bytes would pass
 *            KC_MAX_INDEXED_STRING (App Engine indexes up to 1500 bytes; a
 *            row key must fit in KV_MAX_KEY) keeps only its first bytes, then
 *            00 02 and an 8-byte hash of the whole value. Equality on such a
 *            value stays exact (up to the hash), order against every shorter
 *            or different-prefix value stays exact; only values identical in
 *            their first ~KC_MAX_INDEXED_STRING bytes order among themselves
 *            by hash. kc_get_value returns 1 for such a value.
 *
 * Rows (app = full app id with partition, e.g. "dev~guestbook"):
 *   'E' app ns path                      -> EntityProto bytes (as stored)
 *   'K' app ns kind path                 -> empty     (kind index)
 *   'P' app ns kind prop dir value path  -> empty     (single-property index;
 *         dir 0x01 ascending, 0x02 descending with the value inverted; both
 *         rows are written for every indexed value, the path stays ascending
 *         so ties come out in key order either way)
 *   'C' app ns int64(index id) [ancestor path] value... path -> empty
 *         (composite index: values in index order, each inverted when that
 *         property is descending; an ancestor index holds one row per
 *         ancestor of the entity, itself included, with that ancestor's path)
 *   'G' app ns root-element-path         -> int64 version of the entity group
 *   'S' app 0x01                         -> int64 last sequential id counter
 *   'S' app 0x02                         -> int64 last scattered id counter
 *   'M' app string(name) ...             -> metadata (composite index
 *         definitions live under 'M' app "index" int64(id) -> Index proto)
 * where app, ns, kind and prop are strings, and path is the entity's path. */
#ifndef CZ_KEYCODEC_H
#define CZ_KEYCODEC_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"
#include "datastore/entity.h"

enum { KC_ENTITY = 'E', KC_KIND = 'K', KC_PROP = 'P', KC_COMPOSITE = 'C',
       KC_GROUP = 'G', KC_SEQ = 'S', KC_META = 'M' };
enum { KC_ASC = 1, KC_DESC = 2 };
#define KC_MAX_INDEXED_STRING 256   /* escaped bytes of a string value kept in index rows */
enum { KC_SEQ_SEQUENTIAL = 1, KC_SEQ_SCATTERED = 2 };
enum { KC_T_NULL = 0x10, KC_T_INT = 0x20, KC_T_BOOL = 0x30, KC_T_STRING = 0x40,
       KC_T_DOUBLE = 0x50, KC_T_POINT = 0x60, KC_T_USER = 0x70, KC_T_KEY = 0x80 };

/* Primitives. */
void kc_put_str(buf *b, const void *p, size_t n);
void kc_put_cstr(buf *b, const char *s);
void kc_put_i64(buf *b, int64_t v);
void kc_put_double(buf *b, double d);
void kc_put_path(buf *b, const ds_elem *e, size_t n);
void kc_put_path_prefix(buf *b, const ds_elem *e, size_t n);
/* Value; dir KC_DESC appends the inverted encoding. */
void kc_put_value(buf *b, const ds_value *v, int dir);

/* Decoders walk *p forward (never past end); each returns 0, or -1 when
 * the bytes are not a well-formed component. */
int kc_get_str(const uint8_t **p, const uint8_t *end, buf *out);   /* out may be NULL: skip */
int kc_get_i64(const uint8_t **p, const uint8_t *end, int64_t *v);
int kc_get_double(const uint8_t **p, const uint8_t *end, double *d);
/* A path, re-encoded as a storage Path message body into out (NULL: skip). */
int kc_get_path(const uint8_t **p, const uint8_t *end, buf *out);
/* Skip one value encoded with dir. */
int kc_skip_value(const uint8_t **p, const uint8_t *end, int dir);
/* Decode one value encoded with dir into a PropertyValue message body. Dates
 * come back as integers (the meaning is not part of the index). Returns 1
 * (not 0) for a cut string value: pv then holds only its first bytes, and
 * the full value must be read from the entity. (kc_skip_value returns 0.) */
int kc_get_value(const uint8_t **p, const uint8_t *end, int dir, buf *pv);

/* Row keys. Strings are length-delimited (ds_bytes) so any bytes are fine. */
void kc_ns_prefix(buf *b, int tag, ds_bytes app, ds_bytes ns);   /* tag app ns */
void kc_entity_key(buf *b, ds_bytes app, ds_bytes ns, const ds_elem *path, size_t n);
void kc_kind_prefix(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind);
void kc_kind_key(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, const ds_elem *path, size_t n);
void kc_prop_prefix(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, ds_bytes prop, int dir);
void kc_prop_key(buf *b, ds_bytes app, ds_bytes ns, ds_bytes kind, ds_bytes prop, int dir,
                 const ds_value *v, const ds_elem *path, size_t n);
void kc_composite_prefix(buf *b, ds_bytes app, ds_bytes ns, int64_t index_id);
void kc_group_key(buf *b, ds_bytes app, ds_bytes ns, const ds_elem *root);
void kc_seq_key(buf *b, ds_bytes app, int which);
void kc_meta_prefix(buf *b, ds_bytes app, const char *name);

/* Convenience: a ds_bytes over a C string. */
static inline ds_bytes ds_cstr(const char *s)
{
    ds_bytes r = { (const uint8_t *)s, 0 };
    if (s) while (s[r.n]) r.n++;
    return r;
}

#endif
