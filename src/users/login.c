/* login.c - /_ah/login, /_ah/logout, the current user and sign-in limits.
 * See login.h.
 *
 * GET /_ah/login shows the form (continue kept in a hidden field). POST
 * checks the form: in development mode any valid email (admin from the
 * checkbox), otherwise accounts_verify (scrypt). On success the session
 * cookie is set and the answer is a 302 to the safe continue URL; a wrong
 * email or password shows the form again with one message and 401. A POST
 * whose Origin is not this site is refused (no sign-in by a foreign page).
 * Failed sign-ins are counted per email in a fixed table; past the limit
 * the answer is 429 with the wait, before any password work. */
#include "users/login.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/util.h"
#include "users/session.h"

#define FAIL_WAYS       4          /* entries per set */
#define FAIL_SETS       128
#define FAIL_SLOTS      (FAIL_WAYS * FAIL_SETS)
#define FAIL_FREE       5          /* failures before a lockout */
#define FAIL_MAX_WAIT_S 300
#define FAIL_FORGET_MS  (15 * 60 * 1000)
#define FORM_FIELD_MAX  2048

typedef struct {
    char email[USERS_EMAIL_MAX + 1];
    int fails;
    int64_t last_ms;
    int64_t until_ms;
} fail_slot;

struct users_ctx {
    char *home;
    int dev;
    uint8_t session_key[USERS_KEY_LEN];
    uint8_t id_key[USERS_KEY_LEN];
    pthread_mutex_t mu;
    fail_slot fails[FAIL_SLOTS];
    uint64_t fail_seed;            /* random: emails cannot be chosen to share a set */

    /* The accounts file as last read, reloaded when its inode, size or
     * mtime change (the CLI replaces it by rename, so every edit shows). */
    char *acc_path;
    pthread_rwlock_t acc_lock;
    int acc_loaded, acc_exists;
    struct stat acc_st;
    users_account *acc;
    size_t nacc, capacc;
};

users_ctx *users_ctx_new(const char *home, int dev, char *err, size_t errlen)
{
    users_ctx *u = xcalloc(1, sizeof *u);
    if (users_key_load(home, "session.key", u->session_key, err, errlen) < 0 ||
        users_key_load(home, "users.key", u->id_key, err, errlen) < 0) {
        OPENSSL_cleanse(u, sizeof *u);
        free(u);
        return NULL;
    }
    if (random_bytes(&u->fail_seed, sizeof u->fail_seed) < 0) u->fail_seed = (uint64_t)now_us();
    u->home = xstrdup(home);
    u->dev = dev;
    u->acc_path = xasprintf("%s/users/accounts", home);
    pthread_mutex_init(&u->mu, NULL);
    pthread_rwlock_init(&u->acc_lock, NULL);
    return u;
}

void users_ctx_free(users_ctx *u)
{
    if (!u) return;
    pthread_mutex_destroy(&u->mu);
    pthread_rwlock_destroy(&u->acc_lock);
    free(u->acc);
    free(u->acc_path);
    free(u->home);
    OPENSSL_cleanse(u, sizeof *u);
    free(u);
}

static void fill_user(const users_ctx *u, const char *email, int admin, users_user *out)
{
    snprintf(out->email, sizeof out->email, "%s", email);
    users_user_id(u->id_key, email, out->id);
    const char *at = strchr(email, '@');
    if (at && !strcmp(at + 1, USERS_AUTH_DOMAIN)) snprintf(out->nickname, sizeof out->nickname, "%.*s", (int)(at - email), email);
    else snprintf(out->nickname, sizeof out->nickname, "%s", email);
    out->admin = admin ? 1 : 0;
}

