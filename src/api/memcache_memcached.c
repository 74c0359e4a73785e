/* memcache_memcached.c - the memcached backend of the memcache service: App
 * Engine's memcache semantics over one or more memcached servers, reached
 * through libmemcached with consistent hashing (ketama), so a cluster's nodes
 * share one cache. See memcache_backend.h and docs/memcache.md.
 *
 * Keys. mcd_key() turns (app, namespace, key) into one printable memcached
 * key: "cz<len>:<app>:<len>:<namespace>:<key>", each part %XX-escaped where a
 * byte is not printable ASCII (or is '%'), lengths making the split
 * unambiguous; a key that would pass 250 bytes keeps its app prefix and
 * becomes "#<key length>:<sha256 of the rest>". Apps sharing servers never
 * meet, and every key of an app starts with its prefix.
 *
 * What memcached lacks, emulated:
 * - Flags: the SDK's flags are stored XOR 0x80000000, so a stored item always
 *   has non-zero flags, and stored flags 0 with an empty value mark a delete
 *   hold ("lock"): delete(key, seconds) replaces the item, by CAS, with a
 *   lock expiring when the hold ends. get skips locks, add fails on them (the
 *   key exists), set overwrites them; replace, cas and delete read the item
 *   first (gets) and treat a lock as missing.
 * - Increments with an initial value: incr, and on NOT_FOUND add the initial
 *   value plus delta, retrying incr if another writer added first. memcached's
 *   own incr wraps at 2^64 and decr stops at 0, as App Engine's. A delta over
 *   32 bits (libmemcached's limit) goes as a raw text "incr".
 * - Per-app flush and statistics: memcached's flush_all and stats are
 *   server-wide, so both walk every server's items with
 *   `lru_crawler metadump all` and keep this app's keys: flush deletes them,
 *   stats count them (items, key + value bytes worked out from memcached's
 *   item size, oldest last-access time). The crawler is no snapshot (an
 *   item being moved between memcached's LRU lists can be missed), so
 *   flush repeats until a pass finds none of the app's keys and stats
 *   until two passes agree. Hits and misses are counted here, per app, by
 *   this API server.
 * - for_peek reads expiry and last access with a meta get ("mg"), which
 *   libmemcached does not speak, on a short raw connection.
 * - Expirations: memcached's clock ticks in whole seconds, so a relative
 *   time t is sent as t + 1 (the item lives t to t + 1 seconds, never less),
 *   an absolute time within 30 days as the seconds left, rounded up. Delete
 *   holds go as they are (they may end up to a second early).
 *
 * Failure. A server that cannot be reached makes its keys miss, sets fail
 * (MC_ERROR), deletes report not found; keys on other servers work on. The
 * first failure of a server is logged, and so is its return; libmemcached
 * retries a dead server every second.
 *
 * Threads. memcached_st is not thread-safe: each call takes a clone from a
 * small pool (created on demand) and gives it back. */
#include "api/memcache_backend.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

#include <libmemcached/memcached.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define FLAG_MARK      0x80000000u
#define PREFIX_MAX     120          /* longer app prefixes are hashed */
#define ITEM_OVERHEAD  59           /* memcached 1.6 item header (48) + "\0" + "\r\n" + CAS (8) */
#define FLAGS_SUFFIX   4            /* memcached stores non-zero flags in 4 more bytes */
#define MAX_SERVERS    64
#define RETRIES        8

typedef struct { char host[256]; int port; int down; } server;

typedef struct app_ctr {
    struct app_ctr *next;
    uint64_t hits, misses, byte_hits;
    size_t len;
    char id[];
} app_ctr;

typedef struct {
    mc_backend base;
    memcached_st *master;
    pthread_mutex_t mu;            /* pool, servers[].down, apps */
    memcached_st **pool;
    size_t npool, cappool;
    server servers[MAX_SERVERS];
    int nservers;
    int ndown;                     /* servers marked down (read without the lock) */
    app_ctr *apps;
} mcd;

static mcd *M(mc_backend *b) { return (mcd *)b; }

/* ---- server list ---- */

