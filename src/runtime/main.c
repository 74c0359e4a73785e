/* main.c - bin/cyclozzo-pyrt: hosts one App Engine Python 3 app.
 *
 *   cyclozzo-pyrt --socket PATH --app-dir DIR [--venv DIR] [--threads N]
 *                 [--threadsafe 0|1] [--entry main:app] [--grace SECONDS]
 *                 [--log-level debug|info|warn|error]
 *
 * The instance manager starts it with the App Engine environment already set
 * (GAE_APPLICATION, API_HOST, ...). Start-up order: parse the command line,
 * start the interpreter and import the entry application (an import error
 * prints its traceback and exits 1, before any socket exists), then listen on
 * PATH and serve HTTP/1.1 until SIGTERM. docs/runtime.md has the contract. */
#include "runtime/pyrt.h"

#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

static void usage(FILE *f)
{
    fputs("usage: cyclozzo-pyrt --socket PATH --app-dir DIR [--venv DIR] [--threads N]\n"
          "                     [--threadsafe 0|1] [--entry module:attr] [--grace SECONDS]\n"
          "                     [--log-level debug|info|warn|error]\n", f);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, 0, 's'},
        {"app-dir", required_argument, 0, 'a'},
        {"venv", required_argument, 0, 'v'},
        {"threads", required_argument, 0, 't'},
        {"threadsafe", required_argument, 0, 'T'},
        {"entry", required_argument, 0, 'e'},
        {"grace", required_argument, 0, 'g'},
        {"log-level", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    pyrt_opts o = {.threads = 8, .threadsafe = 1, .entry = "main:app", .grace_s = 5.0, .venv = ""};
    log_level lvl = LOG_INFO;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': o.socket_path = optarg; break;
        case 'a': o.app_dir = optarg; break;
        case 'v': o.venv = optarg; break;
        case 'e': o.entry = optarg; break;
        case 't':
            if (parse_int(optarg, 1, PYRT_MAX_THREADS, &o.threads) < 0) {
                fprintf(stderr, "cyclozzo-pyrt: --threads must be a number from 1 to %d, not \"%s\"\n", PYRT_MAX_THREADS, optarg);
                return PYRT_EXIT_USAGE;
            }
            break;
        case 'T':
            if (parse_int(optarg, 0, 1, &o.threadsafe) < 0) {
                fprintf(stderr, "cyclozzo-pyrt: --threadsafe must be 0 or 1, not \"%s\"\n", optarg);
                return PYRT_EXIT_USAGE;
            }
            break;
        case 'g': {
            char *end;
            o.grace_s = strtod(optarg, &end);
            if (!*optarg || *end || o.grace_s < 0 || o.grace_s > 3600) {
                fprintf(stderr, "cyclozzo-pyrt: --grace must be seconds from 0 to 3600, not \"%s\"\n", optarg);
                return PYRT_EXIT_USAGE;
            }
            break;
        }
        case 'l':
            if (!strcmp(optarg, "debug")) lvl = LOG_DEBUG;
            else if (!strcmp(optarg, "info")) lvl = LOG_INFO;
            else if (!strcmp(optarg, "warn")) lvl = LOG_WARN;
            else if (!strcmp(optarg, "error")) lvl = LOG_ERROR;
            else { fprintf(stderr, "cyclozzo-pyrt: unknown --log-level \"%s\"\n", optarg); return PYRT_EXIT_USAGE; }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return PYRT_EXIT_USAGE;
        }
    }
    if (optind < argc || !o.socket_path || !o.app_dir) {
        usage(stderr);
        return PYRT_EXIT_USAGE;
    }
    static char app_dir[PATH_MAX], venv[PATH_MAX];
    if (!realpath(o.app_dir, app_dir)) {
        fprintf(stderr, "cyclozzo-pyrt: app directory %s does not exist\n", o.app_dir);
        return PYRT_EXIT_START;
    }
    o.app_dir = app_dir;
    if (*o.venv) {
        if (!realpath(o.venv, venv)) {
            fprintf(stderr, "cyclozzo-pyrt: virtualenv %s does not exist\n", o.venv);
            return PYRT_EXIT_START;
        }
        o.venv = venv;
    }
    o.debug = lvl == LOG_DEBUG;
    const char *app_id = getenv("GAE_APPLICATION");
    o.app_id = app_id && *app_id ? app_id : "-";
    log_init(2, lvl);
    raise_fd_limit();
    /* SIGTERM/SIGINT are read from a signalfd by the epoll leader; block them
     * before any thread exists so that no thread is killed by them. */
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    pthread_sigmask(SIG_BLOCK, &ss, NULL);
    signal(SIGPIPE, SIG_IGN);       /* a closed log pipe or peer is an error value, not death */

    char err[512];
    int64_t t0 = now_us();
    /* Once the interpreter exists the process leaves with _exit(): the
     * interpreter is never finalised (its threads may be anywhere), and its
     * memory is the kernel's to reclaim, not a leak checker's to report. */
    if (wsgi_start(&o, err, sizeof err) < 0) {
        log_error("pyrt", "app=%s msg=%s", log_q(o.app_id), log_q(err));
        _exit(PYRT_EXIT_START);
    }
    log_info("pyrt", "app=%s msg=\"app loaded\" entry=%s ms=%.1f", log_q(o.app_id), log_q(o.entry),
             (double)(now_us() - t0) / 1000.0);
    if (server_run(&o, err, sizeof err) < 0) {
        log_error("pyrt", "app=%s msg=%s", log_q(o.app_id), log_q(err));
        _exit(PYRT_EXIT_START);
    }
    _exit(0);
}
