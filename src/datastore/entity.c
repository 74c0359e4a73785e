/* entity.c - decode and encode datastore_v3 entities, keys and values.
 *
 * Field numbers (storage_onestore_v3, entity.proto):
 *   EntityProto   key=13 Reference, entity_group=16 Path, owner=17,
 *                 kind=4, kind_uri=5, property=14, raw_property=15
 *   Reference     app=13, name_space=20, path=14 Path, database_id=23
 *   Path          group Element=1 { type=2, id=3, name=4 }
 *   Property      meaning=1, meaning_uri=2, name=3, multiple=4, value=5,
 *                 stashed=6, computed=7
 *   PropertyValue int64Value=1, booleanValue=2, stringValue=3, doubleValue=4,
 *                 group PointValue=5 { x=6, y=7 },
 *                 group UserValue=8 { email=9, auth_domain=10, nickname=11,
 *                   gaiaid=18, obfuscated_gaiaid=19, federated_identity=21,
 *                   federated_provider=22 },
 *                 group ReferenceValue=12 { app=13, name_space=20,
 *                   group PathElement=14 { type=15, id=16, name=17 },
 *                   database_id=23 }
 * Decoding points into the input; see entity.h. */
#include "datastore/entity.h"

#include <stdlib.h>
#include <string.h>
#include "core/util.h"
#include "proto/pb.h"

#define MAX_PATH 100          /* App Engine allows 100 path elements */

static int bad(char *err, size_t errlen, const char *what)
{
    set_err(err, errlen, "the %s is not a well-formed datastore message", what);
    return -1;
}

/* ---- paths ---- */

static int push_elem(ds_elem **elems, size_t *n, size_t *cap)
{
    if (*n >= MAX_PATH) return -1;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        *elems = xrealloc(*elems, *cap * sizeof **elems);
    }
    memset(&(*elems)[*n], 0, sizeof **elems);
    (*n)++;
    return 0;
}

/* Element body: type/id/name under the given field numbers. */
static int elem_decode(pb_reader *g, ds_elem *e, uint32_t f_type, uint32_t f_id, uint32_t f_name)
{
    uint32_t f;
    int wt, k, has_type = 0;
    while ((k = pb_next(g, &f, &wt)) > 0) {
        if (f == f_type) { if (pb_bytes(g, wt, &e->type.p, &e->type.n) < 0) return -1; has_type = 1; }
        else if (f == f_id) { if (pb_int64(g, wt, &e->id) < 0) return -1; e->has_id = 1; }
        else if (f == f_name) { if (pb_bytes(g, wt, &e->name.p, &e->name.n) < 0) return -1; e->has_name = 1; }
        else if (pb_skip(g, wt, f) < 0) return -1;
    }
    if (k < 0 || !has_type) return -1;
    /* An id of 0 means "no id" on the wire (the SDK sends it for incomplete keys). */
    if (e->has_id && e->id == 0) e->has_id = 0;
    if (e->has_name && e->has_id) e->has_id = 0;   /* the name wins, as in the SDK */
    return 0;
}

int ds_path_decode(const uint8_t *p, size_t n, ds_elem **elems, size_t *nelems, char *err, size_t errlen)
{
    pb_reader r;
    pb_reader_init(&r, p, n);
    size_t cap = 0;
    *elems = NULL;
    *nelems = 0;
    uint32_t f;
    int wt, k;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1 && wt == PB_SGROUP) {
            pb_reader g;
            if (pb_group(&r, wt, f, &g) < 0 || push_elem(elems, nelems, &cap) < 0 ||
                elem_decode(&g, &(*elems)[*nelems - 1], 2, 3, 4) < 0) goto fail;
        } else if (pb_skip(&r, wt, f) < 0) goto fail;
    }
    if (k < 0) goto fail;
    return 0;
fail:
    free(*elems);
    *elems = NULL;
    *nelems = 0;
    return bad(err, errlen, "key path");
}

