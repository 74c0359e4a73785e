/* Unit tests for API security tickets (src/api/ticket.c): key creation and
 * permissions, round trips, and every way a ticket must be refused. */
#include "api/ticket.h"
#include "core/buf.h"
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"

static char home[256];

static void make_home(void)
{
    snprintf(home, sizeof home, "/tmp/cz-test-ticket-XXXXXX");
    if (!mkdtemp(home)) { perror("mkdtemp"); exit(1); }
}

static void claims_for(ticket_claims *c, const char *app)
{
    memset(c, 0, sizeof *c);
    snprintf(c->app_id, sizeof c->app_id, "%s", app);
    snprintf(c->version, sizeof c->version, "default.1");
    snprintf(c->user_email, sizeof c->user_email, "ada@example.com");
    snprintf(c->user_id, sizeof c->user_id, "185804764220139124118");
    c->user_is_admin = 1;
    snprintf(c->request_id, sizeof c->request_id, "5f3a9e");
}

/* The base64 helpers tickets (and tokens, mail) are built on: RFC 4648's
 * test vectors, both alphabets, and the strict decoder's refusals. */
TEST(base64)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        buf a = BUF_INIT, b = BUF_INIT, c = BUF_INIT;
        buf_put_b64(&a, in[i], strlen(in[i]), 0);
        buf_put_b64(&b, in[i], strlen(in[i]), 1);
        CHECK_STR(buf_cstr(&a), std[i]);
        CHECK_STR(buf_cstr(&b), url[i]);
        CHECK_INT(buf_get_b64url(&c, url[i], strlen(url[i])), 0);
        CHECK_STR(buf_cstr(&c), in[i]);
        buf_free(&a); buf_free(&b); buf_free(&c);
    }
    const uint8_t hi[] = {0xfb, 0xff, 0xfe};
    buf h = BUF_INIT;
    buf_put_b64(&h, hi, 3, 0);
    CHECK_STR(buf_cstr(&h), "+//+");
    buf_reset(&h);
    buf_put_b64(&h, hi, 3, 1);
    CHECK_STR(buf_cstr(&h), "-__-");
    buf_free(&h);
    static const char *bad[] = {"Zg==", "Z", "Zh", "Zm9+", "Zm 9"};   /* padding, length, trailing bits, alphabet */
    for (size_t i = 0; i < 5; i++) {
        buf d = BUF_INIT;
        CHECK_INT(buf_get_b64url(&d, bad[i], strlen(bad[i])), -1);
        buf_free(&d);
    }
}

