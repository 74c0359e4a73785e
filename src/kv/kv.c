/* kv.c - engine selection and dispatch for the kv interface (kv.h).
 *
 * kv_open() parses the engine spec and hands over to the engine's open
 * function; every other call goes through the engine's kv_ops table. Keys
 * longer than KV_MAX_KEY are refused here so all engines behave alike. */
#include "kv/kv_engine.h"

#include <string.h>
#include "core/util.h"

kv_engine *kv_open(const char *spec, char *err, size_t errlen)
{
    if (!spec || !*spec) { set_err(err, errlen, "no datastore engine was given"); return NULL; }
    if (!strncmp(spec, "lmdb:", 5)) return kv_lmdb_open(spec + 5, err, errlen);
    /* libpq URIs as they are; "postgres:KEY=VALUE ..." for keyword form. */
    if (!strncmp(spec, "postgres://", 11) || !strncmp(spec, "postgresql://", 13))
        return kv_postgres_open(spec, err, errlen);
    if (!strncmp(spec, "postgres:", 9)) return kv_postgres_open(spec + 9, err, errlen);
    return kv_lmdb_open(spec, err, errlen);
}

void kv_close(kv_engine *e) { if (e) e->ops->close(e); }
const char *kv_engine_name(const kv_engine *e) { return e->ops->name; }

int kv_begin(kv_engine *e, int write, kv_txn **out, char *err, size_t errlen)
{
    *out = NULL;
    return e->ops->begin(e, write, out, err, errlen);
}
int kv_commit(kv_txn *t, char *err, size_t errlen) { return t->e->ops->commit(t, err, errlen); }
void kv_abort(kv_txn *t) { if (t) t->e->ops->abort(t); }

static int key_ok(const void *k, size_t kn, char *err, size_t errlen)
{
    if (kn == 0 || !k) { set_err(err, errlen, "an empty key was given to the datastore engine"); return 0; }
    if (kn > KV_MAX_KEY) {
        set_err(err, errlen, "a datastore row key of %zu bytes exceeds the engine's limit of %d bytes",
                kn, KV_MAX_KEY);
        return 0;
    }
    return 1;
}

int kv_get(kv_txn *t, const void *k, size_t kn, const void **v, size_t *vn, char *err, size_t errlen)
{
    if (!key_ok(k, kn, err, errlen)) return KV_ERROR;
    return t->e->ops->get(t, k, kn, v, vn, err, errlen);
}
int kv_put(kv_txn *t, const void *k, size_t kn, const void *v, size_t vn, char *err, size_t errlen)
{
    if (!key_ok(k, kn, err, errlen)) return KV_ERROR;
    return t->e->ops->put(t, k, kn, v, vn, err, errlen);
}
int kv_del(kv_txn *t, const void *k, size_t kn, char *err, size_t errlen)
{
    if (!key_ok(k, kn, err, errlen)) return KV_ERROR;
    return t->e->ops->del(t, k, kn, err, errlen);
}

int kv_cursor_open(kv_txn *t, kv_cursor **out, char *err, size_t errlen)
{
    *out = NULL;
    return t->e->ops->cursor_open(t, out, err, errlen);
}
void kv_cursor_close(kv_cursor *c) { if (c) c->t->e->ops->cursor_close(c); }
int kv_seek(kv_cursor *c, const void *k, size_t kn, int dir, char *err, size_t errlen)
{
    if (k && !key_ok(k, kn, err, errlen)) return KV_ERROR;
    return c->t->e->ops->seek(c, k, kn, dir, err, errlen);
}
int kv_next(kv_cursor *c, char *err, size_t errlen) { return c->t->e->ops->step(c, KV_FWD, err, errlen); }
int kv_prev(kv_cursor *c, char *err, size_t errlen) { return c->t->e->ops->step(c, KV_BWD, err, errlen); }
void kv_cursor_get(kv_cursor *c, const void **k, size_t *kn, const void **v, size_t *vn)
{
    c->t->e->ops->cursor_get(c, k, kn, v, vn);
}

size_t kv_prefix_end(const void *prefix, size_t n, void *out)
{
    const uint8_t *p = prefix;
    uint8_t *o = out;
    while (n > 0 && p[n - 1] == 0xff) n--;
    if (n == 0) return 0;
    memcpy(o, p, n);
    o[n - 1]++;
    return n;
}