static int parse_servers(const char *spec, server *out, int *n, char *err, size_t errlen)
{
    *n = 0;
    if (!spec || !*spec) { set_err(err, errlen, "The memcached server list is empty."); return -1; }
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        size_t len = (size_t)(end - p);
        while (len && (*p == ' ')) { p++; len--; }
        while (len && p[len - 1] == ' ') len--;
        if (!len) { set_err(err, errlen, "The memcached server list \"%s\" has an empty entry.", spec); return -1; }
        if (*n == MAX_SERVERS) { set_err(err, errlen, "At most %d memcached servers can be listed.", MAX_SERVERS); return -1; }
        server *s = &out[(*n)++];
        memset(s, 0, sizeof *s);
        const char *host = p, *port = NULL;
        size_t hlen = len;
        if (*p == '[') {
            const char *rb = memchr(p, ']', len);
            if (!rb) { set_err(err, errlen, "The memcached server \"%.*s\" lacks a closing \"]\".", (int)len, p); return -1; }
            host = p + 1;
            hlen = (size_t)(rb - host);
            if (rb + 1 < p + len) {
                if (rb[1] != ':') { set_err(err, errlen, "The memcached server \"%.*s\" is not [address]:port.", (int)len, p); return -1; }
                port = rb + 2;
            }
        } else {
            const char *colon = memchr(p, ':', len);
            if (colon) { hlen = (size_t)(colon - p); port = colon + 1; }
        }
        if (!hlen || hlen >= sizeof s->host) { set_err(err, errlen, "The memcached server \"%.*s\" has no usable host name.", (int)len, p); return -1; }
        memcpy(s->host, host, hlen);
        s->port = 11211;
        if (port) {
            long v = 0;
            const char *q = port;
            for (; q < p + len && *q >= '0' && *q <= '9' && v <= 65535; q++) v = v * 10 + (*q - '0');
            if (q == port || q != p + len || v < 1 || v > 65535) {
                set_err(err, errlen, "The memcached server \"%.*s\" has no port number from 1 to 65535 after \":\".", (int)len, p);
                return -1;
            }
            s->port = (int)v;
        }
        p = *end ? end + 1 : end;
        if (*end && !*p) { set_err(err, errlen, "The memcached server list \"%s\" ends with a comma.", spec); return -1; }
    }
    return 0;
}

int mc_servers_check(const char *servers, char *err, size_t errlen)
{
    server tmp[MAX_SERVERS];
    int n;
    return parse_servers(servers, tmp, &n, err, errlen);
}

/* ---- keys ---- */

static int plain(uint8_t c) { return c > 0x20 && c < 0x7f && c != '%'; }

static size_t esc_len(const uint8_t *p, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += plain(p[i]) ? 1 : 3;
    return m;
}

static char *esc(char *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        if (plain(p[i])) *o++ = (char)p[i];
        else { *o++ = '%'; *o++ = hex[p[i] >> 4]; *o++ = hex[p[i] & 15]; }
    }
    return o;
}

static void sha256_hex(const void *p, size_t n, char *out, size_t hexchars)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_Digest(p, n, d, &dl, EVP_sha256(), NULL);
    for (size_t i = 0; i < hexchars / 2 && i < dl; i++) sprintf(out + 2 * i, "%02x", d[i]);
    out[hexchars] = 0;
}

size_t mcd_app_prefix(const char *app, size_t app_len, char *out)
{
    size_t el = esc_len((const uint8_t *)app, app_len);
    char num[24];
    int nl = snprintf(num, sizeof num, "%zu", el);
    if (2 + (size_t)nl + 1 + el + 1 <= PREFIX_MAX) {
        char *o = out;
        memcpy(o, "cz", 2); o += 2;
        memcpy(o, num, (size_t)nl); o += nl;
        *o++ = ':';
        o = esc(o, (const uint8_t *)app, app_len);
        *o++ = ':';
        *o = 0;
        return (size_t)(o - out);
    }
    memcpy(out, "czh:", 4);
    sha256_hex(app, app_len, out + 4, 32);
    out[36] = ':';
    out[37] = 0;
    return 37;
}

size_t mcd_key(const mc_key *k, char *out)
{
    size_t pl = mcd_app_prefix(k->app, k->app_len, out);
    size_t nsl = esc_len((const uint8_t *)k->ns, k->ns_len);
    size_t kl = esc_len(k->key, k->key_len);
    char num[24];
    int nl = snprintf(num, sizeof num, "%zu", nsl);
    size_t rest = (size_t)nl + 1 + nsl + 1 + kl;
    char *body = xmalloc(rest + 1);
    char *o = body;
    memcpy(o, num, (size_t)nl); o += nl;
    *o++ = ':';
    o = esc(o, (const uint8_t *)k->ns, k->ns_len);
    *o++ = ':';
    o = esc(o, k->key, k->key_len);
    size_t len;
    if (pl + rest <= MCD_KEY_MAX) {
        memcpy(out + pl, body, rest);
        len = pl + rest;
    } else {
        int hl = snprintf(out + pl, 32, "#%zu:", k->key_len);
        sha256_hex(body, rest, out + pl + hl, 64);
        len = pl + (size_t)hl + 64;
    }
    out[len] = 0;
    free(body);
    return len;
}

static int parse_num(const char **p, const char *end, size_t *v)
{
    const char *s = *p;
    size_t x = 0;
    while (*p < end && **p >= '0' && **p <= '9') x = x * 10 + (size_t)(*(*p)++ - '0');
    *v = x;
    return *p > s && *p < end && **p == ':' ? 0 : -1;
}

long mcd_key_orig_len(const char *mkey, size_t len)
{
    const char *p = mkey, *end = mkey + len;
    size_t n;
    if (len < 3 || memcmp(p, "cz", 2)) return -1;
    p += 2;
    if (*p == 'h') {
        if (len < 37 || p[1] != ':' || mkey[36] != ':') return -1;
        p = mkey + 37;
    } else {
        if (parse_num(&p, end, &n) < 0 || (size_t)(end - p) < n + 2) return -1;
        p += 1 + n;
        if (*p++ != ':') return -1;
    }
    if (p < end && *p == '#') {
        p++;
        if (parse_num(&p, end, &n) < 0) return -1;
        return (long)n;
    }
    if (parse_num(&p, end, &n) < 0 || (size_t)(end - p) < n + 2) return -1;
    p += 1 + n;
    if (*p++ != ':') return -1;
    long orig = 0;
    while (p < end) {
        if (*p == '%') { if (end - p < 3) return -1; p += 3; } else p++;
        orig++;
    }
    return orig;
}

