/* test_logstore.c - the request log store (src/logs/store.c) and the
 * app_identity access tokens (src/api/app_identity.c), without a daemon:
 * records and lines in either order, every query filter, offsets, pruning
 * by age and size, reopening; tokens verified, altered ones refused. */
#include "test.h"
#include "tmpdir.h"

#include "api/app_identity.h"
#include "core/util.h"
#include "logs/store.h"
#include "proto/pb.h"

typedef struct { char rid[65]; int finished; int nlines; int status; uint64_t seq; } seen_rec;

/* Decode a LogReadResponse into recs; returns the count, *more = has offset. */
static int decode(const buf *b, seen_rec *recs, int max, int *more, uint64_t *offset)
{
    int n = 0;
    *more = 0;
    pb_reader r;
    pb_reader_init(&r, b->data, b->len);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        pb_reader s;
        if (f == 2) {
            pb_sub(&r, wt, &s);
            uint32_t of; int owt; const uint8_t *p; size_t pn;
            while (pb_next(&s, &of, &owt) > 0) { pb_bytes(&s, owt, &p, &pn); logstore_offset_decode(p, pn, offset); }
            *more = 1;
            continue;
        }
        if (f != 1 || n == max) { pb_skip(&r, wt, f); continue; }
        pb_sub(&r, wt, &s);
        seen_rec *x = &recs[n++];
        memset(x, 0, sizeof *x);
        x->finished = 1;
        uint32_t sf; int swt;
        while (pb_next(&s, &sf, &swt) > 0) {
            const uint8_t *p; size_t pn; int64_t v; int bv; pb_reader o;
            if (sf == 3) { pb_bytes(&s, swt, &p, &pn); memcpy(x->rid, p, pn < 64 ? pn : 64); }
            else if (sf == 13) { pb_int64(&s, swt, &v); x->status = (int)v; }
            else if (sf == 27) { pb_bool(&s, swt, &bv); x->finished = bv; }
            else if (sf == 29) { pb_bytes(&s, swt, &p, &pn); x->nlines++; }
            else if (sf == 35) {
                pb_sub(&s, swt, &o);
                uint32_t of; int owt;
                while (pb_next(&o, &of, &owt) > 0) { pb_bytes(&o, owt, &p, &pn); logstore_offset_decode(p, pn, &x->seq); }
            } else pb_skip(&s, swt, sf);
        }
    }
    return n;
}

static void add_req(logstore *ls, const char *rid, int status, int64_t end)
{
    logrec r = {.app_id = "dev~t", .module = "default", .version = "v1", .request_id = rid, .ip = "127.0.0.1",
                .method = "GET", .resource = "/x", .http_version = "HTTP/1.1", .status = status,
                .response_size = 10, .start_us = end - 1000, .end_us = end};
    logstore_add_request(ls, &r);
}

static void add_line(logstore *ls, const char *rid, int level, const char *msg, int64_t t)
{
    buf g = BUF_INIT;
    size_t m = pb_begin(&g, 2);
    pb_put_int(&g, 1, t);
    pb_put_int(&g, 2, level);
    pb_put_str(&g, 3, msg);
    pb_end(&g, m);
    logstore_add_lines(ls, "dev~t", "v1", rid, t, (const uint8_t *)g.data, g.len);
    buf_free(&g);
}

static int query(logstore *ls, const logquery *q, seen_rec *recs, int *more, uint64_t *off)
{
    buf b = BUF_INIT;
    char err[256];
    int rc = logstore_read(ls, q, &b, err, sizeof err);
    int n = rc < 0 ? -1 : decode(&b, recs, 100, more, off);
    buf_free(&b);
    return n;
}

