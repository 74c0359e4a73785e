/* outbox.c - the durable mail outbox (outbox.h).
 *
 * Writing: make the app's directory (0700), pick an id from the UTC time
 * and 4 random bytes, write ID.env then ID.eml with write_file_atomic.
 * Listing: read the directory, keep names ending in .eml whose .env is
 * there, sort them (ids sort by time), and parse each .env's lines. */
#include "api/outbox.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/buf.h"
#include "core/util.h"

int outbox_app_ok(const char *app)
{
    if (!app || !*app || strlen(app) > 100 || strstr(app, "..")) return 0;
    for (const char *p = app; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static int id_ok(const char *id)
{
    if (!id || !*id || strlen(id) > OUTBOX_ID_MAX) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == 'T' || *p == 'Z' || *p == '-'))
            return 0;
    return 1;
}

static char *app_dir(const char *home, const char *app)
{
    return xasprintf("%s/mail/outbox/%s", home, app);
}

/* One line value: CR/LF become spaces. */
static void put_line(buf *b, const char *key, const char *v)
{
    buf_puts(b, key);
    buf_putc(b, ' ');
    for (const char *p = v ? v : ""; *p; p++) buf_putc(b, *p == '\n' || *p == '\r' ? ' ' : *p);
    buf_putc(b, '\n');
}

int outbox_put(const char *home, const char *app, const char *from, char **rcpt, size_t nrcpt,
               const char *subject, const char *status, const void *msg, size_t len,
               char id_out[OUTBOX_ID_MAX + 1], char *err, size_t errlen)
{
    if (!outbox_app_ok(app)) { set_err(err, errlen, "\"%s\" is not a valid app name for the outbox", app); return -1; }
    char *dir = app_dir(home, app);
    if (mkdir_p(dir, 0700) < 0) {
        set_err(err, errlen, "cannot create the mail outbox %s: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    uint8_t r[4];
    char hex[9];
    if (random_bytes(r, sizeof r) < 0) memset(r, 0, sizeof r);
    hex_encode(r, sizeof r, hex);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(id_out, OUTBOX_ID_MAX + 1, "%.16s-%s", stamp, hex);
    buf env = BUF_INIT;
    put_line(&env, "from", from);
    for (size_t i = 0; i < nrcpt; i++) put_line(&env, "to", rcpt[i]);
    put_line(&env, "subject", subject);
    put_line(&env, "status", status);
    char *pe = xasprintf("%s/%s.env", dir, id_out), *pm = xasprintf("%s/%s.eml", dir, id_out);
    int rc = 0;
    if (write_file_atomic(pe, env.data, env.len, 0600) < 0 || write_file_atomic(pm, msg, len, 0600) < 0) {
        set_err(err, errlen, "cannot write to the mail outbox %s: %s", dir, strerror(errno));
        rc = -1;
    }
    buf_free(&env);
    free(pe); free(pm); free(dir);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void parse_env(char *txt, outbox_entry *e)
{
    buf to = BUF_INIT;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        char *sp = strchr(line, ' ');
        const char *v = sp ? sp + 1 : "";
        if (sp) *sp = 0;
        if (!strcmp(line, "from")) { free(e->from); e->from = xstrdup(v); }
        else if (!strcmp(line, "subject")) { free(e->subject); e->subject = xstrdup(v); }
        else if (!strcmp(line, "status")) { free(e->status); e->status = xstrdup(v); }
        else if (!strcmp(line, "to")) { if (to.len) buf_puts(&to, ", "); buf_puts(&to, v); }
    }
    e->to = xstrdup(to.len ? buf_cstr(&to) : "");
    buf_free(&to);
}

int outbox_list(const char *home, const char *app, void (*fn)(const outbox_entry *e, void *arg), void *arg,
                char *err, size_t errlen)
{
    if (!outbox_app_ok(app)) { set_err(err, errlen, "\"%s\" is not a valid app name", app); return -1; }
    char *dir = app_dir(home, app);
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        free(dir);
        if (e == ENOENT) return 0;
        set_err(err, errlen, "cannot read the mail outbox of %s: %s", app, strerror(e));
        return -1;
    }
    char **ids = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".eml")) continue;
        char *id = xstrndup(de->d_name, l - 4);
        if (!id_ok(id)) { free(id); continue; }
        ids = xrealloc(ids, (n + 1) * sizeof *ids);
        ids[n++] = id;
    }
    closedir(d);
    if (n) qsort(ids, n, sizeof *ids, cmp_str);
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        char *pe = xasprintf("%s/%s.env", dir, ids[i]), *pm = xasprintf("%s/%s.eml", dir, ids[i]);
        size_t len;
        char *txt = read_file(pe, &len);
        struct stat sb;
        if (txt && stat(pm, &sb) == 0) {
            outbox_entry e = {0};
            snprintf(e.id, sizeof e.id, "%s", ids[i]);
            e.size = (int64_t)sb.st_size;
            parse_env(txt, &e);
            if (fn) fn(&e, arg);
            count++;
            free(e.from); free(e.to); free(e.subject); free(e.status);
        }
        free(txt); free(pe); free(pm); free(ids[i]);
    }
    free(ids);
    free(dir);
    return count;
}

char *outbox_read(const char *home, const char *app, const char *id, size_t *len, char *err, size_t errlen)
{
    if (!outbox_app_ok(app)) { set_err(err, errlen, "\"%s\" is not a valid app name", app); return NULL; }
    if (!id_ok(id)) { set_err(err, errlen, "\"%s\" is not a message id (see cyclozzo --mail-outbox %s)", id, app); return NULL; }
    char *dir = app_dir(home, app);
    char *pm = xasprintf("%s/%s.eml", dir, id);
    char *txt = read_file(pm, len);
    if (!txt) set_err(err, errlen, "the outbox of %s has no message %s", app, id);
    free(pm);
    free(dir);
    return txt;
}
