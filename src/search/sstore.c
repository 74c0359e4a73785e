/* sstore.c - the SQLite side of the Search API: per-app databases, the
 * schema, and writing, deleting and listing documents and indexes (see
 * sstore.h for the tables; searching is ssearch.c).
 *
 * Databases open lazily on an app's first call and stay open until
 * sstore_free. Each has its own mutex: an sdb is used by one API call at a
 * time, so a batch put is one transaction and a reader never sees half of
 * one. WAL with synchronous=FULL makes a committed put survive a crash of
 * the process or the machine. Documents keep their doc.id when replaced, so
 * the FTS rowids (id << 10 | field number) of the old version can be
 * deleted as one rowid range. */
#include "search/sstore.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/log.h"
#include "core/util.h"
#include "search/squery.h"

#define MAX_FIELDS 1024               /* FTS rowid = doc id << 10 | field number */

struct sdb {
    char *app;
    sqlite3 *db;
    pthread_mutex_t mu;
    sdb *next;
};

struct sstore {
    char *home;
    pthread_mutex_t mu;                /* guards the list */
    sdb *dbs;
};

static const char *SCHEMA_SQL =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS idx(id INTEGER PRIMARY KEY, ns TEXT NOT NULL, name TEXT NOT NULL,"
    " UNIQUE(ns, name));"
    "CREATE TABLE IF NOT EXISTS schema(idx INTEGER NOT NULL, field TEXT NOT NULL, type INTEGER NOT NULL,"
    " PRIMARY KEY(idx, field, type)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS doc(id INTEGER PRIMARY KEY, idx INTEGER NOT NULL, doc_id TEXT NOT NULL,"
    " rank INTEGER NOT NULL, pb BLOB NOT NULL, UNIQUE(idx, doc_id));"
    "CREATE TABLE IF NOT EXISTS fv(doc INTEGER NOT NULL, field TEXT NOT NULL, type INTEGER NOT NULL,"
    " s TEXT, m TEXT, n REAL, lat REAL, lng REAL);"
    "CREATE INDEX IF NOT EXISTS fv_doc ON fv(doc);"
    "CREATE INDEX IF NOT EXISTS fv_m ON fv(m, field);"
    "CREATE INDEX IF NOT EXISTS fv_n ON fv(field, n);"
    "CREATE TABLE IF NOT EXISTS fc(doc INTEGER NOT NULL, name TEXT NOT NULL, type INTEGER NOT NULL,"
    " s TEXT NOT NULL, n REAL);"
    "CREATE INDEX IF NOT EXISTS fc_doc ON fc(doc);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body, field UNINDEXED, kind UNINDEXED,"
    " tokenize='unicode61 remove_diacritics 2');";

/* Great-circle distance in metres between (lat1, lng1) and (lat2, lng2). */
static void geo_distance(sqlite3_context *c, int argc, sqlite3_value **v)
{
    (void)argc;
    for (int i = 0; i < 4; i++)
        if (sqlite3_value_type(v[i]) == SQLITE_NULL) { sqlite3_result_null(c); return; }
    double r = M_PI / 180.0;
    double la1 = sqlite3_value_double(v[0]) * r, lo1 = sqlite3_value_double(v[1]) * r;
    double la2 = sqlite3_value_double(v[2]) * r, lo2 = sqlite3_value_double(v[3]) * r;
    double a = sin((la2 - la1) / 2) * sin((la2 - la1) / 2) +
               cos(la1) * cos(la2) * sin((lo2 - lo1) / 2) * sin((lo2 - lo1) / 2);
    if (a > 1) a = 1;
    sqlite3_result_double(c, 2 * 6371008.8 * asin(sqrt(a)));
}

char *sstore_path(const char *home, const char *app_id)
{
    char *safe = xstrdup(app_id);
    for (char *c = safe; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != '_') *c = '_';
    char *p = xasprintf("%s/search/%s.sqlite", home, safe);
    free(safe);
    return p;
}

sstore *sstore_new(const char *home)
{
    sstore *s = xcalloc(1, sizeof *s);
    s->home = xstrdup(home);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void sstore_free(sstore *s)
{
    if (!s) return;
    sdb *d = s->dbs;
    while (d) {
        sdb *next = d->next;
        if (d->db) sqlite3_close_v2(d->db);
        pthread_mutex_destroy(&d->mu);
        free(d->app);
        free(d);
        d = next;
    }
    pthread_mutex_destroy(&s->mu);
    free(s->home);
    free(s);
}

static sqlite3 *open_db(const char *home, const char *app, char *err, size_t errlen)
{
    char *dir = xasprintf("%s/search", home);
    if (mkdir_p(dir, 0700) < 0) {
        set_err(err, errlen, "The search directory %s cannot be created.", dir);
        free(dir);
        return NULL;
    }
    free(dir);
    char *path = sstore_path(home, app);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_exec(db, SCHEMA_SQL, NULL, NULL, &msg);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "cz_geo_distance", 4, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     NULL, geo_distance, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "The search database %s cannot be opened: %s.", path,
                msg ? msg : db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close_v2(db);
        free(path);
        return NULL;
    }
    free(path);
    return db;
}

sdb *sstore_acquire(sstore *s, const char *app_id, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    sdb *d;
    for (d = s->dbs; d; d = d->next)
        if (!strcmp(d->app, app_id)) break;
    if (!d) {
        d = xcalloc(1, sizeof *d);
        d->app = xstrdup(app_id);
        pthread_mutex_init(&d->mu, NULL);
        d->next = s->dbs;
        s->dbs = d;
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&d->mu);
    if (!d->db) {
        d->db = open_db(s->home, app_id, err, errlen);
        if (!d->db) { pthread_mutex_unlock(&d->mu); return NULL; }
    }
    return d;
}

void sstore_release(sdb *d) { pthread_mutex_unlock(&d->mu); }
sqlite3 *sdb_sqlite(sdb *d) { return d->db; }

static int sqlerr(sdb *d, char *err, size_t errlen, const char *what)
{
    set_err(err, errlen, "The search database failed to %s: %s.", what, sqlite3_errmsg(d->db));
    return -1;
}

static int exec(sdb *d, const char *sql, char *err, size_t errlen)
{
    if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK) return sqlerr(d, err, errlen, sql);
    return 0;
}