/* ---- time ---- */

/* memcached's exptime for a memcache time t (see the header comment). */
static time_t exptime_of(uint32_t t, int64_t now)
{
    if (t == 0) return 0;
    if (t <= MC_RELATIVE_LIMIT) return t < MC_RELATIVE_LIMIT ? (time_t)t + 1 : (time_t)t;
    int64_t ms = (int64_t)t * 1000;
    if (ms <= now) return (time_t)t;                      /* in the past: gone at once */
    int64_t left = (ms - now + 999) / 1000;
    return left <= MC_RELATIVE_LIMIT ? (time_t)left : (time_t)t;
}

/* ---- connections, health ---- */

static memcached_st *take(mcd *m)
{
    pthread_mutex_lock(&m->mu);
    memcached_st *c = m->npool ? m->pool[--m->npool] : memcached_clone(NULL, m->master);
    pthread_mutex_unlock(&m->mu);
    if (!c) { fputs("cyclozzo: out of memory\n", stderr); abort(); }
    return c;
}

static void give(mcd *m, memcached_st *c)
{
    pthread_mutex_lock(&m->mu);
    if (m->npool == m->cappool) {
        m->cappool = m->cappool ? m->cappool * 2 : 8;
        m->pool = xrealloc(m->pool, m->cappool * sizeof *m->pool);
    }
    m->pool[m->npool++] = c;
    pthread_mutex_unlock(&m->mu);
}

/* Did a server answer (whatever it said)? */
static int answered(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_SUCCESS: case MEMCACHED_NOTFOUND: case MEMCACHED_NOTSTORED:
    case MEMCACHED_DATA_EXISTS: case MEMCACHED_STORED: case MEMCACHED_DELETED:
    case MEMCACHED_END: case MEMCACHED_BUFFERED: case MEMCACHED_CLIENT_ERROR:
    case MEMCACHED_SERVER_ERROR: case MEMCACHED_E2BIG: case MEMCACHED_PROTOCOL_ERROR:
        return 1;
    default:
        return 0;
    }
}

static server *find_server(mcd *m, const memcached_instance_st *in)
{
    if (!in) return NULL;
    const char *name = memcached_server_name(in);
    int port = memcached_server_port(in);
    for (int i = 0; i < m->nservers; i++)
        if (m->servers[i].port == port && name && !strcmp(m->servers[i].host, name)) return &m->servers[i];
    return NULL;
}

static void mark(mcd *m, server *s, int down, const char *why)
{
    if (!s) return;
    pthread_mutex_lock(&m->mu);
    int was = s->down;
    if (was != down) {
        s->down = down;
        __atomic_add_fetch(&m->ndown, down ? 1 : -1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&m->mu);
    if (was == down) return;
    if (down)
        log_warn("memcache", "msg=\"memcached server unreachable: its keys miss and sets fail until it returns\" "
                 "server=%s:%d error=%s", s->host, s->port, log_q(why));
    else
        log_info("memcache", "msg=\"memcached server reachable again\" server=%s:%d", s->host, s->port);
}

/* Record how a call on mkey went: the first failure of a server is logged,
 * and so is its first success after that. */
static void note(mcd *m, memcached_st *c, const char *mkey, size_t ml, memcached_return_t rc)
{
    int ok = answered(rc);
    if (ok && !__atomic_load_n(&m->ndown, __ATOMIC_RELAXED)) return;
    memcached_return_t r2;
    const memcached_instance_st *in = memcached_server_by_key(c, mkey, ml, &r2);
    mark(m, find_server(m, in), !ok, ok ? "" : memcached_strerror(c, rc));
}

/* ---- per-app hit counters ---- */

static app_ctr *counters(mcd *m, const char *app, size_t len)
{
    for (app_ctr *a = m->apps; a; a = a->next)
        if (a->len == len && !memcmp(a->id, app, len)) return a;
    app_ctr *a = xcalloc(1, sizeof *a + len + 1);
    a->len = len;
    memcpy(a->id, app, len);
    a->next = m->apps;
    m->apps = a;
    return a;
}

static void count(mcd *m, const char *app, size_t len, uint64_t hits, uint64_t misses, uint64_t bytes)
{
    pthread_mutex_lock(&m->mu);
    app_ctr *a = counters(m, app, len);
    a->hits += hits;
    a->misses += misses;
    a->byte_hits += bytes;
    pthread_mutex_unlock(&m->mu);
}

/* ---- raw text-protocol connections (metadump, mg, 64-bit incr) ---- */

typedef struct { int fd; char *b; size_t len, off, cap; } raw;

static int raw_open(raw *r, const char *host, int port)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0) return -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = { 2, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) { r->fd = fd; break; }
        close(fd);
    }
    freeaddrinfo(ai);
    return r->fd < 0 ? -1 : 0;
}

