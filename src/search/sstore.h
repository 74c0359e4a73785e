/* sstore.h - durable storage of Search API indexes: one SQLite database per
 * app (CYCLOZZO_HOME/search/<app>.sqlite, WAL, synchronous=FULL), holding
 * every index of every namespace of that app.
 *
 * Tables: idx (namespace, name), schema (field names and types seen per
 * index), doc (document id, rank, the Document protobuf as stored), fts
 * (FTS5 over text, HTML and tokenized-prefix field values; rowid =
 * doc.id << 10 | field number), fv (one row per field value: atoms and
 * prefixes by lowercased match key, numbers and dates (ms) as reals, geo
 * points, text for sorting) and fc (facets). The query compiler
 * (squery.h) writes SQL against these names.
 *
 * An sstore holds the open databases; sstore_acquire returns one app's
 * database locked for the caller (one connection per app, calls serialized),
 * sstore_release unlocks it. */
#ifndef CZ_SSTORE_H
#define CZ_SSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include "core/buf.h"

typedef struct sstore sstore;
typedef struct sdb sdb;

sstore *sstore_new(const char *home);
void    sstore_free(sstore *s);
/* The app's database, opened (and created) on first use; NULL + err. */
sdb    *sstore_acquire(sstore *s, const char *app_id, char *err, size_t errlen);
void    sstore_release(sdb *d);
sqlite3 *sdb_sqlite(sdb *d);

/* One field value of a document, as decoded from the protobuf. */
typedef struct {
    const char *name; size_t name_len;
    int type;                            /* SF_* (squery.h) */
    const char *s; size_t s_len;         /* string_value */
    double lat, lng;                     /* SF_GEO */
} sfield;

typedef struct {
    const char *name; size_t name_len;
    int type;                            /* SF_ATOM or SF_NUMBER */
    const char *s; size_t s_len;
} sfacet;

typedef struct {
    const char *id; size_t id_len;
    int64_t rank;
    sfield *f; int nf;
    sfacet *fc; int nfc;
    const void *pb; size_t pb_len;       /* the Document to store (id filled in) */
} sdoc;

/* Transactions around a batch of calls: 0 or -1 + err. */
int sdb_begin(sdb *d, char *err, size_t errlen);
int sdb_commit(sdb *d, char *err, size_t errlen);
void sdb_rollback(sdb *d);

/* Index id of (ns, name): > 0, 0 when absent (create == 0), -1 + err. */
int64_t sdb_index(sdb *d, const char *ns, const char *name, int create, char *err, size_t errlen);
/* Store or replace a document. 0 or -1 + err. */
int sdb_put(sdb *d, int64_t idx, const sdoc *doc, char *err, size_t errlen);
/* Delete a document; deleting a missing one is not an error. */
int sdb_delete(sdb *d, int64_t idx, const char *id, char *err, size_t errlen);

/* Documents in id order from start (NULL: the first), fn per document. */
typedef void (*sdb_doc_fn)(void *arg, const char *id, const void *pb, size_t pb_len);
int sdb_list_docs(sdb *d, int64_t idx, const char *start, int include_start, int limit,
                  sdb_doc_fn fn, void *arg, char *err, size_t errlen);

/* Indexes: fn per index (ns, name, id, bytes used), filtered and paged. */
typedef struct {
    const char *ns;                  /* NULL: all namespaces */
    const char *prefix;              /* NULL: any */
    const char *start;               /* NULL: from the first */
    int include_start, offset, limit;
} sdb_index_filter;
typedef void (*sdb_index_fn)(void *arg, const char *ns, const char *name, int64_t idx, int64_t bytes);
int sdb_list_indexes(sdb *d, const sdb_index_filter *f, sdb_index_fn fn, void *arg, char *err, size_t errlen);
/* Field names and types of an index: fn per (name, type). */
int sdb_schema(sdb *d, int64_t idx, void (*fn)(void *arg, const char *name, int type), void *arg,
               char *err, size_t errlen);
/* Forget the schema; an index without documents disappears. */
int sdb_delete_schema(sdb *d, int64_t idx, char *err, size_t errlen);
/* 1 when the index has the field with the type. */
int sdb_has_field_type(sdb *d, int64_t idx, const char *name, int type);

/* The text of an HTML value as indexed: tags dropped, common entities
 * decoded (caller frees). */
char *sstore_html_text(const char *s, size_t n);

/* The search store path of an app under home (tests use it). Caller frees. */
char *sstore_path(const char *home, const char *app_id);

#endif
