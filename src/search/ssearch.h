/* ssearch.h - running a Search API query against one index of the search
 * store: the query (squery.h) and facet refinements become one SQL WHERE
 * clause, sort expressions become ORDER BY keys, and offset/cursor/limit a
 * window over the ordered matches. Facets are counted over all matches.
 *
 * A cursor is "<position>.<hash>.<hex doc id>": the document it follows,
 * the position of the result after it, and a hash of the query, sort and
 * refinements, so it cannot be replayed on a different query. A search from
 * a cursor resumes after that document in the ordering (by its current sort
 * keys), so documents added or removed before it do not shift the page;
 * when the document is gone it resumes at the position.
 */
#ifndef CZ_SSEARCH_H
#define CZ_SSEARCH_H

#include <stdint.h>
#include "search/squery.h"
#include "search/sstore.h"

typedef struct {
    const char *expr;
    int desc;
    int has_num; double num;             /* default_value_numeric */
    const char *text;                    /* default_value_text or NULL */
} ssort;

typedef struct {
    const char *name;
    const char *value;                   /* NULL for a range */
    const char *start, *end;             /* range bounds, NULL when open */
} srefine;

typedef struct {
    const char *name;
    int value_limit;                     /* 0: default (10) */
    const char **constraints; int nconstraints;
    srefine *ranges; int nranges;        /* name unused */
} sfacet_req;

typedef struct {
    const char *query; size_t query_len;
    int limit, offset;
    const char *cursor;                  /* NULL: start at offset */
    ssort *sorts; int nsorts;
    srefine *refine; int nrefine;
    sfacet_req *facets; int nfacets;
    int auto_facets;                     /* auto_discover_facet_count */
    int auto_value_limit;                /* 0: default (10) */
    int match_scorer;                    /* order by relevance when there is no sort */
} ssearch_params;

typedef struct {
    char *doc_id;
    void *pb; size_t pb_len;
    double *scores; int nscores;
    int64_t position;                    /* 0-based position in the ordered matches */
} shit;

typedef struct {
    char *label;
    int count;
    char *value;                         /* refinement value, or NULL for a range */
    char *start, *end;                   /* refinement range */
} sfacet_val;

typedef struct { char *name; sfacet_val *v; int nv; } sfacet_res;

typedef struct {
    sq_node *tree;                       /* the parsed query (for snippets) */
    shit *hits; int nhits;
    int64_t matched;
    int64_t next;                        /* position of the result after the page, -1 at the end */
    sfacet_res *facets; int nfacets;
} ssearch_result;

/* Run the search. idx 0 (no such index) yields no results. 0, or -1 with
 * one sentence in err (bad query, bad cursor, unsupported sort). */
int  ssearch_run(sdb *d, int64_t idx, const ssearch_params *p, ssearch_result *r, char *err, size_t errlen);
void ssearch_result_free(ssearch_result *r);
/* The cursor after document doc_id, the result at position pos - 1 of
 * this query (caller frees). */
char *ssearch_cursor(const ssearch_params *p, int64_t pos, const char *doc_id);

#endif
