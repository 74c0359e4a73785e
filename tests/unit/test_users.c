/* test_users.c - accounts (emails, scrypt hashes, the accounts file, user
 * ids), the session cookie, the form and continue parsers, and the sign-in
 * pages of src/users. Each test works in its own temporary CYCLOZZO_HOME. */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/util.h"
#include "users/accounts.h"
#include "users/login.h"
#include "users/session.h"

static char *new_home(void)
{
    char tmpl[] = "/tmp/cz-test-users-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? xstrdup(d) : NULL;
}

static void rm_home(char *home)
{
    char *cmd = xasprintf("rm -rf '%s'", home);
    int rc = system(cmd);
    (void)rc;
    free(cmd);
    free(home);
}

TEST(email_normalise)
{
    char out[USERS_EMAIL_MAX + 1], err[256];
    CHECK_INT(users_email_normalise("Alice.B+x@Example.COM", out, err, sizeof err), 0);
    CHECK_STR(out, "alice.b+x@example.com");
    const char *bad[] = {"", "alice", "@example.com", "alice@", "alice@example", "a@b@example.com", "al ice@example.com",
                         "alice@exa_mple.com", "alice@.example.com", "alice@example..com", "alice:1@example.com",
                         "alice@example.com\n", "a\"@example.com", NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = 0;
        CHECK_INT(users_email_normalise(bad[i], out, err, sizeof err), -1);
        CHECK(err[0] != 0);
    }
    char longer[300];
    memset(longer, 'a', sizeof longer);
    memcpy(longer + 280, "@example.com", 13);
    CHECK_INT(users_email_normalise(longer, out, err, sizeof err), -1);
}

TEST(hash_round_trip)
{
    char err[256];
    char *h = users_hash_password("correct horse", err, sizeof err);
    CHECK(h != NULL);
    if (!h) return;
    CHECK(strncmp(h, "scrypt$32768$8$1$", 17) == 0);
    CHECK_INT(users_check_password(h, "correct horse"), 1);
    CHECK_INT(users_check_password(h, "correct horsf"), 0);
    CHECK_INT(users_check_password(h, ""), 0);
    /* Same password, new salt: a different hash that also verifies. */
    char *h2 = users_hash_password("correct horse", err, sizeof err);
    CHECK(h2 && strcmp(h, h2) != 0);
    CHECK_INT(users_check_password(h2, "correct horse"), 1);
    /* Altered hash or parameters out of bounds never verify. */
    char *t = xstrdup(h);
    t[strlen(t) - 1] = t[strlen(t) - 1] == '0' ? '1' : '0';
    CHECK_INT(users_check_password(t, "correct horse"), 0);
    CHECK_INT(users_check_password("scrypt$1099511627776$8$1$00$00", "x"), 0);
    CHECK_INT(users_check_password("bcrypt$whatever", "correct horse"), 0);
    CHECK_INT(users_check_password("", "correct horse"), 0);
    CHECK(users_hash_password("short", err, sizeof err) == NULL);
    CHECK(strstr(err, "shorter") != NULL);
    free(t); free(h); free(h2);
}

static int listed;
static void count_acc(const users_account *a, void *arg)
{
    (void)arg;
    if (!strcmp(a->email, "bob@example.com")) CHECK_INT(a->admin, 1);
    listed++;
}

