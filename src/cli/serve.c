/* serve.c - the daemon that runs one app. See serve.h.
 *
 * Start-up order: app.yaml (refuse before anything starts), state check (one
 * app per port), virtualenv (progress on the terminal), detach, log file,
 * API server, instance manager (first instance must answer), router, state
 * file, "ready" to the CLI. The main thread then waits for SIGTERM/SIGINT
 * while the router threads serve, refreshing the state file as the number of
 * instances changes. */
#include "api/memcache.h"
#include "cli/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "api/api.h"
#include "api/blobstore.h"
#include "api/app_identity.h"
#include "api/logservice.h"
#include "api/modules.h"
#include "api/mail.h"
#include "api/urlfetch.h"
#include "api/taskqueue.h"
#include "datastore/query.h"
#include "api/ticket.h"
#include "appcfg/appyaml.h"
#include "cli/state.h"
#include "core/log.h"
#include "core/util.h"
#include "instance/manager.h"
#include "instance/venv.h"
#include "router/router.h"
#include "router/tls.h"
#include "sched/cron.h"
#include "sched/queueyaml.h"
#include "sched/scheduler.h"
#include "users/login.h"

void api_register_all(api_server *srv, const char *home);

typedef struct {
    router *rt;
    int rc;
} router_thread_arg;

typedef struct {
    ticket_key key;
    const char *app_id;
    const char *version;
} minter;

/* The router's ticket callback: one ticket per request, for this app only,
 * living as long as the request's deadline plus a grace. */
static int mint_for_request(void *arg, const router_reqinfo *ri, char *out, size_t outlen)
{
    minter *m = arg;
    ticket_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.app_id, sizeof c.app_id, "%s", m->app_id);
    snprintf(c.version, sizeof c.version, "%s", m->version);
    snprintf(c.user_email, sizeof c.user_email, "%s", ri->user_email ? ri->user_email : "");
    snprintf(c.user_id, sizeof c.user_id, "%s", ri->user_id ? ri->user_id : "");
    c.user_is_admin = ri->user_is_admin;
    snprintf(c.request_id, sizeof c.request_id, "%s", ri->request_log_id);
    char err[256];
    char *t = ticket_mint(&m->key, &c, ticket_now_ms(), ri->deadline_s + TICKET_GRACE_S, err, sizeof err);
    if (!t) return -1;
    size_t n = strlen(t);
    if (n >= outlen) { free(t); return -1; }
    memcpy(out, t, n + 1);
    free(t);
    return 0;
}

/* The router's check of the scheduler's X-Cyclozzo-Internal header. */
static int verify_internal(void *arg, const char *v, size_t n)
{
    return sched_internal_verify(arg, v, n, wall_us() / 1000000);
}

static void *router_thread(void *arg)
{
    router_thread_arg *a = arg;
    a->rc = router_run(a->rt);
    return NULL;
}

static void report(int fd, const char *msg)
{
    if (fd < 0) return;
    size_t n = strlen(msg);
    ssize_t w = write(fd, msg, n);
    (void)w;
}

static char *sibling_path(const char *exe, const char *name)
{
    char real[PATH_MAX];
    if (!realpath(exe, real)) snprintf(real, sizeof real, "%s", exe);
    char *d = xstrdup(real);
    char *p = xasprintf("%s/%s", dirname(d), name);
    free(d);
    return p;
}