static void collect(const users_account *a, void *arg)
{
    users_ctx *u = arg;
    if (u->nacc == u->capacc) {
        u->capacc = u->capacc ? 2 * u->capacc : 16;
        u->acc = xrealloc(u->acc, u->capacc * sizeof *u->acc);
    }
    u->acc[u->nacc++] = *a;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int find_cached(const users_ctx *u, const char *email, users_account *out)
{
    for (size_t i = 0; i < u->nacc; i++)
        if (!strcmp(u->acc[i].email, email)) { *out = u->acc[i]; return 1; }
    return 0;
}

/* The account as the file says now: 1 and *out, or 0 when there is none. */
static int current_account(users_ctx *u, const char *email, users_account *out)
{
    struct stat st;
    int exists = stat(u->acc_path, &st) == 0;
    pthread_rwlock_rdlock(&u->acc_lock);
    if (u->acc_loaded && exists == u->acc_exists && (!exists || same_file(&st, &u->acc_st))) {
        int found = find_cached(u, email, out);
        pthread_rwlock_unlock(&u->acc_lock);
        return found;
    }
    pthread_rwlock_unlock(&u->acc_lock);
    pthread_rwlock_wrlock(&u->acc_lock);
    char err[512];
    u->nacc = 0;
    if (accounts_list(u->home, collect, u, err, sizeof err) < 0) {
        log_error("users", "msg=\"cannot read accounts; nobody is signed in\" reason=%s", log_q(err));
        u->nacc = 0;
    }
    u->acc_loaded = 1;
    u->acc_exists = exists;
    if (exists) u->acc_st = st;
    int found = find_cached(u, email, out);
    pthread_rwlock_unlock(&u->acc_lock);
    return found;
}

int users_from_cookie(users_ctx *u, const char *hdr, size_t len, int64_t now_s, users_user *out)
{
    const char *v;
    size_t vl;
    if (!users_cookie_find(hdr, len, USERS_COOKIE_NAME, &v, &vl)) return 0;
    users_session s;
    if (!users_session_verify(u->session_key, v, vl, now_s, &s)) return 0;
    int admin = s.admin;
    if (u->dev) {
        if (strcmp(s.stamp, "dev") != 0) return 0;
    } else {
        /* The account must still exist with the same password; its admin
         * flag is read from the file, so changes apply at once. */
        users_account a;
        if (!current_account(u, s.email, &a) || strcmp(a.stamp, s.stamp) != 0) return 0;
        admin = a.admin;
    }
    fill_user(u, s.email, admin, out);
    return 1;
}

int users_page(const char *path, size_t len)
{
    if (strn_case_eq(path, len, "/_ah/login")) return USERS_PAGE_LOGIN;
    if (strn_case_eq(path, len, "/_ah/logout")) return USERS_PAGE_LOGOUT;
    return USERS_PAGE_NONE;
}

/* ---- parsing ---- */

static int hexv(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long users_form_value(const char *data, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    size_t i = 0;
    if (!data || !outlen) return -1;
    while (i <= len) {
        size_t s = i;
        while (i < len && data[i] != '&') i++;
        size_t e = i;
        i++;
        const char *eq = memchr(data + s, '=', e - s);
        size_t kl = eq ? (size_t)(eq - (data + s)) : e - s;
        if (kl != nl || memcmp(data + s, name, nl) != 0) continue;
        const char *v = eq ? eq + 1 : data + e;
        size_t vl = (size_t)(data + e - v);
        size_t o = 0;
        for (size_t k = 0; k < vl; k++) {
            int ch = (unsigned char)v[k];
            if (ch == '+') ch = ' ';
            else if (ch == '%') {
                if (k + 2 >= vl) return -2;
                int a = hexv((unsigned char)v[k + 1]), b = hexv((unsigned char)v[k + 2]);
                if (a < 0 || b < 0) return -2;
                ch = a << 4 | b;
                k += 2;
            }
            if (ch == 0 || o + 1 >= outlen) return -2;
            out[o++] = (char)ch;
        }
        out[o] = 0;
        return (long)o;
    }
    return -1;
}

void users_safe_continue(const char *url, const char *host, size_t host_len, char *out, size_t outlen)
{
    size_t n = url ? strlen(url) : 0;
    int ok = n > 0;
    /* Control characters could split the Location header, and browsers
     * read '\\' as '/': either refuses the URL. */
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\\') ok = 0;
    }
    if (ok) {
        if (url[0] == '/') ok = url[1] != '/';
        else {
            size_t pl = !strncasecmp(url, "http://", 7) ? 7 : !strncasecmp(url, "https://", 8) ? 8 : 0;
            ok = pl > 0 && host && host_len > 0;
            if (ok) {
                const char *a = url + pl;
                size_t al = strcspn(a, "/?#");
                ok = al == host_len && strncasecmp(a, host, host_len) == 0 && !memchr(a, '@', al);
            }
        }
    }
    /* Spaces and non-ASCII bytes (a UTF-8 path) are sent percent-encoded. */
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch == ' ' || ch >= 0x80) {
            if (o + 4 > outlen) { ok = 0; break; }
            out[o++] = '%'; out[o++] = hx[ch >> 4]; out[o++] = hx[ch & 15];
        } else {
            if (o + 2 > outlen) { ok = 0; break; }
            out[o++] = (char)ch;
        }
    }
    if (ok) out[o] = 0;
    else snprintf(out, outlen, "/");
}

