/* modules.c - the "modules" and "system" API services.
 *
 * A Cyclozzo daemon runs one version of one module (service) of one app, so
 * the answers describe that: GetModules lists the app.yaml service (or
 * "default"), GetVersions and GetDefaultVersion its version, GetNumInstances
 * the manual_scaling count (or, for automatic/basic scaling, how many
 * instances run now), GetHostname the host:port the app is served on.
 * Operations that cannot apply answer with the errors the SDK documents:
 * another module -> INVALID_MODULE, another version -> INVALID_VERSION,
 * StartModule of the running version -> UNEXPECTED_STATE (the SDK treats it
 * as "already started"), StopModule of it and SetNumInstances to a new count
 * -> TRANSIENT_ERROR (the operator does those with the cyclozzo command),
 * SetNumInstances on a version that is not manually scaled -> INVALID_VERSION,
 * an instance number out of range -> INVALID_INSTANCES.
 *
 * system.GetSystemStats sums the app's instances (with every process they
 * started) from /proc: cpu.total is
 * their CPU seconds, cpu.current their CPU use in percent of one core since
 * the previous call (0 on the first); memory.current is
 * their resident memory in MB, memory.total their memory limit in MB.
 * StartBackgroundRequest answers BACKEND_REQUIRED: Cyclozzo runs no
 * background threads outside requests.
 *
 * Messages: google/appengine/api/modules/modules_service.proto and
 * system/system_service.proto (field numbers in the handlers below). */
#include "api/modules.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "proto/pb.h"

enum { M_INVALID_MODULE = 1, M_INVALID_VERSION = 2, M_INVALID_INSTANCES = 3, M_TRANSIENT = 4, M_UNEXPECTED_STATE = 5 };
enum { S_INTERNAL_ERROR = 1, S_BACKEND_REQUIRED = 2 };

typedef struct {
    pthread_mutex_t lock;
    int configured;
    char *module, *version, *hostname;
    int manual, instances, memory_mb;
    instmgr *im;
    double last_cpu_s;              /* previous GetSystemStats sample */
    int64_t last_us;
} mod_service;

/* Up to three string fields 1..3 of a request; -1 on a malformed one. */
typedef struct { const char *v[4]; size_t n[4]; int has[4]; int64_t num3; int has_num3; } mreq;

static int parse(const uint8_t *in, size_t len, mreq *q, int field3_int)
{
    memset(q, 0, sizeof *q);
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f;
    int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        if (f == 3 && field3_int) { rc = pb_int64(&r, wt, &q->num3); q->has_num3 = 1; }
        else if (f >= 1 && f <= 3) {
            const uint8_t *p;
            rc = pb_bytes(&r, wt, &p, &q->n[f]);
            q->v[f] = (const char *)p;
            q->has[f] = 1;
        } else rc = pb_skip(&r, wt, f);
        if (rc < 0) return -1;
    }
    return rc < 0 || r.err ? -1 : 0;
}

static int is(const mreq *q, int f, const char *s)
{
    return q->n[f] == strlen(s) && !memcmp(q->v[f], s, q->n[f]);
}

/* Lock s; 0 if configured, else error reply and unlocked. */
static int begin(mod_service *s, const uint8_t *in, size_t len, mreq *q, int f3int, api_reply *reply, const char *what)
{
    if (parse(in, len, q, f3int) < 0) {
        api_rpc_error(reply, RPC_PARSE_ERROR, "The modules %s request could not be parsed.", what);
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    if (!s->configured) {
        pthread_mutex_unlock(&s->lock);
        api_app_error(reply, M_TRANSIENT, "The app is not running yet.");
        return -1;
    }
    return 0;
}

/* Check an optional module (field 1) and version (field 2). 0 ok. */
static int check_mv(mod_service *s, const mreq *q, api_reply *reply, int module_err)
{
    if (q->has[1] && q->n[1] && !is(q, 1, s->module)) {
        api_app_error(reply, module_err, "This app has no module \"%.*s\"; it runs module \"%s\".",
                      (int)(q->n[1] > 100 ? 100 : q->n[1]), q->v[1], s->module);
        return -1;
    }
    if (q->has[2] && q->n[2] && !is(q, 2, s->version)) {
        api_app_error(reply, M_INVALID_VERSION,
                      "Module \"%s\" has no version \"%.*s\"; it runs version \"%s\".", s->module,
                      (int)(q->n[2] > 100 ? 100 : q->n[2]), q->v[2], s->version);
        return -1;
    }
    return 0;
}

static int running(mod_service *s)
{
    return s->im ? instmgr_count(s->im) : 0;
}

static void m_get_modules(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "GetModules") < 0) return;
    pb_put_str(&reply->response, 1, s->module);
    pthread_mutex_unlock(&s->lock);
}

