/* logscmd.c - the log and token commands of the `cyclozzo` command line.
 *
 * --logs APP reads the app's request log (src/logs/store.h) directly, read
 * only, while the daemon may be writing it, and prints the newest COUNT
 * requests oldest first:
 *   2026-11-25T14:00:00.123Z 127.0.0.1 GET /path 200 1234B 5.1ms rid=... "User-Agent"
 *       I 14:00:00.120 a log line of that request
 * --follow then polls twice a second and prints each new request once it is
 * a second old (so the lines its instance flushes after the response are
 * there), until interrupted.
 *
 * --verify-token TOKEN checks an access token from app_identity (signature
 * with the app's key, expiry) and prints its app, scopes and expiry. */
#include "cli/logscmd.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/app_identity.h"
#include "core/util.h"
#include "logs/store.h"
#include "proto/pb.h"

typedef struct {
    const uint8_t *rid, *ip, *method, *resource, *ua;
    size_t rid_n, ip_n, method_n, resource_n, ua_n;
    int64_t start, end, latency, size, status;
    int finished;
    uint64_t seq;
} reqview;

static void fmt_time(int64_t us, char *out, size_t n, int date)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char b[40];
    strftime(b, sizeof b, date ? "%Y-%m-%dT%H:%M:%S" : "%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03d%s", b, (int)(us / 1000 % 1000), date ? "Z" : "");
}

static void print_record(const uint8_t *p, size_t n)
{
    reqview v;
    memset(&v, 0, sizeof v);
    v.finished = 1;
    pb_reader r;
    pb_reader_init(&r, p, n);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) > 0) {
        int b;
        switch (f) {
        case 3: pb_bytes(&r, wt, &v.rid, &v.rid_n); break;
        case 4: pb_bytes(&r, wt, &v.ip, &v.ip_n); break;
        case 10: pb_bytes(&r, wt, &v.method, &v.method_n); break;
        case 11: pb_bytes(&r, wt, &v.resource, &v.resource_n); break;
        case 16: pb_bytes(&r, wt, &v.ua, &v.ua_n); break;
        case 6: pb_int64(&r, wt, &v.start); break;
        case 7: pb_int64(&r, wt, &v.end); break;
        case 8: pb_int64(&r, wt, &v.latency); break;
        case 13: pb_int64(&r, wt, &v.status); break;
        case 14: pb_int64(&r, wt, &v.size); break;
        case 27: pb_bool(&r, wt, &b); v.finished = b; break;
        default: pb_skip(&r, wt, f); break;
        }
    }
    char ts[48];
    fmt_time(v.start, ts, sizeof ts, 1);
    if (v.finished)
        printf("%s %.*s %.*s %.*s %lld %lldB %.1fms rid=%.*s \"%.*s\"\n", ts, (int)v.ip_n, v.ip, (int)v.method_n, v.method,
               (int)v.resource_n, v.resource, (long long)v.status, (long long)v.size, (double)v.latency / 1000.0,
               (int)v.rid_n, v.rid, (int)v.ua_n, v.ua);
    else
        printf("%s (still running) rid=%.*s\n", ts, (int)v.rid_n, v.rid);
    pb_reader_init(&r, p, n);
    while (pb_next(&r, &f, &wt) > 0) {
        if (f != 29) { pb_skip(&r, wt, f); continue; }
        pb_reader lr;
        if (pb_sub(&r, wt, &lr) < 0) break;
        int64_t t = 0, lvl = 0;
        const uint8_t *msg = (const uint8_t *)"";
        size_t mn = 0;
        uint32_t lf;
        int lwt;
        while (pb_next(&lr, &lf, &lwt) > 0) {
            if (lf == 1) pb_int64(&lr, lwt, &t);
            else if (lf == 2) pb_int64(&lr, lwt, &lvl);
            else if (lf == 3) pb_bytes(&lr, lwt, &msg, &mn);
            else pb_skip(&lr, lwt, lf);
        }
        fmt_time(t, ts, sizeof ts, 0);
        printf("    %c %s %.*s\n", "DIWEC"[lvl < 0 ? 0 : lvl > 4 ? 4 : lvl], ts, (int)mn, msg);
    }
}

