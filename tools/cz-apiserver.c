/* cz-apiserver.c - run Cyclozzo's App Engine API server on its own, or mint
 * a security ticket for it.
 *
 *   cz-apiserver --home DIR [--host H] [--port P] [--app APP_ID]
 *                [--threads N] [--max-request BYTES] [--log-level L]
 *                [--memcache-servers HOST:PORT[,HOST:PORT...]]
 *       serves /rpc_http in the foreground with every service registered,
 *       prints "port=N" on stdout once listening, stops on SIGINT/SIGTERM.
 *   cz-apiserver --home DIR --mint-ticket APP_ID [--ttl SECONDS]
 *                [--user EMAIL] [--user-id ID] [--admin] [--version V]
 *                [--namespace NS] [--request-id ID]
 *       prints a ticket signed with DIR's key (DIR/secrets/ticket.key).
 *
 * Everything here is argument handling: the server is api.h, minting is one
 * call to ticket_mint_home(). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/memcache.h"
#include "api/ticket.h"
#include "core/log.h"
#include "core/util.h"

static void usage(FILE *f)
{
    fputs("usage: cz-apiserver --home DIR [--host H] [--port P] [--app APP_ID] [--threads N]\n"
          "                    [--max-request BYTES] [--log-level debug|info|warn|error] [--datastore SPEC]\n"
          "                    [--memcache-servers HOST:PORT[,HOST:PORT...]]\n"
          "       cz-apiserver --home DIR --mint-ticket APP_ID [--ttl SECONDS] [--user EMAIL]\n"
          "                    [--user-id ID] [--admin] [--version V] [--namespace NS] [--request-id ID]\n", f);
}

static int copy_claim(char *dst, size_t cap, const char *src, const char *what)
{
    if (strlen(src) >= cap) {
        fprintf(stderr, "cz-apiserver: %s \"%s\" is longer than %zu bytes\n", what, src, cap - 1);
        return -1;
    }
    strcpy(dst, src);
    return 0;
}

static long parse_num(const char *s, const char *what, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || !*s || v < lo || v > hi) {
        fprintf(stderr, "cz-apiserver: %s must be a number from %ld to %ld, not \"%s\"\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    enum { O_HOME = 256, O_HOST, O_PORT, O_APP, O_THREADS, O_MAXREQ, O_LOG, O_MINT, O_TTL, O_USER,
           O_USERID, O_ADMIN, O_VERSION, O_NS, O_REQID, O_HELP, O_DATASTORE, O_MEMCACHED };
    static const struct option opts[] = {
        {"home", 1, 0, O_HOME}, {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT}, {"app", 1, 0, O_APP},
        {"threads", 1, 0, O_THREADS}, {"max-request", 1, 0, O_MAXREQ}, {"log-level", 1, 0, O_LOG},
        {"mint-ticket", 1, 0, O_MINT}, {"ttl", 1, 0, O_TTL}, {"user", 1, 0, O_USER},
        {"user-id", 1, 0, O_USERID}, {"admin", 0, 0, O_ADMIN}, {"version", 1, 0, O_VERSION},
        {"namespace", 1, 0, O_NS}, {"request-id", 1, 0, O_REQID}, {"help", 0, 0, O_HELP},
        {"datastore", 1, 0, O_DATASTORE}, {"memcache-servers", 1, 0, O_MEMCACHED}, {0, 0, 0, 0},
    };
    api_server_config cfg = {0};
    const char *mint_app = NULL;
    const char *memcache_servers = NULL;
    long ttl = 3600;
    ticket_claims claims;
    memset(&claims, 0, sizeof claims);
    log_level level = LOG_INFO;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_HOME: cfg.home = optarg; break;
        case O_HOST: cfg.host = optarg; break;
        case O_MEMCACHED: {
            char e[256];
            if (mc_servers_check(optarg, e, sizeof e) < 0) { fprintf(stderr, "cz-apiserver: --memcache-servers: %s\n", e); return 2; }
            memcache_servers = optarg;
            break;
        }
        case O_PORT: cfg.port = (int)parse_num(optarg, "--port", 0, 65535); break;
        case O_APP: cfg.app_id = optarg; break;
        case O_THREADS: cfg.threads = (int)parse_num(optarg, "--threads", 1, 1024); break;
        case O_MAXREQ: cfg.max_request = (size_t)parse_num(optarg, "--max-request", 1024, 1L << 30); break;
        case O_LOG:
            if (!strcmp(optarg, "debug")) level = LOG_DEBUG;
            else if (!strcmp(optarg, "info")) level = LOG_INFO;
            else if (!strcmp(optarg, "warn")) level = LOG_WARN;
            else if (!strcmp(optarg, "error")) level = LOG_ERROR;
            else { fprintf(stderr, "cz-apiserver: unknown log level \"%s\"\n", optarg); return 2; }
            break;
        case O_MINT: mint_app = optarg; break;
        case O_TTL: ttl = parse_num(optarg, "--ttl", 1, TICKET_MAX_TTL_S); break;
        case O_USER: if (copy_claim(claims.user_email, sizeof claims.user_email, optarg, "--user") < 0) return 2; break;
        case O_USERID: if (copy_claim(claims.user_id, sizeof claims.user_id, optarg, "--user-id") < 0) return 2; break;
        case O_ADMIN: claims.user_is_admin = 1; break;
        case O_VERSION: if (copy_claim(claims.version, sizeof claims.version, optarg, "--version") < 0) return 2; break;
        case O_NS: if (copy_claim(claims.ns, sizeof claims.ns, optarg, "--namespace") < 0) return 2; break;
        case O_REQID: if (copy_claim(claims.request_id, sizeof claims.request_id, optarg, "--request-id") < 0) return 2; break;
        case O_DATASTORE: setenv("CYCLOZZO_DATASTORE", optarg, 1); break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) { usage(stderr); return 2; }
    if (!cfg.home) cfg.home = cyclozzo_home();
    log_init(2, level);

    char err[512];
    if (mint_app) {
        if (copy_claim(claims.app_id, sizeof claims.app_id, mint_app, "app id") < 0) return 2;
        char *t = ticket_mint_home(cfg.home, &claims, ttl, err, sizeof err);
        if (!t) { fprintf(stderr, "cz-apiserver: %s\n", err); return 1; }
        printf("%s\n", t);
        free(t);
        return 0;
    }

    /* Block the stop signals in every thread; the main thread waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    api_server *srv = api_server_new(&cfg, err, sizeof err);
    if (!srv) { fprintf(stderr, "cz-apiserver: %s\n", err); return 1; }
    if (memcache_servers) api_share(srv, MEMCACHE_SERVERS_SHARE, (void *)memcache_servers);
    api_register_all(srv, cfg.home);
    if (api_server_start(srv, err, sizeof err) < 0) {
        fprintf(stderr, "cz-apiserver: %s\n", err);
        api_server_stop(srv);
        return 1;
    }
    printf("port=%d\n", api_server_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    log_info("api", "msg=\"stopping on signal\" signal=%d", sig);
    api_server_stop(srv);
    return 0;
}
