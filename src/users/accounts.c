/* accounts.c - local user accounts, password hashes and stable user ids.
 * See accounts.h.
 *
 * The accounts file is small and read whole on each use (a sign-in, a CLI
 * command). Changes run under an exclusive flock on users/accounts.lock:
 * read, edit the lines in memory, write_file_atomic (0600). Verification of
 * an unknown email still runs scrypt over a fixed dummy hash, so a failed
 * sign-in takes the same time whether or not the account exists. */
#include "users/accounts.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/buf.h"
#include "core/secret.h"
#include "core/util.h"

#define SCRYPT_LOG_N   15
#define SCRYPT_R       8
#define SCRYPT_P       1
#define SCRYPT_MAXMEM  (256ull << 20)
#define SALT_LEN       16
#define HASH_LEN       32

/* ---- emails ---- */

static int local_ok(int ch) { return isalnum(ch) || ch == '.' || ch == '_' || ch == '%' || ch == '+' || ch == '-'; }
static int domain_ok(int ch) { return isalnum(ch) || ch == '.' || ch == '-'; }

int users_email_normalise(const char *in, char *out, char *err, size_t errlen)
{
    size_t n = in ? strlen(in) : 0;
    if (n == 0) { set_err(err, errlen, "the email address is empty"); return -1; }
    if (n > USERS_EMAIL_MAX) { set_err(err, errlen, "the email address is longer than %d characters", USERS_EMAIL_MAX); return -1; }
    const char *at = strchr(in, '@');
    if (!at || strchr(at + 1, '@') || at == in || !at[1]) {
        set_err(err, errlen, "\"%.80s\" is not an email address (it needs the form name@example.com)", in);
        return -1;
    }
    for (const char *p = in; p < at; p++)
        if (!local_ok((unsigned char)*p)) {
            set_err(err, errlen, "the email address \"%.80s\" has a character not allowed before the @", in);
            return -1;
        }
    const char *d = at + 1;
    size_t dl = strlen(d);
    if (!strchr(d, '.') || d[0] == '.' || d[dl - 1] == '.' || d[0] == '-' || strstr(d, "..")) {
        set_err(err, errlen, "the email address \"%.80s\" needs a domain such as example.com after the @", in);
        return -1;
    }
    for (const char *p = d; *p; p++)
        if (!domain_ok((unsigned char)*p)) {
            set_err(err, errlen, "the email address \"%.80s\" has a character not allowed in its domain", in);
            return -1;
        }
    for (size_t i = 0; i <= n; i++) out[i] = (char)tolower((unsigned char)in[i]);
    return 0;
}

/* ---- keys and ids ---- */

int users_key_load(const char *home, const char *name, uint8_t key[USERS_KEY_LEN], char *err, size_t errlen)
{
    return secret_key_load(home, name, "key file", key, USERS_KEY_LEN, err, errlen);
}

void users_user_id(const uint8_t key[USERS_KEY_LEN], const char *email, char out[USERS_ID_LEN + 1])
{
    uint8_t mac[32];
    unsigned int ml = sizeof mac;
    buf b = BUF_INIT;
    buf_printf(&b, "cyclozzo-user-id:%s", email);
    HMAC(EVP_sha256(), key, USERS_KEY_LEN, (const unsigned char *)buf_rp(&b), buf_unread(&b), mac, &ml);
    buf_free(&b);
    uint64_t a = 0, b2 = 0;
    for (int i = 0; i < 8; i++) { a = a << 8 | mac[i]; b2 = b2 << 8 | mac[8 + i]; }
    /* "1" and 20 digits: always 21 digits, as App Engine's ids are. */
    snprintf(out, USERS_ID_LEN + 1, "1%010llu%010llu", (unsigned long long)(a % 10000000000ull),
             (unsigned long long)(b2 % 10000000000ull));
}

/* ---- password hashes ---- */

static int scrypt_raw(const char *pw, const uint8_t *salt, size_t saltlen, uint64_t n, uint64_t r, uint64_t p,
                      uint8_t out[HASH_LEN])
{
    return EVP_PBE_scrypt(pw, strlen(pw), salt, saltlen, n, r, p, SCRYPT_MAXMEM, out, HASH_LEN) == 1 ? 0 : -1;
}

