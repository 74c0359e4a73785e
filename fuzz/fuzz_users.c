/* fuzz_users.c - libFuzzer target for src/users: the session cookie
 * verifier, the Cookie header scanner and stripper, the form-urlencoded
 * parser, the continue-URL check and email normalisation, over arbitrary
 * input. It aborts when an invariant breaks: a span outside the input, a
 * stripped header that still holds the session cookie or outgrew its
 * bound, a decoded form value with a NUL or past its buffer, a continue URL
 * that is neither "/" nor a same-site address, a normalisation that is not
 * idempotent, a cookie we signed that does not verify, or a verifier that
 * accepts a cookie altered in one byte. */
#include "users/accounts.h"
#include "users/login.h"
#include "users/session.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

static const uint8_t KEY[USERS_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                           17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    users_session s;

    /* The verifier: random input must not pass under our key. */
    ASSERT(users_session_verify(KEY, in, size, 0, &s) == 0);

    /* Cookie header scanning. */
    const char *v;
    size_t vl;
    if (users_cookie_find(in, size, USERS_COOKIE_NAME, &v, &vl)) ASSERT(v >= in && v + vl <= in + size);
    char *out = malloc(2 * size + 1);
    size_t ol = users_cookie_without(in, size, USERS_COOKIE_NAME, out);
    ASSERT(ol <= 2 * size && out[ol] == 0);
    ASSERT(!users_cookie_find(out, ol, USERS_COOKIE_NAME, &v, &vl));
    free(out);

    /* Form values. */
    static const char *names[] = {"email", "password", "continue", "admin", "", "a"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char val[64];
        long n = users_form_value(in, size, names[i], val, sizeof val);
        ASSERT(n >= -2 && n < (long)sizeof val);
        if (n >= 0) ASSERT(strlen(val) == (size_t)n);
    }

    /* NUL-terminated copy for the string functions. */
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = 0;

    char safe[512];
    users_safe_continue(z, "h:8080", 6, safe, sizeof safe);
    for (const char *p = safe; *p; p++) ASSERT(*p > ' ' && *p < 0x7f && *p != '\\');
    if (strcmp(safe, "/") != 0) {
        size_t hl = !strncasecmp(safe, "http://", 7) ? 7 : !strncasecmp(safe, "https://", 8) ? 8 : 0;
        if (hl) ASSERT(!strncasecmp(safe + hl, "h:8080", 6) && strchr("/?#", safe[hl + 6]));
        else ASSERT(safe[0] == '/' && safe[1] != '/');
    }

    char norm[USERS_EMAIL_MAX + 1], again[USERS_EMAIL_MAX + 1], err[256];
    if (users_email_normalise(z, norm, err, sizeof err) == 0) {
        ASSERT(users_email_normalise(norm, again, err, sizeof err) == 0 && !strcmp(norm, again));
        char ck[USERS_COOKIE_MAX + 1];
        if (users_session_sign(KEY, norm, (int)(size & 1), 1000, "0a1b2c", ck, sizeof ck) == 0) {
            size_t cl = strlen(ck);
            ASSERT(users_session_verify(KEY, ck, cl, 999, &s) == 1);
            ASSERT(!strcmp(s.email, norm) && s.admin == (int)(size & 1) && s.expires == 1000 && !strcmp(s.stamp, "0a1b2c"));
            ASSERT(users_session_verify(KEY, ck, cl, 1000, &s) == 0);
            ck[size % cl] ^= 0x01;
            ASSERT(users_session_verify(KEY, ck, cl, 999, &s) == 0);
        }
    }
    free(z);
    return 0;
}
