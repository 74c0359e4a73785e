/* ssearch.c - executes a Search API search over the search store (see
 * ssearch.h for the model).
 *
 * One statement text is built with its parameters in order of appearance:
 *   SELECT d.doc_id, d.pb, <sort keys> FROM doc d
 *   WHERE d.idx=? AND (<query>) AND (<refinements>)
 *   ORDER BY <sort keys>, d.rank DESC, d.doc_id LIMIT ? OFFSET ?
 * and a second one counts the matches. A sort key is a field's value (its
 * number or date if it has one, else its text), with the sort's default for
 * documents without the field; _rank and _doc_id are the document's own;
 * distance(field, geopoint(lat, lng)) is the distance in metres; _score
 * (and the order under a match scorer) is sq_score_sql's bm25 relevance.
 * Facet counts run over a temporary table of all matching document ids. */
#include "search/ssearch.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/util.h"

#define DEFAULT_VALUE_LIMIT 10

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ULL; }
    return h;
}

static uint64_t query_hash(const ssearch_params *p)
{
    uint64_t h = fnv(1469598103934665603ULL, p->query, p->query_len);
    h = fnv(h, &p->match_scorer, sizeof p->match_scorer);
    for (int i = 0; i < p->nsorts; i++) {
        h = fnv(h, p->sorts[i].expr, strlen(p->sorts[i].expr) + 1);
        h = fnv(h, &p->sorts[i].desc, sizeof p->sorts[i].desc);
    }
    for (int i = 0; i < p->nrefine; i++) {
        const srefine *r = &p->refine[i];
        h = fnv(h, r->name, strlen(r->name) + 1);
        if (r->value) h = fnv(h, r->value, strlen(r->value) + 1);
    }
    return h;
}

char *ssearch_cursor(const ssearch_params *p, int64_t pos, const char *doc_id)
{
    size_t n = strlen(doc_id);
    char *hex = xmalloc(2 * n + 1);
    hex_encode((const uint8_t *)doc_id, n, hex);
    char *c = xasprintf("%lld.%016llx.%s", (long long)pos, (unsigned long long)query_hash(p), hex);
    free(hex);
    return c;
}

/* The cursor's position and the id of the document it follows (caller frees). */
static int cursor_parse(const ssearch_params *p, int64_t *pos, char **doc_id, char *err, size_t errlen)
{
    long long v;
    unsigned long long h;
    int used = 0;
    const char *c = p->cursor;
    if (sscanf(c, "%lld.%16llx.%n", &v, &h, &used) != 2 || !used || v < 0 || h != query_hash(p))
        goto bad;
    size_t n = strlen(c + used);
    if (n % 2 || n > 2000) goto bad;
    *doc_id = xmalloc(n / 2 + 1);
    if (hex_decode(c + used, n, (uint8_t *)*doc_id) < 0 || memchr(*doc_id, 0, n / 2)) {
        free(*doc_id);
        *doc_id = NULL;
        goto bad;
    }
    (*doc_id)[n / 2] = 0;
    *pos = v;
    return 0;
bad:
    set_err(err, errlen, "The cursor '%.60s' is not valid for this query.", c);
    return -1;
}

static int valid_name(const char *s)
{
    if (!isalpha((unsigned char)*s)) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_') return 0;
    return 1;
}

/* The number of ordering keys: the sorts, the score under a match scorer,
 * then rank (descending) and doc id (ascending), which make the order total. */
static int nkeys(const ssearch_params *p)
{
    return p->nsorts + (p->match_scorer && p->nsorts == 0) + 2;
}

