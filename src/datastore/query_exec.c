/* query_exec.c - query execution: streaming index scans into QueryResult
 * batches, the server-side state behind Next, and cursors.
 *
 * Every batch reads in one kv snapshot (a read transaction), so what a batch
 * returns is strongly consistent. A scan yields row suffixes (the part of
 * the row key after the plan's fixed prefix): for E/K/merge plans the
 * entity's encoded path, for index plans the postfix values then the path.
 * A suffix sorts in the query's order, so it is also the query's position:
 * a batch resumes by seeking to prefix + position, and a client cursor is
 * the position re-expressed per sort order (cursor.c), which lets it resume
 * a reversed query too.
 *
 * Entities are fetched only when a result needs them: keys-only and
 * projection results are built from the index row itself; an index scan
 * over a property that may hold several values fetches the entity to keep
 * only its first row in scan order (App Engine returns an entity once).
 *
 * Open queries live in a list guarded by a mutex, keyed by a random 64-bit
 * cursor id; a query in use is taken off the list, so two Next calls on one
 * cursor never race. Idle queries expire. */
#include "datastore/query.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "datastore/query_plan.h"
#include "proto/pb.h"

#define DEFAULT_BATCH 300
#define MAX_BATCH 1000
#define DEFAULT_TTL_US (600LL * 1000000)
#define MAX_OPEN 10000

typedef struct qstate {
    struct qstate *next;
    uint64_t id;
    char *app;
    dsq_query q;
    plan p;
    int planned;
    buf pos; int has_pos, pos_incl;       /* start after (or at) this suffix */
    buf end; int has_end, end_incl;       /* stop at this suffix */
    int64_t remaining;                    /* results still allowed by limit; -1 none */
    buf group; int has_group;             /* distinct: last group emitted */
    int64_t expires_us;
    int done;
} qstate;

struct dsq_engine {
    datastore *ds;
    pthread_mutex_t mu;
    qstate *open;
    size_t n_open;
    int64_t ttl_us;
};

static void kv_err(ds_err *e, int rc, const char *what, const char *err)
{
    ds_err_set(e, rc == KV_CONFLICT ? DS_CONCURRENT_TRANSACTION : DS_INTERNAL_ERROR, "%s failed: %s", what, err);
}

static void state_free(qstate *s)
{
    if (!s) return;
    plan_free(&s->p);
    dsq_query_free(&s->q);
    buf_free(&s->pos); buf_free(&s->end); buf_free(&s->group);
    free(s->app);
    free(s);
}

/* ---- engine and open queries ---- */

dsq_engine *dsq_engine_new(datastore *ds)
{
    dsq_engine *eng = xcalloc(1, sizeof *eng);
    eng->ds = ds;
    eng->ttl_us = DEFAULT_TTL_US;
    pthread_mutex_init(&eng->mu, NULL);
    return eng;
}

void dsq_engine_free(dsq_engine *eng)
{
    if (!eng) return;
    while (eng->open) { qstate *s = eng->open; eng->open = s->next; state_free(s); }
    pthread_mutex_destroy(&eng->mu);
    free(eng);
}

void dsq_engine_set_ttl(dsq_engine *eng, int64_t ttl_us) { eng->ttl_us = ttl_us; }

size_t dsq_engine_open_cursors(dsq_engine *eng)
{
    pthread_mutex_lock(&eng->mu);
    size_t n = eng->n_open;
    pthread_mutex_unlock(&eng->mu);
    return n;
}

/* Called with the mutex held. */
static void sweep(dsq_engine *eng, int64_t now)
{
    for (qstate **pp = &eng->open; *pp;) {
        qstate *s = *pp;
        if (s->expires_us <= now || eng->n_open > MAX_OPEN) { *pp = s->next; eng->n_open--; state_free(s); }
        else pp = &s->next;
    }
}

static void park(dsq_engine *eng, qstate *s)
{
    int64_t now = now_us();
    s->expires_us = now + eng->ttl_us;
    pthread_mutex_lock(&eng->mu);
    sweep(eng, now);
    s->next = eng->open;
    eng->open = s;
    eng->n_open++;
    pthread_mutex_unlock(&eng->mu);
}

static qstate *take(dsq_engine *eng, uint64_t id, const char *app)
{
    qstate *found = NULL;
    pthread_mutex_lock(&eng->mu);
    sweep(eng, now_us());
    for (qstate **pp = &eng->open; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id && !strcmp((*pp)->app, app)) {
            found = *pp;
            *pp = found->next;
            eng->n_open--;
            break;
        }
    }
    pthread_mutex_unlock(&eng->mu);
    return found;
}

/* ---- row suffixes ---- */

static int bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : (an > bn) - (an < bn);
}

/* Split a suffix into its postfix values and the path. */
static int split_suffix(const plan *p, const uint8_t *s, size_t n, const uint8_t **vals_end)
{
    const uint8_t *q = s, *end = s + n;
    for (size_t i = 0; i < p->n_post; i++)
        if (kc_skip_value(&q, end, p->post_dir[i]) < 0) return -1;
    *vals_end = q;
    return 0;
}

/* ---- scanning ---- */

typedef struct {
    const plan *p;
    kv_txn *kt;
    kv_cursor *c[PLAN_MAX_SCANS];
    int started;
    int done;
    buf target;                     /* merge: current candidate path */
    const uint8_t *row; size_t rown;   /* current suffix (single scans) */
    char err[256];
    int rc;                         /* KV error when failed */
} scan;

