/* hostroute.h - which Host names this router answers, and the URLs of
 * app.yaml `secure:` redirects.
 *
 * With a custom domain D (`--domain D`), the app APP (version V, service S)
 * answers on D, APP.D, V-dot-APP.D, and, for a service other than
 * "default", S-dot-APP.D and V-dot-S-dot-APP.D (App Engine's "-dot-" host
 * names). Any other name under D names something this daemon does not run,
 * and is refused. Hosts outside D (an IP address, localhost, anything else)
 * are served as without a domain. Names compare case-insensitively, without
 * the port and a trailing dot. */
#ifndef CZ_HOSTROUTE_H
#define CZ_HOSTROUTE_H

#include <stddef.h>
#include "core/buf.h"

typedef struct {
    const char *domain;     /* NULL or "" = no custom domain */
    const char *app;        /* project id, e.g. "guestbook" */
    const char *version;    /* e.g. "1" */
    const char *service;    /* NULL or "default" for the default service */
} hostroute;

/* The host part of a Host header value (no port, no trailing dot; an IPv6
 * literal keeps its brackets): sets *len, returns the start. */
const char *hostroute_name(const char *host, size_t host_len, size_t *len);

/* 1 if this router serves the Host value, 0 if it names another app,
 * service or version under the domain. */
int hostroute_served(const hostroute *h, const char *host, size_t host_len);

/* Appends to out the URL "SCHEME://NAME[:PORT]TARGET" that a secure
 * redirect sends the client to: the Host's name with the port of the other
 * listener (left out when it is the scheme's default, 443 or 80). */
void hostroute_redirect_url(const char *host, size_t host_len, int https, int port,
                            const char *target, size_t target_len, buf *out);

#endif
