/* netguard.c - refuses apps' connections to platform-internal ports
 * (netguard.h).
 *
 * How a check runs: a destination that is not a local address is allowed at
 * once (no system calls beyond getifaddrs for non-loopback addresses).
 * For a local one, the explicit allow and deny lists decide first; then the
 * inodes of the sockets listening on that port are read from /proc/net/tcp
 * and /proc/net/tcp6, and the process tree of the platform (this process,
 * the daemons named in CYCLOZZO_HOME/run/ *.state, and all their
 * descendants, found from /proc/PID/stat) is searched for a descriptor
 * "socket:[INODE]" with one of those inodes. The search costs a walk of
 * /proc and happens only for local destinations. */
#include "api/netguard.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

#define MAX_LIST 64

struct netguard {
    char *home;
    pthread_mutex_t mu;
    int deny[MAX_LIST], ndeny;
    char *deny_what[MAX_LIST];
    int allow[MAX_LIST], nallow;
};

netguard *netguard_new(const char *home)
{
    netguard *g = xcalloc(1, sizeof *g);
    g->home = xstrdup(home ? home : "");
    pthread_mutex_init(&g->mu, NULL);
    return g;
}

void netguard_free(netguard *g)
{
    if (!g) return;
    for (int i = 0; i < g->ndeny; i++) free(g->deny_what[i]);
    pthread_mutex_destroy(&g->mu);
    free(g->home);
    free(g);
}

void netguard_deny_port(netguard *g, int port, const char *what)
{
    pthread_mutex_lock(&g->mu);
    int i;
    for (i = 0; i < g->ndeny && g->deny[i] != port; i++) {}
    if (i == g->ndeny && g->ndeny < MAX_LIST) {
        g->deny[g->ndeny] = port;
        g->deny_what[g->ndeny++] = xstrdup(what);
    }
    pthread_mutex_unlock(&g->mu);
}

void netguard_allow_port(netguard *g, int port)
{
    pthread_mutex_lock(&g->mu);
    int i;
    for (i = 0; i < g->nallow && g->allow[i] != port; i++) {}
    if (i == g->nallow && g->nallow < MAX_LIST) g->allow[g->nallow++] = port;
    pthread_mutex_unlock(&g->mu);
}

/* ---- is the destination this host? ---- */

static int v4_local_fixed(uint32_t a)          /* a in host order */
{
    return (a >> 24) == 127 || a == 0;
}

static int is_local(const struct sockaddr *sa)
{
    struct in_addr v4;
    int have_v4 = 0;
    if (sa->sa_family == AF_INET) {
        v4 = ((const struct sockaddr_in *)sa)->sin_addr;
        have_v4 = 1;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a)) return 1;
        if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
            memcpy(&v4, a->s6_addr + 12, 4);
            have_v4 = 1;
        }
    } else {
        return 0;
    }
    if (have_v4 && v4_local_fixed(ntohl(v4.s_addr))) return 1;
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0) return 1;         /* cannot tell: treat as local */
    int local = 0;
    for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        if (have_v4 && i->ifa_addr->sa_family == AF_INET)
            local = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == v4.s_addr;
        else if (!have_v4 && i->ifa_addr->sa_family == AF_INET6)
            local = !memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                            &((const struct sockaddr_in6 *)sa)->sin6_addr, sizeof(struct in6_addr));
    }
    freeifaddrs(ifs);
    return local;
}

static int port_of(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

/* ---- who listens on the port? ---- */

#define MAX_INODES 32

/* Inodes of sockets in LISTEN state (0A) on port, from /proc/net/tcp{,6}. */
static int listen_inodes(int port, unsigned long *ino, int cap)
{
    static const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        if (!fp) continue;
        char line[512];
        if (!fgets(line, sizeof line, fp)) { fclose(fp); continue; }   /* header */
        while (fgets(line, sizeof line, fp) && n < cap) {
            char local[128], remote[128];
            unsigned st;
            unsigned long inode;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*d: %127s %127s %x %*s %*s %*s %*u %*u %lu", local, remote, &st, &inode) != 4)
                continue;
            if (st != 0x0A) continue;
            char *colon = strrchr(local, ':');
            if (!colon) continue;
            if ((int)strtoul(colon + 1, NULL, 16) != port) continue;
            ino[n++] = inode;
        }
        fclose(fp);
    }
    return n;
}