static int starts(const void *k, size_t kn, const buf *pre)
{
    return kn >= pre->len && memcmp(k, pre->data, pre->len) == 0;
}

/* Seek cursor i to prefix + suffix; fwd: first >=, bwd: last <=. Sets *s to
 * the row suffix, or returns KV_NOTFOUND past the scan's range. */
static int seek_suffix(scan *sc, size_t i, const uint8_t *suf, size_t sn, int bwd,
                       const uint8_t **s, size_t *n)
{
    const plan_scan *ps = &sc->p->scans[i];
    uint8_t key[KV_MAX_KEY + 64];
    size_t kn = ps->prefix.len + sn;
    if (kn > sizeof key) kn = sizeof key, sn = kn - ps->prefix.len;
    memcpy(key, ps->prefix.data, ps->prefix.len);
    if (sn) memcpy(key + ps->prefix.len, suf, sn);
    int rc = kv_seek(sc->c[i], key, kn, bwd ? KV_BWD : KV_FWD, sc->err, sizeof sc->err);
    if (rc != KV_OK) return rc;
    const void *k, *v; size_t kl, vl;
    kv_cursor_get(sc->c[i], &k, &kl, &v, &vl);
    if (!starts(k, kl, &ps->range)) return KV_NOTFOUND;
    *s = (const uint8_t *)k + ps->prefix.len;
    *n = kl - ps->prefix.len;
    return KV_OK;
}

static int step(scan *sc, size_t i, int bwd, const uint8_t **s, size_t *n)
{
    const plan_scan *ps = &sc->p->scans[i];
    int rc = bwd ? kv_prev(sc->c[i], sc->err, sizeof sc->err) : kv_next(sc->c[i], sc->err, sizeof sc->err);
    if (rc != KV_OK) return rc;
    const void *k, *v; size_t kl, vl;
    kv_cursor_get(sc->c[i], &k, &kl, &v, &vl);
    if (!starts(k, kl, &ps->range)) return KV_NOTFOUND;
    *s = (const uint8_t *)k + ps->prefix.len;
    *n = kl - ps->prefix.len;
    return KV_OK;
}

/* Start suffix for a scan with no position: the range's own start, or the
 * __key__ bound when it is further in (key-ordered plans). */
static void start_suffix(const plan *p, const plan_scan *ps, buf *out)
{
    buf_reset(out);
    buf_append(out, ps->range.data + ps->prefix.len, ps->range.len - ps->prefix.len);
    if (p->type == PLAN_INDEX) {
        if (p->has_lo && bytes_cmp((uint8_t *)p->lo.data, p->lo.len, (uint8_t *)out->data, out->len) > 0) {
            buf_reset(out);
            buf_append(out, p->lo.data, p->lo.len);
        }
        return;
    }
    if (!p->reverse) {
        if (p->has_key_lo && bytes_cmp((uint8_t *)p->key_lo.data, p->key_lo.len, (uint8_t *)out->data, out->len) > 0) {
            buf_reset(out);
            buf_append(out, p->key_lo.data, p->key_lo.len);
        }
    } else {
        buf_putc(out, (char)0xff);    /* past every row of the range */
        if (p->has_key_hi && bytes_cmp((uint8_t *)p->key_hi.data, p->key_hi.len, (uint8_t *)out->data, out->len) < 0) {
            buf_reset(out);
            buf_append(out, p->key_hi.data, p->key_hi.len);
        }
    }
}

/* Next candidate suffix in query order. 1 with s and n set, 0 at the end,
 * -1 on engine error (sc->rc). pos: resume position (exclusive unless incl). */
static int scan_next(scan *sc, const buf *pos, int has_pos, int incl, const uint8_t **s, size_t *n)
{
    const plan *p = sc->p;
    int bwd = p->reverse;
    int rc;
    if (sc->done) return 0;
    if (p->type != PLAN_MERGE) {
        if (!sc->started) {
            sc->started = 1;
            buf st = BUF_INIT;
            if (has_pos) buf_append(&st, pos->data, pos->len);
            else start_suffix(p, &p->scans[0], &st);
            rc = seek_suffix(sc, 0, (uint8_t *)st.data, st.len, bwd, s, n);
            if (rc == KV_OK && has_pos && !incl && bytes_cmp(*s, *n, (uint8_t *)st.data, st.len) == 0)
                rc = step(sc, 0, bwd, s, n);
            buf_free(&st);
        } else {
            rc = step(sc, 0, bwd, s, n);
        }
        if (rc == KV_OK) return 1;
        sc->done = 1;
        if (rc == KV_NOTFOUND) return 0;
        sc->rc = rc;
        return -1;
    }
    /* Merge join: find the next path present in every scan. */
    int excl;
    if (!sc->started) {
        sc->started = 1;
        if (has_pos) { buf_reset(&sc->target); buf_append(&sc->target, pos->data, pos->len); excl = !incl; }
        else { start_suffix(p, &p->scans[0], &sc->target); excl = 0; }
    } else excl = 1;
    for (;;) {
        int all = 1;
        for (size_t i = 0; i < p->n_scans && all; i++) {
            const uint8_t *si; size_t ni;
            rc = seek_suffix(sc, i, (uint8_t *)sc->target.data, sc->target.len, bwd, &si, &ni);
            if (rc == KV_OK && excl && bytes_cmp(si, ni, (uint8_t *)sc->target.data, sc->target.len) == 0)
                rc = step(sc, i, bwd, &si, &ni);
            if (rc != KV_OK) {
                sc->done = 1;
                if (rc == KV_NOTFOUND) return 0;
                sc->rc = rc;
                return -1;
            }
            if (bytes_cmp(si, ni, (uint8_t *)sc->target.data, sc->target.len) != 0) {
                /* A later candidate: every scan must reach it. */
                buf_reset(&sc->target);
                buf_append(&sc->target, si, ni);
                excl = 0;
                if (i > 0) all = 0;   /* start over: the first scans must reach it too */
            }
        }
        if (all) {
            *s = (uint8_t *)sc->target.data;
            *n = sc->target.len;
            return 1;
        }
    }
}

