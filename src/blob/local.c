/* local.c - the blob store's local-directory driver.
 *
 * Layout under the store's directory DIR (any POSIX file system; a shared
 * mount such as NFS lets several nodes use one store):
 *
 *   DIR/<app>/<k0k1>/<key>      a committed blob (k0k1: its key's first two
 *                               characters, so no directory grows huge)
 *   DIR/<app>/.tmp/<key>.<rnd>  a blob being written
 *
 * A writer appends to its temporary file (starting writeback every 8 MiB,
 * so the final flush is short); commit fsyncs it, link()s it to
 * its final name (link fails if the key exists, so a blob is never
 * replaced), fsyncs the directory and unlinks the temporary name. Crash
 * before commit: only a .tmp file is left (removed when the store opens and
 * it is older than a day). Readers hold an open descriptor, so a blob
 * deleted while being read stays readable until closed. */
#include "blob/blobstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/util.h"

typedef struct {
    blob_store base;
    char *dir;
} local_store;

#define WRITEBACK_STEP (8u << 20)   /* start writing back every 8 MiB */

typedef struct {
    blob_writer base;
    int fd;
    uint64_t flushed;              /* bytes whose writeback was started */
    char *tmp, *final, *subdir;
} local_writer;

typedef struct {
    blob_reader base;
    int fd;
} local_reader;

static char *final_path(local_store *ls, const char *app, const char *key)
{
    return xasprintf("%s/%s/%.2s/%s", ls->dir, app, key, key);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

static int l_create(blob_store *s, const char *app, const char *key, blob_writer **out, char *err, size_t errlen)
{
    local_store *ls = (local_store *)s;
    char *final = final_path(ls, app, key);
    struct stat st;
    if (stat(final, &st) == 0) {
        set_err(err, errlen, "a blob with key %s already exists", key);
        free(final);
        return BLOB_ERR;
    }
    char *tmpdir = xasprintf("%s/%s/.tmp", ls->dir, app);
    char *subdir = xasprintf("%s/%s/%.2s", ls->dir, app, key);
    if (mkdir_p(tmpdir, 0700) < 0 || mkdir_p(subdir, 0700) < 0) {
        set_err(err, errlen, "cannot create the blob directory under %s: %s", ls->dir, strerror(errno));
        free(tmpdir); free(subdir); free(final);
        return BLOB_ERR;
    }
    uint32_t rnd = 0;
    random_bytes(&rnd, sizeof rnd);
    char *tmp = xasprintf("%s/%s.%08x", tmpdir, key, rnd);
    free(tmpdir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, errlen, "cannot create the blob file %s: %s", tmp, strerror(errno));
        free(tmp); free(subdir); free(final);
        return BLOB_ERR;
    }
    local_writer *w = xcalloc(1, sizeof *w);
    w->fd = fd;
    w->tmp = tmp;
    w->final = final;
    w->subdir = subdir;
    *out = &w->base;
    return BLOB_OK;
}

static int l_write(blob_writer *bw, const void *p, size_t n, char *err, size_t errlen)
{
    local_writer *w = (local_writer *)bw;
    const char *c = p;
    while (n) {
        ssize_t k = write(w->fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            set_err(err, errlen, "cannot write the blob file %s: %s", w->tmp, strerror(errno));
            return BLOB_ERR;
        }
        c += k;
        n -= (size_t)k;
    }
    /* Start writeback as the blob grows, so that commit's fsync has little
     * left to wait for and a large upload does not pile up dirty pages. */
    uint64_t end = w->base.written + (uint64_t)(c - (const char *)p);
    if (end - w->flushed >= WRITEBACK_STEP) {
        sync_file_range(w->fd, (off_t)w->flushed, (off_t)(end - w->flushed), SYNC_FILE_RANGE_WRITE);
        w->flushed = end;
    }
    return BLOB_OK;
}

static void writer_free(local_writer *w)
{
    if (w->fd >= 0) close(w->fd);
    free(w->tmp);
    free(w->final);
    free(w->subdir);
    free(w);
}

static int l_commit(blob_writer *bw, char *err, size_t errlen)
{
    local_writer *w = (local_writer *)bw;
    int rc = BLOB_OK;
    if (fsync(w->fd) < 0) {
        set_err(err, errlen, "cannot flush the blob file %s: %s", w->tmp, strerror(errno));
        rc = BLOB_ERR;
    } else if (link(w->tmp, w->final) < 0) {
        if (errno == EEXIST) set_err(err, errlen, "a blob with this key already exists (%s)", w->final);
        else set_err(err, errlen, "cannot store the blob as %s: %s", w->final, strerror(errno));
        rc = BLOB_ERR;
    } else if (fsync_dir(w->subdir) < 0) {
        set_err(err, errlen, "cannot flush the blob directory %s: %s", w->subdir, strerror(errno));
        unlink(w->final);
        rc = BLOB_ERR;
    }
    unlink(w->tmp);
    writer_free(w);
    return rc;
}

