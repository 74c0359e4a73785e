/* search.c - the App Engine Search API service ("search") over the search
 * store (src/search/): protobuf decoding of the search_service requests,
 * validation as App Engine does it, and the responses the SDKs expect.
 *
 * Methods: IndexDocument, DeleteDocument, ListDocuments, ListIndexes,
 * DeleteSchema and Search. Problems with one document travel as that
 * document's RequestStatus; problems with the whole request (bad index
 * name or namespace, bad query, cursor or sort) as an INVALID_REQUEST
 * status in the response, which the SDK raises as InvalidRequest / PutError
 * / DeleteError; an undecodable request is an RPC PARSE_ERROR. Documents are
 * stored as the protobuf received (with a generated id and the rank filled
 * in), so reads return exactly what was put. Returned fields, ids_only and
 * the field expressions (a field name, _rank, snippet()) are applied when
 * encoding each result. */
#include "api/api.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"
#include "search/squery.h"
#include "search/ssearch.h"
#include "search/sstore.h"

/* SearchServiceError.ErrorCode */
enum { S_OK = 0, S_INVALID_REQUEST = 1, S_TRANSIENT = 2, S_INTERNAL = 3, S_PERMISSION_DENIED = 4 };

#define MAX_NAME 100
#define MAX_DOC_ID 500
#define MAX_LIMIT 1000
#define FIRST_JAN_2011 1293840000

typedef struct { const uint8_t *p; size_t n; } bytes;

static char *dup_bytes(bytes b) { return xstrndup((const char *)(b.p ? b.p : (const uint8_t *)""), b.n); }

static void put_status(buf *b, uint32_t field, int code, const char *detail)
{
    size_t m = pb_begin(b, field);
    pb_put_int(b, 1, code);
    if (detail && *detail) pb_put_str(b, 2, detail);
    pb_end(b, m);
}

static void parse_error(api_reply *r, const char *what)
{
    api_rpc_error(r, RPC_PARSE_ERROR, "The search %s request could not be parsed.", what);
}

/* ---- IndexSpec and validation ---- */

typedef struct { bytes name, ns; int has_ns; int source; } spec;