/* ---- per-row checks ---- */

/* Where a row stands against the bounds on its first postfix value:
 * -1 before the range (skip), 0 inside, 1 past it (stop). */
static int value_bounds(const plan *p, const uint8_t *s, size_t n)
{
    if (p->type != PLAN_INDEX || (!p->has_lo && !p->has_hi)) return 0;
    const uint8_t *q = s;
    if (kc_skip_value(&q, s + n, p->post_dir[0]) < 0) return -1;
    size_t vn = (size_t)(q - s);
    if (p->has_lo) {
        int c = bytes_cmp(s, vn, (uint8_t *)p->lo.data, p->lo.len);
        if (c < 0 || (c == 0 && !p->lo_incl)) return -1;
    }
    if (p->has_hi) {
        int c = bytes_cmp(s, vn, (uint8_t *)p->hi.data, p->hi.len);
        if (c > 0 || (c == 0 && !p->hi_incl)) return 1;
    }
    return 0;
}

/* __key__ filters on the row's path: -1 skip, 0 keep, 1 stop (key-ordered
 * plans past their bound). */
static int key_bounds(const plan *p, const uint8_t *path, size_t n)
{
    int ordered = p->type != PLAN_INDEX;
    if (p->has_key_eq && bytes_cmp(path, n, (uint8_t *)p->key_eq.data, p->key_eq.len) != 0) return -1;
    if (p->has_key_lo) {
        int c = bytes_cmp(path, n, (uint8_t *)p->key_lo.data, p->key_lo.len);
        if (c < 0 || (c == 0 && !p->key_lo_incl)) return ordered && p->reverse ? 1 : -1;
    }
    if (p->has_key_hi) {
        int c = bytes_cmp(path, n, (uint8_t *)p->key_hi.data, p->key_hi.len);
        if (c > 0 || (c == 0 && !p->key_hi_incl)) return ordered && !p->reverse ? 1 : -1;
    }
    if (p->shallow_depth) {
        const uint8_t *q = path;
        int depth = 0;
        /* Count elements by walking the encoded path. */
        buf tmp = BUF_INIT;
        if (kc_get_path(&q, path + n, &tmp) == 0) {
            ds_elem *el = NULL; size_t ne = 0;
            char err[64];
            if (ds_path_decode((uint8_t *)tmp.data, tmp.len, &el, &ne, err, sizeof err) == 0) depth = (int)ne;
            free(el);
        }
        buf_free(&tmp);
        if (depth != p->shallow_depth) return -1;
    }
    return 0;
}

static void entity_key(buf *b, const plan *p, const uint8_t *path, size_t n)
{
    buf_reset(b);
    kc_ns_prefix(b, KC_ENTITY, ds_cstr(p->app), ds_cstr(p->ns));
    buf_append(b, path, n);
}

/* Is this row the first, in scan order, of the rows its entity has in the
 * scanned range? Only then is the entity returned. */
static int first_row(datastore *ds, kv_txn *kt, const plan *p, const ds_entity *ent,
                     const uint8_t *s, size_t n, ds_err *e)
{
    int multi = 0;
    for (size_t i = 0; i < ent->nprops && !multi; i++) {
        if (!ent->props[i].indexed) continue;
        for (size_t j = i + 1; j < ent->nprops && !multi; j++)
            if (ent->props[j].indexed && ent->props[i].name.n == ent->props[j].name.n &&
                !memcmp(ent->props[i].name.p, ent->props[j].name.p, ent->props[i].name.n)) {
                for (size_t k = 0; k < p->n_post && !multi; k++)
                    if (strlen(p->post_prop[k]) == ent->props[i].name.n &&
                        !memcmp(p->post_prop[k], ent->props[i].name.p, ent->props[i].name.n)) multi = 1;
            }
    }
    if (!multi) return 1;
    buf rows = BUF_INIT;
    if (ds_index_rows(ds, kt, ent, &rows, e) < 0) { buf_free(&rows); return -1; }
    const plan_scan *ps = &p->scans[0];
    const uint8_t *best = NULL; size_t bestn = 0;
    for (size_t off = 0; off + 4 <= rows.len;) {
        uint32_t len;
        memcpy(&len, rows.data + off, 4);
        const uint8_t *r = (uint8_t *)rows.data + off + 4;
        off += 4 + len;
        if (!starts(r, len, &ps->range)) continue;
        const uint8_t *rs = r + ps->prefix.len;
        size_t rn = len - ps->prefix.len;
        if (value_bounds(p, rs, rn) != 0) continue;
        if (!best || bytes_cmp(rs, rn, best, bestn) < 0) { best = rs; bestn = rn; }
    }
    int first = !best || bytes_cmp(best, bestn, s, n) == 0;
    buf_free(&rows);
    return first;
}