/* Runs the app until a stop signal. ready_fd gets "OK\n" or "ERR <reason>\n". */
static int run_daemon(const serve_opts *o, app_config *cfg, const char *app_id, const char *venv, int ready_fd)
{
    const char *home = cyclozzo_home();
    const char *project = strchr(app_id, '~') + 1;
    char err[2048] = "";
    char hostport[512];
    if (o->domain && o->port == 80) snprintf(hostport, sizeof hostport, "%s.%s", project, o->domain);
    else if (o->domain) snprintf(hostport, sizeof hostport, "%s.%s:%d", project, o->domain, o->port);
    else snprintf(hostport, sizeof hostport, "%s:%d", strcmp(o->host, "0.0.0.0") ? o->host : "localhost", o->port);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    api_server *api = NULL;
    users_ctx *users = NULL;
    instmgr *im = NULL;
    router *rt = NULL;
    tls_ctx *tls = NULL;
    int rc = 1;

    /* Composite indexes of the app's index.yaml, built before serving (the
     * mode, auto or required, is the one set with cz-indexes). */
    if (dsq_configure_home(home, app_id, cfg->dir, -1, err, sizeof err) < 0) goto fail;

    /* API server: every service, on a private loopback port. */
    api_server_config ac = {.home = home, .host = "127.0.0.1", .port = 0, .app_id = app_id};
    api = api_server_new(&ac, err, sizeof err);
    if (!api) goto fail;
    if (o->memcache_servers) api_share(api, MEMCACHE_SERVERS_SHARE, (void *)o->memcache_servers);
    /* The Blobstore reads its directory and the app's host name (for upload
     * URLs) from these. */
    if (o->blob_dir) api_share(api, "blob.dir", (void *)o->blob_dir);   /* absolute (main.c) */
    api_share(api, "app.hostname", hostport);
    api_register_all(api, home);
    const char *md_secret = app_identity_metadata_enable(api, app_id);
    /* mail relay settings; the app's own public port stays fetchable */
    mail_config mc = {.smtp_host = o->smtp_host, .smtp_port = o->smtp_port, .smtp_user = o->smtp_user,
                      .smtp_password_file = o->smtp_password_file, .smtp_starttls = o->smtp_starttls};
    if (mail_configure(api, &mc, err, sizeof err) < 0) goto fail;
    urlfetch_allow_port(api, o->port);
    if (api_server_start(api, err, sizeof err) < 0) goto fail;
    char md_host[128] = "";
    if (md_secret) snprintf(md_host, sizeof md_host, "127.0.0.1:%d/%s", api_server_port(api), md_secret);
    /* The request log: written by the router, read through the logservice. */
    const char *rl = getenv("CYCLOZZO_REQUEST_LOG");
    logstore *logs = rl && !strcmp(rl, "off") ? NULL : logservice_store(api, app_id, err, sizeof err);
    if (rl && !strcmp(rl, "off")) log_warn("serve", "app=%s msg=\"request log off (CYCLOZZO_REQUEST_LOG=off)\"", project);
    else if (!logs) log_error("serve", "app=%s msg=\"requests will not be logged\" reason=%s", project, log_q(err));
    log_info("serve", "app=%s msg=\"API server listening\" port=%d", project, api_server_port(api));

    /* Task queues and cron: queue.yaml goes to the taskqueue service, both
     * files to the scheduler (started once the router listens). */
    tq_service *tqs = taskqueue_service(api);
    tq_config *qcfg = queueyaml_load(cfg->dir, err, sizeof err);
    if (!qcfg) goto fail;
    cron_config *ccfg = cronyaml_load(cfg->dir, err, sizeof err);
    if (!ccfg) { tq_config_free(qcfg); goto fail; }
    if (tqs) taskqueue_configure(tqs, qcfg); else tq_config_free(qcfg);
    static uint8_t internal_key[SCHED_KEY_LEN];
    if (sched_internal_key(home, internal_key, err, sizeof err) < 0) { cron_config_free(ccfg); goto fail; }
    scheduler *sch = NULL;

    char *run_dir = xasprintf("%s/run/%s-%d", home, project, o->port);
    char *pyrt = sibling_path(o->exe, "cyclozzo-pyrt");
    instmgr_config ic = {
        .cfg = cfg, .app_id = app_id, .project = project,
        .version = cfg->version ? cfg->version : "1",
        .run_dir = run_dir, .pyrt_path = pyrt, .venv = venv,
        .api_host = "127.0.0.1", .api_port = api_server_port(api),
        .default_hostname = hostport,
        .min_instances = cfg->scaling.kind == SCALING_MANUAL && cfg->scaling.instances > 0 ? cfg->scaling.instances
                         : cfg->scaling.min_instances > 0 ? cfg->scaling.min_instances : 1,
        .max_instances = cfg->scaling.kind == SCALING_MANUAL && cfg->scaling.instances > 0 ? cfg->scaling.instances
                         : cfg->scaling.max_instances > 0 ? cfg->scaling.max_instances : 4,
        .no_sandbox = o->no_sandbox,
        .metadata_host = md_host[0] ? md_host : NULL,
    };
    /* Bind the port before starting instances, so a busy port fails fast. */
    static minter mt;
    if (ticket_key_load(home, &mt.key, err, sizeof err) < 0) goto fail_free;
    mt.app_id = app_id;
    mt.version = ic.version;
    users = users_ctx_new(home, o->dev, err, sizeof err);
    if (!users) goto fail_free;
    if (o->https_port > 0) {
        tls_config tc = {.n = o->ncert};
        for (int i = 0; i < o->ncert; i++) { tc.cert[i] = o->cert[i]; tc.key[i] = o->key[i]; }
        tls = tls_ctx_new(&tc, err, sizeof err);
        if (!tls) goto fail_free;
        if (o->selfsigned)
            log_warn("serve", "app=%s msg=\"no --cert given: HTTPS uses a self-signed certificate that clients "
                     "will not trust\" cert=%s state=%s", project, log_q(o->cert[0]),
                     o->selfsigned == 2 ? "generated" : "reused");
        for (int i = 0; i < tls_ctx_count(tls); i++)
            log_info("serve", "app=%s msg=\"TLS certificate\" file=%s names=%s default=%d", project,
                     log_q(o->cert[i]), log_q(tls_ctx_names(tls, i)), i == 0);
    } else {
        for (size_t i = 0; i < cfg->n_handlers; i++)
            if (cfg->handlers[i].secure == SECURE_ALWAYS) {
                log_warn("serve", "app=%s msg=\"a handler has secure: always but there is no --https-port: "
                         "it is served over HTTP\" url=%s", project, log_q(cfg->handlers[i].url));
                break;
            }
    }
    if (o->dev) log_warn("serve", "app=%s msg=\"development sign-in: any email signs in without a password\"", project);
    router_config rc_ = {
        .cfg = cfg, .host = o->host, .port = o->port, .threads = o->threads,
        .app_id = app_id, .default_hostname = hostport, .deadline_s = 60,
        .mint_ticket = mint_for_request, .mint_arg = &mt, .users = users,
        .verify_internal = verify_internal, .internal_arg = internal_key,
        .https_port = o->https_port, .tls = tls, .domain = o->domain, .version = ic.version,
        .service = cfg->service,
        .blob = blobstore_service(api),
        .images = api_shared(api, "images"),
        .logs = logs,
    };
    im = instmgr_new(&ic, err, sizeof err);
    if (!im) goto fail_free;
    rc_.im = im;
    modules_info mi = {
        .module = cfg->service ? cfg->service : "default", .version = ic.version, .hostname = hostport,
        .manual_scaling = cfg->scaling.kind == SCALING_MANUAL, .instances = ic.min_instances,
        .memory_mb = appcfg_memory_mb(cfg), .im = im,
    };
    modules_configure(api, &mi);
    rt = router_new(&rc_, err, sizeof err);
    if (!rt) goto fail_free;
    if (instmgr_start(im, 120000, err, sizeof err) < 0) goto fail_free;

    router_thread_arg rta = {.rt = rt};
    pthread_t rth;
    if (pthread_create(&rth, NULL, router_thread, &rta) != 0) { set_err(err, sizeof err, "cannot start the router"); goto fail_free; }
    if (tqs) {
        tq_config *qc = taskqueue_config_copy(tqs);
        sched_config sc = {.store = taskqueue_store(tqs), .app_id = app_id, .queues = qc, .cron = ccfg,
                           .router_host = o->host, .router_port = o->port, .home = home};
        sch = scheduler_start(&sc, err, sizeof err);
        tq_config_free(qc);
        if (!sch) log_error("serve", "app=%s msg=\"task queues will not run\" reason=%s", project, log_q(err));
        else { taskqueue_set_wake(tqs, scheduler_wake, sch); taskqueue_set_update(tqs, scheduler_update_queue, sch); }
    }
    cron_config_free(ccfg);
    ccfg = NULL;

    app_state st = {.pid = getpid(), .port = o->port, .started = wall_us() / 1000000,
                    .instances = instmgr_count(im)};
    snprintf(st.host, sizeof st.host, "%s", o->host);
    snprintf(st.dir, sizeof st.dir, "%s", cfg->dir);
    snprintf(st.app, sizeof st.app, "%s", project);
    snprintf(st.log, sizeof st.log, "%s/logs/%s-%d.log", home, project, o->port);
    state_write(&st);
    log_info("serve", "app=%s msg=\"serving\" url=http://%s/ dir=%s", project, hostport, log_q(cfg->dir));
    if (o->https_port > 0) log_info("serve", "app=%s msg=\"serving HTTPS\" port=%d", project, o->https_port);
    report(ready_fd, "OK\n");
    if (ready_fd >= 0) close(ready_fd);

    for (;;) {
        struct timespec ts = {.tv_sec = 1};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            log_info("serve", "app=%s msg=\"stopping\" signal=%d", project, sig);
            break;
        }
        int n = instmgr_count(im);
        if (n != st.instances) { st.instances = n; state_write(&st); }
    }
    if (sch) {
        taskqueue_set_wake(tqs, NULL, NULL);
        taskqueue_set_update(tqs, NULL, NULL);
        scheduler_stop(sch);
    }
    router_stop(rt);
    pthread_join(rth, NULL);
    rc = 0;
    state_remove(o->port);
    router_free(rt);
    modules_detach(api);
    tls_ctx_free(tls);
    instmgr_stop(im);
    api_server_stop(api);
    users_ctx_free(users);
    free(run_dir);
    free(pyrt);
    log_info("serve", "app=%s msg=\"stopped\"", project);
    return rc;

