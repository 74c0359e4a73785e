/* main.c - the `cyclozzo` command line.
 *
 *   cyclozzo --start application --dir DIR --port PORT [--host ADDR] [--foreground] [--dev]
 *            [--no-sandbox] [--blob-dir DIR] [--memcache-servers HOST:PORT[,HOST:PORT...]]
 *            [--https-port PORT [--cert FILE --key FILE]...] [--domain NAME]
 *   cyclozzo --stop application (--dir DIR | --port PORT)
 *   cyclozzo --status
 *   cyclozzo --add-user EMAIL [--admin] [--password-stdin] | --remove-user EMAIL | --list-users
 *   cyclozzo --logs APP [--follow] [--count N] | --verify-token TOKEN
 *   cyclozzo --mail-outbox APP [--show ID]
 *   cyclozzo --deliver-mail APP --to ADDRESS [FILE]
 *   cyclozzo --help | --version
 *
 * Flags follow the original Cyclozzo command line. Each command is a small
 * function; the app daemon itself lives in serve.c. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/memcache_backend.h"
#include "cli/mailcmd.h"
#include "cli/serve.h"
#include "cli/state.h"
#include "cli/usercmd.h"
#include "cli/logscmd.h"
#include "core/util.h"

#define CYCLOZZO_VERSION "1.0.0-dev"

static void usage(FILE *f)
{
    fprintf(f,
        "usage:\n"
        "  cyclozzo --start application --dir DIR --port PORT [--host ADDR] [--foreground]\n"
        "                               [--threads N] [--dev] [--no-sandbox]\n"
        "                               [--datastore SPEC] [--blob-dir DIR]\n"
        "                               [--smtp-host H [--smtp-port P] [--smtp-user U\n"
        "                                --smtp-password-file F] [--smtp-starttls]]\n"
        "                               [--memcache-servers HOST:PORT[,HOST:PORT...]]\n"
        "                               [--https-port PORT [--cert FILE --key FILE]...]\n"
        "                               [--domain NAME]\n"
        "  cyclozzo --stop application (--dir DIR | --port PORT)\n"
        "  cyclozzo --status\n"
        "  cyclozzo --add-user EMAIL [--admin] [--password-stdin]\n"
        "  cyclozzo --remove-user EMAIL\n"
        "  cyclozzo --list-users\n"
        "  cyclozzo --logs APP [--follow] [--count N]\n"
        "  cyclozzo --verify-token TOKEN\n"
        "  cyclozzo --mail-outbox APP [--show ID]\n"
        "  cyclozzo --deliver-mail APP --to ADDRESS [FILE]\n"
        "  cyclozzo --help | --version\n"
        "\n"
        "  --start application  validate DIR/app.yaml, prepare the app and serve it on\n"
        "                       PORT (default host 127.0.0.1); returns once it answers\n"
        "  --stop application   stop the app and every process it started\n"
        "  --status             list running apps: dir, port, pid, instances, uptime\n"
        "  --foreground         stay attached and log to the terminal\n"
        "  --https-port PORT    also serve HTTPS on PORT (TLS 1.2+); see docs/https.md\n"
        "  --cert FILE --key FILE  PEM certificate and key for HTTPS; repeat the pair for\n"
        "                       more domains (chosen by SNI; the first is the default).\n"
        "                       Without them a self-signed one is made under $CYCLOZZO_HOME/tls\n"
        "  --domain NAME        answer on NAME, APP.NAME and VERSION-dot-APP.NAME\n"
        "  --no-sandbox         run the app's instances unconfined (when not root, or\n"
        "                       the host has no namespaces); see docs/sandbox.md\n"
        "  --datastore SPEC     keep the datastore (and task queues) on another engine,\n"
        "                       e.g. postgresql://USER@HOST:PORT/DB; default LMDB under\n"
        "                       $CYCLOZZO_HOME/datastore (see docs/datastore-core.md)\n"
        "  --blob-dir DIR       keep the Blobstore's blobs in DIR (default\n"
        "                       $CYCLOZZO_HOME/blobs; a shared mount serves many nodes)\n"
        "  --dev                development sign-in: any email address signs in at\n"
        "                       /_ah/login without a password (never on a shared host)\n"
        "  --memcache-servers LIST  keep the app's memcache in these memcached servers\n"
        "                       (consistent hashing) instead of in-process; see\n"
        "                       docs/memcache.md\n"
        "  --add-user EMAIL     add an account (or change its password and --admin flag);\n"
        "                       the password is asked twice, or read from stdin\n"
        "  --remove-user EMAIL  delete an account\n"
        "  --list-users         list accounts: email, administrator, user id\n"
        "  --logs APP           the app's newest requests (--count N, default 100), oldest\n"
        "                       first, each with its app log lines; --follow keeps printing\n"
        "  --verify-token TOKEN check an app_identity access token: app, scopes, expiry\n"
        "  --smtp-host H        relay apps' mail through the SMTP server H (else it is\n"
        "                       kept in the outbox); see docs/mail.md\n"
        "  --mail-outbox APP    list the mail APP sent that is kept in the outbox;\n"
        "                       --show ID prints one message\n"
        "  --deliver-mail APP   POST a message (FILE or stdin) to APP's /_ah/mail/ADDRESS\n"
        "\n"
        "Data and state live under $CYCLOZZO_HOME (default ~/.cyclozzo, or\n"
        "/var/lib/cyclozzo for root).\n");
}

typedef struct {
    const char *start, *stop, *dir, *host;
    int port, status, foreground, threads, dev, no_sandbox;
    int datastore;                 /* --datastore given (already in the environment) */
    const char *add_user, *remove_user;
    const char *memcache_servers;
    const char *blob_dir;
    int list_users, admin, password_stdin;
    const char *logs, *verify_token;
    int follow, count;
    int https_port, ncert, nkey;
    const char *cert[16], *key[16], *domain;
    const char *smtp_host, *smtp_user, *smtp_password_file, *mail_outbox, *show, *deliver_mail, *to, *file;
    int smtp_port, smtp_starttls;
} cli_opts;