TEST(accounts_file)
{
    char *home = new_home();
    char err[256];
    users_account a;
    CHECK_INT(accounts_verify(home, "alice@example.com", "password1", &a, err, sizeof err), 0);
    CHECK_INT(accounts_add(home, "Alice@Example.com", "password1", 0, err, sizeof err), 0);
    CHECK_INT(accounts_add(home, "bob@example.com", "password2", 1, err, sizeof err), 0);
    char *path = xasprintf("%s/users/accounts", home);
    struct stat st;
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    size_t len;
    char *text = read_file(path, &len);
    CHECK(text && strstr(text, "alice@example.com 0 scrypt$") && !strstr(text, "password1"));
    free(text);

    CHECK_INT(accounts_verify(home, "ALICE@example.com", "password1", &a, err, sizeof err), 1);
    CHECK_STR(a.email, "alice@example.com");
    CHECK_INT(a.admin, 0);
    CHECK_INT(accounts_verify(home, "alice@example.com", "password2", &a, err, sizeof err), 0);
    CHECK_INT(accounts_verify(home, "carol@example.com", "password1", &a, err, sizeof err), 0);
    CHECK_INT(accounts_verify(home, "not an email", "password1", &a, err, sizeof err), 0);
    CHECK_INT(accounts_find(home, "bob@example.com", &a, err, sizeof err), 1);
    CHECK_INT(a.admin, 1);

    /* Adding again replaces password and flag, keeping one line. */
    CHECK_INT(accounts_add(home, "alice@example.com", "password3", 1, err, sizeof err), 0);
    CHECK_INT(accounts_verify(home, "alice@example.com", "password1", &a, err, sizeof err), 0);
    CHECK_INT(accounts_verify(home, "alice@example.com", "password3", &a, err, sizeof err), 1);
    CHECK_INT(a.admin, 1);
    listed = 0;
    CHECK_INT(accounts_list(home, count_acc, NULL, err, sizeof err), 2);
    CHECK_INT(listed, 2);

    CHECK_INT(accounts_remove(home, "alice@example.com", err, sizeof err), 0);
    CHECK_INT(accounts_verify(home, "alice@example.com", "password3", &a, err, sizeof err), 0);
    CHECK_INT(accounts_remove(home, "alice@example.com", err, sizeof err), -1);
    CHECK(strstr(err, "no account") != NULL);
    CHECK_INT(accounts_list(home, count_acc, NULL, err, sizeof err), 1);
    CHECK_INT(accounts_add(home, "bad email", "password1", 0, err, sizeof err), -1);
    free(path);
    rm_home(home);
}

