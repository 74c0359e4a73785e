/* urlfetch.c - App Engine's URL Fetch service ("urlfetch": Fetch), over
 * libcurl.
 *
 * Each call decodes its URLFetchRequest, checks it (URL scheme and length,
 * payload size, header values), and runs the fetch with one libcurl easy
 * handle on the calling API worker thread, inside api_blocking_begin/end so
 * that the API server adds workers while fetches wait (many slow fetches
 * never starve other calls). Redirects are followed here, not by libcurl,
 * so that App Engine's rules hold: at most 5, 301/302/303 turn other
 * methods into GET without payload, 307/308 keep method and payload, and
 * the last URL comes back as FinalUrl. Every connection libcurl opens,
 * including those of redirects, passes netguard_check (the
 * CURLOPT_OPENSOCKETFUNCTION hook): platform-internal ports are refused.
 *
 * Limits and defaults (App Engine's): deadline 5 s when none is given (at
 * most 600 s, and never past the API call's own deadline), request payload
 * 10 MiB (PAYLOAD_TOO_LARGE), response content 32 MiB (the rest is cut off
 * and ContentWasTruncated set), certificate validation on unless the app
 * asks otherwise (the system CA bundle). Proxies from the environment are
 * ignored. Errors map onto URLFetchServiceError codes, which the SDK turns
 * into InvalidURLError, DownloadError, DeadlineExceededError,
 * SSLCertificateError, TooManyRedirectsError and so on. */
#include "api/urlfetch.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "api/netguard.h"
#include "core/log.h"
#include "core/util.h"
#include "proto/pb.h"

enum { M_GET = 1, M_POST = 2, M_HEAD = 3, M_PUT = 4, M_DELETE = 5, M_PATCH = 6 };

typedef struct {
    netguard *guard;
} uf_service;

typedef struct { const uint8_t *k; size_t kn; const uint8_t *v; size_t vn; } uf_header;

typedef struct {
    int method;
    const uint8_t *url; size_t url_len; int has_url;
    uf_header *hdr; size_t nhdr, caphdr;
    const uint8_t *payload; size_t payload_len;
    int follow, validate;
    double deadline; int has_deadline;
} uf_req;

typedef struct {
    uf_service *svc;
    api_ctx *ctx;
    buf body;
    int truncated;
    buf hdrs;                    /* key \0 value \0 ... of the current response */
    size_t nhdrs;
    char refused[300];
    int64_t received;
} uf_state;

static const char *method_name(int m)
{
    static const char *n[] = {"", "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH"};
    return m >= 1 && m <= 6 ? n[m] : "GET";
}

/* ---- decoding ---- */

static int decode_header(pb_reader *sub, uf_req *q)
{
    uf_header h = {0};
    uint32_t f; int wt, rc;
    while ((rc = pb_next(sub, &f, &wt)) > 0) {
        if (f == 4) rc = pb_bytes(sub, wt, &h.k, &h.kn);
        else if (f == 5) rc = pb_bytes(sub, wt, &h.v, &h.vn);
        else rc = pb_skip(sub, wt, f);
        if (rc < 0) return -1;
    }
    if (rc < 0) return -1;
    if (q->nhdr == q->caphdr) {
        q->caphdr = q->caphdr ? q->caphdr * 2 : 8;
        q->hdr = xrealloc(q->hdr, q->caphdr * sizeof *q->hdr);
    }
    q->hdr[q->nhdr++] = h;
    return 0;
}