/* Append ordering key j's expression and params; *desc gets its direction. */
static int key_sql(sdb *d, int64_t idx, const sq_node *tree, const ssearch_params *p, int j, sq_sql *s,
                   int *desc, char *err, size_t errlen)
{
    int n = nkeys(p);
    if (j == n - 1) { *desc = 0; buf_puts(&s->sql, "d.doc_id"); return 0; }
    if (j == n - 2) { *desc = 1; buf_puts(&s->sql, "d.rank"); return 0; }
    if (j == p->nsorts) { *desc = 1; sq_score_sql(tree, s); return 0; }
    const ssort *o = &p->sorts[j];
    *desc = o->desc;
    if (!strcmp(o->expr, "_rank")) { buf_puts(&s->sql, "d.rank"); return 0; }
    if (!strcmp(o->expr, "_doc_id")) { buf_puts(&s->sql, "d.doc_id"); return 0; }
    if (!strcmp(o->expr, "_score")) { sq_score_sql(tree, s); return 0; }
    char gf[101];
    double lat, lng;
    int used = 0;
    if (sscanf(o->expr, " distance ( %100[A-Za-z0-9_] , geopoint ( %lf , %lf ) ) %n", gf, &lat, &lng, &used) == 3 &&
        !o->expr[used] && valid_name(gf)) {
        /* metres from a point; documents without the field take the default */
        int has_default = o->has_num;
        buf_puts(&s->sql, has_default ? "coalesce(" : "(");
        buf_printf(&s->sql, "(SELECT min(cz_geo_distance(lat,lng,?,?)) FROM fv WHERE fv.doc=d.id AND fv.field=? "
                   "AND fv.type=%d)", SF_GEO);
        sq_add_num(s, lat);
        sq_add_num(s, lng);
        sq_add_text(s, gf, strlen(gf));
        if (has_default) sq_add_num(s, o->num);
        buf_puts(&s->sql, has_default ? ", ?)" : ")");
        return 0;
    }
    if (!valid_name(o->expr)) {
        set_err(err, errlen, "The sort expression '%.100s' is not supported: sort by a field name, "
                "_rank, _score, _doc_id or distance(field, geopoint(lat, lng)).", o->expr);
        return -1;
    }
    int has_default = o->has_num || o->text;
    buf_puts(&s->sql, has_default ? "coalesce(" : "(");
    buf_puts(&s->sql, "(SELECT CASE WHEN n IS NOT NULL THEN n ELSE s END FROM fv "
                      "WHERE fv.doc=d.id AND fv.field=? AND fv.type<>5 ORDER BY n IS NULL LIMIT 1)");
    sq_add_text(s, o->expr, strlen(o->expr));
    double num;
    if (o->has_num) sq_add_num(s, o->num);
    else if (o->text && sq_parse_number(o->text, &num) == 0 && sdb_has_field_type(d, idx, o->expr, SF_DATE))
        sq_add_num(s, num);                  /* a date default travels as epoch ms text */
    else if (o->text) sq_add_text(s, o->text, strlen(o->text));
    buf_puts(&s->sql, has_default ? ", ?)" : ")");
    return 0;
}

static void refine_sql(const ssearch_params *p, sq_sql *s)
{
    /* refinements of one name are OR-ed, different names AND-ed */
    for (int i = 0; i < p->nrefine; i++) {
        const srefine *r = &p->refine[i];
        int seen = 0;
        for (int j = 0; j < i; j++) if (!strcmp(p->refine[j].name, r->name)) seen = 1;
        if (seen) continue;
        buf_puts(&s->sql, " AND (0");
        for (int j = i; j < p->nrefine; j++) {
            const srefine *q = &p->refine[j];
            if (strcmp(q->name, r->name)) continue;
            buf_puts(&s->sql, " OR d.id IN (SELECT doc FROM fc WHERE name=?");
            sq_add_text(s, q->name, strlen(q->name));
            double v;
            if (q->value) {
                if (sq_parse_number(q->value, &v) == 0) {
                    buf_puts(&s->sql, " AND (s=? OR n=?)");
                    sq_add_text(s, q->value, strlen(q->value));
                    sq_add_num(s, v);
                } else {
                    buf_puts(&s->sql, " AND s=?");
                    sq_add_text(s, q->value, strlen(q->value));
                }
            } else {
                if (q->start && sq_parse_number(q->start, &v) == 0) { buf_puts(&s->sql, " AND n>=?"); sq_add_num(s, v); }
                if (q->end && sq_parse_number(q->end, &v) == 0) { buf_puts(&s->sql, " AND n<?"); sq_add_num(s, v); }
                buf_puts(&s->sql, " AND n IS NOT NULL");
            }
            buf_putc(&s->sql, ')');
        }
        buf_putc(&s->sql, ')');
    }
}

static int bind_all(sqlite3_stmt *st, const sq_sql *s)
{
    for (int i = 0; i < s->nparams; i++) {
        double v = s->params[i].d;
        int rc = !s->params[i].is_num ? sqlite3_bind_text(st, i + 1, s->params[i].s, -1, SQLITE_STATIC)
               : v == floor(v) && fabs(v) < 9e15 ? sqlite3_bind_int64(st, i + 1, (sqlite3_int64)v)
               : sqlite3_bind_double(st, i + 1, v);
        if (rc != SQLITE_OK) return -1;
    }
    return 0;
}

