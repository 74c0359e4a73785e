/* Unit tests for the Search API query parser and compiler (src/search/
 * squery.c): the tree each query form parses to (precedence, field groups,
 * negation, comparisons, distance), the position named by each syntax
 * error, value helpers, and compiled SQL run against a real FTS5 store
 * (src/search/sstore.c + ssearch.c) to check which documents match. */
#include "search/squery.h"
#include "search/ssearch.h"
#include "search/sstore.h"
#include "test.h"
#include "tmpdir.h"

#include <stdlib.h>

static char dumped[2048];

static const char *parse(const char *q)
{
    char err[256];
    sq_node *n = sq_parse(q, strlen(q), err, sizeof err);
    if (!n) { snprintf(dumped, sizeof dumped, "ERR %s", err); return dumped; }
    buf b = BUF_INIT;
    sq_dump(n, &b);
    snprintf(dumped, sizeof dumped, "%s", buf_cstr(&b));
    buf_free(&b);
    sq_free(n);
    return dumped;
}

TEST(terms_and_precedence)
{
    CHECK_STR(parse(""), "(ALL)");
    CHECK_STR(parse("   "), "(ALL)");
    CHECK_STR(parse("cat"), "(HAS * cat)");
    CHECK_STR(parse("cat dog"), "(AND (HAS * cat) (HAS * dog))");
    CHECK_STR(parse("a OR b c"), "(AND (OR (HAS * a) (HAS * b)) (HAS * c))");
    CHECK_STR(parse("a b AND c OR d"), "(AND (HAS * a) (HAS * b) (OR (HAS * c) (HAS * d)))");
    CHECK_STR(parse("a AND (b OR NOT c)"), "(AND (HAS * a) (OR (HAS * b) (NOT (HAS * c))))");
    CHECK_STR(parse("-a"), "(NOT (HAS * a))");
    CHECK_STR(parse("a -b"), "(AND (HAS * a) (NOT (HAS * b)))");
    CHECK_STR(parse("a-b"), "(HAS * a-b)");
    CHECK_STR(parse("\"big cat\""), "(HAS * \"big cat\")");
    CHECK_STR(parse("\"say \\\"hi\\\"\""), "(HAS * \"say \"hi\"\")");
    CHECK_STR(parse("~cats +dog"), "(AND (HAS * cats) (HAS * dog))");
    CHECK_STR(parse("and or not"), "(AND (HAS * and) (HAS * or) (HAS * not))");
}

TEST(restrictions)
{
    CHECK_STR(parse("title:cat"), "(HAS title cat)");
    CHECK_STR(parse("title : cat"), "(HAS title cat)");
    CHECK_STR(parse("title=\"a b\""), "(EQ title \"a b\")");
    CHECK_STR(parse("title:(a OR b)"), "(OR (HAS title a) (HAS title b))");
    CHECK_STR(parse("title:(a -b)"), "(AND (HAS title a) (NOT (HAS title b)))");
    CHECK_STR(parse("price < 10"), "(LT price 10)");
    CHECK_STR(parse("price<=10"), "(LE price 10)");
    CHECK_STR(parse("price > -3.5"), "(GT price -3.5)");
    CHECK_STR(parse("price >= 1e3"), "(GE price 1e3)");
    CHECK_STR(parse("price != 5"), "(NE price 5)");
    CHECK_STR(parse("f:-3"), "(HAS f -3)");
    CHECK_STR(parse("date >= 2020-01-01"), "(GE date 2020-01-01)");
    CHECK_STR(parse("distance(home, geopoint(48.5, -2)) < 500"), "(DIST home 48.5 -2 LT 500)");
    CHECK_STR(parse("distance(geopoint(1, 2), home) >= 10"), "(DIST home 1 2 GE 10)");
}