static int read_spec(pb_reader *r, int wt, spec *s)
{
    pb_reader sub;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&sub, &f, &w)) > 0) {
        int64_t v;
        if (f == 1) rc = pb_bytes(&sub, w, &s->name.p, &s->name.n);
        else if (f == 3) { rc = pb_bytes(&sub, w, &s->ns.p, &s->ns.n); s->has_ns = 1; }
        else if (f == 5) { rc = pb_int64(&sub, w, &v); s->source = (int)v; }
        else rc = pb_skip(&sub, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || sub.err ? -1 : 0;
}

/* Visible printable ASCII, not starting with '!', 1..max bytes. */
static int check_name(bytes b, size_t max, const char *what, char *err, size_t errlen)
{
    if (b.n == 0) { set_err(err, errlen, "The %s must not be empty.", what); return -1; }
    if (b.n > max) { set_err(err, errlen, "The %s must be at most %zu bytes long.", what, max); return -1; }
    for (size_t i = 0; i < b.n; i++)
        if (b.p[i] < 0x21 || b.p[i] > 0x7e) {
            set_err(err, errlen, "The %s '%.*s' must be visible printable ASCII.", what, (int)b.n, (const char *)b.p);
            return -1;
        }
    if (b.p[0] == '!') {
        set_err(err, errlen, "The %s '%.*s' must not start with '!'.", what, (int)b.n, (const char *)b.p);
        return -1;
    }
    return 0;
}

static int check_ns(bytes b, char *err, size_t errlen)
{
    if (b.n > 100) { set_err(err, errlen, "The namespace must be at most 100 bytes long."); return -1; }
    for (size_t i = 0; i < b.n; i++)
        if (!isalnum(b.p[i]) && b.p[i] != '.' && b.p[i] != '_' && b.p[i] != '-') {
            set_err(err, errlen, "The namespace '%.*s' may only contain letters, digits, '.', '_' and '-'.",
                    (int)b.n, (const char *)b.p);
            return -1;
        }
    return 0;
}

/* Check the spec; fills ns and name (caller frees). */
static int spec_names(api_ctx *ctx, const spec *s, char **ns, char **name, char *err, size_t errlen)
{
    if (s->source != 0) {
        set_err(err, errlen, "Only indexes with source SEARCH are supported.");
        return -1;
    }
    if (check_name(s->name, MAX_NAME, "index name", err, errlen) < 0) return -1;
    bytes n = s->has_ns ? s->ns : (bytes){ (const uint8_t *)ctx->ns, strlen(ctx->ns) };
    if (check_ns(n, err, errlen) < 0) return -1;
    *ns = dup_bytes(n);
    *name = dup_bytes(s->name);
    return 0;
}

/* The app id without its partition ("dev~app" -> "app"). */
static bytes bare_app(const char *p, size_t n)
{
    const char *t = memchr(p, '~', n);
    if (t) { n -= (size_t)(t + 1 - p); p = t + 1; }
    return (bytes){ (const uint8_t *)p, n };
}

static int foreign_app(api_ctx *ctx, bytes app)
{
    if (!app.p) return 0;
    bytes mine = bare_app(ctx->app_id, strlen(ctx->app_id));
    bytes theirs = bare_app((const char *)app.p, app.n);
    return !(theirs.n == mine.n && (mine.n == 0 || !memcmp(theirs.p, mine.p, mine.n)));
}

static sdb *open_db(api_ctx *ctx, char *err, size_t errlen)
{
    return sstore_acquire(ctx->service_data, ctx->app_id, err, errlen);
}

/* ---- documents ---- */

typedef struct {
    sdoc d;
    char *id;                 /* owned */
    buf pb;                   /* re-encoded document */
    char err[256];            /* per-document problem, "" when fine */
} pdoc;

static int valid_field_name(bytes b)
{
    if (b.n == 0 || b.n > 500 || !isalpha(b.p[0])) return 0;
    for (size_t i = 1; i < b.n; i++)
        if (!isalnum(b.p[i]) && b.p[i] != '_') return 0;
    return 1;
}

static int decode_field_body(pb_reader *r, sfield *f);

static int decode_field(pb_reader *r, int wt, sfield *f)
{
    pb_reader sub;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    return decode_field_body(&sub, f);
}

/* Field { name 1, value 2 { type 1, language 2, string_value 3, group geo 4 { lat 5, lng 6 } } } */
static int decode_field_body(pb_reader *rd, sfield *f)
{
    pb_reader sub = *rd, val;
    uint32_t fn; int w, rc;
    while ((rc = pb_next(&sub, &fn, &w)) > 0) {
        if (fn == 1) rc = pb_bytes(&sub, w, (const uint8_t **)&f->name, &f->name_len);
        else if (fn == 2) {
            if (pb_sub(&sub, w, &val) < 0) return -1;
            uint32_t vf; int vw, vrc;
            while ((vrc = pb_next(&val, &vf, &vw)) > 0) {
                int64_t t;
                if (vf == 1) { vrc = pb_int64(&val, vw, &t); f->type = (int)t; }
                else if (vf == 3) vrc = pb_bytes(&val, vw, (const uint8_t **)&f->s, &f->s_len);
                else if (vf == 4 && vw == PB_SGROUP) {
                    pb_reader g;
                    if (pb_group(&val, vw, vf, &g) < 0) return -1;
                    uint32_t gf; int gw, grc;
                    while ((grc = pb_next(&g, &gf, &gw)) > 0) {
                        if (gf == 5) grc = pb_double(&g, gw, &f->lat);
                        else if (gf == 6) grc = pb_double(&g, gw, &f->lng);
                        else grc = pb_skip(&g, gw, gf);
                        if (grc < 0) return -1;
                    }
                    if (grc < 0 || g.err) return -1;
                    vrc = 0;
                }
                else vrc = pb_skip(&val, vw, vf);
                if (vrc < 0) return -1;
            }
            if (vrc < 0 || val.err) return -1;
            rc = 0;
        }
        else rc = pb_skip(&sub, w, fn);
        if (rc < 0) return -1;
    }
    return rc < 0 || sub.err ? -1 : 0;
}

static int decode_facet(pb_reader *r, int wt, sfacet *f)
{
    pb_reader sub, val;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    f->type = SF_ATOM;
    uint32_t fn; int w, rc;
    while ((rc = pb_next(&sub, &fn, &w)) > 0) {
        if (fn == 1) rc = pb_bytes(&sub, w, (const uint8_t **)&f->name, &f->name_len);
        else if (fn == 2) {
            if (pb_sub(&sub, w, &val) < 0) return -1;
            uint32_t vf; int vw, vrc;
            while ((vrc = pb_next(&val, &vf, &vw)) > 0) {
                int64_t t;
                if (vf == 1) { vrc = pb_int64(&val, vw, &t); f->type = (int)t; }
                else if (vf == 3) vrc = pb_bytes(&val, vw, (const uint8_t **)&f->s, &f->s_len);
                else vrc = pb_skip(&val, vw, vf);
                if (vrc < 0) return -1;
            }
            if (vrc < 0 || val.err) return -1;
            rc = 0;
        }
        else rc = pb_skip(&sub, w, fn);
        if (rc < 0) return -1;
    }
    return rc < 0 || sub.err ? -1 : 0;
}

static char *new_doc_id(void)
{
    uint8_t r[12];
    char hex[25];
    if (random_bytes(r, sizeof r) < 0) {
        uint64_t t = (uint64_t)wall_us();
        memcpy(r, &t, 8);
        memset(r + 8, 0, 4);
    }
    hex_encode(r, sizeof r, hex);
    return xstrdup(hex);
}

/* Decode one Document (a length-delimited field value) into d; structural
 * problems return -1, content problems set d->err. */
static int decode_doc(pb_reader *outer, int wt, pdoc *d)
{
    const uint8_t *raw; size_t rawn;
    if (pb_bytes(outer, wt, &raw, &rawn) < 0) return -1;
    pb_reader r;
    pb_reader_init(&r, raw, rawn);
    bytes id = { NULL, 0 };
    int has_rank = 0;
    int64_t rank = 0;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) rc = pb_bytes(&r, w, &id.p, &id.n);
        else if (f == 3) {
            d->d.f = xrealloc(d->d.f, (size_t)(d->d.nf + 1) * sizeof *d->d.f);
            sfield *fl = &d->d.f[d->d.nf++];
            memset(fl, 0, sizeof *fl);
            rc = decode_field(&r, w, fl);
        } else if (f == 8) {
            d->d.fc = xrealloc(d->d.fc, (size_t)(d->d.nfc + 1) * sizeof *d->d.fc);
            sfacet *fc = &d->d.fc[d->d.nfc++];
            memset(fc, 0, sizeof *fc);
            rc = decode_facet(&r, w, fc);
        } else if (f == 4) { rc = pb_int64(&r, w, &rank); has_rank = 1; }
        else rc = pb_skip(&r, w, f);
        if (rc < 0) return -1;
    }
    if (rc < 0 || r.err) return -1;
    if (id.p && id.n) {
        char e[200];
        if (check_name(id, MAX_DOC_ID, "document id", e, sizeof e) < 0) { snprintf(d->err, sizeof d->err, "%s", e); return 0; }
        d->id = dup_bytes(id);
    } else d->id = new_doc_id();
    if (!has_rank) rank = (int64_t)time(NULL) - FIRST_JAN_2011;
    if (rank < 0) { snprintf(d->err, sizeof d->err, "The rank of document %s must not be negative.", d->id); return 0; }
    for (int i = 0; i < d->d.nf; i++) {
        sfield *fl = &d->d.f[i];
        if (!valid_field_name((bytes){ (const uint8_t *)fl->name, fl->name_len })) {
            snprintf(d->err, sizeof d->err, "Document %s has a field named '%.*s'; field names must match "
                     "[A-Za-z][A-Za-z0-9_]*.", d->id, (int)(fl->name_len > 100 ? 100 : fl->name_len),
                     fl->name ? fl->name : "");
            return 0;
        }
        if (fl->type < SF_TEXT || fl->type > SF_TPREFIX) {
            snprintf(d->err, sizeof d->err, "Field %.*s of document %s has a type Cyclozzo does not support.",
                     (int)fl->name_len, fl->name, d->id);
            return 0;
        }
    }
    for (int i = 0; i < d->d.nfc; i++)
        if (!valid_field_name((bytes){ (const uint8_t *)d->d.fc[i].name, d->d.fc[i].name_len }) ||
            (d->d.fc[i].type != SF_ATOM && d->d.fc[i].type != SF_NUMBER)) {
            snprintf(d->err, sizeof d->err, "Document %s has an invalid facet.", d->id);
            return 0;
        }
    /* re-encode: id first, the rest as received, the rank last */
    pb_put_str(&d->pb, 1, d->id);
    pb_reader_init(&r, raw, rawn);
    while (pb_next(&r, &f, &w) > 0) {
        const uint8_t *start = r.p;
        if (pb_skip(&r, w, f) < 0) return -1;
        if (f == 1 || f == 4) continue;
        pb_put_tag(&d->pb, f, w);
        buf_append(&d->pb, start, (size_t)(r.p - start));
    }
    pb_put_int(&d->pb, 4, rank);
    d->d.id = d->id;
    d->d.id_len = strlen(d->id);
    d->d.rank = rank;
    d->d.pb = d->pb.data;
    d->d.pb_len = d->pb.len;
    return 0;
}