static int sqlerr(sdb *d, char *err, size_t errlen, const char *what)
{
    set_err(err, errlen, "The search failed to %s: %s.", what, sqlite3_errmsg(sdb_sqlite(d)));
    return -1;
}

/* The WHERE clause (without "WHERE") for the index, query and refinements. */
static int where_sql(int64_t idx, const sq_node *tree, const ssearch_params *p, sq_sql *s, char *err, size_t errlen)
{
    buf_puts(&s->sql, " FROM doc d WHERE d.idx=? AND ");
    sq_add_num(s, (double)idx);
    if (sq_compile(tree, s, err, errlen) < 0) return -1;
    refine_sql(p, s);
    return 0;
}

static int64_t count_matches(sdb *d, int64_t idx, const sq_node *tree, const ssearch_params *p, char *err, size_t errlen)
{
    sq_sql s = { BUF_INIT, NULL, 0, 0 };
    buf_puts(&s.sql, "SELECT count(*)");
    int64_t n = -1;
    if (where_sql(idx, tree, p, &s, err, errlen) == 0) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(sdb_sqlite(d), buf_cstr(&s.sql), -1, &st, NULL) != SQLITE_OK || bind_all(st, &s) < 0)
            sqlerr(d, err, errlen, "prepare the count");
        else if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
        else sqlerr(d, err, errlen, "count the matches");
        sqlite3_finalize(st);
    }
    sq_sql_free(&s);
    return n;
}

/* ---- facets ---- */

static sfacet_res *add_facet(ssearch_result *r, const char *name)
{
    r->facets = xrealloc(r->facets, (size_t)(r->nfacets + 1) * sizeof *r->facets);
    sfacet_res *f = &r->facets[r->nfacets++];
    f->name = xstrdup(name);
    f->v = NULL;
    f->nv = 0;
    return f;
}

static sfacet_val *add_val(sfacet_res *f, const char *label, int count)
{
    f->v = xrealloc(f->v, (size_t)(f->nv + 1) * sizeof *f->v);
    sfacet_val *v = &f->v[f->nv++];
    memset(v, 0, sizeof *v);
    v->label = xstrdup(label);
    v->count = count;
    return v;
}

static char *fmt_num(double v) { return xasprintf("%.17g", v); }

static int facet_values(sdb *d, const char *name, const sfacet_req *req, int value_limit, sfacet_res *f,
                        char *err, size_t errlen)
{
    sqlite3 *db = sdb_sqlite(d);
    sqlite3_stmt *st = NULL;
    int rc;
    if (req && req->nranges) {
        for (int i = 0; i < req->nranges; i++) {
            const srefine *rg = &req->ranges[i];
            double lo = -INFINITY, hi = INFINITY;
            if (rg->start) sq_parse_number(rg->start, &lo);
            if (rg->end) sq_parse_number(rg->end, &hi);
            if (sqlite3_prepare_v2(db, "SELECT count(DISTINCT doc) FROM fc WHERE name=? AND n>=? AND n<? "
                                   "AND doc IN (SELECT id FROM temp.cz_hits)", -1, &st, NULL) != SQLITE_OK)
                return sqlerr(d, err, errlen, "count a facet range");
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 2, lo);
            sqlite3_bind_double(st, 3, hi);
            int c = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
            sqlite3_finalize(st);
            if (!c) continue;
            char *label = xasprintf("[%s,%s)", rg->start ? rg->start : "-inf", rg->end ? rg->end : "inf");
            sfacet_val *v = add_val(f, label, c);
            free(label);
            v->start = rg->start ? xstrdup(rg->start) : NULL;
            v->end = rg->end ? xstrdup(rg->end) : NULL;
        }
        return 0;
    }
    if (req && req->nconstraints) {
        for (int i = 0; i < req->nconstraints; i++) {
            if (sqlite3_prepare_v2(db, "SELECT count(DISTINCT doc) FROM fc WHERE name=? AND s=? "
                                   "AND doc IN (SELECT id FROM temp.cz_hits)", -1, &st, NULL) != SQLITE_OK)
                return sqlerr(d, err, errlen, "count a facet value");
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, req->constraints[i], -1, SQLITE_STATIC);
            int c = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
            sqlite3_finalize(st);
            if (c) add_val(f, req->constraints[i], c)->value = xstrdup(req->constraints[i]);
        }
        return 0;
    }
    /* atom values, most frequent first */
    if (sqlite3_prepare_v2(db, "SELECT s, count(DISTINCT doc) c FROM fc WHERE name=? AND type=2 "
                           "AND doc IN (SELECT id FROM temp.cz_hits) GROUP BY s ORDER BY c DESC, s LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return sqlerr(d, err, errlen, "count facet values");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, value_limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        add_val(f, s, sqlite3_column_int(st, 1))->value = xstrdup(s);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sqlerr(d, err, errlen, "count facet values");
    /* number values: one range from the smallest to the largest */
    if (f->nv < value_limit) {
        if (sqlite3_prepare_v2(db, "SELECT min(n), max(n), count(DISTINCT doc) FROM fc WHERE name=? AND type=4 "
                               "AND doc IN (SELECT id FROM temp.cz_hits)", -1, &st, NULL) != SQLITE_OK)
            return sqlerr(d, err, errlen, "count facet ranges");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 2) > 0) {
            double lo = sqlite3_column_double(st, 0), hi = sqlite3_column_double(st, 1);
            char *a = fmt_num(lo), *b = fmt_num(nextafter(hi, INFINITY));
            char *label = xasprintf("[%g,%g]", lo, hi);
            sfacet_val *v = add_val(f, label, sqlite3_column_int(st, 2));
            v->start = a;
            v->end = b;
            free(label);
        }
        sqlite3_finalize(st);
    }
    return 0;
}

