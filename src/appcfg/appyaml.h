/* appyaml.h - app.yaml: load, validate, and match request paths to handlers.
 *
 * appcfg_load() reads DIR/app.yaml (and its `includes:`), validates every
 * field App Engine documents for the standard environment, compiles handler
 * `url` and `upload` patterns (Python regex syntax via PCRE2, anchored at both
 * ends as App Engine does) and `skip_files`, and returns an app_config. A bad
 * file gives NULL and one sentence "PATH:LINE: reason" in err.
 *
 * appcfg_match() finds the first handler whose url matches the path (App
 * Engine's first-match-wins rule) and records its capture groups so
 * static_files templates ("static/\1") can be expanded with appcfg_expand(). */
#ifndef CZ_APPYAML_H
#define CZ_APPYAML_H

#include <stddef.h>
#include <stdint.h>

typedef enum { HANDLER_SCRIPT = 0, HANDLER_STATIC_FILES, HANDLER_STATIC_DIR } handler_kind;
typedef enum { LOGIN_OPTIONAL = 0, LOGIN_REQUIRED, LOGIN_ADMIN } login_rule;
typedef enum { AUTH_FAIL_REDIRECT = 0, AUTH_FAIL_UNAUTHORIZED } auth_fail_action;
typedef enum { SECURE_DEFAULT = 0, SECURE_OPTIONAL, SECURE_NEVER, SECURE_ALWAYS } secure_rule;
typedef enum { SCALING_AUTOMATIC = 0, SCALING_MANUAL, SCALING_BASIC } scaling_kind;

typedef struct { char *name; char *value; } appcfg_pair;

typedef struct {
    char *url;                     /* pattern as written */
    void *url_re;                  /* pcre2_code* */
    handler_kind kind;
    char *static_files;            /* template with \N back-references; a static_dir
                                      handler gets "DIR/\N" and url_re "URL/(.*)" */
    char *upload;                  /* pattern as written */
    void *upload_re;
    char *static_dir;              /* directory relative to the app dir */
    char *script;                  /* "main.app", "auto", or NULL for static */
    login_rule login;
    auth_fail_action auth_fail;
    secure_rule secure;
    int redirect_http_response_code;   /* 301, 302, 303, 307; 0 = unset (302) */
    int64_t expiration_s;          /* -1 = unset (default_expiration applies) */
    appcfg_pair *http_headers; size_t n_http_headers;
    char *mime_type;               /* NULL = from the file extension */
    int application_readable;
    int line;                      /* line of the handler in its file */
} app_handler;

typedef struct {
    scaling_kind kind;
    /* automatic */
    int min_instances, max_instances, max_concurrent_requests;   /* 0 = unset */
    int min_idle_instances, max_idle_instances;
    double target_cpu_utilization, target_throughput_utilization;
    char *min_pending_latency, *max_pending_latency;
    /* manual */
    int instances;
    /* basic */
    char *idle_timeout;
} app_scaling;

typedef struct {
    char *dir;                     /* absolute app directory */
    char *path;                    /* absolute path of app.yaml */
    char *application;             /* may be NULL: the CLI then uses the dir name */
    char *service;                 /* `service:` or `module:`, default "default" */
    char *version;                 /* may be NULL */
    char *runtime;                 /* required: python39, python311, go122, java17, ... */
    char *entrypoint;              /* may be NULL */
    char *api_version;
    int threadsafe;                /* -1 unset, else 0/1 */
    char *instance_class;          /* F1 default */
    int64_t default_expiration_s;  /* -1 unset */
    int app_engine_apis;
    appcfg_pair *env; size_t n_env;               /* env_variables */
    app_handler *handlers; size_t n_handlers;
    char **skip_files; size_t n_skip_files;       /* patterns as written */
    void *skip_re;                                /* combined pcre2_code*, or NULL */
    char **inbound_services; size_t n_inbound_services;
    app_scaling scaling;
} app_config;

#define APPCFG_MAX_GROUPS 10

typedef struct {
    const app_handler *handler;
    int index;                               /* handler index, -1 when none matched */
    const char *subject; size_t subject_len; /* the path matched */
    int ngroups;                             /* captured groups incl. group 0 */
    size_t ovec[2 * APPCFG_MAX_GROUPS];      /* byte offsets into subject; -1 if unset */
} app_match;

app_config *appcfg_load(const char *app_dir, char *err, size_t errlen);
/* Parse YAML text as if it were the app.yaml at path (for tests and fuzzing). */
app_config *appcfg_parse(const char *text, size_t len, const char *path, const char *app_dir,
                         char *err, size_t errlen);
void appcfg_free(app_config *cfg);

/* First matching handler for path (without query string); 1 if found, else 0. */
int appcfg_match(const app_config *cfg, const char *path, size_t len, app_match *m);
/* Expand \1..\9 in tmpl from m's groups; malloc'ed result. */
char *appcfg_expand(const char *tmpl, const app_match *m);
/* 1 if the app-relative path is excluded by skip_files. */
int appcfg_skipped(const app_config *cfg, const char *relpath);
/* 1 if inbound_services lists name (e.g. "warmup"). */
int appcfg_has_inbound(const app_config *cfg, const char *name);
/* Memory limit in MB for the config's instance_class (F1=384 ...; B classes too). */
int appcfg_memory_mb(const app_config *cfg);
/* 1 if static handler h may serve the app-relative file relpath: for
 * static_files it must match the handler's upload pattern (App Engine uploads,
 * and so serves, only those files); a static_dir serves its whole directory. */
int appcfg_static_uploaded(const app_handler *h, const char *relpath);
/* Seconds in an App Engine expiration ("4d 5h", "1d 30m 10s", "10" = 10 s);
 * -1 if malformed, -2 if absurdly large. */
int64_t appcfg_parse_expiration(const char *s);

#endif
