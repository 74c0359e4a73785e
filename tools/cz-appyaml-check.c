/* cz-appyaml-check - validate one app.yaml the way Cyclozzo loads it.
 *
 *   cz-appyaml-check FILE
 *
 * Exits 0 and prints a short normalised summary (one "key: value" line per
 * setting, one line per handler) when the file is accepted; exits 1 and
 * prints the one-sentence error "FILE:LINE: reason" on stderr when it is
 * refused; exits 2 on a usage error.  Includes are resolved relative to the
 * file's directory, which stands for the app directory. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appcfg/appyaml.h"
#include "core/util.h"

static const char *kind_name[] = {"script", "static_files", "static_dir"};
static const char *login_name[] = {"optional", "required", "admin"};
static const char *auth_name[] = {"redirect", "unauthorized"};
static const char *secure_name[] = {"default", "optional", "never", "always"};
static const char *scaling_name[] = {"automatic", "manual", "basic"};

static const char *or_dash(const char *s) { return s ? s : "-"; }

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: cz-appyaml-check FILE\n"); return 2; }
    const char *file = argv[1];
    size_t len;
    char *text = read_file(file, &len);
    if (!text) { fprintf(stderr, "%s: cannot read: %s\n", file, strerror(errno)); return 1; }
    char *copy = xstrdup(file);
    char *dir = realpath(dirname(copy), NULL);
    char err[1024];
    app_config *cfg = appcfg_parse(text, len, file, dir ? dir : ".", err, sizeof err);
    free(text);
    free(copy);
    free(dir);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }

    printf("runtime: %s\n", cfg->runtime);
    printf("application: %s\n", or_dash(cfg->application));
    printf("service: %s\n", cfg->service);
    printf("version: %s\n", or_dash(cfg->version));
    printf("entrypoint: %s\n", or_dash(cfg->entrypoint));
    printf("api_version: %s\n", or_dash(cfg->api_version));
    printf("threadsafe: %d\n", cfg->threadsafe);
    printf("app_engine_apis: %d\n", cfg->app_engine_apis);
    printf("instance_class: %s (%d MB)\n", cfg->instance_class, appcfg_memory_mb(cfg));
    printf("default_expiration: %lld\n", (long long)cfg->default_expiration_s);
    const app_scaling *s = &cfg->scaling;
    printf("scaling: %s", scaling_name[s->kind]);
    if (s->kind == SCALING_MANUAL) printf(" instances=%d", s->instances);
    if (s->kind == SCALING_BASIC) printf(" max_instances=%d idle_timeout=%s", s->max_instances, or_dash(s->idle_timeout));
    if (s->kind == SCALING_AUTOMATIC)
        printf(" min_instances=%d max_instances=%d max_concurrent_requests=%d target_cpu=%g",
               s->min_instances, s->max_instances, s->max_concurrent_requests, s->target_cpu_utilization);
    printf("\n");
    for (size_t i = 0; i < cfg->n_inbound_services; i++) printf("inbound_service: %s\n", cfg->inbound_services[i]);
    for (size_t i = 0; i < cfg->n_env; i++) printf("env: %s=%s\n", cfg->env[i].name, cfg->env[i].value);
    printf("skip_files: %zu pattern(s)\n", cfg->n_skip_files);
    for (size_t i = 0; i < cfg->n_handlers; i++) {
        const app_handler *h = &cfg->handlers[i];
        printf("handler %zu: url=%s %s=%s", i + 1, h->url, kind_name[h->kind],
               h->kind == HANDLER_SCRIPT ? h->script : h->kind == HANDLER_STATIC_DIR ? h->static_dir : h->static_files);
        if (h->upload) printf(" upload=%s", h->upload);
        printf(" login=%s auth_fail_action=%s secure=%s", login_name[h->login], auth_name[h->auth_fail],
               secure_name[h->secure]);
        if (h->redirect_http_response_code) printf(" redirect=%d", h->redirect_http_response_code);
        if (h->expiration_s >= 0) printf(" expiration=%lld", (long long)h->expiration_s);
        if (h->mime_type) printf(" mime_type=%s", h->mime_type);
        if (h->application_readable) printf(" application_readable=1");
        for (size_t j = 0; j < h->n_http_headers; j++)
            printf(" header[%s]=%s", h->http_headers[j].name, h->http_headers[j].value);
        printf("\n");
    }
    appcfg_free(cfg);
    return 0;
}
