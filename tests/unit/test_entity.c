/* test_entity.c - EntityProto, Reference and PropertyValue codec: decode an
 * entity exactly as Google's SDK (appengine-python-standard, ndb) encoded it,
 * check every field, re-encode it to the same bytes, rewrite its key, and
 * refuse damaged input without reading past it. */
#include "test.h"

#include <stdlib.h>
#include "datastore/entity.h"
#include "proto/pb.h"

/* An ndb entity Thing(key=Key('Parent', 7, 'Thing', 'x', namespace='ns1'),
 * i=-42, f=2.5, b=True, s='h\u00e9llo', t=Text('long text'),
 * by=b'\x00\x01\xff' (indexed blob), d=datetime(2020,1,2,3,4,5,6),
 * g=GeoPt(1.5, -2.25), u=User('a@example.com'), k=Key('Other', 3),
 * l=[3, 1, 2], n=None), serialized by the SDK (_entity_to_pb). */
static const char sdk_hex[] =
    "6a2d6a0b6465767e6669787475726572180b1206506172656e7418070c0b1205"
    "5468696e672201780ca201036e733172091a016220002a021001720f08101a02"
    "627920002a051a030001ff721208071a016420002a0908c6e69b91f7e3e60272"
    "101a016620002a09210000000000000440721d08091a016720002a142b310000"
    "00000000f83f3900000000000002c02c72121a016920002a0b08d6ffffffffff"
    "ffffff0172221a016b20002a1b636a0b6465767e66697874757265737a054f74"
    "686572800103746472091a016c20012a02080372091a016c20012a0208017209"
    "1a016c20012a02080272071a016e20002a00720f1a017320002a081a0668c3a9"
    "6c6c6f72281a017520002a21434a0d61406578616d706c652e636f6d520b6578"
    "616d706c652e636f6d900100447a14080f1a017420002a0b1a096c6f6e672074"
    "65787482010c0b1206506172656e7418070c";

static uint8_t *unhex(const char *h, size_t *n)
{
    size_t len = strlen(h) / 2;
    uint8_t *o = malloc(len);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        o[i] = (uint8_t)v;
    }
    *n = len;
    return o;
}

static int eq(ds_bytes b, const char *s) { return b.n == strlen(s) && !memcmp(b.p, s, b.n); }

static const ds_prop *find(const ds_entity *e, const char *name, int nth)
{
    for (size_t i = 0; i < e->nprops; i++)
        if (eq(e->props[i].name, name) && nth-- == 0) return &e->props[i];
    return NULL;
}

TEST(decode_sdk_entity)
{
    size_t n;
    uint8_t *raw = unhex(sdk_hex, &n);
    ds_entity e;
    char err[200];
    CHECK_INT(ds_entity_decode(raw, n, &e, err, sizeof err), 0);
    CHECK(eq(e.key.app, "dev~fixture"));
    CHECK(eq(e.key.ns, "ns1"));
    CHECK_INT(e.key.nelems, 2);
    CHECK(eq(e.key.elems[0].type, "Parent") && e.key.elems[0].has_id && e.key.elems[0].id == 7);
    CHECK(eq(e.key.elems[1].type, "Thing") && e.key.elems[1].has_name && eq(e.key.elems[1].name, "x"));
    CHECK_INT(e.ngroup, 1);
    CHECK_INT(e.nprops, 14);
    const ds_prop *p;
    CHECK((p = find(&e, "i", 0)) && p->v.type == DSV_INT && p->v.i == -42 && p->indexed && !p->multiple);
    CHECK((p = find(&e, "f", 0)) && p->v.type == DSV_DOUBLE && p->v.d == 2.5);
    CHECK((p = find(&e, "b", 0)) && p->v.type == DSV_BOOL && p->v.b == 1);
    CHECK((p = find(&e, "s", 0)) && p->v.type == DSV_STRING && eq(p->v.s, "h\xc3\xa9llo"));
    CHECK((p = find(&e, "t", 0)) && p->v.type == DSV_STRING && !p->indexed && p->meaning == DS_MEANING_TEXT);
    CHECK(p && !ds_prop_indexable(p));
    CHECK((p = find(&e, "by", 0)) && p->meaning == DS_MEANING_BYTESTRING && p->v.s.n == 3 && p->v.s.p[2] == 0xff);
    CHECK(p && ds_prop_indexable(p));
    CHECK((p = find(&e, "d", 0)) && p->meaning == DS_MEANING_GD_WHEN && p->v.type == DSV_INT &&
          p->v.i == 1577934245000006LL);
    CHECK((p = find(&e, "g", 0)) && p->v.type == DSV_POINT && p->v.x == 1.5 && p->v.y == -2.25 &&
          p->meaning == DS_MEANING_GEORSS_POINT);
    CHECK((p = find(&e, "u", 0)) && p->v.type == DSV_USER && eq(p->v.user.email, "a@example.com") &&
          eq(p->v.user.auth_domain, "example.com"));
    CHECK((p = find(&e, "k", 0)) && p->v.type == DSV_REF && eq(p->v.ref.app, "dev~fixture") &&
          p->v.ref.nelems == 1 && eq(p->v.ref.elems[0].type, "Other") && p->v.ref.elems[0].id == 3);
    CHECK((p = find(&e, "l", 0)) && p->multiple && p->v.i == 3);
    CHECK((p = find(&e, "l", 1)) && p->multiple && p->v.i == 1);
    CHECK((p = find(&e, "l", 2)) && p->multiple && p->v.i == 2);
    CHECK((p = find(&e, "n", 0)) && p->v.type == DSV_NULL);

    /* Re-encoding from the decoded fields gives the SDK's bytes back. */
    buf out = BUF_INIT;
    ds_entity_encode(&out, &e);
    CHECK(out.len == n && memcmp(out.data, raw, n) == 0);
    /* So does rewriting it with its own key. */
    buf_reset(&out);
    ds_entity_encode_keyed(&out, &e, &e.key);
    CHECK(out.len == n && memcmp(out.data, raw, n) == 0);
    buf_free(&out);
    ds_entity_free(&e);
    free(raw);
}