/* ---- failed sign-ins ---- */

/* The entry of email, or with make, a new one in its set (replacing, in
 * order of preference, a free entry, one not locked out, the oldest), so
 * that filling the table with failures for other emails does not easily
 * lift a lockout. NULL when absent and !make. */
static fail_slot *slot_for(users_ctx *u, const char *email, int make, int64_t now)
{
    uint64_t h = 14695981039346656037ull ^ u->fail_seed;
    for (const char *p = email; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    fail_slot *set = &u->fails[(h % FAIL_SETS) * FAIL_WAYS];
    fail_slot *pick = NULL;
    int pick_rank = -1;
    for (int i = 0; i < FAIL_WAYS; i++) {
        fail_slot *s = &set[i];
        if (s->email[0] && !strcmp(s->email, email)) return s;
        int rank = !s->email[0] ? 3 : now - s->last_ms > FAIL_FORGET_MS ? 2 : s->until_ms <= now ? 1 : 0;
        if (rank > pick_rank || (rank == pick_rank && s->last_ms < pick->last_ms)) { pick = s; pick_rank = rank; }
    }
    if (!make) return NULL;
    memset(pick, 0, sizeof *pick);
    snprintf(pick->email, sizeof pick->email, "%s", email);
    return pick;
}

/* Seconds the email must still wait, 0 when it may try. */
static int64_t locked_for(users_ctx *u, const char *email, int64_t now)
{
    pthread_mutex_lock(&u->mu);
    fail_slot *s = slot_for(u, email, 0, now);
    int64_t wait = 0;
    if (s && s->until_ms > now) wait = (s->until_ms - now + 999) / 1000;
    pthread_mutex_unlock(&u->mu);
    return wait;
}

static void note_result(users_ctx *u, const char *email, int ok, int64_t now)
{
    pthread_mutex_lock(&u->mu);
    fail_slot *s = slot_for(u, email, !ok, now);
    if (ok) { if (s) memset(s, 0, sizeof *s); }
    else {
        if (now - s->last_ms > FAIL_FORGET_MS && s->until_ms <= now) s->fails = 0;
        s->fails++;
        s->last_ms = now;
        if (s->fails >= FAIL_FREE) {
            int k = s->fails - FAIL_FREE;
            int64_t wait = k >= 8 ? FAIL_MAX_WAIT_S : (int64_t)2 << k;
            if (wait > FAIL_MAX_WAIT_S) wait = FAIL_MAX_WAIT_S;
            s->until_ms = now + wait * 1000;
        }
    }
    pthread_mutex_unlock(&u->mu);
}

/* ---- pages ---- */

static void esc(buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': buf_puts(b, "&lt;"); break;
        case '>': buf_puts(b, "&gt;"); break;
        case '&': buf_puts(b, "&amp;"); break;
        case '"': buf_puts(b, "&quot;"); break;
        case '\'': buf_puts(b, "&#39;"); break;
        default: buf_putc(b, *s);
        }
    }
}

static const char STYLE[] =
    "<style>body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}"
    "main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:1.3rem;margin-top:0}"
    "label{display:block;margin:.8rem 0 .2rem}input[type=email],input[type=password]{width:100%;"
    "box-sizing:border-box;padding:.5rem;font-size:1rem}button{margin-top:1.2rem;padding:.5rem 1.2rem;"
    "font-size:1rem}.err{color:#b00020;background:#fdecea;padding:.5rem;border-radius:4px}"
    ".note{color:#555;font-size:.9rem}</style>";

static void page_start(buf *b, const char *title)
{
    buf_puts(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                "content=\"width=device-width\"><title>");
    esc(b, title);
    buf_printf(b, "</title>%s</head><body><main>\n", STYLE);
}

