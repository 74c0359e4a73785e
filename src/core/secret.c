/* secret.c - per-installation secret keys. See secret.h. */
#include "core/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/util.h"

#define SECRET_MAX 64

/* 0 loaded; -1 errno set (ENOENT: missing); -2 err set. */
static int read_key(const char *path, const char *what, uint8_t *key, size_t keylen, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    struct stat st;
    char text[4 * SECRET_MAX];
    ssize_t n = -1;
    int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (regular) n = read(fd, text, sizeof text);
    int e = errno;
    close(fd);
    if (!regular) { set_err(err, errlen, "%s %s is not a regular file", what, path); errno = EINVAL; return -2; }
    if (n < 0) { set_err(err, errlen, "cannot read %s %s: %s", what, path, strerror(e)); errno = e; return -2; }
    if (st.st_mode & 077) {
        set_err(err, errlen, "%s %s may be read by other users (mode %03o); run chmod 600 on it",
                what, path, (unsigned)(st.st_mode & 0777));
        errno = EACCES;
        return -2;
    }
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ')) n--;
    if ((size_t)n != 2 * keylen || hex_decode(text, (size_t)n, key) < 0) {
        set_err(err, errlen, "%s %s does not hold %zu hex digits", what, path, 2 * keylen);
        errno = EINVAL;
        return -2;
    }
    explicit_bzero(text, sizeof text);
    return 0;
}

int secret_key_load(const char *home, const char *name, const char *what,
                    uint8_t *key, size_t keylen, char *err, size_t errlen)
{
    char dir[4096], path[4400], tmp[4500];
    if (keylen == 0 || keylen > SECRET_MAX) { set_err(err, errlen, "%s: unsupported key length %zu", what, keylen); return -1; }
    if (!home || !*home) { set_err(err, errlen, "no Cyclozzo home directory was given for the %s", what); return -1; }
    snprintf(dir, sizeof dir, "%s/secrets", home);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int r = read_key(path, what, key, keylen, err, errlen);
    if (r == 0) return 0;
    if (r == -2) return -1;
    if (errno != ENOENT) { set_err(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno)); return -1; }

    if (mkdir_p(dir, 0700) < 0) { set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno)); return -1; }
    uint8_t raw[SECRET_MAX];
    uint32_t salt;
    if (random_bytes(raw, keylen) < 0 || random_bytes(&salt, sizeof salt) < 0) {
        set_err(err, errlen, "cannot get random bytes for the %s: %s", what, strerror(errno));
        return -1;
    }
    char hex[2 * SECRET_MAX + 2];
    hex_encode(raw, keylen, hex);
    explicit_bzero(raw, sizeof raw);
    hex[2 * keylen] = '\n';
    hex[2 * keylen + 1] = 0;
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.%08x", dir, name, (int)getpid(), salt);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) { set_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno)); return -1; }
    size_t len = 2 * keylen + 1;
    int ok = write(fd, hex, len) == (ssize_t)len && fchmod(fd, 0600) == 0 && fsync(fd) == 0;
    int e = errno;
    if (close(fd) < 0) ok = 0;
    explicit_bzero(hex, sizeof hex);
    if (!ok) { unlink(tmp); set_err(err, errlen, "cannot write %s: %s", tmp, strerror(e)); return -1; }
    /* link() fails if a concurrent creator won: then everyone uses its key. */
    int linked = link(tmp, path);
    e = errno;
    unlink(tmp);
    if (linked < 0 && e != EEXIST) { set_err(err, errlen, "cannot create %s %s: %s", what, path, strerror(e)); return -1; }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    r = read_key(path, what, key, keylen, err, errlen);
    if (r == -1) { set_err(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno)); return -1; }
    return r == 0 ? 0 : -1;
}