TEST(rewrite_key)
{
    size_t n;
    uint8_t *raw = unhex(sdk_hex, &n);
    ds_entity e;
    char err[200];
    CHECK_INT(ds_entity_decode(raw, n, &e, err, sizeof err), 0);
    ds_elem path[1] = { { {(const uint8_t *)"Thing", 5}, 123456, {0, 0}, 1, 0 } };
    ds_ref k = e.key;
    k.elems = path;
    k.nelems = 1;
    k.ns.n = 0;
    buf out = BUF_INIT;
    ds_entity_encode_keyed(&out, &e, &k);
    ds_entity e2;
    CHECK_INT(ds_entity_decode((const uint8_t *)out.data, out.len, &e2, err, sizeof err), 0);
    CHECK_INT(e2.key.nelems, 1);
    CHECK(e2.key.elems[0].id == 123456 && e2.key.ns.n == 0);
    CHECK_INT(e2.ngroup, 1);
    CHECK(e2.group[0].id == 123456);
    CHECK_INT(e2.nprops, e.nprops);
    ds_entity_free(&e2);
    ds_entity_free(&e);
    buf_free(&out);
    free(raw);
}

TEST(built_round_trip)
{
    /* Every value kind, built by hand, through encode -> decode -> encode. */
    ds_elem kp[2] = { { {(const uint8_t *)"A", 1}, 9, {0, 0}, 1, 0 },
                      { {(const uint8_t *)"B", 1}, 0, {(const uint8_t *)"n", 1}, 0, 1 } };
    ds_prop props[8];
    memset(props, 0, sizeof props);
    const char *names[8] = { "null", "int", "bool", "str", "dbl", "pt", "user", "ref" };
    for (int i = 0; i < 8; i++) {
        props[i].name.p = (const uint8_t *)names[i];
        props[i].name.n = strlen(names[i]);
        props[i].indexed = i != 3;
        props[i].stashed = -1;
        props[i].v.type = (ds_vtype)i;
    }
    props[1].v.i = INT64_MIN;
    props[2].v.b = 1;
    props[3].v.s.p = (const uint8_t *)"\0x"; props[3].v.s.n = 2; props[3].meaning = DS_MEANING_BLOB;
    props[4].v.d = -0.0;
    props[5].v.x = 3; props[5].v.y = 4;
    props[6].v.user.email.p = (const uint8_t *)"e"; props[6].v.user.email.n = 1;
    props[6].v.user.has_nickname = 1; props[6].v.user.nickname.p = (const uint8_t *)"nick"; props[6].v.user.nickname.n = 4;
    props[7].v.ref.app.p = (const uint8_t *)"app"; props[7].v.ref.app.n = 3;
    props[7].v.ref.elems = kp; props[7].v.ref.nelems = 2;
    props[7].computed = 1; props[7].has_computed = 1;
    ds_entity e;
    memset(&e, 0, sizeof e);
    e.key.app.p = (const uint8_t *)"app"; e.key.app.n = 3;
    e.key.elems = kp; e.key.nelems = 2;
    e.group = kp; e.ngroup = 1;
    e.props = props; e.nprops = 8;
    buf a = BUF_INIT, b = BUF_INIT;
    ds_entity_encode(&a, &e);
    ds_entity d;
    char err[200];
    CHECK_INT(ds_entity_decode((const uint8_t *)a.data, a.len, &d, err, sizeof err), 0);
    CHECK_INT(d.nprops, 8);
    if (d.nprops == 8) {
        /* raw_property goes last on the wire */
        CHECK(d.props[7].v.type == DSV_STRING && d.props[7].meaning == DS_MEANING_BLOB && !d.props[7].indexed);
        CHECK(d.props[0].v.type == DSV_NULL && d.props[1].v.i == INT64_MIN);
        CHECK(d.props[4].v.type == DSV_POINT && d.props[4].v.y == 4);
        CHECK(d.props[5].v.type == DSV_USER && d.props[5].v.user.has_nickname);
        CHECK(d.props[6].v.type == DSV_REF && d.props[6].v.ref.nelems == 2 && d.props[6].has_computed);
    }
    ds_entity_encode(&b, &d);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    ds_entity_free(&d);
    buf_free(&a);
    buf_free(&b);
}

TEST(refuse_damage)
{
    size_t n;
    uint8_t *raw = unhex(sdk_hex, &n);
    char err[200];
    int accepted = 0;
    /* Every truncation either fails cleanly or (when it ends between
     * fields) decodes; none reads past the end (ASan checks that). */
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, raw, cut);
        ds_entity e;
        if (ds_entity_decode(copy, cut, &e, err, sizeof err) == 0) { accepted++; ds_entity_free(&e); }
        else CHECK(err[0] != 0);
        free(copy);
    }
    CHECK(accepted < 40);
    /* No key: refused with a sentence. */
    ds_entity e;
    CHECK_INT(ds_entity_decode((const uint8_t *)"\x20\x01", 2, &e, err, sizeof err), -1);
    CHECK(strstr(err, "key") != NULL);
    /* A Reference without a path. */
    ds_ref r;
    CHECK_INT(ds_ref_decode((const uint8_t *)"\x6a\x01\x61", 3, &r, err, sizeof err), -1);
    free(raw);
}

int main(void)
{
    RUN(decode_sdk_entity);
    RUN(rewrite_key);
    RUN(built_round_trip);
    RUN(refuse_damage);
    return test_report();
}
