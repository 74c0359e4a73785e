/* fuzz_entity.c - libFuzzer target for the entity codec, the key codec and
 * the datastore's request handling.
 *
 * The first byte picks what the rest is fed to:
 *   0  EntityProto: decode; if it decodes, re-encode, decode again and
 *      require the same bytes from a second encode (a fixpoint); build its
 *      index rows and parse every row back
 *   1  Reference: decode, encode, decode
 *   2  PropertyValue: decode, key-encode both directions, decode the key
 *      encoding and require it to encode identically (strings cut for the
 *      index decode to their kept bytes)
 *   3  a datastore_v3 PutRequest, run against a real (throwaway) datastore,
 *      then Get and Delete built from the keys it returned
 * Nothing may crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "datastore/datastore.h"
#include "datastore/keycodec.h"
#include "proto/pb.h"

#define APP "dev~fuzz"
static datastore *ds;

static void check_rows(const ds_entity *e)
{
    if (e->key.nelems == 0) return;
    buf rows = BUF_INIT;
    ds_err err;
    if (ds_index_rows(ds, NULL, e, &rows, &err) == 0) {
        const uint8_t *p = (const uint8_t *)rows.data, *end = p + rows.len;
        while (p + 4 <= end) {
            uint32_t n;
            memcpy(&n, p, 4);
            p += 4;
            const uint8_t *r = p, *rend = p + n;
            p += n;
            if (*r != KC_PROP) continue;
            r++;
            for (int i = 0; i < 4; i++) if (kc_get_str(&r, rend, NULL) < 0) abort();
            int dir = *r++;
            if (kc_skip_value(&r, rend, dir) < 0 || kc_get_path(&r, rend, NULL) < 0 || r != rend) abort();
        }
    }
    buf_free(&rows);
}

static void fuzz_entity(const uint8_t *d, size_t n)
{
    ds_entity e, e2, e3;
    char err[256];
    if (ds_entity_decode(d, n, &e, err, sizeof err) < 0) return;
    buf a = BUF_INIT, b = BUF_INIT, c = BUF_INIT;
    ds_entity_encode(&a, &e);
    if (ds_entity_decode((const uint8_t *)a.data, a.len, &e2, err, sizeof err) < 0) abort();
    ds_entity_encode(&b, &e2);
    if (ds_entity_decode((const uint8_t *)b.data, b.len, &e3, err, sizeof err) < 0) abort();
    ds_entity_encode(&c, &e3);
    if (b.len != c.len || memcmp(b.data, c.data, b.len)) abort();
    check_rows(&e);
    ds_entity_free(&e3);
    ds_entity_free(&e2);
    ds_entity_free(&e);
    buf_free(&a); buf_free(&b); buf_free(&c);
}

static void fuzz_ref(const uint8_t *d, size_t n)
{
    ds_ref r, r2;
    char err[256];
    if (ds_ref_decode(d, n, &r, err, sizeof err) < 0) return;
    buf a = BUF_INIT;
    ds_ref_encode(&a, &r);
    if (ds_ref_decode((const uint8_t *)a.data, a.len, &r2, err, sizeof err) < 0) abort();
    if (r2.nelems != r.nelems) abort();
    ds_ref_free(&r2);
    ds_ref_free(&r);
    buf_free(&a);
}

static void fuzz_value(const uint8_t *d, size_t n)
{
    ds_value v, v2;
    char err[256];
    if (ds_value_decode(d, n, &v, err, sizeof err) < 0) return;
    for (int dir = KC_ASC; dir <= KC_DESC; dir++) {
        buf k = BUF_INIT, pv = BUF_INIT, k2 = BUF_INIT;
        kc_put_value(&k, &v, dir);
        const uint8_t *p = (const uint8_t *)k.data;
        int cut = kc_get_value(&p, p + k.len, dir, &pv);
        if (cut < 0 || p != (const uint8_t *)k.data + k.len) abort();
        if (ds_value_decode((const uint8_t *)pv.data, pv.len, &v2, err, sizeof err) < 0) abort();
        kc_put_value(&k2, &v2, dir);
        /* A cut string decodes to its kept bytes only; else exact. */
        if (!cut && (k.len != k2.len || memcmp(k.data, k2.data, k.len))) abort();
        if (cut && (v.type != DSV_STRING || v2.s.n > v.s.n)) abort();
        ds_value_free(&v2);
        buf_free(&k); buf_free(&pv); buf_free(&k2);
    }
    ds_value_free(&v);
}

static void fuzz_put(const uint8_t *d, size_t n)
{
    buf resp = BUF_INIT;
    ds_err e;
    if (ds_put(ds, APP, d, n, &resp, &e) == 0) {
        /* Get then Delete the keys it returned. */
        buf req = BUF_INIT, out = BUF_INIT;
        pb_reader r;
        pb_reader_init(&r, resp.data, resp.len);
        uint32_t f; int wt;
        while (pb_next(&r, &f, &wt) > 0) {
            const uint8_t *p; size_t pn;
            if (pb_bytes(&r, wt, &p, &pn) < 0) abort();
            pb_put_bytes(&req, 1, p, pn);
        }
        if (ds_get(ds, APP, (const uint8_t *)req.data, req.len, &out, &e) < 0) abort();
        buf del = BUF_INIT;
        pb_reader_init(&r, req.data, req.len);
        while (pb_next(&r, &f, &wt) > 0) {
            const uint8_t *p; size_t pn;
            pb_bytes(&r, wt, &p, &pn);
            pb_put_bytes(&del, 6, p, pn);
        }
        buf_reset(&out);
        if (ds_delete(ds, APP, (const uint8_t *)del.data, del.len, &out, &e) < 0) abort();
        buf_free(&req); buf_free(&out); buf_free(&del);
    } else if (e.code == 0) {
        abort();                      /* every failure carries a code */
    }
    buf_free(&resp);
}

static char tmpdir[] = "/tmp/czfuzz.XXXXXX";

static void cleanup(void)
{
    char p[64];
    snprintf(p, sizeof p, "%s/data.mdb", tmpdir); unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", tmpdir); unlink(p);
    rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    if (!mkdtemp(tmpdir)) abort();
    atexit(cleanup);
    const char *tmpl = tmpdir;
    char spec[128];
    snprintf(spec, sizeof spec, "lmdb:%s?map=67108864&nosync=1", tmpl);
    char err[256];
    kv_engine *kv = kv_open(spec, err, sizeof err);
    if (!kv) { fprintf(stderr, "%s\n", err); abort(); }
    ds = ds_open_engine(kv, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0: fuzz_entity(d, n); break;
    case 1: fuzz_ref(d, n); break;
    case 2: fuzz_value(d, n); break;
    case 3: fuzz_put(d, n); break;
    }
    return 0;
}
