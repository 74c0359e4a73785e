/* squery.h - the Search API query language: parser and SQL compiler.
 *
 * sq_parse turns a query string ("cat dog", "price < 10 OR tag:(a b)",
 * 'title:"exact phrase"', "distance(home, geopoint(1, 2)) < 500", ...) into
 * a tree; syntax errors come back as one sentence naming the 1-based
 * character position. sq_compile turns the tree into a SQL boolean
 * expression over the document row `d` of the search store (sstore.c), with
 * `?` parameters, using the store's FTS5 table `fts` and value table `fv`.
 * Precedence follows App Engine: AND (lowest) < implicit AND of a sequence
 * < OR < NOT / '-'. */
#ifndef CZ_SQUERY_H
#define CZ_SQUERY_H

#include <stddef.h>
#include "core/buf.h"

/* Field value content types (storage_onestore_v3.FieldValue.ContentType). */
enum { SF_TEXT = 0, SF_HTML = 1, SF_ATOM = 2, SF_DATE = 3, SF_NUMBER = 4,
       SF_GEO = 5, SF_UPREFIX = 6, SF_TPREFIX = 7, SF_VECTOR = 8 };

typedef enum { SQ_ALL, SQ_AND, SQ_OR, SQ_NOT, SQ_TERM, SQ_DIST } sq_kind;
typedef enum { SQ_HAS, SQ_EQ, SQ_NE, SQ_LT, SQ_LE, SQ_GT, SQ_GE } sq_op;

typedef struct sq_node {
    sq_kind kind;
    struct sq_node **kids;     /* SQ_AND, SQ_OR (>= 2), SQ_NOT (1) */
    int nkids;
    char *field;               /* SQ_TERM: NULL for a global term; SQ_DIST: geo field */
    sq_op op;
    char *value;               /* SQ_TERM: the term or phrase text; SQ_DIST: distance */
    int phrase;                /* value came from "..." */
    double lat, lng;           /* SQ_DIST: the geopoint */
    int pos;                   /* 1-based position in the query */
} sq_node;

#define SQ_MAX_QUERY 8192      /* longer query strings are refused */
#define SQ_MAX_DEPTH 64        /* nesting of parentheses / NOT */

/* Parse q[0, n). Returns the tree (SQ_ALL for a blank query) or NULL with
 * one sentence in err. */
sq_node *sq_parse(const char *q, size_t n, char *err, size_t errlen);
void sq_free(sq_node *n);

/* The tree as an S-expression, e.g. (AND (HAS * "cat") (LT price "10")). */
void sq_dump(const sq_node *n, buf *out);

typedef struct { int is_num; char *s; double d; } sq_param;

typedef struct {
    buf sql;                   /* the boolean expression (NUL-terminated via buf_cstr) */
    sq_param *params;
    int nparams, cap;
} sq_sql;

/* Compile the tree into out->sql (appended) and out->params. Returns 0, or
 * -1 with one sentence in err (e.g. a comparison with a non-number). */
int  sq_compile(const sq_node *n, sq_sql *out, char *err, size_t errlen);
void sq_sql_free(sq_sql *s);
void sq_add_text(sq_sql *s, const char *p, size_t n);
void sq_add_num(sq_sql *s, double d);

/* A relevance score expression for document d: the sum over the query's
 * positive text terms of FTS5's bm25 weight (negated, so higher is better)
 * of the document's best field for the term; "0" for a query without text
 * terms. Appends to out->sql and out->params. */
void sq_score_sql(const sq_node *n, sq_sql *out);

/* Value helpers shared with the store. */
int  sq_parse_number(const char *s, double *out);          /* whole string; 0/-1 */
int  sq_parse_date(const char *s, double *day_ms);         /* YYYY-MM-DD; 0/-1 */
/* Lower-cased copy (atom and prefix match keys): ASCII, Latin-1, Latin
 * Extended-A, Greek and Cyrillic letters; other bytes are kept. */
char *sq_lower(const char *s, size_t n);
/* The positive global/text terms of a query (for snippets): calls fn per term. */
void sq_terms(const sq_node *n, void (*fn)(void *arg, const char *term), void *arg);

#endif
