/* serve.h - run one app: the Cyclozzo daemon for `--start application`.
 *
 * serve_app() loads and validates app.yaml, prepares the app's virtualenv,
 * then (unless foreground) detaches into the background. The daemon starts
 * the API server (all services), the instance manager and the router, and
 * reports readiness to the waiting CLI through a pipe only once the first
 * instance answers and the router listens; the CLI then exits 0, or non-zero
 * with the daemon's one-sentence reason. SIGTERM/SIGINT stop everything. */
#ifndef CZ_SERVE_H
#define CZ_SERVE_H

typedef struct {
    const char *dir;
    const char *host;
    int port;
    int foreground;
    int threads;        /* router threads, 0 = CPUs */
    const char *exe;    /* path of the running cyclozzo binary (to find cyclozzo-pyrt) */
    int no_sandbox;     /* run instances unconfined (--no-sandbox) */
    int dev;            /* development sign-in: any email, no password (--dev) */
    int https_port;     /* --https-port, 0 = no HTTPS */
    const char *cert[16], *key[16];   /* --cert/--key pairs, in order; the first is the default */
    int ncert, nkey;
    const char *domain; /* --domain NAME, or NULL */
    int selfsigned;     /* set by serve_app: 1 = self-signed reused, 2 = generated now */
    /* mail relay (--smtp-*): no host = messages go to the outbox */
    const char *smtp_host, *smtp_user, *smtp_password_file;
    int smtp_port, smtp_starttls;
    const char *memcache_servers;  /* "host:port,..." puts memcache on memcached (--memcache-servers) */
    const char *blob_dir; /* the Blobstore's directory (--blob-dir), NULL = home/blobs */
} serve_opts;

/* Returns the process exit status for the CLI. */
int serve_app(const serve_opts *o);

#endif