static int need_value(int i, int argc, char **argv)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "cyclozzo: %s needs a value (see cyclozzo --help)\n", argv[i]);
        return 0;
    }
    return 1;
}

static int parse_int(const char *flag, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v > INT_MAX) {
        fprintf(stderr, "cyclozzo: %s takes a number, not \"%s\"\n", flag, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static void print_status(const app_state *s, void *arg)
{
    (void)arg;
    long up = (long)(time(NULL) - s->started);
    char ups[32];
    if (up >= 86400) snprintf(ups, sizeof ups, "%ldd%ldh", up / 86400, up % 86400 / 3600);
    else if (up >= 3600) snprintf(ups, sizeof ups, "%ldh%ldm", up / 3600, up % 3600 / 60);
    else if (up >= 60) snprintf(ups, sizeof ups, "%ldm%lds", up / 60, up % 60);
    else snprintf(ups, sizeof ups, "%lds", up);
    printf("%-16s %-6d %-8d %-9d %-8s %s\n", s->app, s->port, (int)s->pid, s->instances, ups, s->dir);
}

static int cmd_status(void)
{
    printf("%-16s %-6s %-8s %-9s %-8s %s\n", "APP", "PORT", "PID", "INSTANCES", "UPTIME", "DIR");
    int n = state_each(print_status, NULL);
    if (!n) printf("(no apps running)\n");
    return 0;
}

typedef struct { const char *dir; int port; int found; } stop_find;

static void find_dir(const app_state *s, void *arg)
{
    stop_find *f = arg;
    if (!strcmp(s->dir, f->dir)) { f->port = s->port; f->found++; }
}

static int stop_port(int port)
{
    app_state s;
    if (state_read_port(port, &s) < 0) {
        fprintf(stderr, "cyclozzo: no app is running on port %d\n", port);
        return 1;
    }
    if (kill(s.pid, SIGTERM) < 0) {
        fprintf(stderr, "cyclozzo: cannot stop pid %d: %s\n", (int)s.pid, strerror(errno));
        return 1;
    }
    for (int i = 0; i < 200; i++) {
        if (kill(s.pid, 0) < 0 && errno == ESRCH) break;
        usleep(50000);
    }
    if (kill(s.pid, 0) == 0) {
        kill(s.pid, SIGKILL);
        usleep(100000);
    }
    state_remove(port);
    printf("cyclozzo: stopped %s on port %d\n", s.app, port);
    return 0;
}

static int cmd_stop(const cli_opts *o)
{
    if (strcmp(o->stop, "application") != 0) {
        fprintf(stderr, "cyclozzo: --stop takes \"application\", not \"%s\"\n", o->stop);
        return 2;
    }
    if (o->port) return stop_port(o->port);
    if (!o->dir) {
        fprintf(stderr, "cyclozzo: --stop application needs --dir DIR or --port PORT\n");
        return 2;
    }
    char abs[PATH_MAX];
    stop_find f = {.dir = realpath(o->dir, abs) ? abs : o->dir};
    state_each(find_dir, &f);
    if (!f.found) {
        fprintf(stderr, "cyclozzo: no app from %s is running\n", f.dir);
        return 1;
    }
    /* Several ports may serve the same dir: stop them all. */
    int rc = 0;
    while (f.found) {
        rc |= stop_port(f.port);
        f.found = 0;
        state_each(find_dir, &f);
    }
    return rc;
}

int main(int argc, char **argv)
{
    cli_opts o = {.host = "127.0.0.1"};
    if (argc < 2) { usage(stderr); return 2; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--version")) { printf("cyclozzo %s\n", CYCLOZZO_VERSION); return 0; }
        else if (!strcmp(a, "--status")) o.status = 1;
        else if (!strcmp(a, "--foreground")) o.foreground = 1;
        else if (!strcmp(a, "--no-sandbox")) o.no_sandbox = 1;
        else if (!strcmp(a, "--dev")) o.dev = 1;
        else if (!strcmp(a, "--admin")) o.admin = 1;
        else if (!strcmp(a, "--password-stdin")) o.password_stdin = 1;
        else if (!strcmp(a, "--list-users")) o.list_users = 1;
        else if (!strcmp(a, "--follow")) o.follow = 1;
        else if (!strcmp(a, "--logs")) { if (!need_value(i, argc, argv)) return 2; o.logs = argv[++i]; }
        else if (!strcmp(a, "--verify-token")) { if (!need_value(i, argc, argv)) return 2; o.verify_token = argv[++i]; }
        else if (!strcmp(a, "--count")) { if (!need_value(i, argc, argv) || !parse_int(a, argv[i + 1], &o.count)) return 2; i++; }
        else if (!strcmp(a, "--add-user")) { if (!need_value(i, argc, argv)) return 2; o.add_user = argv[++i]; }
        else if (!strcmp(a, "--remove-user")) { if (!need_value(i, argc, argv)) return 2; o.remove_user = argv[++i]; }
        else if (!strcmp(a, "--start")) { if (!need_value(i, argc, argv)) return 2; o.start = argv[++i]; }
        else if (!strcmp(a, "--stop")) { if (!need_value(i, argc, argv)) return 2; o.stop = argv[++i]; }
        else if (!strcmp(a, "--blob-dir")) { if (!need_value(i, argc, argv)) return 2; o.blob_dir = argv[++i]; }
        else if (!strcmp(a, "--dir")) { if (!need_value(i, argc, argv)) return 2; o.dir = argv[++i]; }
        else if (!strcmp(a, "--host")) { if (!need_value(i, argc, argv)) return 2; o.host = argv[++i]; }
        else if (!strcmp(a, "--port")) { if (!need_value(i, argc, argv) || !parse_int(a, argv[i + 1], &o.port)) return 2; i++; }
        else if (!strcmp(a, "--https-port")) { if (!need_value(i, argc, argv) || !parse_int(a, argv[i + 1], &o.https_port)) return 2; i++; }
        else if (!strcmp(a, "--cert") || !strcmp(a, "--key")) {
            if (!need_value(i, argc, argv)) return 2;
            int *n = a[2] == 'c' ? &o.ncert : &o.nkey;
            if (*n >= 16) { fprintf(stderr, "cyclozzo: at most 16 %s options\n", a); return 2; }
            (a[2] == 'c' ? o.cert : o.key)[(*n)++] = argv[++i];
        }
        else if (!strcmp(a, "--domain")) { if (!need_value(i, argc, argv)) return 2; o.domain = argv[++i]; }
        else if (!strcmp(a, "--smtp-starttls")) o.smtp_starttls = 1;
        else if (!strcmp(a, "--smtp-host")) { if (!need_value(i, argc, argv)) return 2; o.smtp_host = argv[++i]; }
        else if (!strcmp(a, "--smtp-user")) { if (!need_value(i, argc, argv)) return 2; o.smtp_user = argv[++i]; }
        else if (!strcmp(a, "--smtp-password-file")) { if (!need_value(i, argc, argv)) return 2; o.smtp_password_file = argv[++i]; }
        else if (!strcmp(a, "--smtp-port")) { if (!need_value(i, argc, argv) || !parse_int(a, argv[i + 1], &o.smtp_port)) return 2; i++; }
        else if (!strcmp(a, "--mail-outbox")) { if (!need_value(i, argc, argv)) return 2; o.mail_outbox = argv[++i]; }
        else if (!strcmp(a, "--show")) { if (!need_value(i, argc, argv)) return 2; o.show = argv[++i]; }
        else if (!strcmp(a, "--deliver-mail")) { if (!need_value(i, argc, argv)) return 2; o.deliver_mail = argv[++i]; }
        else if (!strcmp(a, "--to")) { if (!need_value(i, argc, argv)) return 2; o.to = argv[++i]; }
        else if (o.deliver_mail && !o.file && a[0] != '-') o.file = a;
        else if (o.deliver_mail && !o.file && !strcmp(a, "-")) o.file = a;
        else if (!strcmp(a, "--datastore")) { if (!need_value(i, argc, argv)) return 2; setenv("CYCLOZZO_DATASTORE", argv[++i], 1); o.datastore = 1; }
        else if (!strcmp(a, "--memcache-servers")) { if (!need_value(i, argc, argv)) return 2; o.memcache_servers = argv[++i]; }
        else if (!strcmp(a, "--threads")) { if (!need_value(i, argc, argv) || !parse_int(a, argv[i + 1], &o.threads)) return 2; i++; }
        else {
            fprintf(stderr, "cyclozzo: unknown option %s (see cyclozzo --help)\n", a);
            return 2;
        }
    }
    if ((o.admin || o.password_stdin) && !o.add_user) {
        fprintf(stderr, "cyclozzo: %s goes with --add-user EMAIL\n", o.admin ? "--admin" : "--password-stdin");
        return 2;
    }
    if (o.datastore && !o.start) {
        fprintf(stderr, "cyclozzo: --datastore goes with --start application\n");
        return 2;
    }
    if (o.dev && !o.start) {
        fprintf(stderr, "cyclozzo: --dev goes with --start application\n");
        return 2;
    }
    if ((o.follow || o.count) && !o.logs) {
        fprintf(stderr, "cyclozzo: %s goes with --logs APP\n", o.follow ? "--follow" : "--count");
        return 2;
    }
    if (o.logs) return logscmd_show(o.logs, o.follow, o.count);
    if (o.verify_token) return logscmd_verify_token(o.verify_token);
    if (o.show && !o.mail_outbox) {
        fprintf(stderr, "cyclozzo: --show goes with --mail-outbox APP\n");
        return 2;
    }
    if ((o.smtp_host || o.smtp_user || o.smtp_password_file || o.smtp_port || o.smtp_starttls) && !o.start) {
        fprintf(stderr, "cyclozzo: the --smtp-* options go with --start application\n");
        return 2;
    }
    if (o.mail_outbox) return mailcmd_outbox(o.mail_outbox, o.show);
    if (o.deliver_mail) {
        if (!o.to) {
            fprintf(stderr, "cyclozzo: --deliver-mail APP needs --to ADDRESS\n");
            return 2;
        }
        return mailcmd_deliver(o.deliver_mail, o.to, o.file);
    }
    if (o.memcache_servers) {
        char err[256];
        if (!o.start) {
            fprintf(stderr, "cyclozzo: --memcache-servers goes with --start application\n");
            return 2;
        }
        if (mc_servers_check(o.memcache_servers, err, sizeof err) < 0) {
            fprintf(stderr, "cyclozzo: --memcache-servers: %s\n", err);
            return 2;
        }
    }
    if (o.add_user) return usercmd_add(o.add_user, o.admin, o.password_stdin);
    if (o.remove_user) return usercmd_remove(o.remove_user);
    if (o.list_users) return usercmd_list();
    if (o.status) return cmd_status();
    if (o.stop) return cmd_stop(&o);
    if (o.start) {
        if (strcmp(o.start, "application") != 0) {
            fprintf(stderr, "cyclozzo: --start takes \"application\", not \"%s\"\n", o.start);
            return 2;
        }
        if (!o.dir || !o.port) {
            fprintf(stderr, "cyclozzo: --start application needs --dir DIR and --port PORT\n");
            return 2;
        }
        if (o.ncert != o.nkey) {
            fprintf(stderr, "cyclozzo: every --cert FILE needs its --key FILE (got %d --cert, %d --key)\n", o.ncert, o.nkey);
            return 2;
        }
        if (o.ncert && !o.https_port) {
            fprintf(stderr, "cyclozzo: --cert/--key go with --https-port PORT\n");
            return 2;
        }
        char blob_abs[PATH_MAX];
        if (o.blob_dir && o.blob_dir[0] != '/') {
            /* The daemon runs in "/": make a relative --blob-dir absolute now. */
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd) || snprintf(blob_abs, sizeof blob_abs, "%s/%s", cwd, o.blob_dir) >= (int)sizeof blob_abs) {
                fprintf(stderr, "cyclozzo: --blob-dir %s is too long a path\n", o.blob_dir);
                return 2;
            }
            o.blob_dir = blob_abs;
        }
        serve_opts so = {.dir = o.dir, .host = o.host, .port = o.port, .foreground = o.foreground,
                         .threads = o.threads, .exe = "/proc/self/exe", .dev = o.dev,
                         .no_sandbox = o.no_sandbox, .smtp_host = o.smtp_host, .smtp_port = o.smtp_port,
                         .smtp_user = o.smtp_user, .smtp_starttls = o.smtp_starttls,
                         .memcache_servers = o.memcache_servers, .blob_dir = o.blob_dir};
        char pwpath[PATH_MAX];
        if (o.smtp_password_file) {
            /* The daemon works from /, so the file is named absolutely. */
            if (!realpath(o.smtp_password_file, pwpath)) {
                fprintf(stderr, "cyclozzo: cannot read the SMTP password file %s: %s\n", o.smtp_password_file, strerror(errno));
                return 2;
            }
            so.smtp_password_file = pwpath;
        }
        so.https_port = o.https_port;
        so.ncert = o.ncert;
        so.nkey = o.nkey;
        so.domain = o.domain;
        for (int k = 0; k < o.ncert; k++) { so.cert[k] = o.cert[k]; so.key[k] = o.key[k]; }
        return serve_app(&so);
    }
    usage(stderr);
    return 2;
}