/* ---- result encoding ---- */

static void put_reference(buf *out, uint32_t field, const plan *p, const buf *pathmsg)
{
    size_t m = pb_begin(out, field);
    pb_put_str(out, 13, p->app);
    if (p->ns[0]) pb_put_str(out, 20, p->ns);
    pb_put_bytes(out, 14, pathmsg->data, pathmsg->len);
    pb_end(out, m);
}

/* A string value cut short in the index (see keycodec.h): the whole value
 * from the entity, the one of property `name` whose index encoding is enc. */
static int full_value(kv_txn *kt, const plan *p, const uint8_t *path, size_t pn, const char *name,
                      const uint8_t *enc, size_t encn, int dir, buf *pv)
{
    buf ek = BUF_INIT, t = BUF_INIT;
    const void *v; size_t vn;
    char err[200];
    int found = 0;
    entity_key(&ek, p, path, pn);
    if (kv_get(kt, ek.data, ek.len, &v, &vn, err, sizeof err) == KV_OK) {
        uint8_t *copy = xmalloc(vn ? vn : 1);
        memcpy(copy, v, vn);
        ds_entity ent;
        if (ds_entity_decode(copy, vn, &ent, err, sizeof err) == 0) {
            for (size_t i = 0; i < ent.nprops && !found; i++) {
                const ds_prop *pr = &ent.props[i];
                if (!pr->indexed || pr->name.n != strlen(name) || memcmp(pr->name.p, name, pr->name.n)) continue;
                buf_reset(&t);
                kc_put_value(&t, &pr->v, dir);
                if (bytes_cmp((uint8_t *)t.data, t.len, enc, encn) == 0) { ds_value_encode(pv, &pr->v); found = 1; }
            }
            ds_entity_free(&ent);
        }
        free(copy);
    }
    buf_free(&ek); buf_free(&t);
    return found;
}

/* EntityProto with key and entity group only, plus projected properties. */
static int put_key_entity(buf *out, kv_txn *kt, const plan *p, const dsq_query *q, const uint8_t *path, size_t pn,
                          const uint8_t *vals, size_t vn)
{
    buf pathmsg = BUF_INIT, group = BUF_INIT, pv = BUF_INIT;
    const uint8_t *pp = path;
    int rc = -1;
    if (kc_get_path(&pp, path + pn, &pathmsg) < 0) goto done;
    ds_elem *el = NULL; size_t ne = 0;
    char err[128];
    if (ds_path_decode((uint8_t *)pathmsg.data, pathmsg.len, &el, &ne, err, sizeof err) < 0) goto done;
    if (ne) ds_path_encode(&group, el, 1);
    free(el);
    size_t m = pb_begin(out, 2);
    put_reference(out, 13, p, &pathmsg);
    pb_put_bytes(out, 16, group.data ? group.data : "", group.len);
    for (size_t i = 0; i < q->n_projection; i++) {
        const char *name = q->projection[i];
        buf_reset(&pv);
        int found = 0;
        const uint8_t *v = vals;
        for (size_t k = 0; k < p->n_post && !found; k++) {
            const uint8_t *start = v;
            if (kc_skip_value(&v, vals + vn, p->post_dir[k]) < 0) break;
            if (p->post_prop[k] && !strcmp(p->post_prop[k], name)) {
                const uint8_t *t = start;
                int r = kc_get_value(&t, vals + vn, p->post_dir[k], &pv);
                if (r == 0) found = 1;
                else if (r == 1) {
                    buf_reset(&pv);
                    found = full_value(kt, p, path, pn, name, start, (size_t)(v - start), p->post_dir[k], &pv);
                }
            }
        }
        if (!found) {
            /* A projected property fixed by an equality filter. */
            for (size_t f = 0; f < q->n_filters && !found; f++)
                if ((q->filters[f].op == DSQ_EQ || q->filters[f].op == DSQ_IN) && q->filters[f].n_values &&
                    !strcmp(q->filters[f].prop, name)) {
                    buf_append(&pv, q->filters[f].values[0].p, q->filters[f].values[0].n);
                    found = 1;
                }
        }
        if (!found) continue;
        size_t pm = pb_begin(out, 14);
        pb_put_int(out, 1, DS_MEANING_INDEX_VALUE);
        pb_put_str(out, 3, name);
        pb_put_bool(out, 4, 0);
        pb_put_bytes(out, 5, pv.data ? pv.data : "", pv.len);
        pb_end(out, pm);
    }
    pb_end(out, m);
    rc = 0;
done:
    buf_free(&pathmsg); buf_free(&group); buf_free(&pv);
    return rc;
}

