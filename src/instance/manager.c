/* manager.c - starts, watches and restarts instances. See manager.h.
 *
 * Unless the operator asked for --no-sandbox, every instance starts inside
 * the app's sandbox (sandbox.h): spawn() prepares its cgroup and socket
 * directory, clones into new namespaces, and the child enters the sandbox
 * right before execve. The pid the manager keeps is the sandbox's init,
 * whose exit status carries the instance's; reap() asks the sandbox whether
 * a rule was broken (memory, file size, seccomp) and logs it with the app.
 *
 * All process bookkeeping happens on the manager thread; router threads only
 * touch the atomic fields (state, inflight, generation). Children get
 * PR_SET_PDEATHSIG(SIGKILL) against the manager thread, so a platform killed
 * with -9 leaves no instance behind. */
#include "instance/manager.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "core/log.h"
#include "core/util.h"
#include "instance/sandbox.h"

#define MAX_INSTANCES 64
#define BACKOFF_MIN_US 500000
#define BACKOFF_MAX_US 30000000

struct instmgr {
    instmgr_config c;
    const app_config *cfg;
    char *app_short;            /* for log lines */
    instance inst[MAX_INSTANCES];
    _Atomic int ninst;          /* slots in use (never shrinks) */
    _Atomic int want_more;      /* set by acquire when everything is busy */
    _Atomic int stopping;
    pthread_t thread;
    int thread_started;
    int wake_fd;
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    int first_ready;            /* 1 ready, -1 failed */
    char first_err[1024];
    int max_concurrent;
    char **base_env;            /* environment shared by all instances */
    sandbox *sb;                /* NULL with --no-sandbox */
};

static void log_output_line(instmgr *m, instance *in, const char *line, size_t n)
{
    if (!n) return;
    char tmp[1024];
    if (n >= sizeof tmp) n = sizeof tmp - 1;
    memcpy(tmp, line, n);
    tmp[n] = 0;
    /* Keep the tail of the output to explain a failed start. */
    size_t ll = strlen(in->last_lines);
    if (ll + n + 2 > sizeof in->last_lines) {
        size_t drop = ll + n + 2 - sizeof in->last_lines;
        if (drop > ll) drop = ll;
        memmove(in->last_lines, in->last_lines + drop, ll - drop + 1);
        ll -= drop;
    }
    memcpy(in->last_lines + ll, tmp, n);
    in->last_lines[ll + n] = '\n';
    in->last_lines[ll + n + 1] = 0;
    /* The runtime already writes logfmt lines; pass those through as they are. */
    if (strncmp(tmp, "ts=", 3) == 0) {
        ssize_t w = write(2, tmp, n);
        w = write(2, "\n", 1);
        (void)w;
    } else {
        log_info("instance", "app=%s instance=%d pid=%d out=%s", m->app_short, in->id, (int)in->pid, log_q(tmp));
    }
}

static void drain_output(instmgr *m, instance *in)
{
    for (;;) {
        ssize_t r = read(in->out_fd, in->outbuf + in->outlen, sizeof in->outbuf - in->outlen);
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                if (in->outlen) log_output_line(m, in, in->outbuf, in->outlen);
                in->outlen = 0;
                close(in->out_fd);
                in->out_fd = -1;
            }
            return;
        }
        in->outlen += (size_t)r;
        char *start = in->outbuf, *nl;
        while ((nl = memchr(start, '\n', in->outlen - (size_t)(start - in->outbuf)))) {
            log_output_line(m, in, start, (size_t)(nl - start));
            start = nl + 1;
        }
        size_t rest = in->outlen - (size_t)(start - in->outbuf);
        if (rest == sizeof in->outbuf) {               /* a line longer than the buffer */
            log_output_line(m, in, in->outbuf, rest);
            rest = 0;
        }
        memmove(in->outbuf, start, rest);
        in->outlen = rest;
    }
}

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static char **build_env(instmgr *m, instance *in, const char *inst_id)
{
    const app_config *cfg = m->cfg;
    size_t cap = 48 + cfg->n_env, n = 0;
    char **env = xcalloc(cap, sizeof *env);
    for (char **b = m->base_env; *b; b++) env[n++] = xstrdup(*b);
    env[n++] = xasprintf("GAE_INSTANCE=%s", inst_id);
    if (!in->is_unix) env[n++] = xasprintf("PORT=%d", in->tcp_port);
    for (size_t i = 0; i < cfg->n_env && n + 1 < cap; i++)
        env[n++] = xasprintf("%s=%s", cfg->env[i].name, cfg->env[i].value);
    env[n] = NULL;
    return env;
}