int sdb_begin(sdb *d, char *err, size_t errlen) { return exec(d, "BEGIN IMMEDIATE", err, errlen); }
int sdb_commit(sdb *d, char *err, size_t errlen) { return exec(d, "COMMIT", err, errlen); }
void sdb_rollback(sdb *d) { sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL); }

static sqlite3_stmt *prep(sdb *d, const char *sql, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlerr(d, err, errlen, "prepare a statement");
        return NULL;
    }
    return st;
}

int64_t sdb_index(sdb *d, const char *ns, const char *name, int create, char *err, size_t errlen)
{
    sqlite3_stmt *st = prep(d, "SELECT id FROM idx WHERE ns=? AND name=?", err, errlen);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int64_t id = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sqlerr(d, err, errlen, "look up an index");
    if (id || !create) return id;
    st = prep(d, "INSERT INTO idx(ns, name) VALUES(?, ?)", err, errlen);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sqlerr(d, err, errlen, "create an index");
    return sqlite3_last_insert_rowid(d->db);
}

/* Text of an HTML value: tags (and script/style bodies) dropped, blanks
 * collapsed, the common entities decoded. */
char *sstore_html_text(const char *s, size_t n)
{
    buf b = BUF_INIT;
    size_t i = 0;
    while (i < n) {
        if (s[i] == '<') {
            int skip_body = (n - i > 7 && !strncasecmp(s + i, "<script", 7)) ||
                            (n - i > 6 && !strncasecmp(s + i, "<style", 6));
            const char *end = memchr(s + i, '>', n - i);
            i = end ? (size_t)(end - s) + 1 : n;
            if (skip_body) {
                const char *close = NULL;
                for (size_t j = i; j + 1 < n; j++)
                    if (s[j] == '<' && s[j + 1] == '/') { close = s + j; break; }
                i = close ? (size_t)(close - s) : n;
            }
            if (b.len && b.data[b.len - 1] != ' ') buf_putc(&b, ' ');
            continue;
        }
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {   /* runs of blanks become one */
            if (b.len && b.data[b.len - 1] != ' ') buf_putc(&b, ' ');
            i++;
            continue;
        }
        if (s[i] == '&') {
            static const struct { const char *e; char c; } ents[] = {
                { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&#39;", '\'' },
                { "&nbsp;", ' ' } };
            size_t k;
            for (k = 0; k < sizeof ents / sizeof ents[0]; k++) {
                size_t l = strlen(ents[k].e);
                if (n - i >= l && !memcmp(s + i, ents[k].e, l)) { buf_putc(&b, ents[k].c); i += l; break; }
            }
            if (k < sizeof ents / sizeof ents[0]) continue;
        }
        buf_putc(&b, s[i++]);
    }
    while (b.len && b.data[b.len - 1] == ' ') b.len--;
    buf_putc(&b, 0);
    size_t len;
    return buf_detach(&b, &len);
}

static int del_rows(sdb *d, int64_t docid, char *err, size_t errlen)
{
    static const char *sqls[] = {
        "DELETE FROM fts WHERE rowid BETWEEN ?1 * 1024 AND ?1 * 1024 + 1023",
        "DELETE FROM fv WHERE doc=?1",
        "DELETE FROM fc WHERE doc=?1",
    };
    for (size_t i = 0; i < sizeof sqls / sizeof sqls[0]; i++) {
        sqlite3_stmt *st = prep(d, sqls[i], err, errlen);
        if (!st) return -1;
        sqlite3_bind_int64(st, 1, docid);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return sqlerr(d, err, errlen, "delete a document's terms");
    }
    return 0;
}

int sdb_put(sdb *d, int64_t idx, const sdoc *doc, char *err, size_t errlen)
{
    if (doc->nf > MAX_FIELDS) {
        set_err(err, errlen, "Document %.*s has %d fields; at most %d are allowed.",
                (int)doc->id_len, doc->id, doc->nf, MAX_FIELDS);
        return -1;
    }
    sqlite3_stmt *st = prep(d, "INSERT INTO doc(idx, doc_id, rank, pb) VALUES(?1, ?2, ?3, ?4) "
                               "ON CONFLICT(idx, doc_id) DO UPDATE SET rank=?3, pb=?4 RETURNING id", err, errlen);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, idx);
    sqlite3_bind_text(st, 2, doc->id, (int)doc->id_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, doc->rank);
    sqlite3_bind_blob(st, 4, doc->pb, (int)doc->pb_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int64_t docid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (rc == SQLITE_ROW) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || !docid) return sqlerr(d, err, errlen, "store a document");
    if (del_rows(d, docid, err, errlen) < 0) return -1;

    sqlite3_stmt *fts = prep(d, "INSERT INTO fts(rowid, body, field, kind) VALUES(?, ?, ?, ?)", err, errlen);
    sqlite3_stmt *fv = prep(d, "INSERT INTO fv(doc, field, type, s, m, n, lat, lng) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                            err, errlen);
    sqlite3_stmt *sc = prep(d, "INSERT OR IGNORE INTO schema(idx, field, type) VALUES(?, ?, ?)", err, errlen);
    sqlite3_stmt *fc = prep(d, "INSERT INTO fc(doc, name, type, s, n) VALUES(?, ?, ?, ?, ?)", err, errlen);
    int ret = -1;
    if (!fts || !fv || !sc || !fc) goto out;
    for (int i = 0; i < doc->nf; i++) {
        const sfield *f = &doc->f[i];
        sqlite3_reset(sc);
        sqlite3_bind_int64(sc, 1, idx);
        sqlite3_bind_text(sc, 2, f->name, (int)f->name_len, SQLITE_STATIC);
        sqlite3_bind_int(sc, 3, f->type);
        if (sqlite3_step(sc) != SQLITE_DONE) { sqlerr(d, err, errlen, "record the schema"); goto out; }

        if (f->type == SF_TEXT || f->type == SF_HTML || f->type == SF_TPREFIX) {
            char *body = f->type == SF_HTML ? sstore_html_text(f->s, f->s_len) : xstrndup(f->s, f->s_len);
            sqlite3_reset(fts);
            sqlite3_bind_int64(fts, 1, docid * MAX_FIELDS + i);
            sqlite3_bind_text(fts, 2, body, -1, free);
            sqlite3_bind_text(fts, 3, f->name, (int)f->name_len, SQLITE_STATIC);
            sqlite3_bind_int(fts, 4, f->type == SF_TPREFIX ? 1 : 0);
            if (sqlite3_step(fts) != SQLITE_DONE) { sqlerr(d, err, errlen, "index a text field"); goto out; }
        }
        sqlite3_reset(fv);
        sqlite3_clear_bindings(fv);
        sqlite3_bind_int64(fv, 1, docid);
        sqlite3_bind_text(fv, 2, f->name, (int)f->name_len, SQLITE_STATIC);
        sqlite3_bind_int(fv, 3, f->type);
        double num;
        char *tmp = xstrndup(f->s ? f->s : "", f->s_len);
        switch (f->type) {
        case SF_NUMBER: case SF_DATE:
            if (sq_parse_number(tmp, &num) < 0) {
                set_err(err, errlen, "Field %.*s of document %.*s has the value '%s', which is not a number.",
                        (int)f->name_len, f->name, (int)doc->id_len, doc->id, tmp);
                free(tmp);
                goto out;
            }
            sqlite3_bind_double(fv, 6, num);
            break;
        case SF_GEO:
            sqlite3_bind_double(fv, 7, f->lat);
            sqlite3_bind_double(fv, 8, f->lng);
            break;
        case SF_ATOM: case SF_UPREFIX: case SF_TPREFIX:
            sqlite3_bind_text(fv, 5, sq_lower(f->s ? f->s : "", f->s_len), -1, free);
            /* fall through */
        default:
            sqlite3_bind_text(fv, 4, f->s ? f->s : "", (int)f->s_len, SQLITE_TRANSIENT);
            break;
        }
        free(tmp);
        if (sqlite3_step(fv) != SQLITE_DONE) { sqlerr(d, err, errlen, "index a field value"); goto out; }
    }
    for (int i = 0; i < doc->nfc; i++) {
        const sfacet *f = &doc->fc[i];
        sqlite3_reset(fc);
        sqlite3_clear_bindings(fc);
        sqlite3_bind_int64(fc, 1, docid);
        sqlite3_bind_text(fc, 2, f->name, (int)f->name_len, SQLITE_STATIC);
        sqlite3_bind_int(fc, 3, f->type);
        sqlite3_bind_text(fc, 4, f->s ? f->s : "", (int)f->s_len, SQLITE_STATIC);
        if (f->type == SF_NUMBER) {
            char *tmp = xstrndup(f->s ? f->s : "", f->s_len);
            double num;
            int ok = sq_parse_number(tmp, &num);
            free(tmp);
            if (ok < 0) {
                set_err(err, errlen, "Facet %.*s of document %.*s is not a number.",
                        (int)f->name_len, f->name, (int)doc->id_len, doc->id);
                goto out;
            }
            sqlite3_bind_double(fc, 5, num);
        }
        if (sqlite3_step(fc) != SQLITE_DONE) { sqlerr(d, err, errlen, "index a facet"); goto out; }
    }
    ret = 0;
out:
    sqlite3_finalize(fts);
    sqlite3_finalize(fv);
    sqlite3_finalize(sc);
    sqlite3_finalize(fc);
    return ret;
}

int sdb_delete(sdb *d, int64_t idx, const char *id, char *err, size_t errlen)
{
    sqlite3_stmt *st = prep(d, "DELETE FROM doc WHERE idx=? AND doc_id=? RETURNING id", err, errlen);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, idx);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int64_t docid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (rc == SQLITE_ROW) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sqlerr(d, err, errlen, "delete a document");
    return docid ? del_rows(d, docid, err, errlen) : 0;
}