static void raw_close(raw *r)
{
    if (r->fd >= 0) close(r->fd);
    free(r->b);
    r->fd = -1;
    r->b = NULL;
}

static int raw_send(raw *r, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(r->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Make at least n unread bytes available; 0 or -1. */
static int raw_fill(raw *r, size_t n)
{
    while (r->len - r->off < n) {
        if (r->off) { memmove(r->b, r->b + r->off, r->len - r->off); r->len -= r->off; r->off = 0; }
        if (r->cap - r->len < 65536) { r->cap = r->cap * 2 + 65536; r->b = xrealloc(r->b, r->cap); }
        ssize_t got = recv(r->fd, r->b + r->len, r->cap - r->len, 0);
        if (got <= 0) return -1;
        r->len += (size_t)got;
    }
    return 0;
}

/* The next line without its "\r\n" / "\n" (NUL-terminated in place). */
static char *raw_line(raw *r, size_t *n)
{
    for (;;) {
        char *s = r->b ? r->b + r->off : NULL;
        char *nl = s ? memchr(s, '\n', r->len - r->off) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - s);
            r->off += l + 1;
            if (l && s[l - 1] == '\r') l--;
            s[l] = 0;
            *n = l;
            return s;
        }
        if (raw_fill(r, r->len - r->off + 1) < 0) return NULL;
    }
}

/* Decode metadump's %XX key escapes in place; the new length. */
static size_t uri_decode(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            unsigned v;
            if (sscanf(s + i + 1, "%2x", &v) == 1) { s[o++] = (char)v; i += 2; continue; }
        }
        s[o++] = s[i];
    }
    return o;
}

typedef struct { const char *key; size_t klen; long long exp, la; size_t size; } dump_item;
typedef void (*dump_fn)(void *arg, raw *r, const dump_item *it);

/* Walk every item of one server with `lru_crawler metadump all`. The crawler
 * serves one dump at a time: BUSY is retried. 0, or -1 on failure. */
static int metadump(const server *s, dump_fn fn, void *arg, raw *r)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        if (raw_open(r, s->host, s->port) < 0) return -1;
        static const char cmd[] = "lru_crawler metadump all\r\n";
        if (raw_send(r, cmd, sizeof cmd - 1) < 0) { raw_close(r); return -1; }
        size_t n;
        char *line;
        int busy = 0;
        while ((line = raw_line(r, &n))) {
            if (!strcmp(line, "END")) return 0;
            if (!strncmp(line, "BUSY", 4)) { busy = 1; break; }
            if (strncmp(line, "key=", 4)) { raw_close(r); return -1; }   /* ERROR, CLIENT_ERROR */
            dump_item it = { .exp = -1 };
            char *sp = strchr(line, ' ');
            if (!sp) continue;
            it.key = line + 4;
            it.klen = uri_decode(line + 4, (size_t)(sp - (line + 4)));
            char *f;
            if ((f = strstr(sp, " exp="))) it.exp = strtoll(f + 5, NULL, 10);
            if ((f = strstr(sp, " la="))) it.la = strtoll(f + 4, NULL, 10);
            if ((f = strstr(sp, " size="))) it.size = (size_t)strtoull(f + 6, NULL, 10);
            fn(arg, r, &it);
        }
        raw_close(r);
        if (!busy) return -1;
        usleep(20000);
    }
    return -1;
}

/* ---- single-key read ---- */

typedef struct { char *value; size_t len; uint32_t flags; uint64_t cas; } got;

/* gets of one key: 1 found (g filled, value malloc'ed), 0 missing, -1 failed. */
static int gets_one(mcd *m, memcached_st *c, const char *mk, size_t ml, got *g)
{
    const char *keys[1] = { mk };
    size_t lens[1] = { ml };
    memcached_return_t rc = memcached_mget(c, keys, lens, 1);
    note(m, c, mk, ml, rc);
    if (rc != MEMCACHED_SUCCESS) return answered(rc) ? 0 : -1;
    int found = 0;
    memcached_result_st res, *rp;
    memcached_result_create(c, &res);
    while ((rp = memcached_fetch_result(c, &res, &rc))) {
        if (!found) {
            g->len = memcached_result_length(rp);
            g->value = xmalloc(g->len + 1);
            memcpy(g->value, memcached_result_value(rp), g->len);
            g->value[g->len] = 0;
            g->flags = memcached_result_flags(rp);
            g->cas = memcached_result_cas(rp);
            found = 1;
        }
    }
    memcached_result_free(&res);
    if (!found && !answered(rc)) { note(m, c, mk, ml, rc); return -1; }
    return found;
}