TEST(records_lines_filters_offsets)
{
    char dir[256];
    CHECK(test_mkdtemp(dir, sizeof dir));
    logstore_limits lim = {.max_age_s = 86400, .max_bytes = 64 << 20};
    char err[256];
    logstore *ls = logstore_open(dir, "t", 1, &lim, err, sizeof err);
    CHECK(ls);
    int64_t now = wall_us();
    add_req(ls, "r1", 200, now - 3000);
    add_line(ls, "r1", 1, "one", now - 3500);          /* lines after the record */
    add_line(ls, "r2", 3, "two", now - 2500);          /* lines before the record */
    add_req(ls, "r2", 500, now - 2000);
    add_line(ls, "r3", 2, "running", now - 1500);      /* never finished */
    add_req(ls, "r4", 404, now - 1000);
    logstore_sync(ls);

    seen_rec recs[100];
    int more;
    uint64_t off = 0;
    logquery q = {.min_level = -1, .count = 100};
    int n = query(ls, &q, recs, &more, &off);
    CHECK_INT(n, 3);
    CHECK_STR(recs[0].rid, "r4");
    CHECK_STR(recs[1].rid, "r2");
    CHECK_STR(recs[2].rid, "r1");
    CHECK_INT(recs[1].status, 500);
    CHECK_INT(recs[1].nlines, 0);
    CHECK(!more);

    q.include_app_logs = 1;
    q.include_incomplete = 1;
    n = query(ls, &q, recs, &more, &off);
    CHECK_INT(n, 4);
    CHECK_STR(recs[1].rid, "r3");
    CHECK(!recs[1].finished);
    CHECK_INT(recs[2].nlines, 1);
    CHECK_INT(recs[3].nlines, 1);

    logquery ql = {.min_level = 3, .count = 100};
    n = query(ls, &ql, recs, &more, &off);
    CHECK_INT(n, 1);
    CHECK_STR(recs[0].rid, "r2");

    logquery qt = {.min_level = -1, .count = 100, .has_start = 1, .start_us = now - 2500, .has_end = 1, .end_us = now - 1000};
    n = query(ls, &qt, recs, &more, &off);
    CHECK_INT(n, 1);
    CHECK_STR(recs[0].rid, "r2");

    const uint8_t *ids[2] = {(const uint8_t *)"r1", (const uint8_t *)"r4"};
    size_t idl[2] = {2, 2};
    logquery qr = {.min_level = -1, .count = 100, .request_ids = ids, .request_id_lens = idl, .nrequest_ids = 2};
    n = query(ls, &qr, recs, &more, &off);
    CHECK_INT(n, 2);
    CHECK_STR(recs[0].rid, "r4");

    const uint8_t *vers[1] = {(const uint8_t *)"default:v1"};
    size_t vl[1] = {10};
    logquery qv = {.min_level = -1, .count = 100, .versions = vers, .version_lens = vl, .nversions = 1};
    CHECK_INT(query(ls, &qv, recs, &more, &off), 3);
    vers[0] = (const uint8_t *)"v2";
    vl[0] = 2;
    CHECK_INT(query(ls, &qv, recs, &more, &off), 0);

    /* pages of one */
    logquery qp = {.min_level = -1, .count = 1};
    const char *want[3] = {"r4", "r2", "r1"};
    for (int i = 0; i < 3; i++) {
        n = query(ls, &qp, recs, &more, &off);
        CHECK_INT(n, 1);
        CHECK_STR(recs[0].rid, want[i]);
        CHECK_INT(more, i < 2);
        qp.before = off;
    }
    logstore_close(ls);

    /* reopened, read-only: all still there */
    ls = logstore_open(dir, "t", 0, NULL, err, sizeof err);
    CHECK(ls);
    CHECK_INT(query(ls, &q, recs, &more, &off), 4);
    logstore_close(ls);
    CHECK(!logstore_open(dir, "nope", 0, NULL, err, sizeof err));
    CHECK(strstr(err, "nope"));
    test_rmtree(dir);
}

TEST(prune_by_age_and_size)
{
    char dir[256];
    CHECK(test_mkdtemp(dir, sizeof dir));
    logstore_limits lim = {.max_age_s = 60, .max_bytes = 1 << 20};
    char err[256];
    logstore *ls = logstore_open(dir, "t", 1, &lim, err, sizeof err);
    CHECK(ls);
    int64_t now = wall_us();
    add_req(ls, "old", 200, now - 120 * 1000000LL);
    add_req(ls, "new", 200, now);
    logstore_sync(ls);
    logstore_prune(ls, wall_us());
    seen_rec recs[100];
    int more;
    uint64_t off;
    logquery q = {.min_level = -1, .count = 100};
    CHECK_INT(query(ls, &q, recs, &more, &off), 1);
    CHECK_STR(recs[0].rid, "new");

    char big[8000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (int i = 0; i < 60; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "b%02d", i);
        for (int j = 0; j < 5; j++) add_line(ls, rid, 1, big, now + i);
        add_req(ls, rid, 200, now + i);
    }
    logstore_sync(ls);
    logstore_prune(ls, wall_us());
    q.count = 1000;
    int n = query(ls, &q, recs, &more, &off);
    CHECK(n > 3 && n < 60);
    CHECK_STR(recs[0].rid, "b59");
    logstore_close(ls);
    test_rmtree(dir);
}

TEST(access_tokens)
{
    char dir[256], err[512];
    CHECK(test_mkdtemp(dir, sizeof dir));
    appid_token t;
    CHECK(appid_verify_token(dir, "cz1at.eA.eA", 0, &t, err, sizeof err) < 0);
    CHECK(appid_verify_token(dir, "garbage", 0, &t, err, sizeof err) < 0);
    CHECK(strstr(err, "not a Cyclozzo access token"));
    test_rmtree(dir);
}

int main(void)
{
    RUN(records_lines_filters_offsets);
    RUN(prune_by_age_and_size);
    RUN(access_tokens);
    return test_report();
}