TEST(user_ids)
{
    char *home = new_home();
    char err[256];
    uint8_t k1[USERS_KEY_LEN], k1b[USERS_KEY_LEN], k2[USERS_KEY_LEN];
    CHECK_INT(users_key_load(home, "users.key", k1, err, sizeof err), 0);
    CHECK_INT(users_key_load(home, "users.key", k1b, err, sizeof err), 0);
    CHECK(memcmp(k1, k1b, sizeof k1) == 0);
    char *kp = xasprintf("%s/secrets/users.key", home);
    struct stat st;
    CHECK_INT(stat(kp, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    char a1[USERS_ID_LEN + 1], a2[USERS_ID_LEN + 1], b[USERS_ID_LEN + 1], other[USERS_ID_LEN + 1];
    users_user_id(k1, "alice@example.com", a1);
    users_user_id(k1b, "alice@example.com", a2);
    users_user_id(k1, "bob@example.com", b);
    CHECK_INT(strlen(a1), 21);
    CHECK_INT(strspn(a1, "0123456789"), 21);
    CHECK_STR(a1, a2);
    CHECK(strcmp(a1, b) != 0);
    /* Another installation (key) gives another id. */
    CHECK_INT(users_key_load(home, "other.key", k2, err, sizeof err), 0);
    users_user_id(k2, "alice@example.com", other);
    CHECK(strcmp(a1, other) != 0);
    /* A key file others can read is refused. */
    chmod(kp, 0644);
    CHECK_INT(users_key_load(home, "users.key", k1b, err, sizeof err), -1);
    CHECK(strstr(err, "chmod 600") != NULL);
    free(kp);
    rm_home(home);
}

TEST(session_cookie)
{
    uint8_t key[USERS_KEY_LEN], key2[USERS_KEY_LEN];
    memset(key, 7, sizeof key);
    memset(key2, 8, sizeof key2);
    char v[USERS_COOKIE_MAX + 1];
    users_session s;
    CHECK_INT(users_session_sign(key, "alice@example.com", 1, 2000, "0123abcd", v, sizeof v), 0);
    CHECK_INT(users_session_verify(key, v, strlen(v), 1000, &s), 1);
    CHECK_STR(s.email, "alice@example.com");
    CHECK_INT(s.admin, 1);
    CHECK_INT(s.expires, 2000);
    CHECK_STR(s.stamp, "0123abcd");
    /* Expired, other key. */
    CHECK_INT(users_session_verify(key, v, strlen(v), 2000, &s), 0);
    CHECK_INT(users_session_verify(key2, v, strlen(v), 1000, &s), 0);
    /* Every single-byte change is refused. */
    size_t n = strlen(v);
    int accepted = 0;
    for (size_t i = 0; i < n; i++) {
        char t[USERS_COOKIE_MAX + 1];
        memcpy(t, v, n + 1);
        t[i] = t[i] == 'a' ? 'b' : 'a';
        accepted += users_session_verify(key, t, n, 1000, &s);
    }
    CHECK_INT(accepted, 0);
    /* Admin flip with the old MAC, truncation, extension. */
    char t[USERS_COOKIE_MAX + 1];
    snprintf(t, sizeof t, "%s", v);
    char *flag = strstr(t, ":1:");
    if (flag) flag[1] = '0';
    CHECK_INT(users_session_verify(key, t, strlen(t), 1000, &s), 0);
    CHECK_INT(users_session_verify(key, v, n - 1, 1000, &s), 0);
    CHECK_INT(users_session_verify(key, "", 0, 1000, &s), 0);
    /* Unnormalised or invalid emails are never signed. */
    CHECK_INT(users_session_sign(key, "Alice@example.com", 0, 2000, "dev", v, sizeof v), -1);
    CHECK_INT(users_session_sign(key, "nobody", 0, 2000, "dev", v, sizeof v), -1);
    CHECK_INT(users_session_sign(key, "alice@example.com", 0, 2000, "dev", v, 20), -1);
    CHECK_INT(users_session_sign(key, "alice@example.com", 0, 2000, "De:v", v, sizeof v), -1);
    CHECK_INT(users_session_sign(key, "alice@example.com", 0, 2000, "", v, sizeof v), -1);
}

TEST(cookie_header)
{
    const char *h = "a=1; cyclozzo_session=\"v1:x\" ;b=2;cyclozzo_sessionx=3";
    const char *v;
    size_t vl;
    CHECK_INT(users_cookie_find(h, strlen(h), "cyclozzo_session", &v, &vl), 1);
    CHECK_INT(vl, 4);
    CHECK(strncmp(v, "v1:x", 4) == 0);
    CHECK_INT(users_cookie_find(h, strlen(h), "c", &v, &vl), 0);
    CHECK_INT(users_cookie_find("", 0, "a", &v, &vl), 0);
    char out[2 * 64 + 1];
    CHECK_INT(users_cookie_without(h, strlen(h), "cyclozzo_session", out), strlen("a=1; b=2; cyclozzo_sessionx=3"));
    CHECK_STR(out, "a=1; b=2; cyclozzo_sessionx=3");
    CHECK_INT(users_cookie_without("cyclozzo_session=1", 18, "cyclozzo_session", out), 0);
    const char *many = "a;b;c;d;e";
    char o2[2 * 9 + 1];
    users_cookie_without(many, strlen(many), "z", o2);
    CHECK_STR(o2, "a; b; c; d; e");
}

TEST(form_values)
{
    char out[64];
    const char *f = "email=Alice%40Example.com&password=a+b%2Bc&empty=&flag&continue=%2Fx%3Fy%3D1";
    size_t n = strlen(f);
    CHECK_INT(users_form_value(f, n, "email", out, sizeof out), 17);
    CHECK_STR(out, "Alice@Example.com");
    CHECK_INT(users_form_value(f, n, "password", out, sizeof out), 5);
    CHECK_STR(out, "a b+c");
    CHECK_INT(users_form_value(f, n, "empty", out, sizeof out), 0);
    CHECK_INT(users_form_value(f, n, "flag", out, sizeof out), 0);
    CHECK_STR(users_form_value(f, n, "continue", out, sizeof out) > 0 ? out : "", "/x?y=1");
    CHECK_INT(users_form_value(f, n, "missing", out, sizeof out), -1);
    CHECK_INT(users_form_value(f, n, "mail", out, sizeof out), -1);
    CHECK_INT(users_form_value("a=%zz", 5, "a", out, sizeof out), -2);
    CHECK_INT(users_form_value("a=%4", 4, "a", out, sizeof out), -2);
    CHECK_INT(users_form_value("a=%00", 5, "a", out, sizeof out), -2);
    CHECK_INT(users_form_value("a=123456", 8, "a", out, 4), -2);
    CHECK_INT(users_form_value(NULL, 0, "a", out, sizeof out), -1);
}

static const char *cont(const char *url, const char *host)
{
    static char out[256];
    users_safe_continue(url, host, host ? strlen(host) : 0, out, sizeof out);
    return out;
}

TEST(safe_continue)
{
    CHECK_STR(cont("/private?x=1", "h:80"), "/private?x=1");
    CHECK_STR(cont("http://h:80/p", "h:80"), "http://h:80/p");
    CHECK_STR(cont("HTTPS://H:80", "h:80"), "HTTPS://H:80");
    CHECK_STR(cont("http://h:80?x", "h:80"), "http://h:80?x");
    const char *bad[] = {"//evil.com/", "/\\evil.com", "http://evil.com/", "http://h:80.evil.com/", "http://h:80@evil.com/",
                         "http://h:8/", "javascript:alert(1)", "evil.com", "/x\r\nSet-Cookie: a=b", "/x\ty", "ftp://h:80/", "/x\x7f",
                         "", "http://h:80\t/", NULL};
    for (int i = 0; bad[i]; i++) CHECK_STR(cont(bad[i], "h:80"), "/");
    CHECK_STR(cont("http://h:80/", NULL), "/");
    CHECK_STR(cont("/next?a=b&c=d e#frag", "h:80"), "/next?a=b&c=d%20e#frag");
    CHECK_STR(cont("/caf\xc3\xa9", "h:80"), "/caf%C3%A9");
    static char small[8];
    users_safe_continue("/\xc3\xa9\xc3\xa9", "h", 1, small, sizeof small);
    CHECK_STR(small, "/");
}

static void post(users_ctx *u, const char *body, const char *origin, users_resp *r)
{
    users_req rq = {.method = "POST", .method_len = 4, .host = "h:1", .host_len = 3,
                    .origin = origin, .origin_len = origin ? strlen(origin) : 0,
                    .body = body, .body_len = strlen(body)};
    memset(r, 0, sizeof *r);
    users_handle(u, USERS_PAGE_LOGIN, &rq, r);
}

TEST(login_pages)
{
    char *home = new_home();
    char err[256];
    CHECK_INT(accounts_add(home, "alice@example.com", "password1", 0, err, sizeof err), 0);
    users_ctx *u = users_ctx_new(home, 0, err, sizeof err);
    CHECK(u != NULL);
    if (!u) { rm_home(home); return; }
    users_resp r;
    post(u, "email=alice%40example.com&password=password1&continue=%2Fprivate", NULL, &r);
    CHECK_INT(r.status, 302);
    const char *hd = buf_cstr(&r.head);
    CHECK(strstr(hd, "Location: /private\r\n") != NULL);
    CHECK(strstr(hd, "HttpOnly; SameSite=Lax") != NULL);
    const char *sc = strstr(hd, "Set-Cookie: ");
    users_user who;
    CHECK(sc && users_from_cookie(u, sc + 12, strcspn(sc + 12, ";"), wall_us() / 1000000, &who) == 1);
    CHECK_STR(who.email, "alice@example.com");
    CHECK_INT(who.admin, 0);
    CHECK_STR(who.nickname, "alice@example.com");
    CHECK_INT(strlen(who.id), 21);
    users_resp_free(&r);

    post(u, "email=alice%40example.com&password=password1&continue=http%3A%2F%2Fevil.com%2F", NULL, &r);
    CHECK(strstr(buf_cstr(&r.head), "Location: /\r\n") != NULL);
    users_resp_free(&r);
    post(u, "email=alice%40example.com&password=password1", "http://evil.com", &r);
    CHECK_INT(r.status, 403);
    CHECK(strstr(buf_cstr(&r.head), "Set-Cookie") == NULL);
    users_resp_free(&r);

    /* Wrong passwords: 401 with the form and one message, then a lockout. */
    for (int i = 0; i < 5; i++) {
        post(u, "email=alice%40example.com&password=nope&continue=%2Fp", NULL, &r);
        CHECK_INT(r.status, 401);
        CHECK(strstr(buf_cstr(&r.body), "The email address or password is incorrect.") != NULL);
        CHECK(strstr(buf_cstr(&r.body), "value=\"/p\"") != NULL);
        users_resp_free(&r);
    }
    post(u, "email=alice%40example.com&password=password1", NULL, &r);
    CHECK_INT(r.status, 429);
    CHECK(strstr(buf_cstr(&r.head), "Retry-After: ") != NULL);
    users_resp_free(&r);
    /* Another email is not affected. */
    post(u, "email=bob%40example.com&password=password1", NULL, &r);
    CHECK_INT(r.status, 401);
    users_resp_free(&r);

    /* Logout clears the cookie. */
    users_req lo = {.method = "GET", .method_len = 3, .query = "continue=%2Fbye", .query_len = 15, .host = "h:1", .host_len = 3};
    memset(&r, 0, sizeof r);
    users_handle(u, USERS_PAGE_LOGOUT, &lo, &r);
    CHECK_INT(r.status, 302);
    CHECK(strstr(buf_cstr(&r.head), "Set-Cookie: cyclozzo_session=; Path=/; Max-Age=0") != NULL);
    CHECK(strstr(buf_cstr(&r.head), "Location: /bye\r\n") != NULL);
    users_resp_free(&r);
    users_ctx_free(u);

    /* Development mode: any email, admin from the checkbox. */
    u = users_ctx_new(home, 1, err, sizeof err);
    post(u, "email=dev%40example.org&admin=True", NULL, &r);
    CHECK_INT(r.status, 302);
    sc = strstr(buf_cstr(&r.head), "Set-Cookie: ");
    CHECK(sc && users_from_cookie(u, sc + 12, strcspn(sc + 12, ";"), wall_us() / 1000000, &who) == 1);
    CHECK_INT(who.admin, 1);
    users_resp_free(&r);
    users_req g = {.method = "GET", .method_len = 3, .host = "h:1", .host_len = 3};
    memset(&r, 0, sizeof r);
    users_handle(u, USERS_PAGE_LOGIN, &g, &r);
    CHECK_INT(r.status, 200);
    CHECK(strstr(buf_cstr(&r.body), "Sign in as administrator") != NULL);
    CHECK(strstr(buf_cstr(&r.body), "type=\"password\"") == NULL);
    users_resp_free(&r);
    users_ctx_free(u);
    rm_home(home);
}

/* The Set-Cookie value in a response head. */
static char *cookie_of(users_resp *r)
{
    const char *sc = strstr(buf_cstr(&r->head), "Set-Cookie: ");
    return sc ? xstrndup(sc + 12, strcspn(sc + 12, ";")) : xstrdup("");
}

TEST(sessions_follow_accounts)
{
    char *home = new_home();
    char err[256];
    CHECK_INT(accounts_add(home, "alice@example.com", "password1", 1, err, sizeof err), 0);
    users_ctx *u = users_ctx_new(home, 0, err, sizeof err);
    users_ctx *dev = users_ctx_new(home, 1, err, sizeof err);
    users_resp r;
    post(u, "email=alice%40example.com&password=password1", NULL, &r);
    char *c1 = cookie_of(&r);
    users_resp_free(&r);
    int64_t now = wall_us() / 1000000;
    users_user who;
    CHECK_INT(users_from_cookie(u, c1, strlen(c1), now, &who), 1);
    CHECK_INT(who.admin, 1);
    /* A development-mode cookie means nothing outside development mode, and back. */
    post(dev, "email=alice%40example.com&admin=True", NULL, &r);
    char *cd = cookie_of(&r);
    users_resp_free(&r);
    CHECK_INT(users_from_cookie(dev, cd, strlen(cd), now, &who), 1);
    CHECK_INT(users_from_cookie(u, cd, strlen(cd), now, &who), 0);
    CHECK_INT(users_from_cookie(dev, c1, strlen(c1), now, &who), 0);
    /* A new password ends the old session; removal ends every session. */
    CHECK_INT(accounts_add(home, "alice@example.com", "password2", 1, err, sizeof err), 0);
    CHECK_INT(users_from_cookie(u, c1, strlen(c1), now, &who), 0);
    post(u, "email=alice%40example.com&password=password2", NULL, &r);
    char *c2 = cookie_of(&r);
    users_resp_free(&r);
    CHECK_INT(users_from_cookie(u, c2, strlen(c2), now, &who), 1);
    CHECK_INT(accounts_remove(home, "alice@example.com", err, sizeof err), 0);
    CHECK_INT(users_from_cookie(u, c2, strlen(c2), now, &who), 0);
    free(c1); free(c2); free(cd);
    users_ctx_free(u);
    users_ctx_free(dev);
    rm_home(home);
}

TEST(nickname)
{
    char *home = new_home();
    char err[256];
    users_ctx *u = users_ctx_new(home, 1, err, sizeof err);
    users_resp r;
    post(u, "email=joe%40gmail.com", NULL, &r);
    const char *sc = strstr(buf_cstr(&r.head), "Set-Cookie: ");
    users_user who;
    CHECK(sc && users_from_cookie(u, sc + 12, strcspn(sc + 12, ";"), wall_us() / 1000000, &who) == 1);
    CHECK_STR(who.nickname, "joe");
    users_resp_free(&r);
    users_ctx_free(u);
    rm_home(home);
}

int main(void)
{
    RUN(email_normalise);
    RUN(hash_round_trip);
    RUN(accounts_file);
    RUN(user_ids);
    RUN(session_cookie);
    RUN(cookie_header);
    RUN(form_values);
    RUN(safe_continue);
    RUN(login_pages);
    RUN(sessions_follow_accounts);
    RUN(nickname);
    return test_report();
}