static void elem_encode(buf *b, const ds_elem *e, uint32_t f_group, uint32_t f_type, uint32_t f_id, uint32_t f_name)
{
    pb_group_begin(b, f_group);
    pb_put_bytes(b, f_type, e->type.p, e->type.n);
    if (e->has_id) pb_put_int(b, f_id, e->id);
    if (e->has_name) pb_put_bytes(b, f_name, e->name.p, e->name.n);
    pb_group_end(b, f_group);
}

void ds_path_encode(buf *b, const ds_elem *elems, size_t n)
{
    for (size_t i = 0; i < n; i++) elem_encode(b, &elems[i], 1, 2, 3, 4);
}

/* ---- references ---- */

int ds_ref_decode(const uint8_t *p, size_t n, ds_ref *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    pb_reader rd;
    pb_reader_init(&rd, p, n);
    uint32_t f;
    int wt, k, has_app = 0, has_path = 0;
    while ((k = pb_next(&rd, &f, &wt)) > 0) {
        if (f == 13) { if (pb_bytes(&rd, wt, &r->app.p, &r->app.n) < 0) goto fail; has_app = 1; }
        else if (f == 20) { if (pb_bytes(&rd, wt, &r->ns.p, &r->ns.n) < 0) goto fail; }
        else if (f == 23) { if (pb_bytes(&rd, wt, &r->database_id.p, &r->database_id.n) < 0) goto fail; }
        else if (f == 14) {
            const uint8_t *pp;
            size_t pn;
            if (pb_bytes(&rd, wt, &pp, &pn) < 0) goto fail;
            free(r->elems);
            if (ds_path_decode(pp, pn, &r->elems, &r->nelems, err, errlen) < 0) goto fail;
            has_path = 1;
        } else if (pb_skip(&rd, wt, f) < 0) goto fail;
    }
    if (k < 0 || !has_app || !has_path) goto fail;
    return 0;
fail:
    ds_ref_free(r);
    return bad(err, errlen, "entity key");
}

void ds_ref_encode(buf *b, const ds_ref *r)
{
    pb_put_bytes(b, 13, r->app.p, r->app.n);
    size_t m = pb_begin(b, 14);
    ds_path_encode(b, r->elems, r->nelems);
    pb_end(b, m);
    if (r->ns.n) pb_put_bytes(b, 20, r->ns.p, r->ns.n);
    if (r->database_id.n) pb_put_bytes(b, 23, r->database_id.p, r->database_id.n);
}

void ds_ref_free(ds_ref *r)
{
    free(r->elems);
    r->elems = NULL;
    r->nelems = 0;
}

int ds_ref_complete(const ds_ref *r)
{
    if (r->nelems == 0) return 0;
    for (size_t i = 0; i < r->nelems; i++)
        if (!r->elems[i].has_id && !r->elems[i].has_name) return 0;
    return 1;
}

/* ---- values ---- */

static int user_decode(pb_reader *g, ds_user *u)
{
    uint32_t f;
    int wt, k;
    while ((k = pb_next(g, &f, &wt)) > 0) {
        int r = 0;
        switch (f) {
        case 9: r = pb_bytes(g, wt, &u->email.p, &u->email.n); break;
        case 10: r = pb_bytes(g, wt, &u->auth_domain.p, &u->auth_domain.n); break;
        case 11: r = pb_bytes(g, wt, &u->nickname.p, &u->nickname.n); u->has_nickname = 1; break;
        case 18: r = pb_int64(g, wt, &u->gaiaid); u->has_gaiaid = 1; break;
        case 19: r = pb_bytes(g, wt, &u->obfuscated_gaiaid.p, &u->obfuscated_gaiaid.n); u->has_obfuscated_gaiaid = 1; break;
        case 21: r = pb_bytes(g, wt, &u->federated_identity.p, &u->federated_identity.n); u->has_federated_identity = 1; break;
        case 22: r = pb_bytes(g, wt, &u->federated_provider.p, &u->federated_provider.n); u->has_federated_provider = 1; break;
        default: r = pb_skip(g, wt, f);
        }
        if (r < 0) return -1;
    }
    return k < 0 ? -1 : 0;
}