static void l_abort(blob_writer *bw)
{
    local_writer *w = (local_writer *)bw;
    unlink(w->tmp);
    writer_free(w);
}

static int l_open(blob_store *s, const char *app, const char *key, blob_reader **out, char *err, size_t errlen)
{
    local_store *ls = (local_store *)s;
    char *path = final_path(ls, app, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) { set_err(err, errlen, "no blob has the key %s", key); free(path); return BLOB_NOT_FOUND; }
        set_err(err, errlen, "cannot open the blob file %s: %s", path, strerror(e));
        free(path);
        return BLOB_ERR;
    }
    free(path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        set_err(err, errlen, "cannot read the size of blob %s: %s", key, strerror(errno));
        close(fd);
        return BLOB_ERR;
    }
    local_reader *r = xcalloc(1, sizeof *r);
    r->fd = fd;
    r->base.size = (uint64_t)st.st_size;
    *out = &r->base;
    return BLOB_OK;
}

static ssize_t l_pread(blob_reader *br, void *p, size_t n, uint64_t off, char *err, size_t errlen)
{
    local_reader *r = (local_reader *)br;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(r->fd, (char *)p + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) { set_err(err, errlen, "cannot read a blob: %s", strerror(errno)); return -1; }
        if (k == 0) break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

static int l_fd(blob_reader *br) { return ((local_reader *)br)->fd; }

static void l_close(blob_reader *br)
{
    local_reader *r = (local_reader *)br;
    close(r->fd);
    free(r);
}

static int l_size(blob_store *s, const char *app, const char *key, uint64_t *size, char *err, size_t errlen)
{
    char *path = final_path((local_store *)s, app, key);
    struct stat st;
    int r = stat(path, &st);
    int e = errno;
    free(path);
    if (r < 0) {
        if (e == ENOENT || e == ENOTDIR) { set_err(err, errlen, "no blob has the key %s", key); return BLOB_NOT_FOUND; }
        set_err(err, errlen, "cannot read the size of blob %s: %s", key, strerror(e));
        return BLOB_ERR;
    }
    *size = (uint64_t)st.st_size;
    return BLOB_OK;
}

static int l_remove(blob_store *s, const char *app, const char *key, char *err, size_t errlen)
{
    char *path = final_path((local_store *)s, app, key);
    int r = unlink(path);
    int e = errno;
    free(path);
    if (r < 0) {
        if (e == ENOENT || e == ENOTDIR) { set_err(err, errlen, "no blob has the key %s", key); return BLOB_NOT_FOUND; }
        set_err(err, errlen, "cannot delete blob %s: %s", key, strerror(e));
        return BLOB_ERR;
    }
    return BLOB_OK;
}

static void l_free(blob_store *s)
{
    local_store *ls = (local_store *)s;
    free(ls->dir);
    free(ls);
}

static const blob_ops local_ops = {
    .name = "local", .create = l_create, .write = l_write, .commit = l_commit, .abort = l_abort,
    .open = l_open, .pread = l_pread, .fd = l_fd, .close = l_close, .size = l_size,
    .remove = l_remove, .free = l_free,
};

/* Temporary files of writers that died (a crash, kill -9) more than a day ago. */
static void sweep_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    time_t cutoff = time(NULL) - 86400;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *tmpdir = xasprintf("%s/%s/.tmp", dir, de->d_name);
        DIR *t = opendir(tmpdir);
        if (t) {
            struct dirent *te;
            while ((te = readdir(t))) {
                if (te->d_name[0] == '.') continue;
                struct stat st;
                if (fstatat(dirfd(t), te->d_name, &st, 0) == 0 && S_ISREG(st.st_mode) && st.st_mtime < cutoff)
                    unlinkat(dirfd(t), te->d_name, 0);
            }
            closedir(t);
        }
        free(tmpdir);
    }
    closedir(d);
}

blob_store *blob_store_local(const char *dir, char *err, size_t errlen)
{
    if (!dir || !*dir) { set_err(err, errlen, "no blob directory was given"); return NULL; }
    if (mkdir_p(dir, 0700) < 0) {
        set_err(err, errlen, "cannot create the blob directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (access(dir, R_OK | W_OK | X_OK) < 0) {
        set_err(err, errlen, "the blob directory %s is not writable: %s", dir, strerror(errno));
        return NULL;
    }
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        set_err(err, errlen, "cannot resolve the blob directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    sweep_stale(real);
    local_store *ls = xcalloc(1, sizeof *ls);
    ls->base.ops = &local_ops;
    ls->dir = xstrdup(real);
    return &ls->base;
}