TEST(syntax_errors_name_position)
{
    CHECK_STR(parse("(a"), "ERR The search query has a syntax error at position 3: expected ')', found the end of the query.");
    CHECK_STR(parse("a AND OR"), "ERR The search query has a syntax error at position 7: expected a search term, found OR.");
    CHECK_STR(parse("a)"), "ERR The search query has a syntax error at position 2: unexpected ')'.");
    CHECK_STR(parse("\"open"), "ERR The search query has a syntax error at position 1: the quoted string is not closed.");
    CHECK_STR(parse("NOT NOT a"), "ERR The search query has a syntax error at position 5: expected a search term after NOT, found NOT.");
    CHECK_STR(parse("a:b:c"), "ERR The search query has a syntax error at position 4: unexpected ':'.");
    CHECK_STR(parse("9x:a"), "ERR The search query has a syntax error at position 1: '9x' is not a valid field name.");
    CHECK_STR(parse("a ! b"), "ERR The search query has a syntax error at position 3: '!' must be followed by '='.");
    CHECK_STR(parse("t:(u:x)"), "ERR The search query has a syntax error at position 4: a field restriction cannot appear inside the restriction on 't'.");
    CHECK_STR(parse("distance(g, geopoint(91, 0)) < 1"), "ERR The search query has a syntax error at position 13: geopoint latitude must be in [-90, 90] and longitude in [-180, 180].");
    CHECK_STR(parse("distance(g, geopoint(1, 0)) = 1"), "ERR The search query has a syntax error at position 29: distance() must be compared with <, <=, > or >=, found '='.");
    CHECK_STR(parse("price < "), "ERR The search query has a syntax error at position 9: expected a search term, found the end of the query.");
    CHECK_STR(parse(","), "ERR The search query has a syntax error at position 1: expected a search term, found ','.");
    /* nesting is bounded */
    char deep[300];
    memset(deep, '(', 200);
    deep[200] = 'a';
    deep[201] = 0;
    CHECK(strstr(parse(deep), "nests deeper than 64") != NULL);
    char nul[] = "a\0b";
    char err[256];
    CHECK(sq_parse(nul, 3, err, sizeof err) == NULL);
    CHECK(strstr(err, "position 2") != NULL);
}

TEST(values)
{
    double d;
    CHECK(sq_parse_number("10", &d) == 0 && d == 10);
    CHECK(sq_parse_number("-2.5e1", &d) == 0 && d == -25);
    CHECK(sq_parse_number("0x10", &d) < 0);
    CHECK(sq_parse_number("inf", &d) < 0);
    CHECK(sq_parse_number("", &d) < 0);
    CHECK(sq_parse_number("1a", &d) < 0);
    CHECK(sq_parse_date("1970-01-02", &d) == 0 && d == 86400000.0);
    CHECK(sq_parse_date("2020-03-01", &d) == 0 && d == 1583020800000.0);
    CHECK(sq_parse_date("2020-02-30", &d) < 0);
    CHECK(sq_parse_date("2020-13-01", &d) < 0);
    CHECK(sq_parse_date("2020-01-01x", &d) < 0);
}

TEST(lower)
{
    char *l = sq_lower("ÀÉÎ Ÿ Łódź ΣΟΦΙΑ МОСКВА Ёж ABC \xff", strlen("ÀÉÎ Ÿ Łódź ΣΟΦΙΑ МОСКВА Ёж ABC \xff"));
    CHECK_STR(l, "àéî ÿ łódź σοφια москва ёж abc \xff");
    free(l);
}

TEST(compile_errors)
{
    char err[256];
    sq_node *n = sq_parse("x >= abc", 8, err, sizeof err);
    CHECK(n != NULL);
    sq_sql s = { BUF_INIT, NULL, 0, 0 };
    CHECK(sq_compile(n, &s, err, sizeof err) < 0);
    CHECK(strstr(err, "field 'x' at position 6") != NULL);
    sq_sql_free(&s);
    sq_free(n);
}

/* ---- queries run against a real store ---- */

static sdb *db;
static int64_t idx;

static void put(const char *id, int64_t rank, sfield *f, int nf)
{
    char err[256];
    sdoc d = { id, strlen(id), rank, f, nf, NULL, 0, "x", 1 };
    CHECK(sdb_put(db, idx, &d, err, sizeof err) == 0);
}