/* The records of a LogReadResponse: pointers and seqs, in response order. */
typedef struct { const uint8_t *p; size_t n; uint64_t seq; int64_t end; } rec;

static size_t split(const buf *resp, rec *out, size_t max)
{
    size_t k = 0;
    pb_reader r;
    pb_reader_init(&r, resp->data, resp->len);
    uint32_t f;
    int wt;
    while (pb_next(&r, &f, &wt) > 0 && k < max) {
        if (f != 1) { pb_skip(&r, wt, f); continue; }
        const uint8_t *p;
        size_t n;
        if (pb_bytes(&r, wt, &p, &n) < 0) break;
        rec x = {p, n, 0, 0};
        pb_reader s;
        pb_reader_init(&s, p, n);
        uint32_t sf;
        int swt;
        while (pb_next(&s, &sf, &swt) > 0) {
            if (sf == 35) {
                pb_reader o;
                pb_sub(&s, swt, &o);
                uint32_t of; int owt; const uint8_t *op; size_t on;
                while (pb_next(&o, &of, &owt) > 0)
                    if (of == 1 && pb_bytes(&o, owt, &op, &on) == 0) logstore_offset_decode(op, on, &x.seq);
                    else pb_skip(&o, owt, of);
            } else if (sf == 7) pb_int64(&s, swt, &x.end);
            else pb_skip(&s, swt, sf);
        }
        out[k++] = x;
    }
    return k;
}

static volatile sig_atomic_t stop_follow;
static void on_sigint(int sig) { (void)sig; stop_follow = 1; }

int logscmd_show(const char *app, int follow, int count)
{
    char err[1024];
    const char *project = strchr(app, '~') ? strchr(app, '~') + 1 : app;
    logstore *ls = logstore_open(cyclozzo_home(), project, 0, NULL, err, sizeof err);
    if (!ls) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    if (count <= 0 || count > 1000) count = follow ? 10 : 100;
    logquery q;
    memset(&q, 0, sizeof q);
    q.min_level = -1;
    q.include_app_logs = 1;
    q.count = count;
    buf resp = BUF_INIT;
    static rec recs[1000];
    uint64_t last = 0;
    int64_t grace = follow ? 1000000 : 0;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    for (int first = 1; first || (follow && !stop_follow); first = 0) {
        buf_reset(&resp);
        q.after = last;
        if (logstore_read(ls, &q, &resp, err, sizeof err) < 0) {
            fprintf(stderr, "cyclozzo: %s\n", err);
            buf_free(&resp);
            logstore_close(ls);
            return 1;
        }
        size_t n = split(&resp, recs, 1000);
        int64_t now = wall_us();
        /* newest first in the response: print oldest first, stop at one too young */
        for (size_t i = n; i-- > 0;) {
            if (grace && recs[i].end > now - grace) break;
            print_record(recs[i].p, recs[i].n);
            last = recs[i].seq;
        }
        fflush(stdout);
        if (!follow) break;
        q.count = 1000;
        usleep(500000);
    }
    buf_free(&resp);
    logstore_close(ls);
    return 0;
}

int logscmd_verify_token(const char *token)
{
    appid_token t;
    char err[512];
    if (appid_verify_token(cyclozzo_home(), token, wall_us() / 1000000, &t, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: invalid token: %s\n", err);
        return 1;
    }
    char ts[48];
    fmt_time(t.expires * 1000000, ts, sizeof ts, 1);
    printf("app: %s\nscopes: %s\nexpires: %s (%lld)\n", t.app, t.scopes, ts, (long long)t.expires);
    return 0;
}