static int run_facets(sdb *d, const char *where_text, const sq_sql *where, const ssearch_params *p,
                      ssearch_result *r, char *err, size_t errlen)
{
    sqlite3 *db = sdb_sqlite(d);
    if (sqlite3_exec(db, "CREATE TEMP TABLE IF NOT EXISTS cz_hits(id INTEGER PRIMARY KEY);"
                         "DELETE FROM temp.cz_hits;", NULL, NULL, NULL) != SQLITE_OK)
        return sqlerr(d, err, errlen, "prepare facet counting");
    char *sql = xasprintf("INSERT INTO temp.cz_hits SELECT d.id%s", where_text);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK || bind_all(st, where) < 0 || sqlite3_step(st) != SQLITE_DONE) {
        sqlite3_finalize(st);
        return sqlerr(d, err, errlen, "collect the matches for facets");
    }
    sqlite3_finalize(st);
    for (int i = 0; i < p->nfacets; i++) {
        const sfacet_req *q = &p->facets[i];
        sfacet_res *f = add_facet(r, q->name);
        if (facet_values(d, q->name, q, q->value_limit > 0 ? q->value_limit : DEFAULT_VALUE_LIMIT, f, err, errlen) < 0)
            return -1;
        if (!f->nv) { free(f->name); free(f->v); r->nfacets--; }
    }
    if (p->auto_facets > 0) {
        if (sqlite3_prepare_v2(db, "SELECT name, count(DISTINCT doc) c FROM fc WHERE doc IN "
                               "(SELECT id FROM temp.cz_hits) GROUP BY name ORDER BY c DESC, name", -1, &st, NULL) != SQLITE_OK)
            return sqlerr(d, err, errlen, "discover facets");
        int found = 0;
        while (found < p->auto_facets && sqlite3_step(st) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 0);
            int dup = 0;
            for (int i = 0; i < p->nfacets; i++) if (!strcmp(p->facets[i].name, name)) dup = 1;
            if (dup) continue;
            char *nm = xstrdup(name);
            sfacet_res *f = add_facet(r, nm);
            int lim = p->auto_value_limit > 0 ? p->auto_value_limit : DEFAULT_VALUE_LIMIT;
            int frc = facet_values(d, nm, NULL, lim, f, err, errlen);
            free(nm);
            if (frc < 0) { sqlite3_finalize(st); return -1; }
            found++;
        }
        sqlite3_finalize(st);
    }
    sqlite3_exec(db, "DELETE FROM temp.cz_hits", NULL, NULL, NULL);
    return 0;
}

/* Append src's text and params to dst. */
static void append_sql(sq_sql *dst, const sq_sql *src)
{
    buf_append(&dst->sql, src->sql.data, src->sql.len);
    for (int i = 0; i < src->nparams; i++) {
        if (src->params[i].is_num) sq_add_num(dst, src->params[i].d);
        else sq_add_text(dst, src->params[i].s, strlen(src->params[i].s));
    }
}