static void m_get_versions(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "GetVersions") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_MODULE) == 0) pb_put_str(&reply->response, 1, s->version);
    pthread_mutex_unlock(&s->lock);
}

static void m_default_version(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "GetDefaultVersion") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_MODULE) == 0) pb_put_str(&reply->response, 1, s->version);
    pthread_mutex_unlock(&s->lock);
}

static void m_num_instances(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "GetNumInstances") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_VERSION) == 0)
        pb_put_int(&reply->response, 1, s->manual ? s->instances : running(s));
    pthread_mutex_unlock(&s->lock);
}

static void m_set_num_instances(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 1, reply, "SetNumInstances") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_VERSION) == 0) {
        if (!q.has_num3)
            api_rpc_error(reply, RPC_PARSE_ERROR, "SetNumInstances needs the number of instances.");
        else if (!s->manual)
            api_app_error(reply, M_INVALID_VERSION, "Version \"%s\" is not manually scaled; only manual_scaling versions have a set number of instances.", s->version);
        else if (q.num3 < 1 || q.num3 > 1000)
            api_app_error(reply, M_INVALID_INSTANCES, "The number of instances must be from 1 to 1000, not %lld.", (long long)q.num3);
        else if (q.num3 != s->instances)
            api_app_error(reply, M_TRANSIENT, "Cyclozzo runs the %d instances app.yaml asks for; change manual_scaling.instances and restart the app to change it.", s->instances);
    }
    pthread_mutex_unlock(&s->lock);
}

static void m_start_module(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "StartModule") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_VERSION) == 0)
        api_app_error(reply, M_UNEXPECTED_STATE, "Module \"%s\" version \"%s\" is already started.", s->module, s->version);
    pthread_mutex_unlock(&s->lock);
}

static void m_stop_module(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "StopModule") < 0) return;
    if (check_mv(s, &q, reply, M_INVALID_VERSION) == 0)
        api_app_error(reply, M_TRANSIENT, "An app cannot stop its own running version; stop it with `cyclozzo --stop application`.");
    pthread_mutex_unlock(&s->lock);
}

static void m_hostname(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (begin(s, in, len, &q, 0, reply, "GetHostname") < 0) return;
    if (q.has[2] && q.n[2] && !is(&q, 2, s->version) && !(q.has[1] && q.n[1] && !is(&q, 1, s->module))) {
        api_app_error(reply, M_INVALID_MODULE, "Module \"%s\" has no version \"%.*s\".", s->module,
                      (int)(q.n[2] > 100 ? 100 : q.n[2]), q.v[2]);
    } else if (check_mv(s, &q, reply, M_INVALID_MODULE) == 0) {
        if (q.has[3]) {
            char num[24];
            size_t n = q.n[3] < sizeof num ? q.n[3] : sizeof num - 1;
            memcpy(num, q.v[3], n);
            num[n] = 0;
            char *end;
            long i = strtol(num, &end, 10);
            if (!s->manual)
                api_app_error(reply, M_INVALID_INSTANCES, "Version \"%s\" is not manually scaled, so its instances have no hostnames.", s->version);
            else if (!n || *end || i < 0 || i >= s->instances)
                api_app_error(reply, M_INVALID_INSTANCES, "Instance \"%s\" does not exist; there are %d (0 to %d).", num, s->instances, s->instances - 1);
            else
                pb_put_str(&reply->response, 1, s->hostname);
        } else {
            pb_put_str(&reply->response, 1, s->hostname);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- system ---- */

typedef struct { int pid, ppid; double cpu_s, rss_mb; int mark; } pstat;

/* One /proc/PID/stat: 0, or -1 if it is gone or unreadable. */
static int proc_stat(int pid, pstat *o)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');      /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    long long rss = 0;
    int ppid = 0;
    /* after ")": state ppid ... utime(14) stime(15) ... rss(24) */
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %*u %*u %lld",
               &ppid, &ut, &st, &rss) != 4)
        return -1;
    long tck = sysconf(_SC_CLK_TCK), pg = sysconf(_SC_PAGESIZE);
    o->pid = pid;
    o->ppid = ppid;
    o->cpu_s = (double)(ut + st) / (double)(tck > 0 ? tck : 100);
    o->rss_mb = (double)rss * (double)(pg > 0 ? pg : 4096) / (1024.0 * 1024.0);
    o->mark = 0;
    return 0;
}