/* ---- get ---- */

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)p[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* for_peek: a meta get on the key's server gives TTL and last access. */
static int peek_one(mcd *m, memcached_st *c, const mc_key *k, const char *mk, size_t ml,
                    int64_t now, mc_emit_fn emit, void *arg, size_t *value_len)
{
    memcached_return_t rc;
    server *s = find_server(m, memcached_server_by_key(c, mk, ml, &rc));
    raw r;
    if (!s || raw_open(&r, s->host, s->port) < 0) { if (s) mark(m, s, 1, "connection refused"); return 0; }
    char cmd[MCD_KEY_MAX + 32];
    int cl = snprintf(cmd, sizeof cmd, "mg %s s v f t l c\r\n", mk);
    size_t n;
    char *line;
    int hit = 0;
    if (raw_send(&r, cmd, (size_t)cl) == 0 && (line = raw_line(&r, &n)) && !strncmp(line, "VA ", 3)) {
        size_t vlen = (size_t)strtoull(line + 3, NULL, 10);
        uint32_t flags = 0;
        long long ttl = -1, la = 0;
        uint64_t cas = 0;
        char *save = NULL;
        for (char *t = strtok_r(line + 3, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            if (*t == 'f') flags = (uint32_t)strtoul(t + 1, NULL, 10);
            else if (*t == 't') ttl = strtoll(t + 1, NULL, 10);
            else if (*t == 'l') la = strtoll(t + 1, NULL, 10);
            else if (*t == 'c') cas = strtoull(t + 1, NULL, 10);
        }
        if (raw_fill(&r, vlen + 2) == 0) {
            int64_t exp_ms = ttl >= 0 ? now + ttl * 1000 : 0;
            mc_view v = {
                .key = k->key, .key_len = k->key_len,
                .value = (const uint8_t *)r.b + r.off, .value_len = flags ? vlen : 0,
                .flags = flags ^ FLAG_MARK, .cas = cas,
                .expires = flags ? exp_ms : 0,
                .last_access = now - la * 1000,
                .lock_until = flags ? 0 : (exp_ms ? exp_ms : now),
            };
            if (!flags) v.flags = 0;
            if (emit) emit(arg, &v);
            *value_len = v.value_len;
            hit = 1;
        }
    }
    raw_close(&r);
    return hit;
}

static void d_get(mc_backend *b, const mc_key *keys, size_t n, int peek, int64_t now,
                  mc_emit_fn emit, void *arg)
{
    mcd *m = M(b);
    if (!n) return;
    memcached_st *c = take(m);
    uint64_t hits = 0, bytes = 0;
    char (*mk)[MCD_KEY_MAX + 1] = xmalloc(n * sizeof *mk);
    const char **kp = xmalloc(n * sizeof *kp);
    size_t *kl = xmalloc(n * sizeof *kl), *idx = xmalloc(n * sizeof *idx), cnt = 0;
    for (size_t i = 0; i < n; i++) {
        if (keys[i].key_len > MC_MAX_KEY) continue;        /* never stored: a miss */
        kl[cnt] = mcd_key(&keys[i], mk[cnt]);
        kp[cnt] = mk[cnt];
        idx[cnt++] = i;
    }
    if (peek) {
        for (size_t j = 0; j < cnt; j++) {
            size_t vl = 0;
            if (peek_one(m, c, &keys[idx[j]], kp[j], kl[j], now, emit, arg, &vl)) {
                hits++;
                bytes += keys[idx[j]].key_len + vl;
            }
        }
    } else if (cnt) {
        /* key -> position, to give each result its caller's key */
        size_t cap = 16;
        while (cap < 2 * cnt) cap *= 2;
        long *slot = xmalloc(cap * sizeof *slot);
        for (size_t s = 0; s < cap; s++) slot[s] = -1;
        for (size_t j = 0; j < cnt; j++) {
            size_t s = fnv(kp[j], kl[j]) & (cap - 1);
            while (slot[s] >= 0 && !(kl[slot[s]] == kl[j] && !memcmp(kp[slot[s]], kp[j], kl[j]))) s = (s + 1) & (cap - 1);
            if (slot[s] < 0) slot[s] = (long)j;
        }
        memcached_return_t rc = memcached_mget(c, kp, kl, cnt);
        if (!answered(rc) || rc == MEMCACHED_SOME_ERRORS) {
            const memcached_instance_st *in = memcached_server_get_last_disconnect(c);
            mark(m, find_server(m, in), 1, memcached_strerror(c, rc));
        }
        if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_SOME_ERRORS) {
            memcached_result_st res, *rp;
            memcached_result_create(c, &res);
            while ((rp = memcached_fetch_result(c, &res, &rc))) {
                const char *rk = memcached_result_key_value(rp);
                size_t rl = memcached_result_key_length(rp);
                size_t s = fnv(rk, rl) & (cap - 1);
                while (slot[s] >= 0 && !(kl[slot[s]] == rl && !memcmp(kp[slot[s]], rk, rl))) s = (s + 1) & (cap - 1);
                if (slot[s] < 0) continue;
                uint32_t flags = memcached_result_flags(rp);
                if (!flags) continue;                        /* a delete hold */
                const mc_key *k = &keys[idx[slot[s]]];
                mc_view v = {
                    .key = k->key, .key_len = k->key_len,
                    .value = (const uint8_t *)memcached_result_value(rp),
                    .value_len = memcached_result_length(rp),
                    .flags = flags ^ FLAG_MARK, .cas = memcached_result_cas(rp),
                    .last_access = now,
                };
                if (emit) emit(arg, &v);
                hits++;
                bytes += k->key_len + v.value_len;
                if (__atomic_load_n(&m->ndown, __ATOMIC_RELAXED)) note(m, c, rk, rl, MEMCACHED_SUCCESS);
            }
            memcached_result_free(&res);
        }
        free(slot);
    }
    give(m, c);
    count(m, keys[0].app, keys[0].app_len, hits, n - hits, bytes);
    free(mk); free(kp); free(kl); free(idx);
}

/* ---- set ---- */

static int d_set(mc_backend *b, const mc_key *k, const void *value, size_t value_len,
                 uint32_t flags, int policy, uint64_t cas, int has_cas, uint32_t exptime, int64_t now)
{
    mcd *m = M(b);
    if (k->key_len > MC_MAX_KEY || value_len > MC_MAX_VALUE) return MC_ERROR;
    if (policy < MC_SET || policy > MC_CAS) return MC_ERROR;
    char mk[MCD_KEY_MAX + 1];
    size_t ml = mcd_key(k, mk);
    time_t exp = exptime_of(exptime, now);
    uint32_t sf = flags ^ FLAG_MARK;
    memcached_st *c = take(m);
    memcached_return_t rc = MEMCACHED_SUCCESS;
    int status = MC_ERROR;
    switch (policy) {
    case MC_SET:
        rc = memcached_set(c, mk, ml, value, value_len, exp, sf);
        status = rc == MEMCACHED_SUCCESS ? MC_STORED : answered(rc) ? MC_NOT_STORED : MC_ERROR;
        break;
    case MC_ADD:
        rc = memcached_add(c, mk, ml, value, value_len, exp, sf);
        status = rc == MEMCACHED_SUCCESS ? MC_STORED : answered(rc) ? MC_NOT_STORED : MC_ERROR;
        break;
    case MC_REPLACE:                     /* only over a live item, never a hold */
        for (int i = 0; i < RETRIES; i++) {
            got g = {0};
            int f = gets_one(m, c, mk, ml, &g);
            free(g.value);
            if (f < 0) { status = MC_ERROR; rc = MEMCACHED_CONNECTION_FAILURE; break; }
            if (!f || !g.flags) { status = MC_NOT_STORED; break; }
            rc = memcached_cas(c, mk, ml, value, value_len, exp, sf, g.cas);
            if (rc == MEMCACHED_DATA_EXISTS) continue;
            status = rc == MEMCACHED_SUCCESS ? MC_STORED : answered(rc) ? MC_NOT_STORED : MC_ERROR;
            break;
        }
        break;
    case MC_CAS:
        if (!has_cas) { status = MC_NOT_STORED; break; }
        rc = memcached_cas(c, mk, ml, value, value_len, exp, sf, cas);
        if (rc == MEMCACHED_SUCCESS) status = MC_STORED;
        else if (rc == MEMCACHED_DATA_EXISTS) {
            got g = {0};                 /* a hold counts as gone, as in the embedded store */
            int f = gets_one(m, c, mk, ml, &g);
            free(g.value);
            status = f > 0 && g.flags ? MC_EXISTS : MC_NOT_STORED;
        } else status = answered(rc) ? MC_NOT_STORED : MC_ERROR;
        break;
    }
    note(m, c, mk, ml, rc);
    give(m, c);
    return status;
}

/* ---- delete ---- */

static int d_del(mc_backend *b, const mc_key *k, uint32_t hold, int64_t now)
{
    mcd *m = M(b);
    if (k->key_len > MC_MAX_KEY) return 0;
    char mk[MCD_KEY_MAX + 1];
    size_t ml = mcd_key(k, mk);
    /* A hold is sent as it is (relative) or as the seconds left: it may end
     * up to a second early on memcached's clock, never late. */
    time_t until = hold <= MC_RELATIVE_LIMIT ? (time_t)hold : exptime_of(hold, now);
    if (hold > MC_RELATIVE_LIMIT && (int64_t)hold * 1000 <= now) until = 0;   /* hold already over */
    memcached_st *c = take(m);
    int deleted = 0;
    for (int i = 0; i < RETRIES; i++) {
        got g = {0};
        int f = gets_one(m, c, mk, ml, &g);
        free(g.value);
        if (f <= 0 || !g.flags) break;               /* missing, held, or unreachable */
        memcached_return_t rc = until
            ? memcached_cas(c, mk, ml, "", 0, until, 0, g.cas)
            : memcached_delete(c, mk, ml, 0);
        note(m, c, mk, ml, rc);
        if (rc == MEMCACHED_DATA_EXISTS) continue;
        deleted = rc == MEMCACHED_SUCCESS;
        break;
    }
    give(m, c);
    return deleted;
}

/* ---- increment ---- */

static uint64_t apply(uint64_t cur, int decr, uint64_t delta)
{
    return decr ? (cur > delta ? cur - delta : 0) : cur + delta;
}

/* Numeric as memcached reads it? MC_INCR_OK, _NOT_NUMERIC or _TOO_BIG. */
static int numeric(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
    while (n > i && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n')) n--;
    if (i < n && p[i] == '+') i++;
    if (i == n) return MC_INCR_NOT_NUMERIC;
    uint64_t v = 0;
    int big = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return MC_INCR_NOT_NUMERIC;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) big = 1;
        v = v * 10 + d;
    }
    return big ? MC_INCR_TOO_BIG : MC_INCR_OK;
}