static int refvalue_decode(pb_reader *g, ds_ref *ref)
{
    uint32_t f;
    int wt, k;
    size_t cap = 0;
    while ((k = pb_next(g, &f, &wt)) > 0) {
        int r = 0;
        if (f == 13) r = pb_bytes(g, wt, &ref->app.p, &ref->app.n);
        else if (f == 20) r = pb_bytes(g, wt, &ref->ns.p, &ref->ns.n);
        else if (f == 23) r = pb_bytes(g, wt, &ref->database_id.p, &ref->database_id.n);
        else if (f == 14 && wt == PB_SGROUP) {
            pb_reader e;
            r = pb_group(g, wt, f, &e);
            if (r == 0) r = push_elem(&ref->elems, &ref->nelems, &cap);
            if (r == 0) r = elem_decode(&e, &ref->elems[ref->nelems - 1], 15, 16, 17);
        } else r = pb_skip(g, wt, f);
        if (r < 0) return -1;
    }
    return k < 0 ? -1 : 0;
}

int ds_value_decode(const uint8_t *p, size_t n, ds_value *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt, k;
    /* Several fields set is malformed for App Engine; the last one wins here. */
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        int rc = 0;
        pb_reader g;
        switch (f) {
        case 1: rc = pb_int64(&r, wt, &v->i); v->type = DSV_INT; break;
        case 2: rc = pb_bool(&r, wt, &v->b); v->type = DSV_BOOL; break;
        case 3: rc = pb_bytes(&r, wt, &v->s.p, &v->s.n); v->type = DSV_STRING; break;
        case 4: rc = pb_double(&r, wt, &v->d); v->type = DSV_DOUBLE; break;
        case 5:
            rc = pb_group(&r, wt, f, &g);
            if (rc == 0) {
                uint32_t gf;
                int gw, gk;
                while ((gk = pb_next(&g, &gf, &gw)) > 0) {
                    if (gf == 6) rc = pb_double(&g, gw, &v->x);
                    else if (gf == 7) rc = pb_double(&g, gw, &v->y);
                    else rc = pb_skip(&g, gw, gf);
                    if (rc < 0) break;
                }
                if (gk < 0) rc = -1;
            }
            v->type = DSV_POINT;
            break;
        case 8:
            memset(&v->user, 0, sizeof v->user);
            rc = pb_group(&r, wt, f, &g);
            if (rc == 0) rc = user_decode(&g, &v->user);
            v->type = DSV_USER;
            break;
        case 12:
            ds_ref_free(&v->ref);
            memset(&v->ref, 0, sizeof v->ref);
            rc = pb_group(&r, wt, f, &g);
            if (rc == 0) rc = refvalue_decode(&g, &v->ref);
            v->type = DSV_REF;
            break;
        default: rc = pb_skip(&r, wt, f);
        }
        if (rc < 0) goto fail;
    }
    if (k < 0) goto fail;
    if (v->type != DSV_REF) ds_ref_free(&v->ref);
    return 0;
fail:
    ds_value_free(v);
    return bad(err, errlen, "property value");
}