/* CPU seconds and resident MB of the instance processes and everything
 * they started (a sandboxed instance is a small init and the runtime). */
static void tree_usage(const pid_t *roots, int nroots, double *cpu, double *mem)
{
    *cpu = *mem = 0;
    DIR *d = opendir("/proc");
    if (!d) return;
    size_t cap = 256, n = 0;
    pstat *ps = xmalloc(cap * sizeof *ps);
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        if (n == cap) ps = xrealloc(ps, (cap *= 2) * sizeof *ps);
        if (proc_stat((int)pid, &ps[n]) == 0) n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < nroots; j++)
            if (ps[i].pid == roots[j]) ps[i].mark = 1;
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (ps[i].mark) continue;
            for (size_t j = 0; j < n; j++)
                if (ps[j].mark && ps[j].pid == ps[i].ppid) { ps[i].mark = 1; changed = 1; break; }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (ps[i].mark) { *cpu += ps[i].cpu_s; *mem += ps[i].rss_mb; }
    free(ps);
}

static void put_stat(buf *b, uint32_t field, double current, double total)
{
    size_t m = pb_begin(b, field);
    pb_put_double(b, 1, current);
    pb_put_double(b, 2, total);
    pb_end(b, m);
}

static void m_system_stats(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    mod_service *s = ctx->service_data;
    mreq q;
    if (parse(in, len, &q, 0) < 0) { api_rpc_error(reply, RPC_PARSE_ERROR, "The GetSystemStats request could not be parsed."); return; }
    pthread_mutex_lock(&s->lock);
    if (!s->configured || !s->im) {
        pthread_mutex_unlock(&s->lock);
        api_app_error(reply, S_INTERNAL_ERROR, "The app's instances are not known yet.");
        return;
    }
    pid_t pids[256];
    int n = instmgr_pids(s->im, pids, 256);
    double cpu, mem;
    tree_usage(pids, n, &cpu, &mem);
    int64_t now = now_us();
    double current = 0;      /* first call: no interval to measure yet */
    if (s->last_us && now > s->last_us && cpu >= s->last_cpu_s)
        current = 100.0 * (cpu - s->last_cpu_s) / ((double)(now - s->last_us) / 1e6);
    s->last_cpu_s = cpu;
    s->last_us = now;
    put_stat(&reply->response, 1, current, cpu);
    put_stat(&reply->response, 2, mem, (double)s->memory_mb * (n > 0 ? n : 1));
    pthread_mutex_unlock(&s->lock);
}

static void m_background(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    (void)ctx; (void)in; (void)len;
    api_app_error(reply, S_BACKEND_REQUIRED, "Cyclozzo runs no background threads outside requests.");
}

/* ---- lifecycle ---- */

static void mod_free(void *p)
{
    mod_service *s = p;
    pthread_mutex_destroy(&s->lock);
    free(s->module); free(s->version); free(s->hostname);
    free(s);
}

void modules_configure(api_server *srv, const modules_info *info)
{
    mod_service *s = api_shared(srv, "modules");
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    free(s->module); free(s->version); free(s->hostname);
    s->module = xstrdup(info->module && *info->module ? info->module : "default");
    s->version = xstrdup(info->version && *info->version ? info->version : "1");
    s->hostname = xstrdup(info->hostname ? info->hostname : "");
    s->manual = info->manual_scaling;
    s->instances = info->instances;
    s->memory_mb = info->memory_mb;
    s->im = info->im;
    s->last_us = 0;
    s->configured = 1;
    pthread_mutex_unlock(&s->lock);
}

void modules_detach(api_server *srv)
{
    mod_service *s = api_shared(srv, "modules");
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->im = NULL;
    pthread_mutex_unlock(&s->lock);
}

void modules_register(api_server *srv, const char *home)
{
    (void)home;
    mod_service *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    api_register(srv, "modules", "GetModules", m_get_modules, s);
    api_register(srv, "modules", "GetVersions", m_get_versions, s);
    api_register(srv, "modules", "GetDefaultVersion", m_default_version, s);
    api_register(srv, "modules", "GetNumInstances", m_num_instances, s);
    api_register(srv, "modules", "SetNumInstances", m_set_num_instances, s);
    api_register(srv, "modules", "StartModule", m_start_module, s);
    api_register(srv, "modules", "StopModule", m_stop_module, s);
    api_register(srv, "modules", "GetHostname", m_hostname, s);
    api_register(srv, "system", "GetSystemStats", m_system_stats, s);
    api_register(srv, "system", "StartBackgroundRequest", m_background, s);
    api_share(srv, "modules", s);
    api_on_stop(srv, mod_free, s);
}