static void free_env(char **env)
{
    for (char **e = env; *e; e++) free(*e);
    free(env);
}

static int spawn(instmgr *m, instance *in)
{
    const app_config *cfg = m->cfg;
    char inst_id[64];
    snprintf(inst_id, sizeof inst_id, "%s-%d-%lld", m->app_short, in->id, (long long)(wall_us() / 1000000));
    in->is_unix = cfg->entrypoint == NULL;
    if (m->sb) {
        char err[512];
        if (sandbox_prepare(m->sb, in->id, err, sizeof err) < 0) {
            log_error("sandbox", "app=%s instance=%d msg=\"cannot start the instance\" reason=%s",
                      m->app_short, in->id, log_q(err));
            return -1;
        }
    }
    if (in->is_unix) {
        if (m->sb) snprintf(in->sock_path, sizeof in->sock_path, "%s/s", sandbox_sock_dir(m->sb, in->id));
        else snprintf(in->sock_path, sizeof in->sock_path, "%s/inst-%d.sock", m->c.run_dir, in->id);
        unlink(in->sock_path);
    } else {
        in->tcp_port = free_tcp_port();
        if (in->tcp_port < 0) return -1;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -1;
    char **env = build_env(m, in, inst_id);
    char threads[16], tsafe[4];
    snprintf(threads, sizeof threads, "%d", in->max_concurrent > 1 ? in->max_concurrent : 1);
    snprintf(tsafe, sizeof tsafe, "%d", in->max_concurrent > 1);
    const char *argv_rt[16];
    int a = 0;
    if (in->is_unix) {
        argv_rt[a++] = m->c.pyrt_path;
        argv_rt[a++] = "--socket"; argv_rt[a++] = in->sock_path;
        argv_rt[a++] = "--app-dir"; argv_rt[a++] = cfg->dir;
        if (m->c.venv && *m->c.venv) { argv_rt[a++] = "--venv"; argv_rt[a++] = m->c.venv; }
        argv_rt[a++] = "--threads"; argv_rt[a++] = threads;
        argv_rt[a++] = "--threadsafe"; argv_rt[a++] = tsafe;
    } else {
        argv_rt[a++] = "/bin/sh"; argv_rt[a++] = "-c"; argv_rt[a++] = cfg->entrypoint;
    }
    argv_rt[a] = NULL;

    pid_t pid = m->sb ? sandbox_clone(m->sb, in->id) : fork();
    if (pid < 0) {
        log_error("instance", "app=%s instance=%d msg=\"cannot start the instance process\" reason=%s",
                  m->app_short, in->id, log_q(strerror(errno)));
        close(pfd[0]); close(pfd[1]); free_env(env); return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (m->sb) sandbox_enter(m->sb, in->id, cfg->dir);   /* returns in the instance only */
        if (chdir(cfg->dir) < 0) _exit(126);
        execve(argv_rt[0], (char *const *)argv_rt, env);
        dprintf(2, "cannot run %s: %s\n", argv_rt[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    free_env(env);
    set_nonblock(pfd[0]);
    in->out_fd = pfd[0];
    in->outlen = 0;
    in->pid = pid;
    in->started_us = now_us();
    in->warmed = 0;
    atomic_store(&in->inflight, 0);
    atomic_fetch_add(&in->generation, 1);
    atomic_store(&in->state, INST_STARTING);
    log_info("instance", "app=%s instance=%d pid=%d msg=\"starting\" kind=%s", m->app_short, in->id,
             (int)pid, in->is_unix ? "python" : "entrypoint");
    return 0;
}

static int connect_instance(const instance *in)
{
    int fd;
    if (in->is_unix) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", in->sock_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(in->tcp_port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    }
    return fd;
}

/* Sends GET /_ah/warmup and waits (bounded) for any complete status line.
 * App Engine treats a failing warmup as logged, not fatal. */
static void warmup(instmgr *m, instance *in)
{
    int fd = connect_instance(in);
    if (fd < 0) return;
    struct timeval tv = {.tv_sec = 60};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /_ah/warmup HTTP/1.1\r\nHost: %s\r\nX-AppEngine-Request-Log-Id: warmup-%d\r\n"
                     "X-Cyclozzo-Script: auto\r\nX-Cyclozzo-Deadline: 60\r\nConnection: close\r\n\r\n",
                     m->c.default_hostname, in->id);
    char resp[64] = {0};
    if (write(fd, req, (size_t)n) == n) {
        ssize_t r = read(fd, resp, sizeof resp - 1);
        if (r > 0) resp[r] = 0;
    }
    close(fd);
    char *eol = strpbrk(resp, "\r\n");
    if (eol) *eol = 0;
    log_info("instance", "app=%s instance=%d msg=\"warmup\" status=%s", m->app_short, in->id, log_q(resp));
}

static void signal_first(instmgr *m, int result, const char *err)
{
    pthread_mutex_lock(&m->start_mu);
    if (m->first_ready == 0) {
        m->first_ready = result;
        if (err) snprintf(m->first_err, sizeof m->first_err, "%s", err);
        pthread_cond_broadcast(&m->start_cv);
    }
    pthread_mutex_unlock(&m->start_mu);
}

static void reap(instmgr *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (m->sb) status = sandbox_status(status);
        int n = atomic_load(&m->ninst);
        for (int i = 0; i < n; i++) {
            instance *in = &m->inst[i];
            if (in->pid != pid) continue;
            if (in->out_fd >= 0) drain_output(m, in);
            int was_ready = atomic_load(&in->state) == INST_READY;
            atomic_store(&in->state, INST_DEAD);
            atomic_fetch_add(&in->generation, 1);
            in->pid = 0;
            char how[64];
            if (WIFEXITED(status)) snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
            else snprintf(how, sizeof how, "signal %d", WTERMSIG(status));
            if (m->sb) {
                char why[512];
                int broke = sandbox_explain(m->sb, in->id, status, why, sizeof why);
                if (broke == 1)
                    log_warn("sandbox", "app=%s instance=%d pid=%d msg=\"instance killed for breaking a sandbox rule\" %s",
                             m->app_short, in->id, (int)pid, why);
                else if (broke == 2)
                    log_warn("sandbox", "app=%s instance=%d pid=%d msg=\"instance hit a sandbox limit\" %s",
                             m->app_short, in->id, (int)pid, why);
            }
            if (atomic_load(&m->stopping)) break;
            int64_t backoff = BACKOFF_MIN_US << (in->restarts < 6 ? in->restarts : 6);
            if (backoff > BACKOFF_MAX_US) backoff = BACKOFF_MAX_US;
            /* An instance that served for a while restarts promptly. */
            if (was_ready && now_us() - in->ready_us > 60000000) { in->restarts = 0; backoff = BACKOFF_MIN_US; }
            in->restarts++;
            in->next_start_us = now_us() + backoff;
            log_warn("instance", "app=%s instance=%d pid=%d msg=\"instance exited\" how=%s restart_in_ms=%lld",
                     m->app_short, in->id, (int)pid, log_q(how), (long long)(backoff / 1000));
            if (m->first_ready == 0) {
                char err[1024];
                snprintf(err, sizeof err, "the app's instance stopped (%s) before it answered; its last output:\n%s",
                         how, in->last_lines[0] ? in->last_lines : "(none)\n");
                signal_first(m, -1, err);
            }
            break;
        }
    }
}

static void *manager_main(void *arg)
{
    instmgr *m = arg;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    for (int i = 0; i < m->c.min_instances; i++) {
        instance *in = &m->inst[atomic_load(&m->ninst)];
        if (spawn(m, in) < 0) {
            signal_first(m, -1, "cannot start an instance process");
        }
        atomic_fetch_add(&m->ninst, 1);
    }
    while (!atomic_load(&m->stopping)) {
        struct pollfd pfds[MAX_INSTANCES + 1];
        instance *owners[MAX_INSTANCES + 1];
        int np = 0, starting = 0;
        pfds[np].fd = m->wake_fd; pfds[np].events = POLLIN; owners[np++] = NULL;
        int n = atomic_load(&m->ninst);
        for (int i = 0; i < n; i++) {
            instance *in = &m->inst[i];
            if (in->out_fd >= 0) { pfds[np].fd = in->out_fd; pfds[np].events = POLLIN; owners[np++] = in; }
            if (atomic_load(&in->state) == INST_STARTING) starting = 1;
        }
        int not_ready = 0;
        for (int i = 0; i < n; i++) not_ready += atomic_load(&m->inst[i].state) != INST_READY;
        int r = poll(pfds, (nfds_t)np, starting ? 20 : 200);
        if (r > 0) {
            for (int i = 0; i < np; i++) {
                if (!pfds[i].revents) continue;
                if (!owners[i]) { uint64_t v; ssize_t rr = read(m->wake_fd, &v, sizeof v); (void)rr; }
                else drain_output(m, owners[i]);
            }
        }
        reap(m);
        int64_t t = now_us();
        for (int i = 0; i < n; i++) {
            instance *in = &m->inst[i];
            int st = atomic_load(&in->state);
            if (st == INST_STARTING && in->pid) {
                int fd = connect_instance(in);
                if (fd >= 0) {
                    close(fd);
                    if (appcfg_has_inbound(m->cfg, "warmup") && !in->warmed) { warmup(m, in); in->warmed = 1; }
                    in->ready_us = now_us();
                    atomic_store(&in->state, INST_READY);
                    log_info("instance", "app=%s instance=%d pid=%d msg=\"ready\" start_ms=%lld", m->app_short,
                             in->id, (int)in->pid, (long long)((in->ready_us - in->started_us) / 1000));
                    signal_first(m, 1, NULL);
                }
            } else if (st == INST_DEAD && !in->pid && t >= in->next_start_us) {
                spawn(m, in);
            }
        }
        /* Scale up when every instance is ready and was found full; while one
         * is starting or restarting, requests wait for it instead. */
        if (atomic_exchange(&m->want_more, 0) && n < m->c.max_instances && !not_ready) {
            instance *in = &m->inst[n];
            in->id = n + 1;
            in->max_concurrent = m->max_concurrent;
            in->out_fd = -1;
            if (spawn(m, in) == 0) atomic_fetch_add(&m->ninst, 1);
        }
    }
    return NULL;
}

instmgr *instmgr_new(const instmgr_config *c, char *err, size_t errlen)
{
    const app_config *cfg = c->cfg;
    if (!cfg->entrypoint && (!cfg->runtime || strncmp(cfg->runtime, "python", 6) != 0)) {
        set_err(err, errlen, "%s: runtime %s needs an entrypoint: Cyclozzo runs apps other than Python "
                "through their `entrypoint:` server", cfg->path, cfg->runtime ? cfg->runtime : "(none)");
        return NULL;
    }
    if (!cfg->entrypoint && access(c->pyrt_path, X_OK) < 0) {
        set_err(err, errlen, "the Python runtime %s is missing: run `make` first", c->pyrt_path);
        return NULL;
    }
    if (mkdir_p(c->run_dir, 0700) < 0) {
        set_err(err, errlen, "cannot create %s: %s", c->run_dir, strerror(errno));
        return NULL;
    }
    const char *tilde = strchr(c->app_id, '~');
    sandbox *sb = NULL;
    if (!c->no_sandbox) {
        /* The program started: the runtime, or the entrypoint's first word. */
        char exe[4096] = "";
        if (cfg->entrypoint) {
            const char *e = cfg->entrypoint;
            while (*e == ' ' || *e == '\t') e++;
            size_t k = strcspn(e, " \t");
            if (k < sizeof exe) { memcpy(exe, e, k); exe[k] = 0; }
        } else {
            snprintf(exe, sizeof exe, "%s", c->pyrt_path);
        }
        int maxi = c->max_instances > c->min_instances ? c->max_instances : c->min_instances;
        sandbox_config sc = {.app = tilde ? tilde + 1 : c->app_id, .app_dir = cfg->dir, .venv = c->venv,
                             .run_dir = c->run_dir, .exe = exe, .memory_mb = appcfg_memory_mb(cfg),
                             .max_instances = maxi < 1 ? 1 : maxi, .tmp_mb = c->tmp_mb};
        sb = sandbox_new(&sc, err, errlen);
        if (!sb) return NULL;
        log_info("sandbox", "app=%s msg=\"instances are sandboxed\" uid=%u memory_mb=%d limits=%s",
                 sc.app, sandbox_uid(sb), sc.memory_mb, log_q(sandbox_limits_kind(sb)));
    } else {
        log_warn("sandbox", "app=%s msg=\"instances run without the sandbox (--no-sandbox)\"",
                 tilde ? tilde + 1 : c->app_id);
    }
    instmgr *m = xcalloc(1, sizeof *m);
    m->c = *c;
    m->cfg = cfg;
    m->sb = sb;
    m->app_short = xstrdup(tilde ? tilde + 1 : c->app_id);
    if (m->c.min_instances < 1) m->c.min_instances = 1;
    if (m->c.max_instances < m->c.min_instances) m->c.max_instances = m->c.min_instances;
    if (m->c.max_instances > MAX_INSTANCES) m->c.max_instances = MAX_INSTANCES;
    int conc = cfg->scaling.max_concurrent_requests > 0 ? cfg->scaling.max_concurrent_requests : 10;
    m->max_concurrent = cfg->threadsafe == 0 ? 1 : conc;
    for (int i = 0; i < MAX_INSTANCES; i++) {
        m->inst[i].id = i + 1;
        m->inst[i].out_fd = -1;
        m->inst[i].max_concurrent = m->max_concurrent;
        atomic_store(&m->inst[i].state, INST_DEAD);
    }
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&m->start_mu, NULL);
    pthread_cond_init(&m->start_cv, NULL);

    /* The App Engine environment every instance gets (see ARCHITECTURE.md). */
    size_t n = 0;
    m->base_env = xcalloc(40, sizeof(char *));
    const char *path = getenv("PATH");
    m->base_env[n++] = xasprintf("PATH=%s", path ? path : "/usr/local/bin:/usr/bin:/bin");
    m->base_env[n++] = xstrdup("LANG=C.UTF-8");
    m->base_env[n++] = xstrdup("TMPDIR=/tmp");
    m->base_env[n++] = xstrdup("HOME=/tmp");
    m->base_env[n++] = xstrdup("PYTHONDONTWRITEBYTECODE=1");
    m->base_env[n++] = xstrdup("PYTHONUNBUFFERED=1");
    m->base_env[n++] = xasprintf("API_HOST=%s", c->api_host);
    m->base_env[n++] = xasprintf("API_PORT=%d", c->api_port);
    m->base_env[n++] = xasprintf("LOCAL_API_HOSTPORT=%s:%d", c->api_host, c->api_port);
    m->base_env[n++] = xstrdup("GAE_PARTITION=dev");
    m->base_env[n++] = xasprintf("GAE_APPLICATION=%s", c->app_id);
    m->base_env[n++] = xasprintf("APPLICATION_ID=%s", c->app_id);
    m->base_env[n++] = xasprintf("GOOGLE_CLOUD_PROJECT=%s", c->project);
    m->base_env[n++] = xasprintf("GAE_SERVICE=%s", cfg->service ? cfg->service : "default");
    m->base_env[n++] = xasprintf("GAE_VERSION=%s", c->version);
    m->base_env[n++] = xasprintf("CURRENT_VERSION_ID=%s.%lld", c->version, (long long)(wall_us() / 1000000));
    m->base_env[n++] = xasprintf("GAE_DEPLOYMENT_ID=%lld", (long long)(wall_us() / 1000000));
    m->base_env[n++] = xstrdup("GAE_ENV=standard");
    m->base_env[n++] = xasprintf("GAE_RUNTIME=%s", cfg->runtime ? cfg->runtime : "python311");
    m->base_env[n++] = xasprintf("GAE_MEMORY_MB=%d", appcfg_memory_mb(cfg));
    if (c->metadata_host) m->base_env[n++] = xasprintf("GCE_METADATA_HOST=%s", c->metadata_host);
    m->base_env[n++] = xasprintf("DEFAULT_VERSION_HOSTNAME=%s", c->default_hostname);
    m->base_env[n++] = xstrdup("SERVER_SOFTWARE=Cyclozzo/1.0");
    m->base_env[n] = NULL;
    return m;
}

int instmgr_start(instmgr *m, int timeout_ms, char *err, size_t errlen)
{
    if (pthread_create(&m->thread, NULL, manager_main, m) != 0) {
        set_err(err, errlen, "cannot start the instance manager thread");
        return -1;
    }
    m->thread_started = 1;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&m->start_mu);
    while (m->first_ready == 0)
        if (pthread_cond_timedwait(&m->start_cv, &m->start_mu, &deadline) == ETIMEDOUT) break;
    int r = m->first_ready;
    pthread_mutex_unlock(&m->start_mu);
    if (r == 1) return 0;
    if (r == 0) set_err(err, errlen, "the app's instance did not answer within %d s; its last output:\n%s",
                        timeout_ms / 1000, m->inst[0].last_lines[0] ? m->inst[0].last_lines : "(none)\n");
    else set_err(err, errlen, "%s", m->first_err);
    return -1;
}

