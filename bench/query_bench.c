/* query_bench.c - indexed query speed over 100 000 entities (run by hand).
 *
 *   make && cc -O2 -std=gnu11 -D_GNU_SOURCE -Isrc -o build/query_bench \
 *       bench/query_bench.c build/rel/libcyclozzo.a -lyaml -llmdb -lpthread -lm
 *   build/query_bench [N]
 *
 * Puts N entities (default 100 000) of kind Item {n: i, bucket: i % 100,
 * label: "item<i>"} through ds_put in batches of 500 into a fresh LMDB
 * datastore under /tmp, then times, in the query engine directly (no HTTP):
 *   eq      bucket == 42, all ~N/100 full entities (RunQuery + Next)
 *   range   n >= N/2 order by n, first 100 entities
 *   count   bucket == 7, counted as the SDK does (keys only, offset)
 * Each query runs 20 times; the median is printed in milliseconds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "datastore/datastore.h"
#include "datastore/query.h"
#include "proto/pb.h"

#define APP "dev~bench"

static datastore *ds;
static dsq_engine *eng;

static void put_batch(int from, int to)
{
    buf req = BUF_INIT, resp = BUF_INIT;
    for (int i = from; i < to; i++) {
        size_t m = pb_begin(&req, 1);
        size_t k = pb_begin(&req, 13);
        pb_put_str(&req, 13, APP);
        size_t pm = pb_begin(&req, 14);
        pb_group_begin(&req, 1); pb_put_str(&req, 2, "Item"); pb_put_int(&req, 3, i + 1); pb_group_end(&req, 1);
        pb_end(&req, pm);
        pb_end(&req, k);
        size_t g = pb_begin(&req, 16);
        pb_group_begin(&req, 1); pb_put_str(&req, 2, "Item"); pb_put_int(&req, 3, i + 1); pb_group_end(&req, 1);
        pb_end(&req, g);
        char label[32]; snprintf(label, sizeof label, "item%d", i);
        struct { const char *n; int t; int64_t v; const char *s; } props[3] = {
            {"n", 1, i, NULL}, {"bucket", 1, i % 100, NULL}, {"label", 3, 0, label}};
        for (int p = 0; p < 3; p++) {
            size_t pr = pb_begin(&req, 14);
            pb_put_str(&req, 3, props[p].n);
            pb_put_bool(&req, 4, 0);
            size_t v = pb_begin(&req, 5);
            if (props[p].t == 1) pb_put_int(&req, 1, props[p].v); else pb_put_str(&req, 3, props[p].s);
            pb_end(&req, v);
            pb_end(&req, pr);
        }
        pb_end(&req, m);
    }
    ds_err e = {0};
    if (ds_put(ds, APP, (uint8_t *)req.data, req.len, &resp, &e) < 0) { fprintf(stderr, "put: %s\n", e.msg); exit(1); }
    buf_free(&req); buf_free(&resp);
}

/* Runs the query to the end; returns results + skipped. */
static long run(const buf *q)
{
    buf resp = BUF_INIT;
    ds_err e = {0};
    long n = 0;
    if (dsq_run_query(eng, APP, (uint8_t *)q->data, q->len, &resp, &e) < 0) { fprintf(stderr, "query: %s\n", e.msg); exit(1); }
    for (;;) {
        pb_reader r; pb_reader_init(&r, resp.data, resp.len);
        uint32_t f; int wt, more = 0; uint64_t cur = 0;
        while (pb_next(&r, &f, &wt) > 0) {
            if (f == 2) { n++; pb_skip(&r, wt, f); }
            else if (f == 7) { int32_t s; pb_int32(&r, wt, &s); n += s; }
            else if (f == 3) pb_bool(&r, wt, &more);
            else if (f == 1) {
                pb_reader c; pb_sub(&r, wt, &c);
                uint32_t cf; int cw;
                while (pb_next(&c, &cf, &cw) > 0) { if (cf == 1) pb_fixed64(&c, cw, &cur); else pb_skip(&c, cw, cf); }
            } else pb_skip(&r, wt, f);
        }
        if (!more) break;
        buf req = BUF_INIT;
        size_t m = pb_begin(&req, 1); pb_put_fixed64(&req, 1, cur); pb_end(&req, m);
        buf_reset(&resp);
        if (dsq_next(eng, APP, (uint8_t *)req.data, req.len, &resp, &e) < 0) { fprintf(stderr, "next: %s\n", e.msg); exit(1); }
        buf_free(&req);
    }
    buf_free(&resp);
    return n;
}

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static void timeit(const char *name, const buf *q)
{
    double t[20];
    long n = 0;
    for (int i = 0; i < 20; i++) {
        int64_t s = now_us();
        n = run(q);
        t[i] = (now_us() - s) / 1000.0;
    }
    qsort(t, 20, sizeof *t, cmp_d);
    printf("%-6s results=%ld median_ms=%.3f\n", name, n, t[10]);
}

static void filter(buf *b, const char *prop, int op, int64_t v)
{
    pb_group_begin(b, 4);
    pb_put_int(b, 6, op);
    size_t m = pb_begin(b, 14);
    pb_put_str(b, 3, prop); pb_put_bool(b, 4, 0);
    size_t vv = pb_begin(b, 5); pb_put_int(b, 1, v); pb_end(b, vv);
    pb_end(b, m);
    pb_group_end(b, 4);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    char dir[] = "/tmp/cz-bench-query-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char err[256];
    ds = ds_open(dir, err, sizeof err);
    if (!ds) { fprintf(stderr, "%s\n", err); return 1; }
    eng = dsq_engine_new(ds);
    int64_t s = now_us();
    for (int i = 0; i < n; i += 500) put_batch(i, i + 500 < n ? i + 500 : n);
    printf("put    entities=%d seconds=%.2f\n", n, (now_us() - s) / 1e6);

    buf q = BUF_INIT;
    pb_put_str(&q, 1, APP); pb_put_str(&q, 3, "Item");
    filter(&q, "bucket", DSQ_EQ, 42);
    timeit("eq", &q);

    buf_reset(&q);
    pb_put_str(&q, 1, APP); pb_put_str(&q, 3, "Item");
    filter(&q, "n", DSQ_GE, n / 2);
    pb_group_begin(&q, 9); pb_put_str(&q, 10, "n"); pb_group_end(&q, 9);
    pb_put_int(&q, 16, 100);
    timeit("range", &q);

    buf_reset(&q);
    pb_put_str(&q, 1, APP); pb_put_str(&q, 3, "Item");
    filter(&q, "bucket", DSQ_EQ, 7);
    pb_put_bool(&q, 21, 1); pb_put_int(&q, 12, 1000000); pb_put_int(&q, 16, 0);
    timeit("count", &q);

    buf_free(&q);
    dsq_engine_free(eng);
    ds_close(ds);
    char cmd[128]; snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}