static void free_pdocs(pdoc *docs, int n)
{
    for (int i = 0; i < n; i++) {
        free(docs[i].d.f);
        free(docs[i].d.fc);
        free(docs[i].id);
        buf_free(&docs[i].pb);
    }
    free(docs);
}

/* IndexDocumentRequest { params { document*, freshness, index_spec }, app_id } */
static void m_index_document(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    spec sp = { 0 };
    bytes app = { NULL, 0 };
    pdoc *docs = NULL;
    int n = 0;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) goto bad;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                if (pf == 1) {
                    docs = xrealloc(docs, (size_t)(n + 1) * sizeof *docs);
                    memset(&docs[n], 0, sizeof docs[n]);
                    prc = decode_doc(&p, pw, &docs[n++]);
                } else if (pf == 3) prc = read_spec(&p, pw, &sp);
                else prc = pb_skip(&p, pw, pf);
                if (prc < 0) goto bad;
            }
            if (prc < 0 || p.err) goto bad;
            rc = 0;
        } else if (f == 3) rc = pb_bytes(&r, w, &app.p, &app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) goto bad;
    }
    if (rc < 0 || r.err) goto bad;

    char err[512] = "";
    char *ns = NULL, *name = NULL;
    int code = S_OK;
    if (foreign_app(ctx, app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
    else if (spec_names(ctx, &sp, &ns, &name, err, sizeof err) < 0) code = S_INVALID_REQUEST;
    sdb *db = NULL;
    if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
    if (code == S_OK) {
        int64_t idx = 0;
        int any = 0;
        for (int i = 0; i < n; i++) any |= !docs[i].err[0];
        if (any) {
            if (sdb_begin(db, err, sizeof err) < 0 || (idx = sdb_index(db, ns, name, 1, err, sizeof err)) < 0) code = S_INTERNAL;
            for (int i = 0; code == S_OK && i < n; i++) {
                if (docs[i].err[0]) continue;
                /* a savepoint per document: a value the store refuses undoes that document only */
                if (sqlite3_exec(sdb_sqlite(db), "SAVEPOINT doc", NULL, NULL, NULL) != SQLITE_OK) {
                    code = S_INTERNAL;
                    set_err(err, sizeof err, "The search database failed to start a savepoint.");
                    break;
                }
                if (sdb_put(db, idx, &docs[i].d, docs[i].err, sizeof docs[i].err) < 0) {
                    sqlite3_exec(sdb_sqlite(db), "ROLLBACK TO doc", NULL, NULL, NULL);
                    if (strstr(docs[i].err, "database failed")) { code = S_INTERNAL; snprintf(err, sizeof err, "%s", docs[i].err); }
                }
                sqlite3_exec(sdb_sqlite(db), "RELEASE doc", NULL, NULL, NULL);
            }
            if (code == S_OK && sdb_commit(db, err, sizeof err) < 0) code = S_INTERNAL;
            if (code != S_OK) sdb_rollback(db);
        }
        sstore_release(db);
    }
    if (code != S_OK) log_warn("search", "app=%s msg=%s", ctx->app_id, log_q(err));
    for (int i = 0; i < n; i++) {
        if (code != S_OK) put_status(&reply->response, 1, code, err);
        else put_status(&reply->response, 1, docs[i].err[0] ? S_INVALID_REQUEST : S_OK, docs[i].err);
    }
    for (int i = 0; i < n; i++) pb_put_str(&reply->response, 2, docs[i].id ? docs[i].id : "");
    free(ns);
    free(name);
    free_pdocs(docs, n);
    return;
bad:
    free_pdocs(docs, n);
    parse_error(reply, "IndexDocument");
}

/* DeleteDocumentRequest { params { doc_id*, index_spec }, app_id } */
static void m_delete_document(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    spec sp = { 0 };
    bytes app = { NULL, 0 };
    bytes *ids = NULL;
    int n = 0;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) goto bad;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                if (pf == 1) {
                    ids = xrealloc(ids, (size_t)(n + 1) * sizeof *ids);
                    prc = pb_bytes(&p, pw, &ids[n].p, &ids[n].n);
                    n++;
                } else if (pf == 2) prc = read_spec(&p, pw, &sp);
                else prc = pb_skip(&p, pw, pf);
                if (prc < 0) goto bad;
            }
            if (prc < 0 || p.err) goto bad;
            rc = 0;
        } else if (f == 3) rc = pb_bytes(&r, w, &app.p, &app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) goto bad;
    }
    if (rc < 0 || r.err) goto bad;
    char err[512] = "";
    char *ns = NULL, *name = NULL;
    int code = S_OK;
    char (*derr)[200] = xcalloc((size_t)n + 1, sizeof *derr);
    if (foreign_app(ctx, app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
    else if (spec_names(ctx, &sp, &ns, &name, err, sizeof err) < 0) code = S_INVALID_REQUEST;
    for (int i = 0; i < n; i++) check_name(ids[i], MAX_DOC_ID, "document id", derr[i], sizeof derr[i]);
    sdb *db = NULL;
    if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
    if (code == S_OK) {
        int64_t idx = sdb_index(db, ns, name, 0, err, sizeof err);
        if (idx < 0) code = S_INTERNAL;
        else if (idx > 0) {
            if (sdb_begin(db, err, sizeof err) < 0) code = S_INTERNAL;
            for (int i = 0; code == S_OK && i < n; i++) {
                if (derr[i][0]) continue;
                char *id = dup_bytes(ids[i]);
                if (sdb_delete(db, idx, id, err, sizeof err) < 0) code = S_INTERNAL;
                free(id);
            }
            if (code == S_OK && sdb_commit(db, err, sizeof err) < 0) code = S_INTERNAL;
            if (code != S_OK) sdb_rollback(db);
        }
        sstore_release(db);
    }
    for (int i = 0; i < n; i++) {
        if (code != S_OK) put_status(&reply->response, 1, code, err);
        else put_status(&reply->response, 1, derr[i][0] ? S_INVALID_REQUEST : S_OK, derr[i]);
    }
    free(derr);
    free(ns);
    free(name);
    free(ids);
    return;
bad:
    free(ids);
    parse_error(reply, "DeleteDocument");
}

/* ---- ListDocuments ---- */

typedef struct { buf *out; int keys_only; } list_emit;

static void emit_listed(void *arg, const char *id, const void *pb, size_t pb_len)
{
    list_emit *e = arg;
    if (e->keys_only) {
        size_t m = pb_begin(e->out, 2);
        pb_put_str(e->out, 1, id);
        pb_end(e->out, m);
    } else pb_put_bytes(e->out, 2, pb, pb_len);
}

static void m_list_documents(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    spec sp = { 0 };
    bytes app = { NULL, 0 }, start = { NULL, 0 };
    int include_start = 1, keys_only = 0;
    int64_t limit = 100;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) goto bad;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                if (pf == 1) prc = read_spec(&p, pw, &sp);
                else if (pf == 2) prc = pb_bytes(&p, pw, &start.p, &start.n);
                else if (pf == 3) prc = pb_bool(&p, pw, &include_start);
                else if (pf == 4) prc = pb_int64(&p, pw, &limit);
                else if (pf == 5) prc = pb_bool(&p, pw, &keys_only);
                else prc = pb_skip(&p, pw, pf);
                if (prc < 0) goto bad;
            }
            if (prc < 0 || p.err) goto bad;
            rc = 0;
        } else if (f == 2) rc = pb_bytes(&r, w, &app.p, &app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) goto bad;
    }
    if (rc < 0 || r.err) goto bad;
    char err[512] = "";
    char *ns = NULL, *name = NULL;
    int code = S_OK;
    buf docs = BUF_INIT;
    if (foreign_app(ctx, app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
    else if (spec_names(ctx, &sp, &ns, &name, err, sizeof err) < 0) code = S_INVALID_REQUEST;
    else if (limit < 1 || limit > MAX_LIMIT) { code = S_INVALID_REQUEST; set_err(err, sizeof err, "The limit must be between 1 and %d.", MAX_LIMIT); }
    sdb *db = NULL;
    if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
    if (code == S_OK) {
        int64_t idx = sdb_index(db, ns, name, 0, err, sizeof err);
        list_emit e = { &docs, keys_only };
        char *st = start.p ? dup_bytes(start) : NULL;
        if (idx < 0 || (idx > 0 && sdb_list_docs(db, idx, st, include_start, (int)limit, emit_listed, &e, err, sizeof err) < 0))
            code = S_INTERNAL;
        free(st);
        sstore_release(db);
    }
    put_status(&reply->response, 1, code, err);
    if (code == S_OK) buf_append(&reply->response, docs.data, docs.len);
    buf_free(&docs);
    free(ns);
    free(name);
    return;
bad:
    parse_error(reply, "ListDocuments");
}

/* ---- ListIndexes ---- */

typedef struct { sdb *db; buf *out; int fetch_schema; char *err; size_t errlen; int failed; } idx_emit;

static void emit_schema_field(void *arg, const char *name, int type)
{
    /* one FieldTypes per (name, type); the SDK merges the types of a name */
    buf *b = arg;
    size_t m = pb_begin(b, 2);
    pb_put_str(b, 1, name);
    pb_put_int(b, 2, type);
    pb_end(b, m);
}

static void emit_index(void *arg, const char *ns, const char *name, int64_t idx, int64_t bytes_used)
{
    idx_emit *e = arg;
    size_t m = pb_begin(e->out, 2);
    size_t s = pb_begin(e->out, 1);
    pb_put_str(e->out, 1, name);
    pb_put_str(e->out, 3, ns);
    pb_end(e->out, s);
    if (e->fetch_schema && sdb_schema(e->db, idx, emit_schema_field, e->out, e->err, e->errlen) < 0) e->failed = 1;
    s = pb_begin(e->out, 3);
    pb_put_int(e->out, 1, bytes_used);
    pb_put_int(e->out, 2, 10LL << 30);
    pb_end(e->out, s);
    pb_end(e->out, m);
}

static void m_list_indexes(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    bytes app = { NULL, 0 }, ns = { NULL, 0 }, start = { NULL, 0 }, prefix = { NULL, 0 };
    int fetch_schema = 0, include_start = 1, all_ns = 0, has_ns = 0;
    int64_t limit = 20, offset = 0, source = 0;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) goto bad;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                switch (pf) {
                case 1: prc = pb_bool(&p, pw, &fetch_schema); break;
                case 2: prc = pb_int64(&p, pw, &limit); break;
                case 3: prc = pb_bytes(&p, pw, &ns.p, &ns.n); has_ns = 1; break;
                case 4: prc = pb_bytes(&p, pw, &start.p, &start.n); break;
                case 5: prc = pb_bool(&p, pw, &include_start); break;
                case 6: prc = pb_bytes(&p, pw, &prefix.p, &prefix.n); break;
                case 7: prc = pb_int64(&p, pw, &offset); break;
                case 8: prc = pb_int64(&p, pw, &source); break;
                case 9: prc = pb_bool(&p, pw, &all_ns); break;
                default: prc = pb_skip(&p, pw, pf); break;
                }
                if (prc < 0) goto bad;
            }
            if (prc < 0 || p.err) goto bad;
            rc = 0;
        } else if (f == 3) rc = pb_bytes(&r, w, &app.p, &app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) goto bad;
    }
    if (rc < 0 || r.err) goto bad;
    char err[512] = "";
    int code = S_OK;
    buf out = BUF_INIT;
    if (!has_ns) ns = (bytes){ (const uint8_t *)ctx->ns, strlen(ctx->ns) };
    if (foreign_app(ctx, app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
    else if (check_ns(ns, err, sizeof err) < 0) code = S_INVALID_REQUEST;
    else if (limit < 1 || limit > MAX_LIMIT || offset < 0 || offset > 1000) {
        code = S_INVALID_REQUEST;
        set_err(err, sizeof err, "The limit must be between 1 and %d and the offset between 0 and 1000.", MAX_LIMIT);
    } else if (source != 0) { code = S_INVALID_REQUEST; set_err(err, sizeof err, "Only indexes with source SEARCH are supported."); }
    sdb *db = NULL;
    if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
    if (code == S_OK) {
        char *nss = dup_bytes(ns), *st = start.p ? dup_bytes(start) : NULL, *pre = prefix.p ? dup_bytes(prefix) : NULL;
        sdb_index_filter fl = { all_ns ? NULL : nss, pre, st, include_start, (int)offset, (int)limit };
        idx_emit e = { db, &out, fetch_schema, err, sizeof err, 0 };
        if (sdb_list_indexes(db, &fl, emit_index, &e, err, sizeof err) < 0 || e.failed) code = S_INTERNAL;
        free(nss); free(st); free(pre);
        sstore_release(db);
    }
    put_status(&reply->response, 1, code, err);
    if (code == S_OK) buf_append(&reply->response, out.data, out.len);
    buf_free(&out);
    return;
bad:
    parse_error(reply, "ListIndexes");
}

/* DeleteSchemaRequest { params { source, index_spec*, require_empty_index }, app_id } */
static void m_delete_schema(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    spec *specs = NULL;
    int n = 0;
    bytes app = { NULL, 0 };
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) goto bad;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                if (pf == 2) {
                    specs = xrealloc(specs, (size_t)(n + 1) * sizeof *specs);
                    memset(&specs[n], 0, sizeof specs[n]);
                    prc = read_spec(&p, pw, &specs[n++]);
                } else prc = pb_skip(&p, pw, pf);
                if (prc < 0) goto bad;
            }
            if (prc < 0 || p.err) goto bad;
            rc = 0;
        } else if (f == 3) rc = pb_bytes(&r, w, &app.p, &app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) goto bad;
    }
    if (rc < 0 || r.err) goto bad;
    for (int i = 0; i < n; i++) {
        char err[512] = "";
        char *ns = NULL, *name = NULL;
        int code = S_OK;
        if (foreign_app(ctx, app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
        else if (spec_names(ctx, &specs[i], &ns, &name, err, sizeof err) < 0) code = S_INVALID_REQUEST;
        sdb *db = NULL;
        if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
        if (code == S_OK) {
            int64_t idx = sdb_index(db, ns, name, 0, err, sizeof err);
            if (idx < 0 || (idx > 0 && sdb_delete_schema(db, idx, err, sizeof err) < 0)) code = S_INTERNAL;
            sstore_release(db);
        }
        put_status(&reply->response, 1, code, err);
        free(ns);
        free(name);
    }
    free(specs);
    return;
bad:
    free(specs);
    parse_error(reply, "DeleteSchema");
}

/* ---- Search ---- */

typedef struct { bytes name, expr; } fexpr;

typedef struct {
    spec sp;
    bytes app;
    ssearch_params p;
    int cursor_type, keys_only;
    int64_t accuracy;
    bytes *names; int nnames;          /* returned fields */
    fexpr *exprs; int nexprs;
    /* storage for decoded strings the params point at */
    char **strs; int nstrs;
} search_req;

static const char *keep(search_req *q, bytes b)
{
    q->strs = xrealloc(q->strs, (size_t)(q->nstrs + 1) * sizeof *q->strs);
    return q->strs[q->nstrs++] = dup_bytes(b);
}

static int read_sort(pb_reader *r, int wt, search_req *q)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    q->p.sorts = xrealloc(q->p.sorts, (size_t)(q->p.nsorts + 1) * sizeof *q->p.sorts);
    ssort *o = &q->p.sorts[q->p.nsorts++];
    memset(o, 0, sizeof *o);
    o->expr = "";
    o->desc = 1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        bytes b;
        if (f == 1) { rc = pb_bytes(&s, w, &b.p, &b.n); if (rc == 0) o->expr = keep(q, b); }
        else if (f == 2) rc = pb_bool(&s, w, &o->desc);
        else if (f == 4) { rc = pb_bytes(&s, w, &b.p, &b.n); if (rc == 0) o->text = keep(q, b); }
        else if (f == 5) { rc = pb_double(&s, w, &o->num); o->has_num = 1; }
        else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

/* A range's start and end (bytes fields start_field and start_field + 1):
 * FacetRefinement.Range { start 1, end 2 }, FacetRange { name 1, start 2,
 * end 3 }. */
static int read_bounds(pb_reader *r, int wt, search_req *q, srefine *g, uint32_t start_field)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        bytes b;
        if (f == start_field || f == start_field + 1) {
            rc = pb_bytes(&s, w, &b.p, &b.n);
            if (rc == 0) { if (f == start_field) g->start = keep(q, b); else g->end = keep(q, b); }
        } else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int read_refinement(pb_reader *r, int wt, search_req *q)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    q->p.refine = xrealloc(q->p.refine, (size_t)(q->p.nrefine + 1) * sizeof *q->p.refine);
    srefine *g = &q->p.refine[q->p.nrefine++];
    memset(g, 0, sizeof *g);
    g->name = "";
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        bytes b;
        if (f == 1) { rc = pb_bytes(&s, w, &b.p, &b.n); if (rc == 0) g->name = keep(q, b); }
        else if (f == 2) { rc = pb_bytes(&s, w, &b.p, &b.n); if (rc == 0) g->value = keep(q, b); }
        else if (f == 3) rc = read_bounds(&s, w, q, g, 1);
        else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int read_facet_request(pb_reader *r, int wt, search_req *q)
{
    pb_reader s, pr;
    if (pb_sub(r, wt, &s) < 0) return -1;
    q->p.facets = xrealloc(q->p.facets, (size_t)(q->p.nfacets + 1) * sizeof *q->p.facets);
    sfacet_req *fr = &q->p.facets[q->p.nfacets++];
    memset(fr, 0, sizeof *fr);
    fr->name = "";
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        bytes b;
        if (f == 1) { rc = pb_bytes(&s, w, &b.p, &b.n); if (rc == 0) fr->name = keep(q, b); }
        else if (f == 2) {
            if (pb_sub(&s, w, &pr) < 0) return -1;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&pr, &pf, &pw)) > 0) {
                int64_t v;
                if (pf == 1) { prc = pb_int64(&pr, pw, &v); fr->value_limit = (int)(v > 1000 ? 1000 : v); }
                else if (pf == 2) {
                    fr->ranges = xrealloc(fr->ranges, (size_t)(fr->nranges + 1) * sizeof *fr->ranges);
                    srefine *g = &fr->ranges[fr->nranges++];
                    memset(g, 0, sizeof *g);
                    prc = read_bounds(&pr, pw, q, g, 2);
                } else if (pf == 3) {
                    prc = pb_bytes(&pr, pw, &b.p, &b.n);
                    if (prc == 0) {
                        fr->constraints = xrealloc(fr->constraints, (size_t)(fr->nconstraints + 1) * sizeof *fr->constraints);
                        fr->constraints[fr->nconstraints++] = keep(q, b);
                    }
                } else prc = pb_skip(&pr, pw, pf);
                if (prc < 0) return -1;
            }
            if (prc < 0 || pr.err) return -1;
            rc = 0;
        } else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