/* Bind one stored key value as a parameter (numbers keep their exact value). */
static void add_value(sq_sql *s, sqlite3_value *v)
{
    if (sqlite3_value_type(v) == SQLITE_TEXT)
        sq_add_text(s, (const char *)sqlite3_value_text(v), (size_t)sqlite3_value_bytes(v));
    else sq_add_num(s, sqlite3_value_double(v));
}

/* " AND (<the ordering keys come after vals>)": for key j, all keys before
 * it equal and key j after, in SQLite's order (NULL first ascending, last
 * descending). */
static void after_sql(const sq_sql *keys, const int *desc, sqlite3_value **vals, int n, sq_sql *s)
{
    buf_puts(&s->sql, " AND (0");
    for (int j = 0; j < n; j++) {
        buf_puts(&s->sql, " OR (1");
        for (int i = 0; i <= j; i++) {
            int null = sqlite3_value_type(vals[i]) == SQLITE_NULL;
            buf_puts(&s->sql, " AND ");
            if (i < j) {                                   /* equal */
                append_sql(s, &keys[i]);
                if (null) buf_puts(&s->sql, " IS NULL");
                else { buf_puts(&s->sql, " = ?"); add_value(s, vals[i]); }
            } else if (!desc[i]) {                         /* after, ascending */
                append_sql(s, &keys[i]);
                if (null) buf_puts(&s->sql, " IS NOT NULL");
                else { buf_puts(&s->sql, " > ?"); add_value(s, vals[i]); }
            } else if (null) {                             /* nothing follows NULL descending */
                buf_puts(&s->sql, "0");
            } else {                                       /* after, descending: smaller or NULL */
                buf_putc(&s->sql, '(');
                append_sql(s, &keys[i]);
                buf_puts(&s->sql, " < ? OR ");
                add_value(s, vals[i]);
                append_sql(s, &keys[i]);
                buf_puts(&s->sql, " IS NULL)");
            }
        }
        buf_putc(&s->sql, ')');
    }
    buf_putc(&s->sql, ')');
}

/* The ordering key values of document doc_id, or 0 when it is gone. */
static int lookup_keys(sdb *d, int64_t idx, const sq_sql *keys, int n, const char *doc_id, sqlite3_value **vals,
                       char *err, size_t errlen)
{
    sq_sql q = { BUF_INIT, NULL, 0, 0 };
    buf_puts(&q.sql, "SELECT ");
    for (int j = 0; j < n; j++) {
        if (j) buf_puts(&q.sql, ", ");
        append_sql(&q, &keys[j]);
    }
    buf_puts(&q.sql, " FROM doc d WHERE d.idx=? AND d.doc_id=?");
    sq_add_num(&q, (double)idx);
    sq_add_text(&q, doc_id, strlen(doc_id));
    sqlite3_stmt *st = NULL;
    int found = -1;
    if (sqlite3_prepare_v2(sdb_sqlite(d), buf_cstr(&q.sql), -1, &st, NULL) != SQLITE_OK || bind_all(st, &q) < 0)
        sqlerr(d, err, errlen, "prepare the cursor");
    else {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            for (int j = 0; j < n; j++) vals[j] = sqlite3_value_dup(sqlite3_column_value(st, j));
            found = 1;
        } else if (rc == SQLITE_DONE) found = 0;
        else sqlerr(d, err, errlen, "resolve the cursor");
    }
    sqlite3_finalize(st);
    sq_sql_free(&q);
    return found;
}