/* Cursor from a position suffix. */
static void position_cursor(const plan *p, const dsq_query *q, const buf *pos, int has_pos, int incl, buf *out)
{
    dsq_cursor c;
    memset(&c, 0, sizeof c);
    c.fingerprint = dsq_fingerprint(q);
    c.n_orders = (uint8_t)p->n_post;
    for (size_t i = 0; i < p->n_post; i++) if (p->post_dir[i] == KC_DESC) c.dirs |= 1u << i;
    if (p->reverse) c.dirs |= 1u << 31;
    if (p->n_post && !strcmp(p->post_prop[p->n_post - 1], "__key__")) c.dirs |= 1u << 30;
    c.has_position = has_pos;
    c.inclusive = incl;
    buf asc = BUF_INIT;
    if (has_pos) {
        const uint8_t *s = (uint8_t *)pos->data, *end = s + pos->len;
        size_t offs[DSQ_MAX_ORDERS + 1];
        for (size_t i = 0; i < p->n_post; i++) {
            const uint8_t *v = s;
            if (kc_skip_value(&s, end, p->post_dir[i]) < 0) { c.has_position = 0; break; }
            offs[i] = asc.len;
            for (const uint8_t *x = v; x < s; x++) buf_putc(&asc, (char)(p->post_dir[i] == KC_DESC ? ~*x : *x));
        }
        offs[p->n_post] = asc.len;
        size_t keyoff = asc.len;
        buf_append(&asc, s, (size_t)(end - s));
        for (size_t i = 0; i < p->n_post; i++) {
            c.values[i].p = (uint8_t *)asc.data + offs[i];
            c.values[i].n = offs[i + 1] - offs[i];
        }
        c.key.p = (uint8_t *)asc.data + keyoff;
        c.key.n = asc.len - keyoff;
    }
    dsq_cursor_encode(&c, out);
    buf_free(&asc);
}

/* Position from a client cursor, for this query's plan.
 *
 * Index plans compare their explicit sort values; the key that breaks ties
 * may be explicit (a trailing __key__ order, part of a composite index) on
 * either side or implicit (ascending), so a cursor of `order(x)` resumes
 * `order(-x, -__key__)` and the other way round, as ndb's reverse paging
 * does. The position is rebuilt in this plan's encoding. */
static int cursor_position(const plan *p, const dsq_query *q, dsq_bytes cb, buf *pos, int *has_pos,
                           int *incl, ds_err *e)
{
    dsq_cursor c;
    char err[200];
    if (dsq_cursor_decode(cb.p, cb.n, &c, err, sizeof err) < 0) { ds_err_set(e, DS_BAD_REQUEST, "%s", err); return -1; }
    int rc = -1, flip = -1;
    if (c.fingerprint != dsq_fingerprint(q)) {
        ds_err_set(e, DS_BAD_REQUEST, "the cursor does not match this query");
        goto out;
    }
    int c_key = (c.dirs >> 30) & 1;
    int p_key = p->n_post && !strcmp(p->post_prop[p->n_post - 1], "__key__");
    size_t c_vals = c.n_orders - (size_t)c_key, p_vals = p->n_post - (size_t)p_key;
    if (c.n_orders < c_key || c_vals != p_vals) {
        ds_err_set(e, DS_BAD_REQUEST, "the cursor does not match this query's sort orders");
        goto out;
    }
    if (p->type != PLAN_INDEX) {
        flip = (int)((c.dirs >> 31) & 1) != p->reverse;
    } else {
        for (size_t i = 0; i < c.n_orders; i++) {
            if (i >= p_vals && !(c_key && p_key)) break;      /* an implicit key on one side */
            int f = (int)((c.dirs >> i) & 1) != (p->post_dir[i] == KC_DESC);
            if (flip < 0) flip = f;
            else if (flip != f) { flip = -2; break; }
        }
        if (flip == -1) flip = 0;
    }
    if (flip < 0) { ds_err_set(e, DS_BAD_REQUEST, "the cursor does not match this query's sort directions"); goto out; }
    buf_reset(pos);
    *has_pos = c.has_position;
    *incl = c.has_position ? (c.inclusive ^ flip) : 0;
    if (c.has_position) {
        for (size_t i = 0; i < p_vals; i++)
            for (size_t k = 0; k < c.values[i].n; k++) {
                uint8_t b = c.values[i].p[k];
                buf_putc(pos, (char)(p->post_dir[i] == KC_DESC ? ~b : b));
            }
        if (p_key) {
            /* The key as an index value: tag, app, namespace, path. */
            buf kv = BUF_INIT;
            buf_putc(&kv, (char)KC_T_KEY);
            kc_put_cstr(&kv, p->app);
            kc_put_cstr(&kv, p->ns);
            buf_append(&kv, c.key.p, c.key.n);
            for (size_t k = 0; k < kv.len; k++)
                buf_putc(pos, p->post_dir[p->n_post - 1] == KC_DESC ? (char)~kv.data[k] : kv.data[k]);
            buf_free(&kv);
        }
        buf_append(pos, c.key.p, c.key.n);
    } else if (flip) {
        /* The start of the reversed query is this query's end. */
        ds_err_set(e, DS_BAD_REQUEST, "a cursor at the start of a query cannot resume its reverse");
        goto out;
    }
    rc = 0;
out:
    dsq_cursor_free(&c);
    return rc;
}

/* ---- one batch ---- */

static int txn_note(datastore *ds, const dsq_query *q, kv_txn *kt, ds_err *e)
{
    if (!q->has_transaction) return 0;
    if (!q->has_ancestor) {
        ds_err_set(e, DS_BAD_REQUEST, "Only ancestor queries are allowed inside transactions.");
        return -1;
    }
    ds_ref anc;
    char err[200];
    if (ds_ref_decode(q->ancestor.p, q->ancestor.n, &anc, err, sizeof err) < 0) {
        ds_err_set(e, DS_BAD_REQUEST, "the query ancestor is malformed: %s", err);
        return -1;
    }
    int rc = ds_txn_note_read(ds, q->app, q->txn_handle, kt, &anc, e);
    ds_ref_free(&anc);
    return rc;
}