/* FieldSpec { name*, repeated group Expression = 2 { name 3, expression 4 } } */
static int read_field_spec(pb_reader *r, int wt, search_req *q)
{
    pb_reader s;
    if (pb_sub(r, wt, &s) < 0) return -1;
    uint32_t f; int w, rc;
    while ((rc = pb_next(&s, &f, &w)) > 0) {
        if (f == 1) {
            q->names = xrealloc(q->names, (size_t)(q->nnames + 1) * sizeof *q->names);
            rc = pb_bytes(&s, w, &q->names[q->nnames].p, &q->names[q->nnames].n);
            q->nnames++;
        } else if (f == 2 && w == PB_SGROUP) {
            pb_reader g;
            if (pb_group(&s, w, f, &g) < 0) return -1;
            q->exprs = xrealloc(q->exprs, (size_t)(q->nexprs + 1) * sizeof *q->exprs);
            fexpr *e = &q->exprs[q->nexprs++];
            memset(e, 0, sizeof *e);
            uint32_t gf; int gw, grc;
            while ((grc = pb_next(&g, &gf, &gw)) > 0) {
                if (gf == 3) grc = pb_bytes(&g, gw, &e->name.p, &e->name.n);
                else if (gf == 4) grc = pb_bytes(&g, gw, &e->expr.p, &e->expr.n);
                else grc = pb_skip(&g, gw, gf);
                if (grc < 0) return -1;
            }
            if (grc < 0 || g.err) return -1;
            rc = 0;
        } else rc = pb_skip(&s, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || s.err ? -1 : 0;
}

static int decode_search(const uint8_t *in, size_t len, search_req *q)
{
    pb_reader r, p;
    pb_reader_init(&r, in, len);
    q->p.limit = 20;
    q->p.query = "";
    uint32_t f; int w, rc;
    while ((rc = pb_next(&r, &f, &w)) > 0) {
        if (f == 1) {
            if (pb_sub(&r, w, &p) < 0) return -1;
            uint32_t pf; int pw, prc;
            while ((prc = pb_next(&p, &pf, &pw)) > 0) {
                int64_t v;
                bytes b;
                switch (pf) {
                case 1: prc = read_spec(&p, pw, &q->sp); break;
                case 2: prc = pb_bytes(&p, pw, &b.p, &b.n);
                        if (prc == 0) { q->p.query = (const char *)b.p; q->p.query_len = b.n; } break;
                case 4: prc = pb_bytes(&p, pw, &b.p, &b.n); if (prc == 0) q->p.cursor = keep(q, b); break;
                case 5: prc = pb_int64(&p, pw, &v); q->cursor_type = (int)v; break;
                case 6: prc = pb_int64(&p, pw, &v); q->p.limit = (int)(v < 0 ? -1 : v > 100000 ? 100000 : v); break;
                case 7: prc = pb_int64(&p, pw, &q->accuracy); break;
                case 8: prc = read_sort(&p, pw, q); break;
                case 9: {                      /* ScorerSpec: a scorer present asks for relevance */
                    pb_reader a;
                    if (pb_sub(&p, pw, &a) < 0) return -1;
                    uint32_t af; int aw, arc;
                    while ((arc = pb_next(&a, &af, &aw)) > 0) {
                        if (af == 1) { arc = pb_int64(&a, aw, &v); q->p.match_scorer = 1; }
                        else arc = pb_skip(&a, aw, af);
                        if (arc < 0) return -1;
                    }
                    prc = arc < 0 || a.err ? -1 : 0;
                    break;
                }
                case 10: prc = read_field_spec(&p, pw, q); break;
                case 11: prc = pb_int64(&p, pw, &v); q->p.offset = (int)(v < 0 ? -1 : v > 100000 ? 100000 : v); break;
                case 12: prc = pb_bool(&p, pw, &q->keys_only); break;
                case 15: prc = pb_int64(&p, pw, &v); q->p.auto_facets = (int)(v < 0 ? 0 : v > 1000 ? 1000 : v); break;
                case 16: prc = read_facet_request(&p, pw, q); break;
                case 17: prc = read_refinement(&p, pw, q); break;
                case 18: {
                    pb_reader a;
                    if (pb_sub(&p, pw, &a) < 0) return -1;
                    uint32_t af; int aw, arc;
                    while ((arc = pb_next(&a, &af, &aw)) > 0) {
                        if (af == 1) { arc = pb_int64(&a, aw, &v); q->p.auto_value_limit = (int)(v > 1000 ? 1000 : v); }
                        else arc = pb_skip(&a, aw, af);
                        if (arc < 0) return -1;
                    }
                    prc = arc < 0 || a.err ? -1 : 0;
                    break;
                }
                default: prc = pb_skip(&p, pw, pf); break;
                }
                if (prc < 0) return -1;
            }
            if (prc < 0 || p.err) return -1;
            rc = 0;
        } else if (f == 3) rc = pb_bytes(&r, w, &q->app.p, &q->app.n);
        else rc = pb_skip(&r, w, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static void free_search(search_req *q)
{
    for (int i = 0; i < q->nstrs; i++) free(q->strs[i]);
    free(q->strs);
    free(q->p.sorts);
    free(q->p.refine);
    for (int i = 0; i < q->p.nfacets; i++) { free(q->p.facets[i].constraints); free(q->p.facets[i].ranges); }
    free(q->p.facets);
    free(q->names);
    free(q->exprs);
}

/* An expression we can evaluate: a field name, _rank, or snippet(query, field[, ...]).
 * Returns the field a snippet or copy reads (in *field, caller frees), kind 1 copy,
 * 2 rank, 3 snippet; -1 when unsupported. */
static int expr_kind(bytes e, char **field)
{
    char *s = dup_bytes(e);
    char *t = s;
    while (isspace((unsigned char)*t)) t++;
    char *end = t + strlen(t);
    while (end > t && isspace((unsigned char)end[-1])) *--end = 0;
    int kind = -1;
    *field = NULL;
    if (!strcmp(t, "_rank")) kind = 2;
    else if (valid_field_name((bytes){ (const uint8_t *)t, strlen(t) })) { kind = 1; *field = xstrdup(t); }
    else if (!strncmp(t, "snippet(", 8) && end > t && end[-1] == ')') {
        end[-1] = 0;
        char *comma = strrchr(t, ',');
        if (comma) {
            char *fname = comma + 1;
            while (isspace((unsigned char)*fname)) fname++;
            char *fe = fname + strlen(fname);
            while (fe > fname && isspace((unsigned char)fe[-1])) *--fe = 0;
            /* snippet(query, field, max_chars): the field is the second argument */
            if (!valid_field_name((bytes){ (const uint8_t *)fname, strlen(fname) })) {
                *comma = 0;
                char *c2 = strrchr(t, ',');
                if (c2) {
                    fname = c2 + 1;
                    while (isspace((unsigned char)*fname)) fname++;
                    fe = fname + strlen(fname);
                    while (fe > fname && isspace((unsigned char)fe[-1])) *--fe = 0;
                }
            }
            if (valid_field_name((bytes){ (const uint8_t *)fname, strlen(fname) })) { kind = 3; *field = xstrdup(fname); }
        }
    }
    free(s);
    return kind;
}

typedef struct { char **v; int n; } strv;

static void collect_term(void *arg, const char *term)
{
    strv *t = arg;
    /* split phrases into words */
    const char *p = term;
    while (*p) {
        while (*p && !isalnum((unsigned char)*p) && (unsigned char)*p < 0x80) p++;
        const char *s = p;
        while (*p && (isalnum((unsigned char)*p) || (unsigned char)*p >= 0x80)) p++;
        if (p > s) {
            t->v = xrealloc(t->v, (size_t)(t->n + 1) * sizeof *t->v);
            t->v[t->n++] = xstrndup(s, (size_t)(p - s));
        }
    }
}

static int word_at(const char *s, size_t n, size_t i, const strv *terms)
{
    if (i > 0 && (isalnum((unsigned char)s[i - 1]) || (unsigned char)s[i - 1] >= 0x80)) return 0;
    for (int k = 0; k < terms->n; k++) {
        size_t l = strlen(terms->v[k]);
        if (i + l <= n && !strncasecmp(s + i, terms->v[k], l) &&
            (i + l == n || !(isalnum((unsigned char)s[i + l]) || (unsigned char)s[i + l] >= 0x80)))
            return (int)l;
    }
    return 0;
}

static void html_escape(buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<') buf_puts(b, "&lt;");
        else if (s[i] == '>') buf_puts(b, "&gt;");
        else if (s[i] == '&') buf_puts(b, "&amp;");
        else buf_putc(b, s[i]);
    }
}

/* A snippet: up to ~160 characters around the first match, matches in <b>. */
static char *snippet(const char *s, size_t n, const strv *terms)
{
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (word_at(s, n, i, terms)) first = i;
    size_t from = 0;
    if (first != n && first > 60) {
        from = first - 60;
        while (from < first && !isspace((unsigned char)s[from])) from++;
    }
    size_t to = from + 160 < n ? from + 160 : n;
    while (to < n && to > from && (s[to] & 0xC0) == 0x80) to++;     /* whole UTF-8 characters */
    buf b = BUF_INIT;
    if (from > 0) buf_puts(&b, "...");
    for (size_t i = from; i < to;) {
        int l = word_at(s, n, i, terms);
        if (l) {
            buf_puts(&b, "<b>");
            html_escape(&b, s + i, (size_t)l);
            buf_puts(&b, "</b>");
            i += (size_t)l;
        } else { html_escape(&b, s + i, 1); i++; }
    }
    if (to < n) buf_puts(&b, "...");
    buf_putc(&b, 0);
    size_t len;
    return buf_detach(&b, &len);
}

/* Raw Field entry (name, type, value) of a stored document. */
typedef struct { bytes raw; bytes name; int type; bytes value; } rawfield;

static int doc_fields(const void *pb, size_t len, rawfield **out, int64_t *rank)
{
    pb_reader r;
    pb_reader_init(&r, pb, len);
    int n = 0;
    *out = NULL;
    uint32_t f; int w;
    while (pb_next(&r, &f, &w) > 0) {
        if (f == 3) {
            const uint8_t *p; size_t pn;
            if (pb_bytes(&r, w, &p, &pn) < 0) break;
            sfield fl = { 0 };
            pb_reader one;
            pb_reader_init(&one, p, pn);
            decode_field_body(&one, &fl);
            *out = xrealloc(*out, (size_t)(n + 1) * sizeof **out);
            (*out)[n++] = (rawfield){ { p, pn }, { (const uint8_t *)fl.name, fl.name_len }, fl.type,
                                      { (const uint8_t *)fl.s, fl.s_len } };
        } else if (f == 4) {
            if (pb_int64(&r, w, rank) < 0) break;
        } else if (pb_skip(&r, w, f) < 0) break;
    }
    return n;
}

static int bytes_eq(bytes a, const char *s, size_t n)
{
    return a.n == n && (n == 0 || !memcmp(a.p, s, n));
}

static void emit_result(search_req *q, const shit *h, const strv *terms, buf *out, const char *cursor)
{
    size_t m = pb_begin(out, 1);
    size_t dm = pb_begin(out, 1);
    rawfield *fields = NULL;
    int64_t rank = 0;
    int nf = doc_fields(h->pb, h->pb_len, &fields, &rank);
    if (q->keys_only) {
        pb_put_str(out, 1, h->doc_id);
        pb_put_int(out, 4, rank);
    } else if (q->nnames == 0) {
        buf_append(out, h->pb, h->pb_len);
    } else {
        /* copy everything but the fields not asked for */
        pb_reader r;
        pb_reader_init(&r, h->pb, h->pb_len);
        uint32_t f; int w;
        int k = 0;
        while (pb_next(&r, &f, &w) > 0) {
            const uint8_t *start = r.p;
            if (pb_skip(&r, w, f) < 0) break;
            if (f == 3) {
                int want = 0;
                for (int i = 0; k < nf && i < q->nnames; i++)
                    if (bytes_eq(q->names[i], (const char *)fields[k].name.p, fields[k].name.n)) want = 1;
                k++;
                if (!want) continue;
            }
            pb_put_tag(out, f, w);
            buf_append(out, start, (size_t)(r.p - start));
        }
    }
    pb_end(out, dm);
    for (int i = 0; i < h->nscores; i++) pb_put_double(out, 2, h->scores[i]);
    if (cursor) pb_put_str(out, 3, cursor);
    for (int e = 0; e < q->nexprs; e++) {
        char *field = NULL;
        int kind = expr_kind(q->exprs[e].expr, &field);
        bytes name = q->exprs[e].name;
        if (kind == 2) {
            size_t fm = pb_begin(out, 4);
            pb_put_bytes(out, 1, name.p, name.n);
            size_t vm = pb_begin(out, 2);
            pb_put_int(out, 1, SF_NUMBER);
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)rank);
            pb_put_str(out, 3, num);
            pb_end(out, vm);
            pb_end(out, fm);
        } else if (kind == 1 || kind == 3) {
            for (int i = 0; i < nf; i++) {
                if (!bytes_eq(fields[i].name, field, strlen(field))) continue;
                size_t fm = pb_begin(out, 4);
                pb_put_bytes(out, 1, name.p, name.n);
                if (kind == 1) {
                    /* the stored value as is */
                    pb_reader r;
                    pb_reader_init(&r, fields[i].raw.p, fields[i].raw.n);
                    uint32_t f; int w;
                    while (pb_next(&r, &f, &w) > 0) {
                        const uint8_t *start = r.p;
                        if (pb_skip(&r, w, f) < 0) break;
                        if (f == 2) { pb_put_tag(out, f, w); buf_append(out, start, (size_t)(r.p - start)); }
                    }
                } else {
                    char *text = fields[i].type == SF_HTML
                        ? sstore_html_text((const char *)fields[i].value.p, fields[i].value.n)
                        : xstrndup((const char *)fields[i].value.p, fields[i].value.n);
                    char *sn = snippet(text, strlen(text), terms);
                    free(text);
                    size_t vm = pb_begin(out, 2);
                    pb_put_int(out, 1, SF_HTML);
                    pb_put_str(out, 3, sn);
                    pb_end(out, vm);
                    free(sn);
                }
                pb_end(out, fm);
                break;
            }
        }
        free(field);
    }
    free(fields);
    pb_end(out, m);
}

static void emit_facets(const ssearch_result *res, buf *out)
{
    for (int i = 0; i < res->nfacets; i++) {
        const sfacet_res *f = &res->facets[i];
        size_t m = pb_begin(out, 5);
        pb_put_str(out, 1, f->name);
        for (int j = 0; j < f->nv; j++) {
            const sfacet_val *v = &f->v[j];
            size_t vm = pb_begin(out, 2);
            pb_put_str(out, 1, v->label);
            pb_put_int(out, 2, v->count);
            size_t rm = pb_begin(out, 3);
            pb_put_str(out, 1, f->name);
            if (v->value) pb_put_str(out, 2, v->value);
            else {
                size_t gm = pb_begin(out, 3);
                if (v->start) pb_put_str(out, 1, v->start);
                if (v->end) pb_put_str(out, 2, v->end);
                pb_end(out, gm);
            }
            pb_end(out, rm);
            pb_end(out, vm);
        }
        pb_end(out, m);
    }
}

static void m_search(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    search_req q;
    memset(&q, 0, sizeof q);
    if (decode_search(in, len, &q) < 0) { free_search(&q); parse_error(reply, "Search"); return; }
    char err[512] = "";
    char *ns = NULL, *name = NULL;
    int code = S_OK;
    if (foreign_app(ctx, q.app)) { code = S_PERMISSION_DENIED; set_err(err, sizeof err, "The search indexes of another application may not be accessed."); }
    else if (spec_names(ctx, &q.sp, &ns, &name, err, sizeof err) < 0) code = S_INVALID_REQUEST;
    else if (q.p.limit < 1 || q.p.limit > MAX_LIMIT) { code = S_INVALID_REQUEST; set_err(err, sizeof err, "The limit must be between 1 and %d.", MAX_LIMIT); }
    else if (q.p.offset < 0 || q.p.offset > 10000) { code = S_INVALID_REQUEST; set_err(err, sizeof err, "The offset must be between 0 and 10000."); }
    for (int e = 0; code == S_OK && e < q.nexprs; e++) {
        char *field = NULL;
        if (expr_kind(q.exprs[e].expr, &field) < 0) {
            code = S_INVALID_REQUEST;
            set_err(err, sizeof err, "The field expression '%.*s' is not supported: use a field name, _rank or "
                    "snippet(query, field).", (int)(q.exprs[e].expr.n > 100 ? 100 : q.exprs[e].expr.n),
                    (const char *)q.exprs[e].expr.p);
        }
        free(field);
    }
    ssearch_result res;
    memset(&res, 0, sizeof res);
    sdb *db = NULL;
    if (code == S_OK && !(db = open_db(ctx, err, sizeof err))) code = S_INTERNAL;
    if (code == S_OK) {
        int64_t idx = sdb_index(db, ns, name, 0, err, sizeof err);
        if (idx < 0) code = S_INTERNAL;
        else if (ssearch_run(db, idx, &q.p, &res, err, sizeof err) < 0) code = S_INVALID_REQUEST;
        sstore_release(db);
    }
    buf *out = &reply->response;
    if (code == S_OK) {
        strv terms = { NULL, 0 };
        sq_terms(res.tree, collect_term, &terms);
        for (int i = 0; i < res.nhits; i++) {
            char *c = q.cursor_type == 2 ? ssearch_cursor(&q.p, res.hits[i].position + 1, res.hits[i].doc_id) : NULL;
            emit_result(&q, &res.hits[i], &terms, out, c);
            free(c);
        }
        for (int i = 0; i < terms.n; i++) free(terms.v[i]);
        free(terms.v);
        pb_put_int(out, 2, res.matched);
        put_status(out, 3, S_OK, NULL);
        if (q.cursor_type == 1 && res.next >= 0 && res.nhits > 0) {
            char *c = ssearch_cursor(&q.p, res.next, res.hits[res.nhits - 1].doc_id);
            pb_put_str(out, 4, c);
            free(c);
        }
        emit_facets(&res, out);
    } else {
        log_info("search", "app=%s msg=%s", ctx->app_id, log_q(err));
        pb_put_int(out, 2, 0);
        put_status(out, 3, code, err);
    }
    ssearch_result_free(&res);
    free(ns);
    free(name);
    free_search(&q);
}

static void free_store(void *p) { sstore_free(p); }

void search_register(api_server *srv, const char *home)
{
    sstore *s = sstore_new(home);
    static const struct { const char *name; api_method_fn fn; } methods[] = {
        { "IndexDocument", m_index_document },
        { "DeleteDocument", m_delete_document },
        { "ListDocuments", m_list_documents },
        { "ListIndexes", m_list_indexes },
        { "DeleteSchema", m_delete_schema },
        { "Search", m_search },
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        api_register(srv, "search", methods[i].name, methods[i].fn, s);
    api_on_stop(srv, free_store, s);
}