instance *instmgr_acquire(instmgr *m)
{
    int n = atomic_load(&m->ninst);
    instance *best = NULL;
    int best_load = 1 << 30;
    for (int i = 0; i < n; i++) {
        instance *in = &m->inst[i];
        if (atomic_load(&in->state) != INST_READY) continue;
        int load = atomic_load(&in->inflight);
        if (load < in->max_concurrent && load < best_load) { best = in; best_load = load; }
    }
    if (best) {
        int prev = atomic_fetch_add(&best->inflight, 1);
        if (prev < best->max_concurrent) return best;
        atomic_fetch_sub(&best->inflight, 1);
    }
    if (!atomic_exchange(&m->want_more, 1)) {
        uint64_t one = 1;
        ssize_t w = write(m->wake_fd, &one, sizeof one);
        (void)w;
    }
    return NULL;
}

void instmgr_release(instmgr *m, instance *in)
{
    (void)m;
    atomic_fetch_sub(&in->inflight, 1);
}

void instmgr_report_failure(instmgr *m, instance *in, unsigned generation)
{
    (void)m;
    if (atomic_load(&in->generation) != generation) return;
    /* Connection refused on a ready instance: the process is going away; the
     * manager's waitpid will mark it dead. Nothing else to do here. */
    log_debug("instance", "app=%s instance=%d msg=\"connection failed\"", m->app_short, in->id);
}