fail_free:
    cron_config_free(ccfg);
    if (rt) router_free(rt);
    if (api) modules_detach(api);
    tls_ctx_free(tls);
    if (im) instmgr_stop(im);
    users_ctx_free(users);
    free(run_dir);
    free(pyrt);
fail:
    if (api) api_server_stop(api);
    log_error("serve", "app=%s msg=\"cannot start\" reason=%s", project, log_q(err));
    if (ready_fd >= 0) {
        char *m = xasprintf("ERR %s\n", err);
        report(ready_fd, m);
        free(m);
        close(ready_fd);
    }
    return 1;
}

int serve_app(const serve_opts *o)
{
    char err[2048] = "";
    char absdir[PATH_MAX];
    if (!o->dir || !realpath(o->dir, absdir)) {
        fprintf(stderr, "cyclozzo: app directory %s does not exist\n", o->dir ? o->dir : "(none)");
        return 2;
    }
    if (o->port <= 0 || o->port > 65535) {
        fprintf(stderr, "cyclozzo: --port must be between 1 and 65535\n");
        return 2;
    }
    if (o->https_port < 0 || o->https_port > 65535 || (o->https_port && o->https_port == o->port)) {
        fprintf(stderr, "cyclozzo: --https-port must be between 1 and 65535 and differ from --port\n");
        return 2;
    }
    if (o->domain) {
        int ok = *o->domain && o->domain[0] != '.' && o->domain[0] != '-' && strlen(o->domain) < 200;
        for (const char *p = o->domain; ok && *p; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.';
        if (!ok) {
            fprintf(stderr, "cyclozzo: --domain %s is not a DNS name (letters, digits, '-' and '.')\n", o->domain);
            return 2;
        }
    }
    app_config *cfg = appcfg_load(absdir, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        return 2;
    }
    app_state existing;
    if (state_read_port(o->port, &existing) == 0) {
        fprintf(stderr, "cyclozzo: port %d is already serving %s (pid %d); stop it first with "
                "`cyclozzo --stop application --port %d`\n", o->port, existing.dir, (int)existing.pid, o->port);
        appcfg_free(cfg);
        return 1;
    }
    const char *home = cyclozzo_home();
    if (mkdir_p(home, 0700) < 0) {
        fprintf(stderr, "cyclozzo: cannot create CYCLOZZO_HOME %s: %s\n", home, strerror(errno));
        appcfg_free(cfg);
        return 1;
    }
    char *appname = cfg->application ? xstrdup(cfg->application) : xstrdup(basename(absdir));
    char *app_id = xasprintf("dev~%s", appname);

    /* HTTPS without --cert: a self-signed certificate under CYCLOZZO_HOME,
     * made once and reused, announced on the terminal (and in the log). */
    serve_opts so = *o;
    o = &so;
    static char ss_cert[PATH_MAX], ss_key[PATH_MAX];
    /* The daemon works from "/": relative --cert/--key paths are made absolute here. */
    static char abs_files[2][16][PATH_MAX];
    for (int i = 0; i < so.ncert && i < 16; i++) {
        if (realpath(so.cert[i], abs_files[0][i])) so.cert[i] = abs_files[0][i];
        if (realpath(so.key[i], abs_files[1][i])) so.key[i] = abs_files[1][i];
    }
    if (so.https_port > 0 && so.ncert == 0) {
        char *dir = xasprintf("%s/tls", home);
        char *wild = so.domain ? xasprintf("*.%s", so.domain) : NULL;
        const char *names[8];
        int nn = 0;
        names[nn++] = "localhost";
        if (so.domain) { names[nn++] = so.domain; names[nn++] = wild; }
        names[nn++] = "127.0.0.1";
        names[nn++] = "::1";
        if (strcmp(so.host, "0.0.0.0") && strcmp(so.host, "127.0.0.1") && strcmp(so.host, "::1")) names[nn++] = so.host;
        names[nn] = NULL;
        int created = 0;
        int r = tls_selfsigned(dir, names, ss_cert, sizeof ss_cert, ss_key, sizeof ss_key, &created, err, sizeof err);
        free(dir);
        free(wild);
        if (r < 0) {
            fprintf(stderr, "cyclozzo: %s\n", err);
            free(appname); free(app_id); appcfg_free(cfg);
            return 1;
        }
        so.cert[0] = ss_cert;
        so.key[0] = ss_key;
        so.ncert = so.nkey = 1;
        so.selfsigned = created ? 2 : 1;
        printf("cyclozzo: no --cert given: HTTPS uses the self-signed certificate %s (%s; key %s). "
               "Clients will not trust it; pass --cert FILE --key FILE for a real one.\n",
               ss_cert, created ? "generated now" : "reused", ss_key);
        fflush(stdout);
    }

    /* Dependencies first, in the foreground, so progress is visible. */
    char venv[PATH_MAX] = "";
    if (venv_ensure(home, absdir, venv, sizeof venv, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        free(appname); free(app_id); appcfg_free(cfg);
        return 1;
    }

    if (o->foreground) {
        log_init(2, LOG_INFO);
        int rc = run_daemon(o, cfg, app_id, venv, -1);
        free(appname); free(app_id); appcfg_free(cfg);
        return rc;
    }

    char *logdir = xasprintf("%s/logs", home);
    char *logpath = xasprintf("%s/%s-%d.log", logdir, appname, o->port);
    if (mkdir_p(logdir, 0700) < 0) {
        fprintf(stderr, "cyclozzo: cannot create %s: %s\n", logdir, strerror(errno));
        return 1;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) { perror("cyclozzo: pipe"); return 1; }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) { perror("cyclozzo: fork"); return 1; }
    if (pid == 0) {
        close(pfd[0]);
        setsid();
        if (fork() > 0) _exit(0);      /* the daemon is not a session leader */
        int lfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int nfd = open("/dev/null", O_RDWR);
        if (nfd >= 0) { dup2(nfd, 0); }
        if (lfd >= 0) { dup2(lfd, 1); dup2(lfd, 2); close(lfd); }
        if (nfd > 2) close(nfd);
        if (chdir("/") < 0) _exit(1);
        log_init(2, LOG_INFO);
        exit(run_daemon(o, cfg, app_id, venv, pfd[1]));
    }
    close(pfd[1]);
    waitpid(pid, NULL, 0);
    char msg[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(pfd[0], msg + got, sizeof msg - 1 - got);
        if (r > 0) { got += (size_t)r; if (got >= sizeof msg - 1) break; continue; }
        if (r < 0 && errno == EINTR) continue;
        break;
    }
    close(pfd[0]);
    msg[got] = 0;
    int rc;
    if (strncmp(msg, "OK", 2) == 0) {
        printf("cyclozzo: %s serving on http://%s:%d/ (log: %s)\n", appname,
               strcmp(o->host, "0.0.0.0") ? o->host : "localhost", o->port, logpath);
        if (o->https_port > 0)
            printf("cyclozzo: %s serving on https://%s:%d/\n", appname,
                   strcmp(o->host, "0.0.0.0") ? o->host : "localhost", o->https_port);
        rc = 0;
    } else if (strncmp(msg, "ERR ", 4) == 0) {
        size_t l = strlen(msg);
        if (l && msg[l - 1] == '\n') msg[l - 1] = 0;
        fprintf(stderr, "cyclozzo: cannot start %s: %s\n(log: %s)\n", appname, msg + 4, logpath);
        rc = 1;
    } else {
        fprintf(stderr, "cyclozzo: the daemon for %s stopped before it was ready; see its log %s\n", appname, logpath);
        rc = 1;
    }
    free(logdir); free(logpath); free(appname); free(app_id); appcfg_free(cfg);
    return rc;
}