int sdb_list_docs(sdb *d, int64_t idx, const char *start, int include_start, int limit,
                  sdb_doc_fn fn, void *arg, char *err, size_t errlen)
{
    const char *sql = !start ? "SELECT doc_id, pb FROM doc WHERE idx=?1 ORDER BY doc_id LIMIT ?3"
                    : include_start ? "SELECT doc_id, pb FROM doc WHERE idx=?1 AND doc_id>=?2 ORDER BY doc_id LIMIT ?3"
                    : "SELECT doc_id, pb FROM doc WHERE idx=?1 AND doc_id>?2 ORDER BY doc_id LIMIT ?3";
    sqlite3_stmt *st = prep(d, sql, err, errlen);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, idx);
    if (start) sqlite3_bind_text(st, 2, start, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_blob(st, 1),
           (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sqlerr(d, err, errlen, "list documents");
}

int sdb_list_indexes(sdb *d, const sdb_index_filter *f, sdb_index_fn fn, void *arg, char *err, size_t errlen)
{
    buf q = BUF_INIT;
    buf_puts(&q, "SELECT ns, name, id, (SELECT coalesce(sum(length(pb)), 0) FROM doc WHERE doc.idx=idx.id)"
                 " FROM idx WHERE 1");
    if (f->ns) buf_puts(&q, " AND ns=?1");
    if (f->prefix) buf_puts(&q, " AND substr(name, 1, length(?2))=?2");
    if (f->start) buf_puts(&q, f->include_start ? " AND name>=?3" : " AND name>?3");
    buf_puts(&q, " ORDER BY ns, name LIMIT ?4 OFFSET ?5");
    sqlite3_stmt *st = prep(d, buf_cstr(&q), err, errlen);
    buf_free(&q);
    if (!st) return -1;
    if (f->ns) sqlite3_bind_text(st, 1, f->ns, -1, SQLITE_STATIC);
    if (f->prefix) sqlite3_bind_text(st, 2, f->prefix, -1, SQLITE_STATIC);
    if (f->start) sqlite3_bind_text(st, 3, f->start, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, f->limit);
    sqlite3_bind_int(st, 5, f->offset);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sqlerr(d, err, errlen, "list indexes");
}

int sdb_schema(sdb *d, int64_t idx, void (*fn)(void *arg, const char *name, int type), void *arg,
               char *err, size_t errlen)
{
    sqlite3_stmt *st = prep(d, "SELECT field, type FROM schema WHERE idx=? ORDER BY field, type", err, errlen);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, idx);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sqlerr(d, err, errlen, "read a schema");
}

int sdb_has_field_type(sdb *d, int64_t idx, const char *name, int type)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT 1 FROM schema WHERE idx=? AND field=? AND type=?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, idx);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, type);
    int found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

int sdb_delete_schema(sdb *d, int64_t idx, char *err, size_t errlen)
{
    static const char *sqls[] = {
        "DELETE FROM schema WHERE idx=?1",
        "DELETE FROM idx WHERE id=?1 AND NOT EXISTS (SELECT 1 FROM doc WHERE doc.idx=?1)",
    };
    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *st = prep(d, sqls[i], err, errlen);
        if (!st) return -1;
        sqlite3_bind_int64(st, 1, idx);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return sqlerr(d, err, errlen, "delete a schema");
    }
    return 0;
}