#define TXT(n, v) { n, sizeof n - 1, SF_TEXT, v, sizeof v - 1, 0, 0 }
#define TYP(n, t, v) { n, sizeof n - 1, t, v, sizeof v - 1, 0, 0 }

static const char *run(const char *q)
{
    ssearch_params p;
    memset(&p, 0, sizeof p);
    p.query = q;
    p.query_len = strlen(q);
    p.limit = 100;
    ssearch_result r;
    char err[256];
    if (ssearch_run(db, idx, &p, &r, err, sizeof err) < 0) {
        snprintf(dumped, sizeof dumped, "ERR %s", err);
        ssearch_result_free(&r);
        return dumped;
    }
    buf b = BUF_INIT;
    for (int i = 0; i < r.nhits; i++) buf_printf(&b, "%s%s", i ? " " : "", r.hits[i].doc_id);
    snprintf(dumped, sizeof dumped, "%s", b.len ? buf_cstr(&b) : "");
    buf_free(&b);
    ssearch_result_free(&r);
    return dumped;
}

TEST(matching_against_store)
{
    char dir[64];
    CHECK(test_mkdtemp(dir, sizeof dir) != NULL);
    sstore *st = sstore_new(dir);
    char err[256];
    db = sstore_acquire(st, "dev~unit", err, sizeof err);
    CHECK(db != NULL);
    if (!db) return;
    idx = sdb_index(db, "", "i", 1, err, sizeof err);
    CHECK(idx > 0);
    sfield d1[] = { TXT("t", "red apple pie"), TYP("n", SF_NUMBER, "3"), TYP("a", SF_ATOM, "Red Fruit") };
    sfield d2[] = { TXT("t", "green apple"), TYP("n", SF_NUMBER, "7"), TYP("a", SF_ATOM, "fruit") };
    sfield d3[] = { TXT("t", "red car"), TYP("d", SF_DATE, "1583020800000"), TYP("p", SF_UPREFIX, "Hello World") };
    put("d1", 3, d1, 3);
    put("d2", 2, d2, 3);
    put("d3", 1, d3, 3);
    CHECK_STR(run("apple"), "d1 d2");
    CHECK_STR(run("red apple"), "d1");
    CHECK_STR(run("red OR green"), "d1 d2 d3");
    CHECK_STR(run("red -apple"), "d3");
    CHECK_STR(run("\"apple pie\""), "d1");
    CHECK_STR(run("\"pie apple\""), "");
    CHECK_STR(run("n > 3"), "d2");
    CHECK_STR(run("n >= 3 n <= 3"), "d1");
    CHECK_STR(run("n:7"), "d2");
    CHECK_STR(run("a:\"red fruit\""), "d1");
    CHECK_STR(run("fruit"), "d2");
    CHECK_STR(run("d = 2020-03-01"), "d3");
    CHECK_STR(run("d < 2020-03-01"), "");
    CHECK_STR(run("p:hello"), "d3");
    CHECK_STR(run("p:\"hello wo\""), "d3");
    CHECK_STR(run("p:world"), "");
    CHECK_STR(run("t:(car OR pie)"), "d1 d3");
    CHECK_STR(run("\"\"\"\""), "");
    CHECK_STR(run("*"), "");
    CHECK(strncmp(run("n < x"), "ERR ", 4) == 0);
    /* replacing a document replaces its terms */
    sfield d1b[] = { TXT("t", "blue boat") };
    put("d1", 3, d1b, 1);
    CHECK_STR(run("apple"), "d2");
    CHECK_STR(run("boat"), "d1");
    CHECK(sdb_delete(db, idx, "d1", err, sizeof err) == 0);
    CHECK_STR(run("boat"), "");
    sstore_release(db);
    sstore_free(st);
    test_rmtree(dir);
}

int main(void)
{
    RUN(terms_and_precedence);
    RUN(restrictions);
    RUN(syntax_errors_name_position);
    RUN(values);
    RUN(lower);
    RUN(compile_errors);
    RUN(matching_against_store);
    return test_report();
}