int instmgr_ready_count(instmgr *m)
{
    int n = atomic_load(&m->ninst), c = 0;
    for (int i = 0; i < n; i++) c += atomic_load(&m->inst[i].state) == INST_READY;
    return c;
}

int instmgr_count(instmgr *m) { return atomic_load(&m->ninst); }

int instmgr_pids(instmgr *m, pid_t *out, int max)
{
    int n = 0, ni = atomic_load(&m->ninst);
    for (int i = 0; i < ni && n < max; i++) {
        instance *in = &m->inst[i];
        if (atomic_load(&in->state) != INST_DEAD && in->pid > 0) out[n++] = in->pid;
    }
    return n;
}

int instmgr_has_ready(instmgr *m)
{
    int n = atomic_load(&m->ninst);
    for (int i = 0; i < n; i++)
        if (atomic_load(&m->inst[i].state) != INST_DEAD) return 1;
    return 0;
}

void instmgr_stop(instmgr *m)
{
    if (!m) return;
    atomic_store(&m->stopping, 1);
    uint64_t one = 1;
    ssize_t w = write(m->wake_fd, &one, sizeof one);
    (void)w;
    if (m->thread_started) pthread_join(m->thread, NULL);
    int n = atomic_load(&m->ninst);
    for (int i = 0; i < n; i++) if (m->inst[i].pid > 0) kill(-m->inst[i].pid, SIGTERM), kill(m->inst[i].pid, SIGTERM);
    int64_t end = now_us() + 3000000;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) {
            instance *in = &m->inst[i];
            if (in->pid <= 0) continue;
            if (waitpid(in->pid, NULL, WNOHANG) == in->pid) in->pid = 0;
            else alive++;
        }
        if (!alive) break;
        if (now_us() > end) {
            for (int i = 0; i < n; i++) if (m->inst[i].pid > 0) {
                kill(-m->inst[i].pid, SIGKILL); kill(m->inst[i].pid, SIGKILL);
                waitpid(m->inst[i].pid, NULL, 0); m->inst[i].pid = 0;
            }
            break;
        }
        usleep(20000);
    }
    for (int i = 0; i < n; i++) {
        if (m->inst[i].out_fd >= 0) close(m->inst[i].out_fd);
        if (m->inst[i].is_unix && m->inst[i].sock_path[0]) unlink(m->inst[i].sock_path);
        if (m->sb) sandbox_release(m->sb, m->inst[i].id);
    }
    sandbox_free(m->sb);
    close(m->wake_fd);
    for (char **e = m->base_env; *e; e++) free(*e);
    free(m->base_env);
    free(m->app_short);
    pthread_mutex_destroy(&m->start_mu);
    pthread_cond_destroy(&m->start_cv);
    free(m);
}