static void login_form(const users_ctx *u, buf *b, const char *cont, const char *email, const char *msg)
{
    page_start(b, "Sign in");
    buf_puts(b, "<h1>Sign in</h1>\n");
    if (msg) { buf_puts(b, "<p class=\"err\" role=\"alert\">"); esc(b, msg); buf_puts(b, "</p>\n"); }
    if (u->dev) buf_puts(b, "<p class=\"note\">Development mode: any email address signs in, without a password.</p>\n");
    buf_puts(b, "<form method=\"post\" action=\"/_ah/login\">\n<label for=\"email\">Email</label>"
                "<input type=\"email\" id=\"email\" name=\"email\" required autofocus value=\"");
    esc(b, email ? email : "");
    buf_puts(b, "\">\n");
    if (u->dev)
        buf_puts(b, "<label><input type=\"checkbox\" name=\"admin\" value=\"True\"> Sign in as administrator</label>\n");
    else
        buf_puts(b, "<label for=\"password\">Password</label>"
                    "<input type=\"password\" id=\"password\" name=\"password\" required autocomplete=\"current-password\">\n");
    buf_puts(b, "<input type=\"hidden\" name=\"continue\" value=\"");
    esc(b, cont);
    buf_puts(b, "\">\n<button type=\"submit\">Sign in</button>\n</form>\n</main></body></html>\n");
}

void users_forbidden_page(const users_user *who, const char *url, buf *body)
{
    page_start(body, "Forbidden");
    buf_puts(body, "<h1>Administrators only</h1>\n<p>You are signed in as <b>");
    esc(body, who->email);
    buf_puts(body, "</b>, who is not an administrator of this application.</p>\n<p><a href=\"/_ah/logout?continue=");
    /* /_ah/login?continue=<url>, percent-encoded twice over as a query value. */
    buf inner = BUF_INIT;
    buf_puts(&inner, "/_ah/login?continue=");
    static const char hx[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~", *p))
            buf_putc(&inner, (char)*p);
        else { buf_putc(&inner, '%'); buf_putc(&inner, hx[*p >> 4]); buf_putc(&inner, hx[*p & 15]); }
    }
    for (const unsigned char *p = (const unsigned char *)buf_cstr(&inner); *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~/", *p))
            buf_putc(body, (char)*p);
        else { buf_putc(body, '%'); buf_putc(body, hx[*p >> 4]); buf_putc(body, hx[*p & 15]); }
    }
    buf_free(&inner);
    buf_puts(body, "\">Sign in as someone else</a></p>\n</main></body></html>\n");
}

static void cookie_header(buf *h, const char *value, int64_t max_age)
{
    buf_printf(h, "Set-Cookie: %s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Lax\r\n", USERS_COOKIE_NAME, value,
               (long long)max_age);
}

static void redirect(users_resp *r, const char *cont, const users_req *rq)
{
    char safe[4096];
    users_safe_continue(cont, rq->host, rq->host_len, safe, sizeof safe);
    r->status = 302;
    buf_printf(&r->head, "Location: %s\r\n", safe);
}

/* Same-origin check for the POST: an Origin, when sent, must name this Host. */
static int origin_ok(const users_req *rq)
{
    if (!rq->origin) return 1;
    const char *o = rq->origin;
    size_t n = rq->origin_len, pl = 0;
    if (n >= 7 && !strncasecmp(o, "http://", 7)) pl = 7;
    else if (n >= 8 && !strncasecmp(o, "https://", 8)) pl = 8;
    if (!pl || !rq->host) return 0;
    return n - pl == rq->host_len && !strncasecmp(o + pl, rq->host, rq->host_len);
}

static void check_login_post(users_ctx *u, const users_req *rq, users_resp *r, char *pw, size_t pwlen);

static void do_login_post(users_ctx *u, const users_req *rq, users_resp *r)
{
    char pw[FORM_FIELD_MAX];
    check_login_post(u, rq, r, pw, sizeof pw);
    OPENSSL_cleanse(pw, sizeof pw);
}