/* Root pids of the platform: this process and the app daemons of home. */
static int platform_roots(const char *home, pid_t *roots, int cap)
{
    int n = 0;
    roots[n++] = getpid();
    char *dir = xasprintf("%s/run", home);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && n < cap) {
            size_t l = strlen(e->d_name);
            if (l < 7 || strcmp(e->d_name + l - 6, ".state") != 0) continue;
            char *p = xasprintf("%s/%s", dir, e->d_name);
            size_t len;
            char *txt = read_file(p, &len);
            free(p);
            if (!txt) continue;
            char *s = strstr(txt, "pid=");
            if (s && (s == txt || s[-1] == '\n')) {
                long v = strtol(s + 4, NULL, 10);
                if (v > 1) roots[n++] = (pid_t)v;
            }
            free(txt);
        }
        closedir(d);
    }
    free(dir);
    return n;
}

typedef struct { pid_t pid, ppid; } pidpair;

static pid_t read_ppid(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');        /* comm may hold spaces and parens */
    if (!rp) return -1;
    char state;
    int ppid;
    if (sscanf(rp + 1, " %c %d", &state, &ppid) != 2) return -1;
    return (pid_t)ppid;
}

/* 1 if pid holds a descriptor for one of the inodes. */
static int owns_inode(pid_t pid, const unsigned long *ino, int nino)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char lp[384], target[64];
        snprintf(lp, sizeof lp, "%s/%s", path, e->d_name);
        ssize_t l = readlink(lp, target, sizeof target - 1);
        if (l <= 0) continue;
        target[l] = 0;
        unsigned long v;
        if (sscanf(target, "socket:[%lu]", &v) != 1) continue;
        for (int i = 0; i < nino; i++) if (ino[i] == v) { found = 1; break; }
    }
    closedir(d);
    return found;
}

/* The platform pid owning one of the inodes, or 0. */
static pid_t platform_owner(const char *home, const unsigned long *ino, int nino)
{
    pid_t roots[256];
    int nroots = platform_roots(home, roots, 256);
    pidpair *all = NULL;
    size_t nall = 0, cap = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        pid_t pp = read_ppid(pid);
        if (pp < 0) continue;
        if (nall == cap) { cap = cap ? cap * 2 : 256; all = xrealloc(all, cap * sizeof *all); }
        all[nall++] = (pidpair){pid, pp};
    }
    closedir(d);
    /* Mark the platform's processes: the roots, then descendants until no change. */
    char *mark = xcalloc(nall ? nall : 1, 1);
    for (size_t i = 0; i < nall; i++)
        for (int r = 0; r < nroots; r++) if (all[i].pid == roots[r]) mark[i] = 1;
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < nall; i++) {
            if (mark[i]) continue;
            for (size_t j = 0; j < nall; j++)
                if (mark[j] && all[j].pid == all[i].ppid) { mark[i] = 1; changed = 1; break; }
        }
    }
    pid_t owner = 0;
    for (size_t i = 0; i < nall && !owner; i++)
        if (mark[i] && owns_inode(all[i].pid, ino, nino)) owner = all[i].pid;
    free(mark);
    free(all);
    return owner;
}

int netguard_check(netguard *g, const struct sockaddr *sa, socklen_t len, char *why, size_t whylen)
{
    (void)len;
    int port = port_of(sa);
    if (port < 0 || !is_local(sa)) return 0;
    char addr[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
    else inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->nallow; i++)
        if (g->allow[i] == port) { pthread_mutex_unlock(&g->mu); return 0; }
    for (int i = 0; i < g->ndeny; i++)
        if (g->deny[i] == port) {
            set_err(why, whylen, "Apps may not connect to Cyclozzo's internal port %s:%d (%s).", addr, port, g->deny_what[i]);
            pthread_mutex_unlock(&g->mu);
            return 1;
        }
    pthread_mutex_unlock(&g->mu);
    unsigned long ino[MAX_INODES];
    int nino = listen_inodes(port, ino, MAX_INODES);
    if (!nino) return 0;
    pid_t owner = platform_owner(g->home, ino, nino);
    if (!owner) return 0;
    set_err(why, whylen, "Apps may not connect to Cyclozzo's internal port %s:%d (a platform process, pid %d).",
            addr, port, (int)owner);
    return 1;
}
