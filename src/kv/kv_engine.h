/* kv_engine.h - private: the operations table every kv engine implements.
 * Only kv.c and the engines include this; callers use kv.h. */
#ifndef CZ_KV_ENGINE_H
#define CZ_KV_ENGINE_H

#include "kv/kv.h"

typedef struct kv_ops {
    const char *name;
    void (*close)(kv_engine *e);
    int  (*begin)(kv_engine *e, int write, kv_txn **out, char *err, size_t errlen);
    int  (*commit)(kv_txn *t, char *err, size_t errlen);
    void (*abort)(kv_txn *t);
    int  (*get)(kv_txn *t, const void *k, size_t kn, const void **v, size_t *vn, char *err, size_t errlen);
    int  (*put)(kv_txn *t, const void *k, size_t kn, const void *v, size_t vn, char *err, size_t errlen);
    int  (*del)(kv_txn *t, const void *k, size_t kn, char *err, size_t errlen);
    int  (*cursor_open)(kv_txn *t, kv_cursor **out, char *err, size_t errlen);
    void (*cursor_close)(kv_cursor *c);
    int  (*seek)(kv_cursor *c, const void *k, size_t kn, int dir, char *err, size_t errlen);
    int  (*step)(kv_cursor *c, int dir, char *err, size_t errlen);
    void (*cursor_get)(kv_cursor *c, const void **k, size_t *kn, const void **v, size_t *vn);
} kv_ops;

/* Engines embed these as their first member. */
struct kv_engine { const kv_ops *ops; };
struct kv_txn    { kv_engine *e; };
struct kv_cursor { kv_txn *t; };

kv_engine *kv_lmdb_open(const char *dir, char *err, size_t errlen);
kv_engine *kv_postgres_open(const char *conninfo, char *err, size_t errlen);

#endif
