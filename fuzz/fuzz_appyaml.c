/* fuzz_appyaml - libFuzzer target for the app.yaml loader.
 *
 * Feeds the input to appcfg_parse() as an app.yaml (the app directory does
 * not exist, so includes resolve to nothing and no file is read), and when it
 * is accepted routes a few paths through the handlers, expands the static
 * templates and asks skip_files about a few names, so matching and expansion
 * run on every pattern the parser accepts.  Seeds: tests/appyaml-corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "appcfg/appyaml.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) { log_set_level(LOG_ERROR); quiet = 1; }
    char err[512];
    app_config *cfg = appcfg_parse((const char *)data, size, "fuzz/app.yaml", "/nonexistent-cyclozzo-fuzz",
                                   err, sizeof err);
    if (!cfg) {
        if (!memchr(err, 0, sizeof err) || !err[0]) abort();   /* errors are always set */
        return 0;
    }
    static const char *paths[] = {"/", "/a", "/static/x/y.css", "/img/logo.png", "/admin/", "/u/ann/x",
                                  "/%2e%2e/etc", "/\xc3\xa9", "/\xff\xfe", ""};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        app_match m;
        if (appcfg_match(cfg, paths[i], strlen(paths[i]), &m) && m.handler->static_files) {
            char *f = appcfg_expand(m.handler->static_files, &m);
            free(f);
        }
    }
    appcfg_skipped(cfg, ".git/config");
    appcfg_skipped(cfg, "main.py");
    appcfg_has_inbound(cfg, "warmup");
    appcfg_memory_mb(cfg);
    appcfg_free(cfg);
    return 0;
}
