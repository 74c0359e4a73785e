/* state.c - running-app records under CYCLOZZO_HOME/run. See state.h. */
#include "cli/state.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/util.h"

char *state_dir(void) { return xasprintf("%s/run", cyclozzo_home()); }

static char *state_path(int port)
{
    return xasprintf("%s/run/app-%d.state", cyclozzo_home(), port);
}

int state_write(const app_state *s)
{
    char *dir = state_dir();
    int r = mkdir_p(dir, 0700);
    free(dir);
    if (r < 0) return -1;
    buf b = BUF_INIT;
    buf_printf(&b, "pid=%d\nport=%d\nhost=%s\ndir=%s\napp=%s\nstarted=%lld\nlog=%s\ninstances=%d\n",
               (int)s->pid, s->port, s->host, s->dir, s->app, (long long)s->started, s->log, s->instances);
    char *p = state_path(s->port);
    r = write_file_atomic(p, b.data, b.len, 0600);
    free(p);
    buf_free(&b);
    return r;
}

static int parse(const char *path, app_state *s)
{
    char *text = read_file(path, NULL);
    if (!text) return -1;
    memset(s, 0, sizeof *s);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        const char *k = line, *v = eq + 1;
        if (!strcmp(k, "pid")) s->pid = (pid_t)atoi(v);
        else if (!strcmp(k, "port")) s->port = atoi(v);
        else if (!strcmp(k, "host")) snprintf(s->host, sizeof s->host, "%s", v);
        else if (!strcmp(k, "dir")) snprintf(s->dir, sizeof s->dir, "%s", v);
        else if (!strcmp(k, "app")) snprintf(s->app, sizeof s->app, "%s", v);
        else if (!strcmp(k, "started")) s->started = atoll(v);
        else if (!strcmp(k, "log")) snprintf(s->log, sizeof s->log, "%s", v);
        else if (!strcmp(k, "instances")) s->instances = atoi(v);
    }
    free(text);
    return s->pid > 0 && s->port > 0 ? 0 : -1;
}

/* A daemon killed with -9 may linger as a zombie until its new parent reaps
 * it: that is not a running app. */
static int alive(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno != EPERM) return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

int state_read_port(int port, app_state *s)
{
    char *p = state_path(port);
    int r = parse(p, s);
    if (r == 0 && !alive(s->pid)) { unlink(p); r = -1; }
    free(p);
    return r;
}

void state_remove(int port)
{
    char *p = state_path(port);
    unlink(p);
    free(p);
}

int state_each(void (*fn)(const app_state *s, void *arg), void *arg)
{
    char *dir = state_dir();
    DIR *d = opendir(dir);
    int n = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l < 7 || strcmp(e->d_name + l - 6, ".state") != 0) continue;
            char *p = xasprintf("%s/%s", dir, e->d_name);
            app_state s;
            if (parse(p, &s) == 0) {
                if (alive(s.pid)) { fn(&s, arg); n++; }
                else unlink(p);
            }
            free(p);
        }
        closedir(d);
    }
    free(dir);
    return n;
}
