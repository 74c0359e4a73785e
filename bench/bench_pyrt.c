/* bench_pyrt.c - measures bin/cyclozzo-pyrt serving examples/hello:
 *   start-up   process start to the first complete response (GET /healthz)
 *   idle RSS   VmRSS half a second after that response
 *   requests/s one keep-alive connection, next request sent as soon as the
 *              previous response is read (no pipelining), then 4 connections,
 *              with the runtime's CPU time per request (utime+stime from
 *              /proc, less sensitive to a loaded machine than requests/s)
 * Run by hand from the repository root:
 *   make && cc -O2 -pthread bench/bench_pyrt.c -o build/bench_pyrt && build/bench_pyrt [seconds] */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static const char req[] =
    "GET /healthz HTTP/1.1\r\nHost: hello.localhost\r\nX-Cyclozzo-Script: auto\r\n"
    "X-Cyclozzo-Deadline: 60\r\nX-AppEngine-Request-Log-Id: bench\r\n\r\n";
static char sock_path[108];
static double seconds = 5;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int dial(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    return fd;
}

/* One request/response exchange; 0 ok. Responses carry Content-Length. */
static int exchange(int fd)
{
    char buf[4096];
    size_t got = 0;
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) return -1;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0) return -1;
        got += (size_t)r;
        buf[got] = 0;
        char *e = strstr(buf, "\r\n\r\n");
        if (!e) continue;
        char *cl = strcasestr(buf, "content-length:");
        size_t want = (size_t)(e + 4 - buf) + (cl ? (size_t)atoi(cl + 15) : 0);
        if (got >= want) return strncmp(buf, "HTTP/1.1 200", 12) ? -1 : 0;
    }
}

static void *runner(void *arg)
{
    long *count = arg;
    int fd = dial();
    if (fd < 0) return NULL;
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 100; i++) if (exchange(fd) == 0) (*count)++;
    close(fd);
    return NULL;
}

static double cpu_seconds(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    double t = 0;
    if (fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, st = 0;
        /* fields after the command: state(3) ... utime(14) stime(15) */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            t = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
    return t;
}

int main(int argc, char **argv)
{
    if (argc > 1) seconds = atof(argv[1]);
    snprintf(sock_path, sizeof sock_path, "/tmp/bench-pyrt-%d.sock", (int)getpid());
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        setenv("GAE_APPLICATION", "dev~hello", 1);
        execl("bin/cyclozzo-pyrt", "cyclozzo-pyrt", "--socket", sock_path, "--app-dir", "examples/hello",
              "--threads", "8", "--log-level", "warn", (char *)NULL);
        perror("bin/cyclozzo-pyrt");
        _exit(127);
    }
    int fd;
    while ((fd = dial()) < 0) usleep(200);
    if (exchange(fd) < 0) { fprintf(stderr, "first request failed\n"); return 1; }
    printf("start to first response: %.1f ms\n", (now() - t0) * 1000);
    close(fd);
    usleep(500000);
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) printf("idle RSS: %.1f MiB\n", atol(line + 6) / 1024.0);
    if (f) fclose(f);
    for (int conns = 1; conns <= 4; conns += 3) {
        long counts[4] = {0};
        pthread_t t[4];
        for (int i = 0; i < conns; i++) pthread_create(&t[i], NULL, runner, &counts[i]);
        double c0 = cpu_seconds(pid);
        long total = 0;
        for (int i = 0; i < conns; i++) { pthread_join(t[i], NULL); total += counts[i]; }
        double c1 = cpu_seconds(pid);
        printf("%d keep-alive connection(s): %.0f requests/s, runtime CPU %.1f us/request\n",
               conns, total / seconds, total ? (c1 - c0) * 1e6 / total : 0.0);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return 0;
}