static int decode_req(const uint8_t *in, size_t len, uf_req *q)
{
    pb_reader r;
    pb_reader_init(&r, in, len);
    q->follow = 1;
    q->validate = 1;
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        uint64_t v;
        switch (f) {
        case 1: rc = pb_varint(&r, wt, &v); q->method = (int)v; break;
        case 2: rc = pb_bytes(&r, wt, &q->url, &q->url_len); q->has_url = 1; break;
        case 3: {
            pb_reader sub;
            rc = pb_group(&r, wt, 3, &sub);
            if (rc == 0) rc = decode_header(&sub, q);
            break;
        }
        case 6: rc = pb_bytes(&r, wt, &q->payload, &q->payload_len); break;
        case 7: rc = pb_bool(&r, wt, &q->follow); break;
        case 8: rc = pb_double(&r, wt, &q->deadline); q->has_deadline = 1; break;
        case 9: rc = pb_bool(&r, wt, &q->validate); break;
        default: rc = pb_skip(&r, wt, f);
        }
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

/* ---- libcurl callbacks ---- */

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    uf_state *s = arg;
    size_t len = sz * n;
    s->received += (int64_t)len;
    if (s->body.len + len > URLFETCH_MAX_RESPONSE) {
        buf_append(&s->body, p, URLFETCH_MAX_RESPONSE - s->body.len);
        s->truncated = 1;
        return 0;                /* stop the transfer: the rest is not wanted */
    }
    buf_append(&s->body, p, len);
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    uf_state *s = arg;
    size_t len = sz * n, end = len;
    while (end && (p[end - 1] == '\r' || p[end - 1] == '\n')) end--;
    if (end >= 5 && !memcmp(p, "HTTP/", 5)) {       /* a new response (after 1xx or a hop) */
        buf_reset(&s->hdrs);
        s->nhdrs = 0;
        return len;
    }
    const char *colon = memchr(p, ':', end);
    if (!colon || colon == p || p[0] == ' ' || p[0] == '\t') return len;
    const char *v = colon + 1;
    while (v < p + end && (*v == ' ' || *v == '\t')) v++;
    buf_append(&s->hdrs, p, (size_t)(colon - p));
    buf_putc(&s->hdrs, 0);
    buf_append(&s->hdrs, v, (size_t)(p + end - v));
    buf_putc(&s->hdrs, 0);
    s->nhdrs++;
    return len;
}

static curl_socket_t on_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    uf_state *s = arg;
    char why[sizeof s->refused];
    if (netguard_check(s->svc->guard, &a->addr, a->addrlen, why, sizeof why)) {
        snprintf(s->refused, sizeof s->refused, "%s", why);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    uf_state *s = arg;
    return api_server_stopping(s->ctx->server) ? 1 : 0;
}

/* ---- the fetch ---- */

static int header_forbidden(const uint8_t *k, size_t n)
{
    static const char *no[] = {"content-length", "host", "vary", "via", "x-forwarded-for",
                               "x-proxyuser-ip", "x-appengine-inbound-appid", "transfer-encoding",
                               "connection", "expect", NULL};
    for (int i = 0; no[i]; i++)
        if (strn_case_eq((const char *)k, n, no[i])) return 1;
    return 0;
}

static int has_ctl(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) if (p[i] == '\r' || p[i] == '\n' || p[i] == 0) return 1;
    return 0;
}

static int is_redirect(long st) { return st == 301 || st == 302 || st == 303 || st == 307 || st == 308; }

/* Maps a libcurl failure onto a URLFetchServiceError code. */
static int map_error(CURLcode rc, int hop)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return hop ? URLFETCH_FETCH_ERROR : URLFETCH_INVALID_URL;
    case CURLE_COULDNT_RESOLVE_HOST: return URLFETCH_DNS_ERROR;
    case CURLE_COULDNT_CONNECT: return URLFETCH_CONNECTION_ERROR;
    case CURLE_OPERATION_TIMEDOUT: return URLFETCH_DEADLINE_EXCEEDED;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return URLFETCH_SSL_CERTIFICATE_ERROR;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return URLFETCH_CLOSED;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return URLFETCH_MALFORMED_REPLY;
    default:
        return URLFETCH_FETCH_ERROR;
    }
}