static int run_batch(dsq_engine *eng, qstate *st, kv_txn *kt, int64_t count, int64_t offset, int compile,
                     buf *resp, ds_err *e)
{
    const plan *p = &st->p;
    const dsq_query *q = &st->q;
    scan sc;
    memset(&sc, 0, sizeof sc);
    sc.p = p;
    sc.kt = kt;
    buf results = BUF_INIT, ek = BUF_INIT, skipped_pos = BUF_INIT;
    int rc = -1;
    int64_t skipped = 0, emitted = 0;
    int has_skipped_pos = 0, skipped_incl = 0, more = 1;
    int projection = q->n_projection > 0;

    for (size_t i = 0; i < p->n_scans; i++) {
        int r = kv_cursor_open(kt, &sc.c[i], sc.err, sizeof sc.err);
        if (r != KV_OK) { kv_err(e, r, "opening an index scan", sc.err); goto out; }
    }
    if (st->done) more = 0;
    if (st->remaining >= 0 && count > st->remaining) count = st->remaining;
    while (more && (offset > 0 || emitted < count)) {
        const uint8_t *s; size_t n;
        int r = scan_next(&sc, &st->pos, st->has_pos, st->pos_incl, &s, &n);
        if (r < 0) { kv_err(e, sc.rc, "an index scan", sc.err); goto out; }
        if (r == 0) { more = 0; break; }
        /* The scan may hand back bytes the next seek invalidates: keep a copy. */
        uint8_t *row = xmalloc(n ? n : 1);
        memcpy(row, s, n);
        int vb = value_bounds(p, row, n);
        if (vb > 0) { free(row); more = 0; break; }
        if (st->has_end) {
            int c = bytes_cmp(row, n, (uint8_t *)st->end.data, st->end.len);
            if (p->reverse) c = -c;
            if (c > 0 || (c == 0 && st->end_incl)) { free(row); more = 0; break; }
        }
        /* From here on the row counts as read: the position moves past it. */
        buf_reset(&st->pos);
        buf_append(&st->pos, row, n);
        st->has_pos = 1;
        st->pos_incl = 0;
        if (vb < 0) { free(row); continue; }
        const uint8_t *vals_end;
        if (split_suffix(p, row, n, &vals_end) < 0) { free(row); continue; }
        const uint8_t *path = vals_end;
        size_t pathn = (size_t)(row + n - vals_end);
        int kb = key_bounds(p, path, pathn);
        if (kb > 0) { free(row); more = 0; break; }
        if (kb < 0) { free(row); continue; }
        if (p->n_group) {
            const uint8_t *g = row, *gend = row + n;
            for (size_t i = 0; i < p->n_group; i++) kc_skip_value(&g, gend, p->post_dir[i]);
            size_t gn = (size_t)(g - row);
            if (st->has_group && bytes_cmp(row, gn, (uint8_t *)st->group.data, st->group.len) == 0) { free(row); continue; }
            buf_reset(&st->group);
            buf_append(&st->group, row, gn);
            st->has_group = 1;
        }
        const void *ev = NULL; size_t evn = 0;
        int need_entity = !q->keys_only && !projection;
        int check_first = p->dedup && !projection;
        if (need_entity || check_first) {
            entity_key(&ek, p, path, pathn);
            int g = kv_get(kt, ek.data, ek.len, &ev, &evn, sc.err, sizeof sc.err);
            if (g == KV_NOTFOUND) { free(row); continue; }   /* stale index row */
            if (g != KV_OK) { free(row); kv_err(e, g, "reading an entity", sc.err); goto out; }
            if (check_first) {
                ds_entity ent;
                char err[200];
                if (ds_entity_decode(ev, evn, &ent, err, sizeof err) == 0) {
                    int f = first_row(eng->ds, kt, p, &ent, row, n, e);
                    ds_entity_free(&ent);
                    if (f < 0) { free(row); goto out; }
                    if (!f) { free(row); continue; }
                }
                /* ds_index_rows read through kt: fetch the value again. */
                if (need_entity) {
                    g = kv_get(kt, ek.data, ek.len, &ev, &evn, sc.err, sizeof sc.err);
                    if (g != KV_OK) { free(row); kv_err(e, g, "reading an entity", sc.err); goto out; }
                }
            }
        }
        if (offset > 0) {
            offset--;
            skipped++;
            buf_reset(&skipped_pos);
            buf_append(&skipped_pos, row, n);
            has_skipped_pos = 1;
            free(row);
            continue;
        }
        if (need_entity) {
            pb_put_bytes(&results, 2, ev, evn);
        } else if (put_key_entity(&results, kt, p, q, path, pathn, row, (size_t)(vals_end - row)) < 0) {
            free(row);
            ds_err_set(e, DS_INTERNAL_ERROR, "an index row of kind %s is malformed", p->kind ? p->kind : "");
            goto out;
        }
        emitted++;
        free(row);
    }
    if (st->remaining >= 0) {
        st->remaining -= emitted;
        if (st->remaining <= 0) more = 0;
    }
    if (!more) st->done = 1;

    /* QueryResult. */
    if (more) {
        size_t m = pb_begin(resp, 1);
        pb_put_fixed64(resp, 1, st->id);
        pb_put_str(resp, 2, q->app);
        pb_end(resp, m);
    }
    buf_append(resp, results.data, results.len);
    pb_put_bool(resp, 3, more);
    if (q->keys_only) pb_put_bool(resp, 4, 1);
    if (compile) {
        size_t m = pb_begin(resp, 6);
        position_cursor(p, q, &st->pos, st->has_pos, st->pos_incl, resp);
        pb_end(resp, m);
    }
    if (skipped || q->offset) pb_put_int(resp, 7, skipped);
    if (projection) pb_put_bool(resp, 9, 1);
    if (compile && has_skipped_pos) {
        size_t m = pb_begin(resp, 13);
        position_cursor(p, q, &skipped_pos, 1, skipped_incl, resp);
        pb_end(resp, m);
    }
    rc = 0;
out:
    for (size_t i = 0; i < p->n_scans; i++) if (sc.c[i]) kv_cursor_close(sc.c[i]);
    buf_free(&sc.target);
    buf_free(&results); buf_free(&ek); buf_free(&skipped_pos);
    return rc;
}