static void check_login_post(users_ctx *u, const users_req *rq, users_resp *r, char *pw, size_t pwlen)
{
    char email[FORM_FIELD_MAX], cont[FORM_FIELD_MAX], adm[16];
    pw[0] = 0;
    if (users_form_value(rq->body, rq->body_len, "continue", cont, sizeof cont) < 0) snprintf(cont, sizeof cont, "/");
    if (!origin_ok(rq)) {
        r->status = 403;
        login_form(u, &r->body, cont, NULL, "This sign-in form was sent from another site, so it was refused.");
        return;
    }
    long el = users_form_value(rq->body, rq->body_len, "email", email, sizeof email);
    long pl = users_form_value(rq->body, rq->body_len, "password", pw, pwlen);
    char norm[USERS_EMAIL_MAX + 1], err[256];
    if (el <= 0 || users_email_normalise(email, norm, err, sizeof err) < 0) {
        r->status = 400;
        login_form(u, &r->body, cont, el > 0 ? email : NULL, el <= 0 ? "Enter your email address." : err);
        return;
    }
    int admin = 0;
    char stamp[USERS_STAMP_LEN + 1] = "dev";
    if (u->dev) {
        admin = users_form_value(rq->body, rq->body_len, "admin", adm, sizeof adm) > 0;
    } else {
        int64_t now = now_ms();
        int64_t wait = locked_for(u, norm, now);
        if (wait > 0) {
            r->status = 429;
            buf_printf(&r->head, "Retry-After: %lld\r\n", (long long)wait);
            char m[160];
            snprintf(m, sizeof m, "Too many failed sign-ins for this account; wait %lld seconds and try again.", (long long)wait);
            login_form(u, &r->body, cont, norm, m);
            return;
        }
        users_account a;
        int v = pl > 0 ? accounts_verify(u->home, norm, pw, &a, err, sizeof err) : 0;
        if (v < 0) {
            log_error("users", "msg=\"cannot check a sign-in\" reason=%s", log_q(err));
            r->status = 500;
            login_form(u, &r->body, cont, norm, "Sign-in is not available: the accounts file cannot be read.");
            return;
        }
        note_result(u, norm, v == 1, now_ms());
        if (v != 1) {
            log_info("users", "msg=\"failed sign-in\" email=%s", log_q(norm));
            r->status = 401;
            login_form(u, &r->body, cont, norm, "The email address or password is incorrect.");
            return;
        }
        admin = a.admin;
        memcpy(stamp, a.stamp, sizeof stamp);
    }
    char cookie[USERS_COOKIE_MAX + 1];
    int64_t now_s = wall_us() / 1000000;
    if (users_session_sign(u->session_key, norm, admin, now_s + USERS_SESSION_TTL_S, stamp, cookie, sizeof cookie) < 0) {
        r->status = 400;
        login_form(u, &r->body, cont, norm, "This email address cannot be used to sign in.");
        return;
    }
    log_info("users", "msg=\"signed in\" email=%s admin=%d", log_q(norm), admin);
    cookie_header(&r->head, cookie, USERS_SESSION_TTL_S);
    redirect(r, cont, rq);
}

void users_handle(users_ctx *u, int page, const users_req *rq, users_resp *r)
{
    int get = strn_case_eq(rq->method, rq->method_len, "GET") || strn_case_eq(rq->method, rq->method_len, "HEAD");
    int post = strn_case_eq(rq->method, rq->method_len, "POST");
    char cont[FORM_FIELD_MAX];
    if (users_form_value(rq->query, rq->query ? rq->query_len : 0, "continue", cont, sizeof cont) < 0)
        snprintf(cont, sizeof cont, "/");
    buf_puts(&r->head, "Cache-Control: no-store\r\n");
    if (page == USERS_PAGE_LOGOUT) {
        if (!get && !post) { r->status = 405; buf_puts(&r->head, "Allow: GET, HEAD, POST\r\n"); return; }
        cookie_header(&r->head, "", 0);
        redirect(r, cont, rq);
        return;
    }
    if (post) { do_login_post(u, rq, r); return; }
    if (!get) {
        r->status = 405;
        buf_puts(&r->head, "Allow: GET, HEAD, POST\r\n");
        page_start(&r->body, "Method not allowed");
        buf_puts(&r->body, "<h1>Method not allowed</h1><p>The sign-in page answers GET and POST.</p></main></body></html>\n");
        return;
    }
    r->status = 200;
    login_form(u, &r->body, cont, rq->user ? rq->user->email : NULL, NULL);
}

void users_resp_free(users_resp *r)
{
    buf_free(&r->head);
    buf_free(&r->body);
}