static int url_ok(const char *url, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    if (!u) { set_err(why, whylen, "out of memory"); return 0; }
    int ok = 0;
    char *scheme = NULL, *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        set_err(why, whylen, "the URL is not a valid absolute URL");
    else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")))
        set_err(why, whylen, "only http and https URLs can be fetched");
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        set_err(why, whylen, "the URL has no host");
    else
        ok = 1;
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static void bare_app(const char *id, char *out, size_t n)
{
    const char *t = strchr(id, '~');
    snprintf(out, n, "%s", t ? t + 1 : id);
}

static struct curl_slist *build_headers(const uf_req *q, const char *app, int keep_auth)
{
    struct curl_slist *hl = NULL;
    const uf_header *ua = NULL;
    for (size_t i = 0; i < q->nhdr; i++) {
        const uf_header *h = &q->hdr[i];
        if (!h->kn || header_forbidden(h->k, h->kn)) continue;
        if (strn_case_eq((const char *)h->k, h->kn, "user-agent")) { ua = h; continue; }
        if (!keep_auth && strn_case_eq((const char *)h->k, h->kn, "authorization")) continue;
        char *line = h->vn ? xasprintf("%.*s: %.*s", (int)h->kn, h->k, (int)h->vn, h->v)
                           : xasprintf("%.*s;", (int)h->kn, h->k);
        hl = curl_slist_append(hl, line);
        free(line);
    }
    char *line = ua ? xasprintf("User-Agent: %.*s AppEngine-Google; (+http://code.google.com/appengine; appid: %s)",
                                (int)ua->vn, ua->v, app)
                    : xasprintf("User-Agent: AppEngine-Google; (+http://code.google.com/appengine; appid: %s)", app);
    hl = curl_slist_append(hl, line);
    free(line);
    hl = curl_slist_append(hl, "Expect:");
    return hl;
}

static int same_host(const char *a, const char *b)
{
    CURLU *ua = curl_url(), *ub = curl_url();
    char *ha = NULL, *hb = NULL;
    int same = ua && ub && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
               curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK &&
               curl_url_get(ua, CURLUPART_HOST, &ha, 0) == CURLUE_OK &&
               curl_url_get(ub, CURLUPART_HOST, &hb, 0) == CURLUE_OK && !strcasecmp(ha, hb);
    curl_free(ha); curl_free(hb);
    curl_url_cleanup(ua); curl_url_cleanup(ub);
    return same;
}

static void m_fetch(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    uf_service *svc = ctx->service_data;
    uf_req q = {0};
    if (decode_req(in, len, &q) < 0 || !q.has_url) {
        free(q.hdr);
        api_rpc_error(reply, RPC_PARSE_ERROR, "The urlfetch Fetch request could not be parsed.");
        return;
    }
    if (ctx->server && api_server_port(ctx->server) > 0)
        netguard_deny_port(svc->guard, api_server_port(ctx->server), "the API server");
    char why[512] = "";
    if (q.method < M_GET || q.method > M_PATCH) {
        api_app_error(reply, URLFETCH_INVALID_URL, "The request method %d is not one of GET, POST, HEAD, PUT, DELETE, PATCH.", q.method);
        goto out;
    }
    if (q.url_len > URLFETCH_MAX_URL) {
        api_app_error(reply, URLFETCH_INVALID_URL, "The URL is longer than %d bytes.", URLFETCH_MAX_URL);
        goto out;
    }
    if (has_ctl(q.url, q.url_len)) {
        api_app_error(reply, URLFETCH_INVALID_URL, "The URL holds a control character.");
        goto out;
    }
    for (size_t i = 0; i < q.nhdr; i++)
        if (has_ctl(q.hdr[i].k, q.hdr[i].kn) || has_ctl(q.hdr[i].v, q.hdr[i].vn) ||
            memchr(q.hdr[i].k, ':', q.hdr[i].kn)) {
            api_app_error(reply, URLFETCH_INVALID_URL, "The request header %.*s holds a line break, NUL or colon.",
                          (int)(q.hdr[i].kn > 64 ? 64 : q.hdr[i].kn), q.hdr[i].k);
            goto out;
        }
    int with_body = q.method == M_POST || q.method == M_PUT || q.method == M_PATCH;
    if (with_body && q.payload_len > URLFETCH_MAX_PAYLOAD) {
        api_app_error(reply, URLFETCH_PAYLOAD_TOO_LARGE, "The request payload of %zu bytes is larger than the limit of %u bytes.",
                      q.payload_len, URLFETCH_MAX_PAYLOAD);
        goto out;
    }
    char *url = xstrndup((const char *)q.url, q.url_len);
    if (!url_ok(url, why, sizeof why)) {
        api_app_error(reply, URLFETCH_INVALID_URL, "%s.", why);
        free(url);
        goto out;
    }
    double dl = q.has_deadline && q.deadline > 0 ? q.deadline : URLFETCH_DEFAULT_DEADLINE_S;
    if (dl > URLFETCH_MAX_DEADLINE_S) dl = URLFETCH_MAX_DEADLINE_S;
    int64_t start = now_us(), end = start + (int64_t)(dl * 1e6);
    if (ctx->deadline_us && end > ctx->deadline_us - 200000) end = ctx->deadline_us - 200000;

    char app[128];
    bare_app(ctx->app_id, app, sizeof app);
    uf_state st = {.svc = svc, .ctx = ctx};
    CURL *h = curl_easy_init();
    if (!h) {
        api_app_error(reply, URLFETCH_INTERNAL_TRANSIENT_ERROR, "The fetch could not be set up.");
        free(url);
        goto out;
    }
    char *first_url = xstrdup(url);
    int method = q.method, keep_body = with_body, redirected = 0, hop = 0, code = 0;
    long status = 0;
    api_blocking_begin(ctx);
    for (;; hop++) {
        curl_easy_reset(h);
        struct curl_slist *hl = build_headers(&q, app, hop == 0 || same_host(url, first_url));
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &st);
        curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open);
        curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &st);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &st);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, q.validate ? 1L : 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, q.validate ? 2L : 0L);
        int64_t left_ms = (end - now_us()) / 1000;
        if (left_ms < 1) left_ms = 1;
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)left_ms);
        if (method == M_HEAD) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (keep_body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q.payload ? (const char *)q.payload : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q.payload_len);
            if (method != M_POST) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method_name(method));
        } else if (method != M_GET) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method_name(method));
        }
        buf_reset(&st.body);
        buf_reset(&st.hdrs);
        st.nhdrs = 0;
        st.truncated = 0;
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(hl);
        if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && st.truncated)) {
            if (st.refused[0]) { code = URLFETCH_FETCH_ERROR; snprintf(why, sizeof why, "%s", st.refused); }
            else if (rc == CURLE_ABORTED_BY_CALLBACK) { code = URLFETCH_INTERNAL_TRANSIENT_ERROR; snprintf(why, sizeof why, "The API server is stopping."); }
            else {
                code = map_error(rc, hop);
                if (code == URLFETCH_DEADLINE_EXCEEDED)
                    snprintf(why, sizeof why, "No complete answer within the deadline of %.3f s.", (double)(end - start) / 1e6);
                else
                    snprintf(why, sizeof why, "%s.", curl_easy_strerror(rc));
            }
            break;
        }
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        char *next = NULL;
        if (q.follow && is_redirect(status) && curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next) == CURLE_OK && next) {
            if (hop == URLFETCH_MAX_REDIRECTS) {
                code = URLFETCH_TOO_MANY_REDIRECTS;
                snprintf(why, sizeof why, "More than %d redirects.", URLFETCH_MAX_REDIRECTS);
                break;
            }
            if (status != 307 && status != 308 && method != M_GET && method != M_HEAD) {
                method = M_GET;
                keep_body = 0;
            }
            char *nu = xstrdup(next);
            free(url);
            url = nu;
            redirected = 1;
            continue;
        }
        break;
    }
    api_blocking_end(ctx);
    curl_easy_cleanup(h);

    int64_t ms = (now_us() - start) / 1000;
    if (code) {
        api_app_error(reply, code, "%s", why);
        log_info("urlfetch", "app=%s request_id=%s method=%s url=%s error=%d detail=%s latency_ms=%lld",
                 log_q(app), log_q(ctx->request_id), method_name(q.method), log_q(url), code, log_q(why), (long long)ms);
    } else {
        buf *o = &reply->response;
        pb_put_bytes(o, 1, st.body.data ? st.body.data : "", st.body.len);
        pb_put_int(o, 2, status);
        const char *p = st.hdrs.data;
        for (size_t i = 0; i < st.nhdrs; i++) {
            const char *k = p, *v = k + strlen(k) + 1;
            p = v + strlen(v) + 1;
            pb_group_begin(o, 3);
            pb_put_str(o, 4, k);
            pb_put_str(o, 5, v);
            pb_group_end(o, 3);
        }
        if (st.truncated) pb_put_bool(o, 6, 1);
        pb_put_int(o, 7, with_body ? (int64_t)q.payload_len : 0);
        pb_put_int(o, 8, st.received);
        if (redirected) pb_put_str(o, 9, url);
        log_info("urlfetch", "app=%s request_id=%s method=%s url=%s status=%ld bytes=%zu truncated=%d redirects=%d latency_ms=%lld",
                 log_q(app), log_q(ctx->request_id), method_name(q.method), log_q(url), status, st.body.len,
                 st.truncated, hop, (long long)ms);
    }
    buf_free(&st.body);
    buf_free(&st.hdrs);
    free(url);
    free(first_url);
out:
    free(q.hdr);
}

static void uf_stop(void *arg)
{
    uf_service *svc = arg;
    netguard_free(svc->guard);
    free(svc);
    curl_global_cleanup();
}

void urlfetch_register(api_server *srv, const char *home)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uf_service *svc = xcalloc(1, sizeof *svc);
    svc->guard = netguard_new(home);
    api_register(srv, "urlfetch", "Fetch", m_fetch, svc);
    api_share(srv, "urlfetch", svc);
    api_on_stop(srv, uf_stop, svc);
}

void urlfetch_allow_port(api_server *srv, int port)
{
    uf_service *svc = api_shared(srv, "urlfetch");
    if (svc) netguard_allow_port(svc->guard, port);
}
