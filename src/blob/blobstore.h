/* blobstore.h - Cyclozzo's blob store: large immutable byte strings (the
 * Blobstore API's blobs, images' sources) kept outside the datastore.
 *
 * A blob belongs to an app and is named by a blob key (BLOB_KEY_MAX bytes at
 * most, characters [A-Za-z0-9_-], made by blob_key_new). It is written once,
 * streaming (create, write..., commit), and becomes visible only at commit,
 * durably; until then it can be aborted and leaves nothing behind. Readers
 * read any byte range (pread semantics) of a committed blob; delete removes
 * it. Blobs are never modified in place.
 *
 * The store is a handle over a driver (blob_ops): "local" keeps each blob as
 * a file in a directory tree (any POSIX directory, so a shared mount serves
 * several nodes); an HDFS driver plugs in with the same ops. Every function
 * returns BLOB_OK (0), BLOB_NOT_FOUND, or BLOB_ERR with one sentence in err.
 * Handles are safe to use from several threads at once; a single writer or
 * reader is used by one thread at a time. */
#ifndef CZ_BLOBSTORE_H
#define CZ_BLOBSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BLOB_KEY_MAX 128       /* longest key, without the NUL */

enum { BLOB_OK = 0, BLOB_ERR = -1, BLOB_NOT_FOUND = -2 };

typedef struct blob_store blob_store;
typedef struct blob_writer blob_writer;
typedef struct blob_reader blob_reader;

/* A driver's operations. Drivers embed `blob_store`, `blob_writer` and
 * `blob_reader` as the first member of their own structs. */
typedef struct blob_ops {
    const char *name;
    int  (*create)(blob_store *s, const char *app, const char *key, blob_writer **w, char *err, size_t errlen);
    int  (*write)(blob_writer *w, const void *p, size_t n, char *err, size_t errlen);
    int  (*commit)(blob_writer *w, char *err, size_t errlen);   /* frees w, even on failure */
    void (*abort)(blob_writer *w);                              /* frees w */
    int  (*open)(blob_store *s, const char *app, const char *key, blob_reader **r, char *err, size_t errlen);
    /* Reads up to n bytes at off; returns the count (0 at or past the end) or -1. */
    ssize_t (*pread)(blob_reader *r, void *p, size_t n, uint64_t off, char *err, size_t errlen);
    int  (*fd)(blob_reader *r);                                 /* a file descriptor for sendfile, or -1 */
    void (*close)(blob_reader *r);                              /* frees r */
    int  (*size)(blob_store *s, const char *app, const char *key, uint64_t *size, char *err, size_t errlen);
    int  (*remove)(blob_store *s, const char *app, const char *key, char *err, size_t errlen);
    void (*free)(blob_store *s);
} blob_ops;

struct blob_store  { const blob_ops *ops; };
struct blob_writer { blob_store *s; uint64_t written; };
struct blob_reader { blob_store *s; uint64_t size; };

/* Open a store from a location: a directory path (or "file://DIR") for the
 * local driver. NULL with err when it cannot be used (not creatable, not
 * writable, unknown scheme). */
blob_store *blob_store_open(const char *location, char *err, size_t errlen);
/* The local driver over directory dir (created if missing). */
blob_store *blob_store_local(const char *dir, char *err, size_t errlen);
void blob_store_free(blob_store *s);
const char *blob_store_driver(const blob_store *s);

/* A fresh random blob key into out (BLOB_KEY_MAX + 1 bytes). */
void blob_key_new(char *out);
/* 1 if k[0, n) is a well-formed blob key (length 1..BLOB_KEY_MAX, [A-Za-z0-9_-]). */
int  blob_key_valid(const char *k, size_t n);
/* 1 if app is usable as a blob owner (1..200 bytes, no '/', not "." or ".."). */
int  blob_app_valid(const char *app);

/* Writing. create fails if the key exists (committed) or app/key are invalid. */
int  blob_create(blob_store *s, const char *app, const char *key, blob_writer **w, char *err, size_t errlen);
int  blob_write(blob_writer *w, const void *p, size_t n, char *err, size_t errlen);
int  blob_commit(blob_writer *w, char *err, size_t errlen);
void blob_abort(blob_writer *w);
static inline uint64_t blob_written(const blob_writer *w) { return w->written; }

/* Reading. */
int  blob_open(blob_store *s, const char *app, const char *key, blob_reader **r, char *err, size_t errlen);
static inline uint64_t blob_reader_size(const blob_reader *r) { return r->size; }
ssize_t blob_pread(blob_reader *r, void *p, size_t n, uint64_t off, char *err, size_t errlen);
int  blob_reader_fd(blob_reader *r);
void blob_close(blob_reader *r);

/* Size of a committed blob, and deletion (BLOB_NOT_FOUND when absent). */
int  blob_size(blob_store *s, const char *app, const char *key, uint64_t *size, char *err, size_t errlen);
int  blob_delete(blob_store *s, const char *app, const char *key, char *err, size_t errlen);

#endif
