/* fuzz_query.c - libFuzzer target for queries: arbitrary bytes decoded as
 * a datastore_v3 Query and as a CompiledCursor (with an encode/decode round
 * trip), and run as a RunQuery against a small datastore (planner and
 * executor over LMDB, required-index mode so nothing is written). The
 * first byte picks the path so one corpus covers all three. The scratch
 * datastore lives in a temporary directory removed at exit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datastore/query.h"
#include "proto/pb.h"

#define APP "dev~fuzz"

static datastore *ds;
static dsq_engine *eng;
static char dir[64];

static void cleanup(void)
{
    dsq_engine_free(eng);
    ds_close(ds);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_query: cannot remove %s\n", dir);
}

static void put(int id, int age, const char *name)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    size_t m = pb_begin(&req, 1);
    size_t k = pb_begin(&req, 13);
    pb_put_str(&req, 13, APP);
    size_t pm = pb_begin(&req, 14);
    pb_group_begin(&req, 1); pb_put_str(&req, 2, "P"); pb_put_int(&req, 3, id); pb_group_end(&req, 1);
    pb_end(&req, pm);
    pb_end(&req, k);
    size_t g = pb_begin(&req, 16);
    pb_group_begin(&req, 1); pb_put_str(&req, 2, "P"); pb_put_int(&req, 3, id); pb_group_end(&req, 1);
    pb_end(&req, g);
    size_t p = pb_begin(&req, 14);
    pb_put_str(&req, 3, "age"); pb_put_bool(&req, 4, 0);
    size_t v = pb_begin(&req, 5); pb_put_int(&req, 1, age); pb_end(&req, v);
    pb_end(&req, p);
    p = pb_begin(&req, 14);
    pb_put_str(&req, 3, "name"); pb_put_bool(&req, 4, 1);
    v = pb_begin(&req, 5); pb_put_str(&req, 3, name); pb_end(&req, v);
    pb_end(&req, p);
    pb_end(&req, m);
    ds_err e = {0};
    if (ds_put(ds, APP, (uint8_t *)req.data, req.len, &resp, &e) < 0) { fprintf(stderr, "put: %s\n", e.msg); abort(); }
    buf_free(&req); buf_free(&resp);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cz-fuzz-query-XXXXXX");
    if (!mkdtemp(dir)) abort();
    char err[256];
    ds = ds_open(dir, err, sizeof err);
    if (!ds) { fprintf(stderr, "%s\n", err); abort(); }
    eng = dsq_engine_new(ds);
    ds_err e = {0};
    if (dsq_configure_app(ds, APP, NULL, 1, &e) < 0) abort();
    for (int i = 1; i <= 12; i++) put(i, i % 4, i % 2 ? "odd" : "even");
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char err[300];
    if (data[0] & 2) {
        if (!ds) setup();
        buf resp = BUF_INIT;
        ds_err e = {0};
        if (dsq_run_query(eng, APP, data + 1, size - 1, &resp, &e) == 0) {
            /* Follow one Next if the query left a cursor open. */
            pb_reader r;
            pb_reader_init(&r, resp.data, resp.len);
            uint32_t f; int wt;
            uint64_t id = 0; int has = 0;
            while (pb_next(&r, &f, &wt) > 0) {
                if (f == 1) {
                    pb_reader c;
                    if (pb_sub(&r, wt, &c) < 0) abort();
                    uint32_t cf; int cw;
                    while (pb_next(&c, &cf, &cw) > 0) {
                        if (cf == 1) { pb_fixed64(&c, cw, &id); has = 1; }
                        else pb_skip(&c, cw, cf);
                    }
                } else pb_skip(&r, wt, f);
            }
            if (r.err) abort();    /* our own response must parse */
            if (has) {
                buf req = BUF_INIT;
                pb_put_fixed64(&req, 1, id);
                buf_reset(&resp);
                dsq_delete_cursor(eng, APP, (uint8_t *)req.data, req.len, &resp, &e);
                buf_free(&req);
            }
        }
        buf_free(&resp);
    } else if (data[0] & 1) {
        dsq_query q;
        if (dsq_query_decode(data + 1, size - 1, &q, err, sizeof err) == 0) {
            (void)dsq_fingerprint(&q);
            dsq_query_free(&q);
        }
    } else {
        dsq_cursor c;
        if (dsq_cursor_decode(data + 1, size - 1, &c, err, sizeof err) == 0) {
            buf out = BUF_INIT;
            dsq_cursor_encode(&c, &out);
            dsq_cursor d;
            if (dsq_cursor_decode((uint8_t *)out.data, out.len, &d, err, sizeof err) != 0) abort();
            if (d.fingerprint != c.fingerprint || d.n_orders != c.n_orders || d.key.n != c.key.n) abort();
            dsq_cursor_free(&d);
            buf_free(&out);
            dsq_cursor_free(&c);
        }
    }
    return 0;
}