void ds_value_encode(buf *b, const ds_value *v)
{
    switch (v->type) {
    case DSV_NULL: break;
    case DSV_INT: pb_put_int(b, 1, v->i); break;
    case DSV_BOOL: pb_put_bool(b, 2, v->b); break;
    case DSV_STRING: pb_put_bytes(b, 3, v->s.p, v->s.n); break;
    case DSV_DOUBLE: pb_put_double(b, 4, v->d); break;
    case DSV_POINT:
        pb_group_begin(b, 5); pb_put_double(b, 6, v->x); pb_put_double(b, 7, v->y); pb_group_end(b, 5);
        break;
    case DSV_USER: {
        const ds_user *u = &v->user;
        pb_group_begin(b, 8);
        pb_put_bytes(b, 9, u->email.p, u->email.n);
        pb_put_bytes(b, 10, u->auth_domain.p, u->auth_domain.n);
        if (u->has_nickname) pb_put_bytes(b, 11, u->nickname.p, u->nickname.n);
        pb_put_int(b, 18, u->gaiaid);
        if (u->has_obfuscated_gaiaid) pb_put_bytes(b, 19, u->obfuscated_gaiaid.p, u->obfuscated_gaiaid.n);
        if (u->has_federated_identity) pb_put_bytes(b, 21, u->federated_identity.p, u->federated_identity.n);
        if (u->has_federated_provider) pb_put_bytes(b, 22, u->federated_provider.p, u->federated_provider.n);
        pb_group_end(b, 8);
        break;
    }
    case DSV_REF:
        pb_group_begin(b, 12);
        pb_put_bytes(b, 13, v->ref.app.p, v->ref.app.n);
        for (size_t i = 0; i < v->ref.nelems; i++) elem_encode(b, &v->ref.elems[i], 14, 15, 16, 17);
        if (v->ref.ns.n) pb_put_bytes(b, 20, v->ref.ns.p, v->ref.ns.n);
        if (v->ref.database_id.n) pb_put_bytes(b, 23, v->ref.database_id.p, v->ref.database_id.n);
        pb_group_end(b, 12);
        break;
    }
}

void ds_value_free(ds_value *v) { ds_ref_free(&v->ref); }

/* ---- properties ---- */

int ds_prop_decode(const uint8_t *p, size_t n, ds_prop *pr, char *err, size_t errlen)
{
    memset(pr, 0, sizeof *pr);
    pr->stashed = -1;
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt, k, has_name = 0;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        int rc = 0;
        switch (f) {
        case 1: { int32_t m; rc = pb_int32(&r, wt, &m); pr->meaning = m; break; }
        case 2: rc = pb_bytes(&r, wt, &pr->meaning_uri.p, &pr->meaning_uri.n); pr->has_meaning_uri = 1; break;
        case 3: rc = pb_bytes(&r, wt, &pr->name.p, &pr->name.n); has_name = 1; break;
        case 4: rc = pb_bool(&r, wt, &pr->multiple); break;
        case 5: {
            const uint8_t *vp;
            size_t vn;
            rc = pb_bytes(&r, wt, &vp, &vn);
            if (rc == 0) {
                ds_value_free(&pr->v);
                rc = ds_value_decode(vp, vn, &pr->v, err, errlen);
            }
            break;
        }
        case 6: rc = pb_int32(&r, wt, &pr->stashed); break;
        case 7: rc = pb_bool(&r, wt, &pr->computed); pr->has_computed = 1; break;
        default: rc = pb_skip(&r, wt, f);
        }
        if (rc < 0) goto fail;
    }
    if (k < 0 || !has_name) goto fail;
    return 0;
fail:
    ds_value_free(&pr->v);
    return bad(err, errlen, "property");
}

void ds_prop_encode(buf *b, const ds_prop *pr)
{
    if (pr->meaning) pb_put_int(b, 1, pr->meaning);
    if (pr->has_meaning_uri) pb_put_bytes(b, 2, pr->meaning_uri.p, pr->meaning_uri.n);
    pb_put_bytes(b, 3, pr->name.p, pr->name.n);
    pb_put_bool(b, 4, pr->multiple);
    size_t m = pb_begin(b, 5);
    ds_value_encode(b, &pr->v);
    pb_end(b, m);
    if (pr->stashed != -1) pb_put_int(b, 6, pr->stashed);
    if (pr->has_computed) pb_put_bool(b, 7, pr->computed);
}

int ds_prop_indexable(const ds_prop *pr)
{
    if (!pr->indexed) return 0;
    switch (pr->meaning) {
    case DS_MEANING_TEXT: case DS_MEANING_BLOB: case DS_MEANING_ENTITY_PROTO: case DS_MEANING_EMPTY_LIST:
        return 0;
    }
    return 1;
}

/* ---- entities ---- */

void ds_entity_free(ds_entity *e)
{
    ds_ref_free(&e->key);
    free(e->group);
    for (size_t i = 0; i < e->nprops; i++) ds_value_free(&e->props[i].v);
    free(e->props);
    memset(e, 0, sizeof *e);
}

