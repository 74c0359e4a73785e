/* session.h - the signed session cookie that says who is signed in.
 *
 * The cookie is `cyclozzo_session=v1:EMAIL:ADMIN:EXPIRES:STAMP:MAC`, where
 * EXPIRES is Unix seconds, STAMP names the account's current password hash
 * (accounts.h; "dev" in development mode) so that changing a password or
 * removing an account ends its sessions, and MAC is hex HMAC-SHA256 (key:
 * CYCLOZZO_HOME/secrets/session.key) over everything before it. It is set HttpOnly, SameSite=Lax,
 * Path=/. Nothing is stored server side; an altered, foreign-key or expired
 * cookie simply verifies as "no user". Verification checks the MAC first,
 * in constant time, and only then parses the fields. */
#ifndef CZ_USERS_SESSION_H
#define CZ_USERS_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include "users/accounts.h"

#define USERS_COOKIE_NAME    "cyclozzo_session"
#define USERS_SESSION_TTL_S  (24 * 3600)
#define USERS_COOKIE_MAX     400          /* longest cookie value we make or accept */

typedef struct {
    char email[USERS_EMAIL_MAX + 1];
    int admin;
    int64_t expires;                      /* Unix seconds */
    char stamp[USERS_STAMP_LEN + 1];
} users_session;

/* Writes the cookie value for a normalised email into out; 0, or -1 if the
 * email is not valid, the stamp not 1..USERS_STAMP_LEN of [0-9a-z], or out
 * too small. */
int users_session_sign(const uint8_t key[USERS_KEY_LEN], const char *email, int admin, int64_t expires,
                       const char *stamp, char *out, size_t outlen);
/* 1 and *s filled when value (len bytes) is a cookie signed with key that has
 * not expired at now (Unix seconds); 0 otherwise. */
int users_session_verify(const uint8_t key[USERS_KEY_LEN], const char *value, size_t len, int64_t now,
                         users_session *s);
/* Finds cookie NAME in a Cookie header value ("a=1; b=2"); 1 with *val and *vlen
 * pointing into hdr (surrounding quotes removed), 0 if absent. */
int users_cookie_find(const char *hdr, size_t len, const char *name, const char **val, size_t *vlen);

/* Copies a Cookie header value into out (2*len+1 bytes) without any NAME=...
 * pair, so the app never sees the session cookie; returns the new length
 * (0: nothing left, drop the header). */
size_t users_cookie_without(const char *hdr, size_t len, const char *name, char *out);

#endif