TEST(key_created_private_and_stable)
{
    ticket_key k1, k2;
    char err[256], path[512];
    CHECK_INT(ticket_key_load(home, &k1, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/secrets/ticket.key", home);
    struct stat st;
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/secrets", home);
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0700);
    CHECK_INT(ticket_key_load(home, &k2, err, sizeof err), 0);
    CHECK(!memcmp(&k1, &k2, sizeof k1));
    static const uint8_t zero[TICKET_KEY_LEN];
    CHECK(memcmp(k1.k, zero, sizeof zero) != 0);
}

TEST(key_refused_when_readable_or_corrupt)
{
    char h[300], path[400], err[256];
    ticket_key k;
    snprintf(h, sizeof h, "%s/other", home);
    CHECK_INT(ticket_key_load(h, &k, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/secrets/ticket.key", h);
    CHECK_INT(chmod(path, 0644), 0);
    CHECK_INT(ticket_key_load(h, &k, err, sizeof err), -1);
    CHECK(strstr(err, "chmod 600") != NULL);
    CHECK_INT(chmod(path, 0600), 0);
    CHECK_INT(write_file_atomic(path, "not hex\n", 8, 0600), 0);
    CHECK_INT(ticket_key_load(h, &k, err, sizeof err), -1);
    CHECK(strstr(err, "64 hex digits") != NULL);
    CHECK_INT(ticket_key_load("", &k, err, sizeof err), -1);
}

TEST(concurrent_creators_agree)
{
    /* Several processes race to create the key; all must end up with one. */
    char h[300], err[256];
    snprintf(h, sizeof h, "%s/race", home);
    int fds[8][2];
    for (int i = 0; i < 8; i++) {
        CHECK_INT(pipe(fds[i]), 0);
        if (fork() == 0) {
            ticket_key k;
            int ok = ticket_key_load(h, &k, err, sizeof err) == 0;
            ssize_t w = write(fds[i][1], ok ? (void *)&k : (void *)"", ok ? sizeof k : 0);
            _exit(w == (ssize_t)sizeof k ? 0 : 1);
        }
        close(fds[i][1]);
    }
    ticket_key first, k;
    for (int i = 0; i < 8; i++) {
        int status;
        wait(&status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (int i = 0; i < 8; i++) {
        CHECK_INT(read(fds[i][0], &k, sizeof k), sizeof k);
        close(fds[i][0]);
        if (i == 0) first = k;
        else CHECK(!memcmp(&first, &k, sizeof k));
    }
}

TEST(roundtrip)
{
    ticket_key key;
    char err[256];
    CHECK_INT(ticket_key_load(home, &key, err, sizeof err), 0);
    ticket_claims c, out;
    claims_for(&c, "dev~guestbook");
    snprintf(c.ns, sizeof c.ns, "tenant-7");
    int64_t now = 1700000000000;
    char *t = ticket_mint(&key, &c, now, 90, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(!strncmp(t, "cz1.", 4));
    for (const char *p = t; *p; p++)   /* header-safe: base64url and dots */
        CHECK((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.');
    CHECK_INT(ticket_verify(&key, t, strlen(t), now + 1000, "dev~guestbook", &out, err, sizeof err), TICKET_OK);
    CHECK_STR(out.app_id, "dev~guestbook");
    CHECK_STR(out.version, "default.1");
    CHECK_STR(out.ns, "tenant-7");
    CHECK_STR(out.user_email, "ada@example.com");
    CHECK_STR(out.user_id, "185804764220139124118");
    CHECK_INT(out.user_is_admin, 1);
    CHECK_STR(out.request_id, "5f3a9e");
    CHECK_INT(out.issued_ms, now);
    CHECK_INT(out.expires_ms, now + 90000);
    /* expect_app NULL accepts any app. */
    CHECK_INT(ticket_verify(&key, t, strlen(t), now, NULL, &out, err, sizeof err), TICKET_OK);
    free(t);

    /* Anonymous, non-admin: empty fields come back empty. */
    memset(&c, 0, sizeof c);
    snprintf(c.app_id, sizeof c.app_id, "s~x");
    t = ticket_mint(&key, &c, now, 1, err, sizeof err);
    CHECK(t != NULL);
    CHECK_INT(ticket_verify(&key, t, strlen(t), now + 999, NULL, &out, err, sizeof err), TICKET_OK);
    CHECK_STR(out.user_email, "");
    CHECK_INT(out.user_is_admin, 0);
    CHECK_INT(ticket_verify(&key, t, strlen(t), now + 1000, NULL, &out, err, sizeof err), TICKET_EXPIRED);
    free(t);
}

TEST(refusals)
{
    ticket_key key, other;
    char err[256], h[300];
    CHECK_INT(ticket_key_load(home, &key, err, sizeof err), 0);
    snprintf(h, sizeof h, "%s/elsewhere", home);
    CHECK_INT(ticket_key_load(h, &other, err, sizeof err), 0);
    ticket_claims c, out;
    claims_for(&c, "dev~a");
    int64_t now = 1700000000000;
    char *t = ticket_mint(&key, &c, now, 60, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return;
    size_t n = strlen(t);

    CHECK_INT(ticket_verify(&key, "", 0, now, NULL, &out, err, sizeof err), TICKET_MISSING);
    CHECK_INT(ticket_verify(&key, NULL, 0, now, NULL, &out, err, sizeof err), TICKET_MISSING);
    CHECK_INT(ticket_verify(&key, "garbage", 7, now, NULL, &out, err, sizeof err), TICKET_MALFORMED);
    CHECK_INT(ticket_verify(&key, "cz1.", 4, now, NULL, &out, err, sizeof err), TICKET_MALFORMED);
    CHECK_INT(ticket_verify(&key, t, n - 1, now, NULL, &out, err, sizeof err), TICKET_MALFORMED);

    /* Another installation's key: forged. */
    CHECK_INT(ticket_verify(&other, t, n, now, NULL, &out, err, sizeof err), TICKET_FORGED);
    CHECK(strstr(err, "not issued") != NULL);

    /* Flip every payload character in turn: never accepted. */
    char *copy = xstrdup(t);
    const char *dot = strrchr(t, '.');
    int accepted = 0;
    for (size_t i = 4; t + i < dot; i++) {
        copy[i] = copy[i] == 'A' ? 'B' : 'A';
        ticket_status s = ticket_verify(&key, copy, n, now, NULL, &out, err, sizeof err);
        if (s == TICKET_OK) accepted++;
        copy[i] = t[i];
    }
    CHECK_INT(accepted, 0);
    /* A changed tag is forged or malformed, never OK. */
    copy[n - 2] = copy[n - 2] == 'A' ? 'B' : 'A';
    CHECK(ticket_verify(&key, copy, n, now, NULL, &out, err, sizeof err) != TICKET_OK);
    free(copy);

    /* Expired, and the boundary. */
    CHECK_INT(ticket_verify(&key, t, n, now + 59999, NULL, &out, err, sizeof err), TICKET_OK);
    CHECK_INT(ticket_verify(&key, t, n, now + 60000, NULL, &out, err, sizeof err), TICKET_EXPIRED);
    CHECK(strstr(err, "expired") != NULL);

    /* Another app's ticket. */
    CHECK_INT(ticket_verify(&key, t, n, now, "dev~b", &out, err, sizeof err), TICKET_WRONG_APP);
    CHECK_INT(ticket_verify(&key, t, n, now, "dev~a", &out, err, sizeof err), TICKET_OK);
    /* A refused ticket leaves no claims behind. */
    CHECK_INT(ticket_verify(&key, t, n, now, "dev~b", &out, err, sizeof err), TICKET_WRONG_APP);
    CHECK_STR(out.app_id, "");
    free(t);
}

TEST(mint_limits)
{
    ticket_key key;
    char err[256];
    CHECK_INT(ticket_key_load(home, &key, err, sizeof err), 0);
    ticket_claims c;
    memset(&c, 0, sizeof c);
    CHECK(ticket_mint(&key, &c, 0, 60, err, sizeof err) == NULL);     /* no app */
    claims_for(&c, "dev~a");
    CHECK(ticket_mint(&key, &c, 0, 0, err, sizeof err) == NULL);
    CHECK(ticket_mint(&key, &c, 0, TICKET_MAX_TTL_S + 1, err, sizeof err) == NULL);
    char *t = ticket_mint(&key, &c, 0, TICKET_MAX_TTL_S, err, sizeof err);
    CHECK(t != NULL);
    CHECK(strlen(t) <= TICKET_MAX_LEN);
    free(t);
    /* Every field at its limit still fits. */
    memset(c.app_id, 'a', TICKET_MAX_APP); c.app_id[TICKET_MAX_APP] = 0;
    memset(c.version, 'v', TICKET_MAX_VERSION); c.version[TICKET_MAX_VERSION] = 0;
    memset(c.ns, 'n', TICKET_MAX_NS); c.ns[TICKET_MAX_NS] = 0;
    memset(c.user_email, 'e', TICKET_MAX_EMAIL); c.user_email[TICKET_MAX_EMAIL] = 0;
    memset(c.user_id, '1', TICKET_MAX_USER_ID); c.user_id[TICKET_MAX_USER_ID] = 0;
    memset(c.request_id, 'r', TICKET_MAX_REQ_ID); c.request_id[TICKET_MAX_REQ_ID] = 0;
    t = ticket_mint(&key, &c, 5, 60, err, sizeof err);
    CHECK(t != NULL);
    ticket_claims out;
    if (t) CHECK_INT(ticket_verify(&key, t, strlen(t), 6, NULL, &out, err, sizeof err), TICKET_OK);
    CHECK_STR(out.user_email, c.user_email);
    free(t);
}

TEST(mint_home_one_call)
{
    ticket_claims c, out;
    claims_for(&c, "dev~cli");
    char err[256];
    char *t = ticket_mint_home(home, &c, 120, err, sizeof err);
    CHECK(t != NULL);
    ticket_key key;
    CHECK_INT(ticket_key_load(home, &key, err, sizeof err), 0);
    if (t) CHECK_INT(ticket_verify(&key, t, strlen(t), ticket_now_ms(), "dev~cli", &out, err, sizeof err), TICKET_OK);
    CHECK(out.expires_ms - ticket_now_ms() > 110000 && out.expires_ms - ticket_now_ms() <= 120000);
    free(t);
}

int main(void)
{
    make_home();
    RUN(base64);
    RUN(key_created_private_and_stable);
    RUN(key_refused_when_readable_or_corrupt);
    RUN(concurrent_creators_agree);
    RUN(roundtrip);
    RUN(refusals);
    RUN(mint_limits);
    RUN(mint_home_one_call);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
    if (system(cmd) != 0) printf("could not remove %s\n", home);
    return test_report();
}
