/* hostroute.c - Host-name routing under a custom domain and secure-redirect
 * URLs. See hostroute.h.
 *
 * The label in front of the domain is split on "-dot-" and compared with
 * the app's id, version and service; everything is plain string work on the
 * Host header's bytes, with no allocation. */
#include "router/hostroute.h"

#include <string.h>
#include <strings.h>

const char *hostroute_name(const char *host, size_t host_len, size_t *len)
{
    size_t n = host_len;
    if (n && host[0] == '[') {
        const char *rb = memchr(host, ']', n);
        n = rb ? (size_t)(rb - host) + 1 : n;
    } else {
        const char *colon = memchr(host, ':', n);
        if (colon) n = (size_t)(colon - host);
    }
    while (n && host[n - 1] == '.') n--;
    *len = n;
    return host;
}

static int eq(const char *a, size_t an, const char *b)
{
    return b && strlen(b) == an && strncasecmp(a, b, an) == 0;
}

/* Split label on "-dot-" into at most 4 parts; returns the count (5 = too many). */
static int split_dot(const char *s, size_t n, const char **part, size_t *plen)
{
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i + 5 <= n; i++) {
        if (strncasecmp(s + i, "-dot-", 5) == 0) {
            if (k == 3) return 5;
            part[k] = s + start;
            plen[k++] = i - start;
            start = i + 5;
            i += 4;
        }
    }
    part[k] = s + start;
    plen[k++] = n - start;
    return k;
}

int hostroute_served(const hostroute *h, const char *host, size_t host_len)
{
    if (!h->domain || !*h->domain) return 1;
    size_t n;
    const char *name = hostroute_name(host, host_len, &n);
    size_t dl = strlen(h->domain);
    if (n == dl && strncasecmp(name, h->domain, dl) == 0) return 1;
    if (n < dl + 1 || name[n - dl - 1] != '.' || strncasecmp(name + n - dl, h->domain, dl) != 0)
        return 1;                                   /* not under the domain */
    size_t ll = n - dl - 1;
    if (memchr(name, '.', ll)) return 0;            /* a.b.DOMAIN: nothing we run */
    const char *p[4];
    size_t pl[4];
    int k = split_dot(name, ll, p, pl);
    const char *svc = h->service && *h->service ? h->service : "default";
    int dflt = strcmp(svc, "default") == 0;
    if (k == 1) return eq(p[0], pl[0], h->app);
    if (k == 2) return eq(p[1], pl[1], h->app) && (eq(p[0], pl[0], h->version) || (!dflt && eq(p[0], pl[0], svc)));
    if (k == 3) return eq(p[2], pl[2], h->app) && eq(p[1], pl[1], svc) && eq(p[0], pl[0], h->version);
    return 0;
}

void hostroute_redirect_url(const char *host, size_t host_len, int https, int port,
                            const char *target, size_t target_len, buf *out)
{
    size_t n;
    const char *name = hostroute_name(host, host_len, &n);
    buf_puts(out, https ? "https://" : "http://");
    buf_append(out, name, n);
    if (port != (https ? 443 : 80)) buf_printf(out, ":%d", port);
    buf_append(out, target, target_len);
}