/* "incr"/"decr" with a 64-bit delta over a raw connection. */
static memcached_return_t raw_incr(mcd *m, memcached_st *c, const char *mk, size_t ml,
                                   int decr, uint64_t delta, uint64_t *out)
{
    memcached_return_t rc;
    server *s = find_server(m, memcached_server_by_key(c, mk, ml, &rc));
    raw r;
    if (!s || raw_open(&r, s->host, s->port) < 0) return MEMCACHED_CONNECTION_FAILURE;
    char cmd[MCD_KEY_MAX + 48];
    int cl = snprintf(cmd, sizeof cmd, "%s %s %llu\r\n", decr ? "decr" : "incr", mk, (unsigned long long)delta);
    size_t n;
    char *line;
    rc = MEMCACHED_CONNECTION_FAILURE;
    if (raw_send(&r, cmd, (size_t)cl) == 0 && (line = raw_line(&r, &n))) {
        if (!strcmp(line, "NOT_FOUND")) rc = MEMCACHED_NOTFOUND;
        else if (*line >= '0' && *line <= '9') { *out = strtoull(line, NULL, 10); rc = MEMCACHED_SUCCESS; }
        else rc = MEMCACHED_CLIENT_ERROR;
    }
    raw_close(&r);
    return rc;
}

static int d_incr(mc_backend *b, const mc_key *k, int decr, uint64_t delta, int has_initial,
                  uint64_t initial, uint32_t initial_flags, int64_t now, uint64_t *out)
{
    mcd *m = M(b);
    if (k->key_len > MC_MAX_KEY) return MC_INCR_MISS;
    char mk[MCD_KEY_MAX + 1];
    size_t ml = mcd_key(k, mk);
    memcached_st *c = take(m);
    int res = MC_INCR_MISS;
    char txt[24];
    for (int i = 0; i < RETRIES; i++) {
        uint64_t v = 0;
        memcached_return_t rc;
        if (delta <= UINT32_MAX)
            rc = decr ? memcached_decrement(c, mk, ml, (uint32_t)delta, &v)
                      : memcached_increment(c, mk, ml, (uint32_t)delta, &v);
        else
            rc = raw_incr(m, c, mk, ml, decr, delta, &v);
        note(m, c, mk, ml, rc);
        if (rc == MEMCACHED_SUCCESS) { *out = v; res = MC_INCR_OK; break; }
        if (!answered(rc)) break;
        if (rc == MEMCACHED_NOTFOUND) {
            if (!has_initial) break;
            uint64_t nv = apply(initial, decr, delta);
            int tl = snprintf(txt, sizeof txt, "%llu", (unsigned long long)nv);
            rc = memcached_add(c, mk, ml, txt, (size_t)tl, 0, initial_flags ^ FLAG_MARK);
            note(m, c, mk, ml, rc);
            if (rc == MEMCACHED_SUCCESS) { *out = nv; res = MC_INCR_OK; break; }
            if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) continue;   /* raced, or held */
            break;
        }
        /* Not numeric to memcached: a delete hold, or a value that is not a counter. */
        got g = {0};
        int f = gets_one(m, c, mk, ml, &g);
        if (f < 0) { free(g.value); break; }
        if (f == 0) { free(g.value); continue; }
        if (!g.flags) {                              /* held: missing, unless an initial value */
            free(g.value);
            if (!has_initial) break;
            uint64_t nv = apply(initial, decr, delta);
            int tl = snprintf(txt, sizeof txt, "%llu", (unsigned long long)nv);
            rc = memcached_cas(c, mk, ml, txt, (size_t)tl, 0, initial_flags ^ FLAG_MARK, g.cas);
            note(m, c, mk, ml, rc);
            if (rc == MEMCACHED_SUCCESS) { *out = nv; res = MC_INCR_OK; break; }
            if (!answered(rc)) break;
            continue;
        }
        int num = numeric(g.value, g.len);
        free(g.value);
        res = num == MC_INCR_OK ? MC_INCR_NOT_NUMERIC : num;
        break;
    }
    give(m, c);
    return res;
}

