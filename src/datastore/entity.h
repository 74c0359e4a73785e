/* entity.h - datastore_v3 entities, keys and property values, decoded.
 *
 * Reads and writes the storage_onestore_v3 messages that the SDKs send in
 * datastore_v3 calls: EntityProto, Reference/Path, Property and
 * PropertyValue (with its groups PointValue, UserValue, ReferenceValue).
 * Field numbers come from the SDK's published descriptors (entity.proto).
 *
 * Decoding does not copy: every ds_bytes points into the input, which must
 * outlive the decoded struct. The only allocations are the arrays of path
 * elements and properties; ds_*_free releases them. Decoders return 0, or -1
 * with one sentence in err when the bytes are not a well-formed message or a
 * required field is missing.
 *
 * Entities are stored as the SDK sent them: ds_entity_encode_keyed() copies
 * every field verbatim except the key and entity group, which it writes
 * afresh (needed when the datastore assigns an id). */
#ifndef CZ_ENTITY_H
#define CZ_ENTITY_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

typedef struct { const uint8_t *p; size_t n; } ds_bytes;

/* Property.Meaning values used by the datastore. */
enum {
    DS_MEANING_NONE = 0, DS_MEANING_GD_WHEN = 7, DS_MEANING_GEORSS_POINT = 9,
    DS_MEANING_BLOB = 14, DS_MEANING_TEXT = 15, DS_MEANING_BYTESTRING = 16,
    DS_MEANING_BLOBKEY = 17, DS_MEANING_INDEX_VALUE = 18,
    DS_MEANING_ENTITY_PROTO = 19, DS_MEANING_EMPTY_LIST = 24,
};

/* One path element: kind plus an id or a name (neither = incomplete). */
typedef struct {
    ds_bytes type;
    int64_t id;            /* valid when has_id */
    ds_bytes name;         /* valid when has_name */
    int has_id, has_name;
} ds_elem;

/* A Reference (entity key) or ReferenceValue. */
typedef struct {
    ds_bytes app, ns, database_id;
    ds_elem *elems;
    size_t nelems;
} ds_ref;

/* Value types, in App Engine's sort order (also the keycodec tag order). */
typedef enum {
    DSV_NULL = 0, DSV_INT, DSV_BOOL, DSV_STRING, DSV_DOUBLE, DSV_POINT, DSV_USER, DSV_REF
} ds_vtype;

typedef struct {
    ds_bytes email, auth_domain, nickname, obfuscated_gaiaid,
             federated_identity, federated_provider;
    int64_t gaiaid;
    int has_nickname, has_gaiaid, has_obfuscated_gaiaid,
        has_federated_identity, has_federated_provider;
} ds_user;

typedef struct {
    ds_vtype type;
    int64_t i;             /* DSV_INT (integers and dates, in microseconds) */
    int b;                 /* DSV_BOOL */
    ds_bytes s;            /* DSV_STRING (text and bytes) */
    double d;              /* DSV_DOUBLE */
    double x, y;           /* DSV_POINT (latitude, longitude) */
    ds_user user;          /* DSV_USER */
    ds_ref ref;            /* DSV_REF (owns ref.elems) */
} ds_value;

typedef struct {
    ds_bytes name;
    int meaning;
    ds_bytes meaning_uri;
    int has_meaning_uri;
    int multiple;
    int indexed;           /* 1 for EntityProto.property, 0 for raw_property */
    int32_t stashed;       /* -1 when absent */
    int computed, has_computed;
    ds_value v;
} ds_prop;

typedef struct {
    ds_ref key;
    ds_elem *group;        /* entity_group path (may be empty) */
    size_t ngroup;
    ds_prop *props;        /* property and raw_property, in wire order */
    size_t nprops;
    const uint8_t *raw;    /* the bytes decoded */
    size_t rawn;
} ds_entity;

/* Path (message body of a storage Path: repeated group Element). */
int  ds_path_decode(const uint8_t *p, size_t n, ds_elem **elems, size_t *nelems,
                    char *err, size_t errlen);
void ds_path_encode(buf *b, const ds_elem *elems, size_t n);

/* Reference (message body). Requires app and a path. */
int  ds_ref_decode(const uint8_t *p, size_t n, ds_ref *r, char *err, size_t errlen);
void ds_ref_encode(buf *b, const ds_ref *r);
void ds_ref_free(ds_ref *r);
int  ds_ref_complete(const ds_ref *r);   /* every element has an id or a name */

/* PropertyValue (message body). */
int  ds_value_decode(const uint8_t *p, size_t n, ds_value *v, char *err, size_t errlen);
void ds_value_encode(buf *b, const ds_value *v);
void ds_value_free(ds_value *v);

/* Property (message body); indexed is left 0 (the caller knows). */
int  ds_prop_decode(const uint8_t *p, size_t n, ds_prop *pr, char *err, size_t errlen);
void ds_prop_encode(buf *b, const ds_prop *pr);

/* EntityProto. */
int  ds_entity_decode(const uint8_t *p, size_t n, ds_entity *e, char *err, size_t errlen);
void ds_entity_free(ds_entity *e);
/* Encode from the decoded fields (key, entity_group, properties; owner, kind
 * and unknown fields are copied raw from e->raw). */
void ds_entity_encode(buf *b, const ds_entity *e);
/* Copy e->raw with its key replaced by key and its entity_group set to the
 * key's root element. */
void ds_entity_encode_keyed(buf *b, const ds_entity *e, const ds_ref *key);

/* Property values that App Engine never indexes even in `property`
 * (TEXT, BLOB, ENTITY_PROTO, EMPTY_LIST). */
int  ds_prop_indexable(const ds_prop *pr);

#endif