static int64_t batch_size(int has_count, int64_t count, int has_limit, int64_t limit)
{
    int64_t b = has_count ? count : has_limit ? limit : DEFAULT_BATCH;
    if (b > MAX_BATCH) b = MAX_BATCH;
    if (b < 0) b = 0;
    return b;
}

/* ---- the methods ---- */

static int check_app(const char *caller, const char *app, ds_err *e)
{
    if (strcmp(caller, app) != 0) {
        ds_err_set(e, DS_BAD_REQUEST, "app %s cannot access app %s's data", caller, app);
        return -1;
    }
    return 0;
}

int dsq_run_query(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    char err[300];
    qstate *st = xcalloc(1, sizeof *st);
    st->remaining = -1;
    if (dsq_query_decode(req, n, &st->q, err, sizeof err) < 0) {
        ds_err_set(e, DS_BAD_REQUEST, "%s", err);
        free(st);
        return -1;
    }
    const dsq_query *q = &st->q;
    int rc = -1;
    kv_txn *kt = NULL;
    if (check_app(app, q->app, e) < 0) goto out;
    if (q->search_query) { ds_err_set(e, DS_BAD_REQUEST, "search queries are not supported by the datastore"); goto out; }
    st->app = xstrdup(app);
    if (random_bytes(&st->id, sizeof st->id) < 0) st->id = (uint64_t)now_us();
    for (int attempt = 0;; attempt++) {
        int r = kv_begin(ds_kv(eng->ds), 0, &kt, err, sizeof err);
        if (r != KV_OK) { kv_err(e, r, "starting a read", err); goto out; }
        int retry = 0;
        if (plan_build(eng->ds, kt, q, &st->p, &retry, e) == 0) break;
        kv_abort(kt);
        kt = NULL;
        if (!retry || attempt >= 2) goto out;
    }
    st->planned = 1;
    if (txn_note(eng->ds, q, kt, e) < 0) goto out;
    if (st->p.type == PLAN_META) { rc = meta_run(eng->ds, kt, q, resp, e); goto out; }
    if (q->has_start_cursor &&
        cursor_position(&st->p, q, q->start_cursor, &st->pos, &st->has_pos, &st->pos_incl, e) < 0) goto out;
    if (st->has_pos && !st->pos_incl && st->p.n_group) {
        /* Distinct: the group of the row before the cursor was returned. */
        const uint8_t *g = (uint8_t *)st->pos.data, *gend = g + st->pos.len;
        int ok = 1;
        for (size_t i = 0; i < st->p.n_group && ok; i++) ok = kc_skip_value(&g, gend, st->p.post_dir[i]) == 0;
        if (ok) {
            buf_append(&st->group, st->pos.data, (size_t)(g - (uint8_t *)st->pos.data));
            st->has_group = 1;
        }
    }
    if (q->has_end_cursor) {
        int has;
        if (cursor_position(&st->p, q, q->end_cursor, &st->end, &has, &st->end_incl, e) < 0) goto out;
        st->has_end = has;
        if (!has) st->done = 1;    /* ends at the very start */
    }
    if (q->has_limit) st->remaining = q->limit;
    int64_t count = batch_size(q->has_count, q->count, q->has_limit, q->limit);
    if (run_batch(eng, st, kt, count, q->offset, q->compile, resp, e) < 0) goto out;
    rc = 0;
    if (!st->done) {
        kv_abort(kt);
        park(eng, st);
        return 0;
    }
out:
    kv_abort(kt);
    state_free(st);
    return rc;
}

/* Cursor message: cursor (1, fixed64), app (2). */
static int decode_cursor_msg(pb_reader *r, uint64_t *id, char **app)
{
    uint32_t f; int wt, rc;
    const uint8_t *p; size_t n;
    int has = 0;
    while ((rc = pb_next(r, &f, &wt)) > 0) {
        if (f == 1) { if (pb_fixed64(r, wt, id) < 0) return -1; has = 1; }
        else if (f == 2) { if (pb_bytes(r, wt, &p, &n) < 0) return -1; free(*app); *app = xstrndup((const char *)p, n); }
        else if (pb_skip(r, wt, f) < 0) return -1;
    }
    return rc < 0 || r->err || !has ? -1 : 0;
}