int ssearch_run(sdb *d, int64_t idx, const ssearch_params *p, ssearch_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->next = -1;
    r->tree = sq_parse(p->query, p->query_len, err, errlen);
    if (!r->tree) return -1;
    int64_t pos = 0;                     /* position of the cursor (0 without one) */
    char *after_id = NULL;
    if (p->cursor && *p->cursor && cursor_parse(p, &pos, &after_id, err, errlen) < 0) return -1;
    int n = nkeys(p);
    sq_sql *keys = xcalloc((size_t)n, sizeof *keys);
    int *desc = xcalloc((size_t)n, sizeof *desc);
    sqlite3_value **vals = xcalloc((size_t)n, sizeof *vals);
    sq_sql s = { BUF_INIT, NULL, 0, 0 };
    sq_sql w = { BUF_INIT, NULL, 0, 0 };
    int ret = -1;
    sqlite3_stmt *st = NULL;
    if (where_sql(idx, r->tree, p, &w, err, errlen) < 0) goto out;   /* validates the query first */
    for (int j = 0; j < n; j++)
        if (key_sql(d, idx, r->tree, p, j, &keys[j], &desc[j], err, errlen) < 0) goto out;
    if (!idx) { ret = 0; goto out; }
    /* resume after the cursor's document if it still exists, else at its position */
    int64_t skip = p->offset;
    int keyset = 0;
    if (after_id) {
        int f = lookup_keys(d, idx, keys, n, after_id, vals, err, errlen);
        if (f < 0) goto out;
        if (f) keyset = 1;
        else skip += pos;
    }
    buf_puts(&s.sql, "SELECT d.doc_id, d.pb");
    for (int j = 0; j < n; j++) { buf_puts(&s.sql, ", "); append_sql(&s, &keys[j]); }
    append_sql(&s, &w);
    if (keyset) after_sql(keys, desc, vals, n, &s);
    buf_puts(&s.sql, " ORDER BY ");
    for (int j = 0; j < n; j++) buf_printf(&s.sql, "%s%d%s", j ? ", " : "", j + 3, desc[j] ? " DESC" : "");
    buf_puts(&s.sql, " LIMIT ? OFFSET ?");
    sq_add_num(&s, p->limit + 1);        /* one more tells whether a next page exists */
    sq_add_num(&s, (double)skip);
    if (sqlite3_prepare_v2(sdb_sqlite(d), buf_cstr(&s.sql), -1, &st, NULL) != SQLITE_OK || bind_all(st, &s) < 0) {
        sqlerr(d, err, errlen, "prepare the query");
        goto out;
    }
    int nscored = n - 2;
    int rc;
    int64_t first = pos + p->offset;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->nhits == p->limit) { r->next = first + r->nhits; break; }
        r->hits = xrealloc(r->hits, (size_t)(r->nhits + 1) * sizeof *r->hits);
        shit *h = &r->hits[r->nhits];
        memset(h, 0, sizeof *h);
        h->doc_id = xstrdup((const char *)sqlite3_column_text(st, 0));
        h->pb_len = (size_t)sqlite3_column_bytes(st, 1);
        h->pb = xmalloc(h->pb_len + 1);
        memcpy(h->pb, sqlite3_column_blob(st, 1), h->pb_len);
        h->position = first + r->nhits;
        for (int j = 0; j < nscored; j++) {          /* numeric sort keys (not rank, doc id) */
            int t = sqlite3_column_type(st, j + 2);
            if (t != SQLITE_FLOAT && t != SQLITE_INTEGER) continue;
            h->scores = xrealloc(h->scores, (size_t)(h->nscores + 1) * sizeof *h->scores);
            h->scores[h->nscores++] = sqlite3_column_double(st, j + 2);
        }
        r->nhits++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) { sqlerr(d, err, errlen, "run the query"); goto out; }
    r->matched = count_matches(d, idx, r->tree, p, err, errlen);
    if (r->matched < 0) goto out;
    if ((p->nfacets || p->auto_facets > 0) && run_facets(d, buf_cstr(&w.sql), &w, p, r, err, errlen) < 0) goto out;
    ret = 0;
out:
    sqlite3_finalize(st);
    sq_sql_free(&s);
    sq_sql_free(&w);
    for (int j = 0; j < n; j++) { sq_sql_free(&keys[j]); sqlite3_value_free(vals[j]); }
    free(keys);
    free(desc);
    free(vals);
    free(after_id);
    return ret;
}

void ssearch_result_free(ssearch_result *r)
{
    sq_free(r->tree);
    for (int i = 0; i < r->nhits; i++) {
        free(r->hits[i].doc_id);
        free(r->hits[i].pb);
        free(r->hits[i].scores);
    }
    free(r->hits);
    for (int i = 0; i < r->nfacets; i++) {
        for (int j = 0; j < r->facets[i].nv; j++) {
            sfacet_val *v = &r->facets[i].v[j];
            free(v->label); free(v->value); free(v->start); free(v->end);
        }
        free(r->facets[i].v);
        free(r->facets[i].name);
    }
    free(r->facets);
    memset(r, 0, sizeof *r);
}
