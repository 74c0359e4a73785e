/* login.h - the users service's pages and the signed-in user of a request,
 * for the router: /_ah/login (sign-in form and its POST), /_ah/logout, the
 * session cookie check, and the refusal page for non-administrators.
 *
 * A users_ctx holds the installation's keys (session.key, users.key), the
 * accounts location, a cached copy of the accounts file, development mode,
 * and a small table of failed sign-ins per email (512 entries in 4-way sets
 * under a random hash; after 5 failures an email is locked out for 2, 4,
 * 8 ... up to 300 seconds; a success clears it). It is shared by the router
 * threads (mutex and rwlock inside). In development mode, as with Google's
 * dev server, any email signs in without a password, and a checkbox makes
 * the user an administrator.
 *
 * Pages are built into a users_resp (status, extra head lines, HTML body)
 * so the router only frames them. `continue` is followed only when it is a
 * path on this site ("/x", never "//x") or an http(s) URL whose authority is
 * exactly the request's Host; anything else becomes "/". */
#ifndef CZ_USERS_LOGIN_H
#define CZ_USERS_LOGIN_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"
#include "users/accounts.h"

#define USERS_AUTH_DOMAIN  "gmail.com"

typedef struct users_ctx users_ctx;

/* Loads (or creates) the keys under home. dev: development sign-in. */
users_ctx *users_ctx_new(const char *home, int dev, char *err, size_t errlen);
void users_ctx_free(users_ctx *u);

typedef struct {
    char email[USERS_EMAIL_MAX + 1];
    char id[USERS_ID_LEN + 1];
    char nickname[USERS_EMAIL_MAX + 1];  /* as the SDK's User.nickname(): the part before @ for gmail.com */
    int admin;
} users_user;

/* The user a Cookie header value signs in, if any: 1 and *out filled, or 0.
 * Outside development mode the account must still exist with the password
 * the session was made with, and its admin flag comes from the accounts
 * file (re-read when it changes), so --remove-user and --add-user apply to
 * open sessions at once. */
int users_from_cookie(users_ctx *u, const char *hdr, size_t len, int64_t now_s, users_user *out);

enum { USERS_PAGE_NONE = 0, USERS_PAGE_LOGIN, USERS_PAGE_LOGOUT };
/* Which users page a decoded path is. */
int users_page(const char *path, size_t len);

typedef struct {
    const char *method;  size_t method_len;
    const char *query;   size_t query_len;     /* after '?', may be NULL */
    const char *host;    size_t host_len;      /* Host header, may be NULL */
    const char *origin;  size_t origin_len;    /* Origin header, may be NULL */
    const char *body;    size_t body_len;      /* form body of a POST */
    const users_user *user;                    /* signed in now, or NULL */
} users_req;

typedef struct {
    int status;
    buf head;      /* extra header lines, each ending CRLF (Location, Set-Cookie, ...) */
    buf body;      /* text/html; charset=utf-8 */
} users_resp;

/* Answers a users page (page from users_page). r must be zeroed first;
 * release with users_resp_free. */
void users_handle(users_ctx *u, int page, const users_req *rq, users_resp *r);
void users_resp_free(users_resp *r);

/* The 403 page for a signed-in user who is not an administrator; url is
 * the address they asked for (offered as "sign in as someone else"). */
void users_forbidden_page(const users_user *who, const char *url, buf *body);

/* The value of NAME in form-urlencoded data ('+' is a space, %XX a byte),
 * NUL-terminated into out: its length, -1 when absent, -2 when malformed,
 * holding a NUL, or longer than outlen-1. */
long users_form_value(const char *data, size_t len, const char *name, char *out, size_t outlen);

/* Where to send the user after sign-in/out: url itself when it is safe
 * (see above), else "/". out holds outlen bytes. */
void users_safe_continue(const char *url, const char *host, size_t host_len, char *out, size_t outlen);

#endif