int dsq_next(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint32_t f; int wt, rc;
    uint64_t id = 0;
    char *capp = NULL;
    int has_cursor = 0, has_count = 0, compile = 0;
    int32_t count = 0, offset = 0;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) {
            pb_reader sub;
            if (pb_sub(&r, wt, &sub) < 0 || decode_cursor_msg(&sub, &id, &capp) < 0) { rc = -1; break; }
            has_cursor = 1;
        } else if (f == 2) { if (pb_int32(&r, wt, &count) < 0) break; has_count = 1; }
        else if (f == 4) { if (pb_int32(&r, wt, &offset) < 0) break; }
        else if (f == 3) { if (pb_bool(&r, wt, &compile) < 0) break; }
        else if (pb_skip(&r, wt, f) < 0) break;
    }
    free(capp);
    if (rc < 0 || r.err || !has_cursor) { ds_err_set(e, DS_BAD_REQUEST, "the NextRequest message is malformed"); return -1; }
    if (count < 0 || offset < 0) { ds_err_set(e, DS_BAD_REQUEST, "the NextRequest count and offset must not be negative"); return -1; }
    qstate *st = take(eng, id, app);
    if (!st) { ds_err_set(e, DS_BAD_REQUEST, "Cursor %llu not found; it may have expired or been deleted", (unsigned long long)id); return -1; }
    char err[256];
    kv_txn *kt = NULL;
    int ok = -1;
    int r2 = kv_begin(ds_kv(eng->ds), 0, &kt, err, sizeof err);
    if (r2 != KV_OK) { kv_err(e, r2, "starting a read", err); goto out; }
    if (txn_note(eng->ds, &st->q, kt, e) < 0) goto out;
    int64_t bs = batch_size(has_count, count, st->remaining >= 0, st->remaining);
    if (run_batch(eng, st, kt, bs, offset, compile || st->q.compile, resp, e) < 0) goto out;
    ok = 0;
out:
    kv_abort(kt);
    if (ok == 0 && !st->done) park(eng, st);
    else state_free(st);
    return ok;
}

int dsq_delete_cursor(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    pb_reader r;
    pb_reader_init(&r, req, n);
    uint64_t id = 0;
    char *capp = NULL;
    if (decode_cursor_msg(&r, &id, &capp) < 0) { free(capp); ds_err_set(e, DS_BAD_REQUEST, "the Cursor message is malformed"); return -1; }
    free(capp);
    state_free(take(eng, id, app));
    return 0;
}

int dsq_get_indices(dsq_engine *eng, const char *app, const uint8_t *req, size_t n, buf *resp, ds_err *e)
{
    char err[256];
    kv_txn *kt = NULL;
    int r = kv_begin(ds_kv(eng->ds), 0, &kt, err, sizeof err);
    if (r != KV_OK) { kv_err(e, r, "starting a read", err); return -1; }
    dsq_index_list l;
    int rc = dsq_read_indexes(kt, app, &l, e);
    kv_abort(kt);
    if (rc < 0) return -1;
    for (size_t i = 0; i < l.n; i++) {
        size_t m = pb_begin(resp, 1);
        dsq_index_encode(&l.v[i], app, resp);
        pb_end(resp, m);
    }
    dsq_index_list_free(&l);
    return 0;
}

int dsq_configure_app(datastore *ds, const char *app, const char *app_dir, int require_indexes, ds_err *e)
{
    char err[300];
    dsq_index_list l = {0};
    if (app_dir && dsq_indexyaml_load(app_dir, &l, err, sizeof err) < 0) {
        ds_err_set(e, DS_BAD_REQUEST, "%s", err);
        return -1;
    }
    int rc = -1;
    for (int attempt = 0; require_indexes >= 0 && attempt < 10; attempt++) {
        kv_txn *t = NULL;
        int r = kv_begin(ds_kv(ds), 1, &t, err, sizeof err);
        if (r != KV_OK) { kv_err(e, r, "starting a write", err); goto out; }
        buf k = BUF_INIT;
        kc_meta_prefix(&k, ds_cstr(app), "indexmode");
        const char *mode = require_indexes ? "strict" : "auto";
        r = kv_put(t, k.data, k.len, mode, strlen(mode), err, sizeof err);
        buf_free(&k);
        if (r == KV_OK) r = kv_commit(t, err, sizeof err);
        else kv_abort(t);
        if (r == KV_OK) break;
        if (r != KV_CONFLICT || attempt == 9) { kv_err(e, r, "saving the index mode", err); goto out; }
    }
    for (size_t i = 0; i < l.n; i++)
        if (dsq_create_index(ds, app, &l.v[i], e) < 0) goto out;
    rc = 0;
out:
    dsq_index_list_free(&l);
    return rc;
}

int dsq_configure_home(const char *home, const char *app, const char *app_dir, int require_indexes,
                       char *err, size_t errlen)
{
    datastore *ds = ds_open(home, err, errlen);
    if (!ds) return -1;
    ds_err e = {0};
    int rc = dsq_configure_app(ds, app, app_dir, require_indexes, &e);
    ds_close(ds);
    if (rc < 0) set_err(err, errlen, "%s", e.msg);
    return rc;
}
