/* fuzz_search_query.c - libFuzzer target for the Search API query language
 * (src/search/squery.c): arbitrary bytes are parsed; a parsed query is
 * dumped and compiled, and then run by ssearch against a small SQLite
 * search store, where a compiled query that SQLite refuses to prepare or
 * run is a bug (abort). The first byte picks parse-only or parse-and-run so
 * the slower path does not dominate, whether to order by relevance, and
 * whether to sort by fields; a search with hits is resumed from a cursor
 * after its first hit, which must yield the other hits. The store lives in a temporary
 * directory removed at exit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search/squery.h"
#include "search/ssearch.h"
#include "search/sstore.h"

static sstore *store;
static sdb *db;
static int64_t idx;
static char dir[64];

static void cleanup(void)
{
    if (db) sstore_release(db);
    sstore_free(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_search_query: cannot remove %s\n", dir);
}

#define F(n, t, v) { n, sizeof n - 1, t, v, sizeof v - 1, 48.8, 2.3 }

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cz-fuzz-search-XXXXXX");
    if (!mkdtemp(dir)) abort();
    char err[256];
    store = sstore_new(dir);
    db = sstore_acquire(store, "dev~fuzz", err, sizeof err);
    if (!db) { fprintf(stderr, "%s\n", err); abort(); }
    idx = sdb_index(db, "", "idx", 1, err, sizeof err);
    if (idx <= 0) abort();
    sfield f1[] = { F("title", 0, "red apple pie"), F("price", 4, "3.5"), F("genre", 2, "Fiction"),
                    F("when", 3, "1583020800000"), F("where", 5, ""), F("code", 6, "AB-12"),
                    F("tags", 7, "alpha beta"), F("body", 1, "<p>hello <b>world</b></p>") };
    sfield f2[] = { F("title", 0, "green car"), F("price", 4, "10") };
    sdoc d1 = { "d1", 2, 5, f1, 8, NULL, 0, "x", 1 };
    sdoc d2 = { "d2", 2, 4, f2, 2, NULL, 0, "y", 1 };
    if (sdb_put(db, idx, &d1, err, sizeof err) < 0 || sdb_put(db, idx, &d2, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char err[300];
    const char *q = (const char *)data + 1;
    size_t n = size - 1;
    sq_node *t = sq_parse(q, n, err, sizeof err);
    if (!t) {
        if (!strstr(err, "position") && !strstr(err, "bytes long")) abort();   /* errors name a position */
        return 0;
    }
    buf b = BUF_INIT;
    sq_dump(t, &b);
    buf_free(&b);
    sq_sql s = { BUF_INIT, NULL, 0, 0 };
    int compiled = sq_compile(t, &s, err, sizeof err);
    sq_sql_free(&s);
    sq_free(t);
    if (compiled < 0 || !(data[0] & 1)) return 0;
    if (!db) setup();
    ssearch_params p;
    memset(&p, 0, sizeof p);
    p.query = q;
    p.query_len = n;
    p.limit = 10;
    p.match_scorer = (data[0] & 2) != 0;
    ssort sorts[2] = { { "price", 0, 1, 0, NULL }, { "title", 1, 0, 0, NULL } };
    if (data[0] & 4) { p.sorts = sorts; p.nsorts = 2; }
    ssearch_result r;
    if (ssearch_run(db, idx, &p, &r, err, sizeof err) < 0) {
        fprintf(stderr, "compiled query failed in SQLite: %s\n", err);
        abort();
    }
    if (r.nhits > 0) {                 /* resume after the first hit: the keyset path */
        char *c = ssearch_cursor(&p, 1, r.hits[0].doc_id);
        ssearch_result r2;
        p.cursor = c;
        if (ssearch_run(db, idx, &p, &r2, err, sizeof err) < 0) {
            fprintf(stderr, "resuming from a cursor failed: %s\n", err);
            abort();
        }
        if (r2.nhits != r.nhits - 1) abort();   /* the same matches, less the first */
        ssearch_result_free(&r2);
        free(c);
    }
    ssearch_result_free(&r);
    return 0;
}