char *users_hash_password(const char *password, char *err, size_t errlen)
{
    size_t pl = strlen(password);
    if (pl < USERS_PASSWORD_MIN) { set_err(err, errlen, "the password is shorter than %d characters", USERS_PASSWORD_MIN); return NULL; }
    if (pl > USERS_PASSWORD_MAX) { set_err(err, errlen, "the password is longer than %d characters", USERS_PASSWORD_MAX); return NULL; }
    uint8_t salt[SALT_LEN], h[HASH_LEN];
    if (random_bytes(salt, sizeof salt) < 0) { set_err(err, errlen, "cannot get random bytes for a salt: %s", strerror(errno)); return NULL; }
    if (scrypt_raw(password, salt, sizeof salt, 1ull << SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, h) < 0) {
        set_err(err, errlen, "scrypt failed (not enough memory?)");
        return NULL;
    }
    char sh[2 * SALT_LEN + 1], hh[2 * HASH_LEN + 1];
    hex_encode(salt, sizeof salt, sh);
    hex_encode(h, sizeof h, hh);
    return xasprintf("scrypt$%llu$%d$%d$%s$%s", 1ull << SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, sh, hh);
}

int users_check_password(const char *encoded, const char *password)
{
    unsigned long long n, r, p;
    char sh[2 * SALT_LEN + 2], hh[2 * HASH_LEN + 2];
    int used = 0;
    if (strlen(password) > USERS_PASSWORD_MAX) return 0;
    if (sscanf(encoded, "scrypt$%llu$%llu$%llu$%33[0-9a-f]$%65[0-9a-f]%n", &n, &r, &p, sh, hh, &used) != 5 ||
        encoded[used] != 0)
        return 0;
    /* Bounded so a hand-edited file cannot make a sign-in take forever. */
    if (n < 1024 || n > (1u << 20) || (n & (n - 1)) || r < 1 || r > 32 || p < 1 || p > 16) return 0;
    uint8_t salt[SALT_LEN], want[HASH_LEN], got[HASH_LEN];
    if (strlen(sh) != 2 * SALT_LEN || strlen(hh) != 2 * HASH_LEN || hex_decode(sh, strlen(sh), salt) < 0 ||
        hex_decode(hh, strlen(hh), want) < 0)
        return 0;
    if (scrypt_raw(password, salt, sizeof salt, n, r, p, got) < 0) return 0;
    int ok = CRYPTO_memcmp(want, got, HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return ok;
}

/* ---- the accounts file ---- */

static char *accounts_path(const char *home) { return xasprintf("%s/users/accounts", home); }

/* One parsed line; points into the file text (NUL-split). */
typedef struct { char *email; int admin; char *hash; } line_t;

static int parse_line(char *s, line_t *l)
{
    char *sp1 = strchr(s, ' ');
    if (!sp1) return -1;
    *sp1 = 0;
    char *sp2 = strchr(sp1 + 1, ' ');
    if (!sp2 || sp2 != sp1 + 2 || (sp1[1] != '0' && sp1[1] != '1')) return -1;
    *sp2 = 0;
    l->email = s;
    l->admin = sp1[1] == '1';
    l->hash = sp2 + 1;
    return strchr(l->hash, ' ') ? -1 : 0;
}

/* Reads the file into *text and splits it into lines. Missing file: 0 lines. */
static int load(const char *home, char **text, line_t **lines, size_t *nl, char *err, size_t errlen)
{
    char *path = accounts_path(home);
    size_t len;
    *text = read_file(path, &len);
    *lines = NULL;
    *nl = 0;
    if (!*text) {
        if (errno == ENOENT) { free(path); *text = xstrdup(""); return 0; }
        set_err(err, errlen, "cannot read the accounts file %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    free(path);
    size_t cap = 0;
    for (char *s = *text; *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        line_t l;
        if (*s && parse_line(s, &l) == 0) {
            if (*nl == cap) { cap = cap ? cap * 2 : 16; *lines = xrealloc(*lines, cap * sizeof **lines); }
            (*lines)[(*nl)++] = l;
        }
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

static int lock_dir(const char *home, char *err, size_t errlen)
{
    char *dir = xasprintf("%s/users", home);
    if (mkdir_p(dir, 0700) < 0) {
        set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    char *lp = xasprintf("%s/accounts.lock", dir);
    free(dir);
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) {
        set_err(err, errlen, "cannot lock %s: %s", lp, strerror(errno));
        if (fd >= 0) close(fd);
        free(lp);
        return -1;
    }
    free(lp);
    return fd;
}

static int store(const char *home, const line_t *lines, size_t nl, char *err, size_t errlen)
{
    buf b = BUF_INIT;
    for (size_t i = 0; i < nl; i++)
        if (lines[i].email) buf_printf(&b, "%s %d %s\n", lines[i].email, lines[i].admin, lines[i].hash);
    char *path = accounts_path(home);
    int rc = write_file_atomic(path, buf_rp(&b), buf_unread(&b), 0600);
    if (rc < 0) set_err(err, errlen, "cannot write the accounts file %s: %s", path, strerror(errno));
    else chmod(path, 0600);
    free(path);
    buf_free(&b);
    return rc;
}

int accounts_add(const char *home, const char *email, const char *password, int admin, char *err, size_t errlen)
{
    char norm[USERS_EMAIL_MAX + 1];
    if (users_email_normalise(email, norm, err, errlen) < 0) return -1;
    char *hash = users_hash_password(password, err, errlen);
    if (!hash) return -1;
    int lfd = lock_dir(home, err, errlen);
    if (lfd < 0) { free(hash); return -1; }
    char *text;
    line_t *lines;
    size_t nl;
    int rc = -1;
    if (load(home, &text, &lines, &nl, err, errlen) == 0) {
        size_t i;
        for (i = 0; i < nl; i++) if (!strcmp(lines[i].email, norm)) break;
        if (i == nl) lines = xrealloc(lines, (nl + 1) * sizeof *lines), nl++;
        lines[i] = (line_t){.email = norm, .admin = admin ? 1 : 0, .hash = hash};
        rc = store(home, lines, nl, err, errlen);
        free(text);
        free(lines);
    }
    close(lfd);
    free(hash);
    return rc;
}

int accounts_remove(const char *home, const char *email, char *err, size_t errlen)
{
    char norm[USERS_EMAIL_MAX + 1];
    if (users_email_normalise(email, norm, err, errlen) < 0) return -1;
    int lfd = lock_dir(home, err, errlen);
    if (lfd < 0) return -1;
    char *text;
    line_t *lines;
    size_t nl;
    int rc = -1;
    if (load(home, &text, &lines, &nl, err, errlen) == 0) {
        int found = 0;
        for (size_t i = 0; i < nl; i++) if (!strcmp(lines[i].email, norm)) { lines[i].email = NULL; found = 1; }
        if (!found) set_err(err, errlen, "there is no account for %s", norm);
        else rc = store(home, lines, nl, err, errlen);
        free(text);
        free(lines);
    }
    close(lfd);
    return rc;
}

static void stamp_of(const char *hash, char out[USERS_STAMP_LEN + 1])
{
    uint8_t d[32];
    unsigned int dl = sizeof d;
    EVP_Digest(hash, strlen(hash), d, &dl, EVP_sha256(), NULL);
    char hx[65];
    hex_encode(d, sizeof d, hx);
    memcpy(out, hx, USERS_STAMP_LEN);
    out[USERS_STAMP_LEN] = 0;
}

int accounts_list(const char *home, void (*fn)(const users_account *a, void *arg), void *arg,
                  char *err, size_t errlen)
{
    char *text;
    line_t *lines;
    size_t nl;
    if (load(home, &text, &lines, &nl, err, errlen) < 0) return -1;
    for (size_t i = 0; i < nl; i++) {
        users_account a = {.admin = lines[i].admin};
        snprintf(a.email, sizeof a.email, "%s", lines[i].email);
        stamp_of(lines[i].hash, a.stamp);
        fn(&a, arg);
    }
    free(text);
    free(lines);
    return (int)nl;
}

static int lookup(const char *home, const char *norm, users_account *out, char **hash, char *err, size_t errlen)
{
    char *text;
    line_t *lines;
    size_t nl;
    if (load(home, &text, &lines, &nl, err, errlen) < 0) return -1;
    int found = 0;
    for (size_t i = 0; i < nl && !found; i++)
        if (!strcmp(lines[i].email, norm)) {
            found = 1;
            if (out) {
                snprintf(out->email, sizeof out->email, "%s", norm);
                out->admin = lines[i].admin;
                stamp_of(lines[i].hash, out->stamp);
            }
            if (hash) *hash = xstrdup(lines[i].hash);
        }
    free(text);
    free(lines);
    return found;
}

int accounts_find(const char *home, const char *email, users_account *out, char *err, size_t errlen)
{
    char norm[USERS_EMAIL_MAX + 1];
    if (users_email_normalise(email, norm, err, errlen) < 0) return 0;
    return lookup(home, norm, out, NULL, err, errlen);
}

/* The hash of no password: checked against when the email is unknown. */
#define DUMMY_HASH "scrypt$32768$8$1$00000000000000000000000000000000$" \
                   "0000000000000000000000000000000000000000000000000000000000000000"

int accounts_verify(const char *home, const char *email, const char *password, users_account *out,
                    char *err, size_t errlen)
{
    char norm[USERS_EMAIL_MAX + 1], e2[8];
    char *hash = NULL;
    int found = 0;
    if (users_email_normalise(email, norm, e2, sizeof e2) == 0) {
        found = lookup(home, norm, out, &hash, err, errlen);
        if (found < 0) return -1;
    }
    int ok = users_check_password(found ? hash : DUMMY_HASH, password);
    free(hash);
    return found && ok ? 1 : 0;
}
