/* users.c - the API half of App Engine's Users service ("user"):
 * CreateLoginURL, CreateLogoutURL and GetOAuthUser.
 *
 * Login and logout URLs point at the router's own pages, as App Engine's
 * development server does: "/_ah/login?continue=<destination>" and
 * "/_ah/logout?continue=<destination>", relative to the app's host, with the
 * destination percent-escaped (everything but unreserved characters and '/').
 * A relative destination with an empty path gets "/". Cyclozzo has no OAuth provider, so
 * GetOAuthUser always answers OAUTH_INVALID_REQUEST, which is what App Engine
 * answers for a request that carries no OAuth token. */
#include "api/users.h"
#include "proto/pb.h"

#include <string.h>

typedef struct { const uint8_t *p; size_t n; int has_federated; } url_req;

/* CreateLoginURLRequest / CreateLogoutURLRequest: destination_url = 1,
 * auth_domain = 2, federated_identity = 3 (login only). */
static int decode_url_req(const uint8_t *in, size_t len, url_req *q)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 1) rc = pb_bytes(&r, wt, &q->p, &q->n);
        else if (f == 3) { const uint8_t *p; size_t n; rc = pb_bytes(&r, wt, &p, &n); q->has_federated = 1; }
        else rc = pb_skip(&r, wt, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static int unreserved(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '/';
}

static void put_escaped(buf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        if (unreserved(p[i])) { buf_putc(b, (char)p[i]); continue; }
        char e[3] = { '%', hex[p[i] >> 4], hex[p[i] & 15] };
        buf_append(b, e, 3);
    }
}

static int scheme_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '-' || c == '.';
}

/* The destination as the continue parameter. One with a scheme and host is
 * kept as given; one without and with an empty path gets the path "/". */
static void put_destination(buf *b, const uint8_t *p, size_t n)
{
    size_t i = 0;          /* a scheme, then "://" */
    while (i < n && scheme_char(p[i])) i++;
    int has_host = i > 0 && i + 3 <= n && !memcmp(p + i, "://", 3);
    if (!has_host && (n == 0 || p[0] == '?' || p[0] == '#')) put_escaped(b, (const uint8_t *)"/", 1);
    put_escaped(b, p, n);
}

size_t users_build_url(buf *out, const char *page, const uint8_t *dest, size_t dest_len)
{
    size_t start = out->len;
    buf_puts(out, page);
    buf_puts(out, "?continue=");
    put_destination(out, dest, dest_len);
    return out->len - start;
}

static void make_url(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply,
                     const char *page, int login)
{
    url_req q = {0};
    if (decode_url_req(in, len, &q) < 0) {
        api_rpc_error(reply, RPC_PARSE_ERROR, "The users %s request could not be parsed.",
                      login ? "CreateLoginURL" : "CreateLogoutURL");
        return;
    }
    if (login && q.has_federated) {
        api_app_error(reply, USERS_NOT_ALLOWED, "Federated (OpenID) login is not supported.");
        return;
    }
    if (q.n > USERS_MAX_DESTINATION) {
        api_app_error(reply, USERS_REDIRECT_URL_TOO_LONG,
                      "The destination URL is longer than %d bytes.", USERS_MAX_DESTINATION);
        return;
    }
    buf url = BUF_INIT;
    users_build_url(&url, page, q.p, q.n);
    pb_put_bytes(&reply->response, 1, url.data, url.len);
    buf_free(&url);
}

static void m_login(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    make_url(ctx, in, len, reply, "/_ah/login", 1);
}

static void m_logout(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    make_url(ctx, in, len, reply, "/_ah/logout", 0);
}

static void m_oauth_user(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    api_app_error(reply, USERS_OAUTH_INVALID_REQUEST, "The request carries no OAuth token.");
}

void users_register(api_server *srv, const char *home)
{
    (void)home;
    api_register(srv, "user", "CreateLoginURL", m_login, NULL);
    api_register(srv, "user", "CreateLogoutURL", m_logout, NULL);
    api_register(srv, "user", "GetOAuthUser", m_oauth_user, NULL);
}