int ds_entity_decode(const uint8_t *p, size_t n, ds_entity *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    e->raw = p;
    e->rawn = n;
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt, k, has_key = 0;
    size_t cap = 0;
    while ((k = pb_next(&r, &f, &wt)) > 0) {
        const uint8_t *fp;
        size_t fn;
        if (f == 13 || f == 16 || f == 14 || f == 15) {
            if (pb_bytes(&r, wt, &fp, &fn) < 0) goto fail;
        }
        if (f == 13) {
            ds_ref_free(&e->key);
            if (ds_ref_decode(fp, fn, &e->key, err, errlen) < 0) goto fail_quiet;
            has_key = 1;
        } else if (f == 16) {
            free(e->group);
            if (ds_path_decode(fp, fn, &e->group, &e->ngroup, err, errlen) < 0) goto fail_quiet;
        } else if (f == 14 || f == 15) {
            if (e->nprops == cap) {
                cap = cap ? cap * 2 : 8;
                e->props = xrealloc(e->props, cap * sizeof *e->props);
            }
            if (ds_prop_decode(fp, fn, &e->props[e->nprops], err, errlen) < 0) goto fail_quiet;
            e->props[e->nprops].indexed = f == 14;
            e->nprops++;
        } else if (pb_skip(&r, wt, f) < 0) goto fail;
    }
    if (k < 0) goto fail;
    if (!has_key) { ds_entity_free(e); set_err(err, errlen, "an entity has no key"); return -1; }
    e->raw = p;
    e->rawn = n;
    return 0;
fail:
    bad(err, errlen, "entity");
fail_quiet:
    ds_entity_free(e);
    return -1;
}

/* Copy, verbatim and in wire order, the fields of raw whose numbers lie in
 * [lo, hi], except key (13) and entity_group (16), which callers write. */
static void copy_fields(buf *b, const uint8_t *raw, size_t rawn, uint32_t lo, uint32_t hi)
{
    if (!raw) return;
    pb_reader r;
    pb_reader_init(&r, raw, rawn);
    uint32_t f;
    int wt;
    for (;;) {
        const uint8_t *start = r.p;
        if (pb_next(&r, &f, &wt) <= 0) break;
        if (pb_skip(&r, wt, f) < 0) break;
        if (f == 13 || f == 16 || f < lo || f > hi) continue;
        buf_append(b, start, (size_t)(r.p - start));
    }
}

static void put_key_field(buf *b, const ds_ref *key)
{
    size_t m = pb_begin(b, 13);
    ds_ref_encode(b, key);
    pb_end(b, m);
}

static void put_group_field(buf *b, const ds_elem *elems, size_t n)
{
    size_t m = pb_begin(b, 16);
    ds_path_encode(b, elems, n);
    pb_end(b, m);
}

/* Fields go out in field-number order, as the SDKs write them, so an entity
 * the SDK encoded re-encodes to the same bytes. */
void ds_entity_encode(buf *b, const ds_entity *e)
{
    copy_fields(b, e->raw, e->rawn, 1, 12);
    put_key_field(b, &e->key);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < e->nprops; i++) {
            if (e->props[i].indexed != (pass == 0)) continue;
            size_t m = pb_begin(b, pass == 0 ? 14 : 15);
            ds_prop_encode(b, &e->props[i]);
            pb_end(b, m);
        }
    put_group_field(b, e->group, e->ngroup);
    copy_fields(b, e->raw, e->rawn, 17, UINT32_MAX);
}

void ds_entity_encode_keyed(buf *b, const ds_entity *e, const ds_ref *key)
{
    copy_fields(b, e->raw, e->rawn, 1, 12);
    put_key_field(b, key);
    copy_fields(b, e->raw, e->rawn, 14, 15);
    put_group_field(b, key->elems, key->nelems ? 1 : 0);
    copy_fields(b, e->raw, e->rawn, 17, UINT32_MAX);
}