/* ---- flush and stats: walk the app's keys on every server ---- */

typedef struct {
    const char *prefix; size_t plen;
    int64_t now_s;
    /* stats */
    uint64_t items, bytes;
    long long oldest_la;
    /* flush */
    buf cmds;
    int flush;
    uint64_t found;           /* flush: this app's keys met in the pass */
} walk;

static void walk_item(void *arg, raw *r, const dump_item *it)
{
    walk *w = arg;
    (void)r;
    if (it->klen < w->plen || memcmp(it->key, w->prefix, w->plen)) return;
    if (w->flush) {
        buf_printf(&w->cmds, "delete %.*s noreply\r\n", (int)it->klen, it->key);
        w->found++;
        return;
    }
    if (it->exp > 0 && it->exp <= w->now_s) return;                  /* expired, not yet reaped */
    long orig = mcd_key_orig_len(it->key, it->klen);
    if (orig < 0 || it->size < it->klen + ITEM_OVERHEAD + FLAGS_SUFFIX) return;   /* a hold */
    w->items++;
    w->bytes += (uint64_t)orig + (it->size - it->klen - ITEM_OVERHEAD - FLAGS_SUFFIX);
    if (!w->oldest_la || it->la < w->oldest_la) w->oldest_la = it->la;
}

static int d_flush(mc_backend *b, const char *app, size_t app_len)
{
    mcd *m = M(b);
    char prefix[PREFIX_MAX + 1];
    walk w = { .prefix = prefix, .flush = 1 };
    w.plen = mcd_app_prefix(app, app_len, prefix);
    int rc = 0;
    /* memcached's crawler is no snapshot: an item its LRU maintainer moves
     * between the hot, warm and cold lists during a dump can be missed. So
     * dump and delete again until a pass meets none of the app's keys. */
    for (int pass = 0; pass < 8; pass++) {
        w.found = 0;
        for (int i = 0; i < m->nservers; i++) {
            raw r;
            buf_reset(&w.cmds);
            if (metadump(&m->servers[i], walk_item, &w, &r) < 0) {
                mark(m, &m->servers[i], 1, "metadump failed");
                rc = -1;
                continue;
            }
            /* The deletes, then a no-op whose answer says they are all done. */
            buf_printf(&w.cmds, "mn\r\n");
            size_t n;
            char *line = NULL;
            if (raw_send(&r, w.cmds.data, w.cmds.len) < 0 || !(line = raw_line(&r, &n)) || strcmp(line, "MN"))
                rc = -1;
            raw_close(&r);
        }
        if (!w.found || rc < 0) break;
    }
    buf_free(&w.cmds);
    pthread_mutex_lock(&m->mu);
    app_ctr *a = counters(m, app, app_len);
    a->hits = a->misses = a->byte_hits = 0;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static void d_stats(mc_backend *b, const char *app, size_t app_len, int64_t now, mc_stats *out)
{
    mcd *m = M(b);
    memset(out, 0, sizeof *out);
    char prefix[PREFIX_MAX + 1];
    walk w = { .prefix = prefix, .now_s = now / 1000 };
    w.plen = mcd_app_prefix(app, app_len, prefix);
    /* A dump can miss an item memcached is moving between its LRU lists
     * (see d_flush): count until two passes in a row agree (at most 4). */
    uint64_t prev = UINT64_MAX;
    for (int pass = 0; pass < 4; pass++) {
        w.items = w.bytes = 0;
        w.oldest_la = 0;
        for (int i = 0; i < m->nservers; i++) {
            raw r;
            if (metadump(&m->servers[i], walk_item, &w, &r) < 0) {
                mark(m, &m->servers[i], 1, "metadump failed");
                continue;
            }
            raw_close(&r);
        }
        if (w.items == prev) break;
        prev = w.items;
    }
    out->items = w.items;
    out->bytes = w.bytes;
    if (w.items && w.oldest_la && w.now_s > w.oldest_la) out->oldest_item_age = (uint32_t)(w.now_s - w.oldest_la);
    pthread_mutex_lock(&m->mu);
    app_ctr *a = counters(m, app, app_len);
    out->hits = a->hits;
    out->misses = a->misses;
    out->byte_hits = a->byte_hits;
    pthread_mutex_unlock(&m->mu);
}

/* ---- life ---- */

static void d_free(mc_backend *b)
{
    mcd *m = M(b);
    for (size_t i = 0; i < m->npool; i++) memcached_free(m->pool[i]);
    free(m->pool);
    memcached_free(m->master);
    for (app_ctr *a = m->apps, *nx; a; a = nx) { nx = a->next; free(a); }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static const mc_backend_ops memcached_ops = {
    "memcached", d_get, d_set, d_del, d_incr, d_flush, d_stats, d_free,
};

mc_backend *mc_backend_memcached(const char *servers, char *err, size_t errlen)
{
    mcd *m = xcalloc(1, sizeof *m);
    if (parse_servers(servers, m->servers, &m->nservers, err, errlen) < 0) { free(m); return NULL; }
    m->base.ops = &memcached_ops;
    pthread_mutex_init(&m->mu, NULL);
    m->master = memcached_create(NULL);
    if (!m->master) { fputs("cyclozzo: out of memory\n", stderr); abort(); }
    for (int i = 0; i < m->nservers; i++) {
        memcached_return_t rc = memcached_server_add(m->master, m->servers[i].host, (in_port_t)m->servers[i].port);
        if (rc != MEMCACHED_SUCCESS) {
            set_err(err, errlen, "The memcached server %s:%d could not be added: %s.",
                    m->servers[i].host, m->servers[i].port, memcached_strerror(m->master, rc));
            d_free(&m->base);
            return NULL;
        }
    }
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 500);     /* ms */
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 2000);       /* ms */
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);         /* s before retrying a dead server */
    memcached_behavior_set(m->master, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1);
    return &m->base;
}
