/* Unit tests for app.yaml loading and handler matching (src/appcfg/appyaml.c):
 * first-match-wins routing, capture groups and \N expansion, static_dir
 * prefixes, expirations, includes, skip_files, and errors with lines. */
#include "appcfg/appyaml.h"
#include "core/util.h"
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

static char err[512];

static app_config *P(const char *yaml)
{
    err[0] = 0;
    return appcfg_parse(yaml, strlen(yaml), "/x/app.yaml", "/x", err, sizeof err);
}

/* The file of the handler that serves path ("" when none matches). */
static char *route(const app_config *cfg, const char *path)
{
    app_match m;
    if (!appcfg_match(cfg, path, strlen(path), &m)) return xstrdup("");
    const app_handler *h = m.handler;
    if (h->kind == HANDLER_SCRIPT) return xasprintf("script:%s#%d", h->script, m.index);
    char *f = appcfg_expand(h->static_files, &m);
    char *r = xasprintf("file:%s#%d", f, m.index);
    free(f);
    return r;
}

#define CHECK_ROUTE(cfg, path, want) do { char *_r = route(cfg, path); CHECK_STR(_r, want); free(_r); } while (0)

TEST(first_match_wins)
{
    app_config *c = P("runtime: python311\n"
                      "handlers:\n"
                      "- url: /admin/.*\n"
                      "  script: auto\n"
                      "  login: admin\n"
                      "- url: /.*\n"
                      "  script: main.app\n"
                      "- url: /never\n"
                      "  script: never.app\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_INT(c->n_handlers, 3);
    CHECK_ROUTE(c, "/admin/x", "script:auto#0");
    CHECK_ROUTE(c, "/never", "script:main.app#1");
    CHECK_ROUTE(c, "/", "script:main.app#1");
    CHECK_INT(c->handlers[0].login, LOGIN_ADMIN);
    CHECK_INT(c->handlers[0].line, 3);
    appcfg_free(c);
}

TEST(anchored_both_ends)
{
    app_config *c = P("runtime: python311\n"
                      "handlers:\n"
                      "- url: /a|/b\n"
                      "  script: ab.app\n"
                      "- url: /c\n"
                      "  script: c.app\n");
    CHECK(c != NULL);
    if (!c) return;
    CHECK_ROUTE(c, "/a", "script:ab.app#0");
    CHECK_ROUTE(c, "/b", "script:ab.app#0");
    CHECK_ROUTE(c, "/bb", "");
    CHECK_ROUTE(c, "/c", "script:c.app#1");
    CHECK_ROUTE(c, "/cx", "");
    CHECK_ROUTE(c, "x/c", "");
    CHECK_ROUTE(c, "/c\n", "");
    appcfg_free(c);
}

TEST(groups_and_expand)
{
    app_config *c = P("runtime: python311\n"
                      "handlers:\n"
                      "- url: /(img|css)/(.*)\\.(png|css)\n"
                      "  static_files: static/\\1/\\2.\\3\n"
                      "  upload: static/.*\n"
                      "  expiration: 1d 30m 10s\n"
                      "- url: /u/(?P<user>[a-z]+)(/x)?\n"
                      "  static_files: users/\\1\\2.html\n"
                      "  upload: users/.*\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_INT(c->handlers[0].kind, HANDLER_STATIC_FILES);
    CHECK_INT(c->handlers[0].expiration_s, 86400 + 1800 + 10);
    CHECK_ROUTE(c, "/img/logo.png", "file:static/img/logo.png#0");
    CHECK_ROUTE(c, "/css/a/b.css", "file:static/css/a/b.css#0");
    CHECK_ROUTE(c, "/js/a.js", "");
    /* Python's (?P<name>...) works; an unset group expands to nothing */
    CHECK_ROUTE(c, "/u/ann", "file:users/ann.html#1");
    CHECK_ROUTE(c, "/u/ann/x", "file:users/ann/x.html#1");
    app_match m;
    CHECK(appcfg_match(c, "/img/a.png", 10, &m));
    CHECK_INT(m.ngroups, 4);
    CHECK_INT(m.ovec[2], 1);
    CHECK_INT(m.ovec[3], 4);
    CHECK(appcfg_match(c, "/u/bo", 5, &m));
    CHECK(m.ovec[4] == (size_t)-1);
    /* \N past the groups and literal backslashes */
    char *e = appcfg_expand("a\\9b\\xc", &m);
    CHECK_STR(e, "ab\\xc");
    free(e);
    /* only files matching upload are served, the whole name must match */
    CHECK(appcfg_static_uploaded(&c->handlers[1], "users/bo.html"));
    CHECK(!appcfg_static_uploaded(&c->handlers[1], "secret/bo.html"));
    CHECK(!appcfg_static_uploaded(&c->handlers[1], "xusers/bo.html"));
    appcfg_free(c);
}

TEST(static_dir_prefix)
{
    app_config *c = P("runtime: python311\n"
                      "handlers:\n"
                      "- url: /static/\n"
                      "  static_dir: public/\n"
                      "- url: /(v[0-9])/assets\n"
                      "  static_dir: assets\n"
                      "- url: /\n"
                      "  static_dir: root\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_INT(c->handlers[0].kind, HANDLER_STATIC_DIR);
    CHECK_STR(c->handlers[0].static_dir, "public/");
    CHECK_ROUTE(c, "/static/css/site.css", "file:public/css/site.css#0");
    CHECK_ROUTE(c, "/static/", "file:public/#0");
    /* the url's own group comes first, the rest of the path is \2 */
    CHECK_ROUTE(c, "/v2/assets/app.js", "file:assets/app.js#1");
    CHECK_ROUTE(c, "/staticx/a", "file:root/staticx/a#2");
    CHECK_ROUTE(c, "/favicon.ico", "file:root/favicon.ico#2");
    appcfg_free(c);
}

TEST(python_regex_syntax)
{
    app_config *c = P("runtime: python311\n"
                      "handlers:\n"
                      "- url: /z\\Z\n"
                      "  script: z.app\n"
                      "- url: /x{,2}\n"
                      "  script: x.app\n"
                      "- url: /\\u00e9t\\u00e9\n"
                      "  script: ete.app\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_ROUTE(c, "/z", "script:z.app#0");
    CHECK_ROUTE(c, "/", "script:x.app#1");
    CHECK_ROUTE(c, "/xx", "script:x.app#1");
    CHECK_ROUTE(c, "/xxx", "");
    CHECK_ROUTE(c, "/\xc3\xa9t\xc3\xa9", "script:ete.app#2");
    appcfg_free(c);

    /* inline flags PCRE2 lacks (u, a) are dropped; a verbose pattern's
     * trailing comment does not swallow the wrapping group */
    c = P("runtime: python311\n"
          "skip_files:\n"
          "- (?ix) ^ build / .*   # build output\n"
          "- (?u)^\\w+\\.tmp$\n"
          "handlers:\n"
          "- url: (?x) /assets  # static\n"
          "  static_dir: assets\n"
          "- url: /(?iu:caps)\n"
          "  script: caps.app\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK(appcfg_skipped(c, "BUILD/x.o"));
    CHECK(appcfg_skipped(c, "caf\xc3\xa9.tmp"));
    CHECK(!appcfg_skipped(c, "src/build/x"));
    CHECK_ROUTE(c, "/assets/a.css", "file:assets/a.css#0");
    CHECK_ROUTE(c, "/CaPs", "script:caps.app#1");
    appcfg_free(c);
}

TEST(expiration)
{
    CHECK_INT(appcfg_parse_expiration("4d 5h"), 4 * 86400 + 5 * 3600);
    CHECK_INT(appcfg_parse_expiration("1d 30m 10s"), 86400 + 1800 + 10);
    CHECK_INT(appcfg_parse_expiration("10"), 10);
    CHECK_INT(appcfg_parse_expiration(" 5m 30 "), 330);
    CHECK_INT(appcfg_parse_expiration("7d 7d 7d"), 21 * 86400);
    CHECK_INT(appcfg_parse_expiration("2H 1M 3S"), 7200 + 60 + 3);
    CHECK_INT(appcfg_parse_expiration("0"), 0);
    CHECK_INT(appcfg_parse_expiration("1d2h"), -1);
    CHECK_INT(appcfg_parse_expiration(""), -1);
    CHECK_INT(appcfg_parse_expiration("1w"), -1);
    CHECK_INT(appcfg_parse_expiration("d"), -1);
    CHECK_INT(appcfg_parse_expiration("-1d"), -1);
    CHECK_INT(appcfg_parse_expiration("99999999999999999999d"), -2);

    app_config *c = P("runtime: python311\ndefault_expiration: 2h\n"
                      "handlers:\n- url: /s\n  static_dir: s\n- url: /t\n  static_dir: t\n  expiration: 0\n");
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(c->default_expiration_s, 7200);
    CHECK_INT(c->handlers[0].expiration_s, -1);
    CHECK_INT(c->handlers[1].expiration_s, 0);
    appcfg_free(c);
}

TEST(defaults_and_catch_all)
{
    app_config *c = P("runtime: python312\n");
    CHECK(c != NULL);
    if (!c) return;
    CHECK_STR(c->service, "default");
    CHECK(c->application == NULL && c->version == NULL);
    CHECK_STR(c->instance_class, "F1");
    CHECK_INT(appcfg_memory_mb(c), 384);
    CHECK_INT(c->threadsafe, -1);
    CHECK_INT(c->scaling.kind, SCALING_AUTOMATIC);
    CHECK_INT(c->n_handlers, 1);
    CHECK_STR(c->handlers[0].script, "auto");
    CHECK_ROUTE(c, "/anything/at/all", "script:auto#0");
    appcfg_free(c);

    c = P("runtime: python27\napi_version: 1\nthreadsafe: yes\n");
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(c->n_handlers, 0);
    CHECK_INT(c->threadsafe, 1);
    CHECK_ROUTE(c, "/", "");
    appcfg_free(c);

    c = P("runtime: go122\nmodule: api\nproject: my-app\nversion: 010\n"
          "basic_scaling:\n  max_instances: 3\n  idle_timeout: 10m\n"
          "inbound_services: [warmup, mail]\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_STR(c->service, "api");
    CHECK_STR(c->application, "my-app");
    CHECK_STR(c->version, "8");   /* YAML 1.1 octal, as App Engine reads it */
    CHECK_STR(c->instance_class, "B2");
    CHECK_INT(appcfg_memory_mb(c), 768);
    CHECK_INT(c->scaling.kind, SCALING_BASIC);
    CHECK_INT(c->scaling.max_instances, 3);
    CHECK_STR(c->scaling.idle_timeout, "10m");
    CHECK(appcfg_has_inbound(c, "warmup"));
    CHECK(appcfg_has_inbound(c, "mail"));
    CHECK(!appcfg_has_inbound(c, "rest"));
    appcfg_free(c);
}

TEST(skip_files)
{
    app_config *c = P("runtime: python311\n");
    CHECK(c != NULL);
    if (!c) return;
    /* App Engine's default list */
    CHECK(appcfg_skipped(c, ".git/config"));
    CHECK(appcfg_skipped(c, "pkg/mod.pyc"));
    CHECK(appcfg_skipped(c, "notes.txt~"));
    CHECK(appcfg_skipped(c, "#draft#"));
    CHECK(appcfg_skipped(c, "src/RCS/x"));
    CHECK(appcfg_skipped(c, "a/.hidden"));
    CHECK(!appcfg_skipped(c, "main.py"));
    CHECK(!appcfg_skipped(c, "static/site.css"));
    appcfg_free(c);

    c = P("runtime: python311\nskip_files:\n- ^node_modules/.*$\n- .*\\.log$\n");
    CHECK(c != NULL);
    if (!c) return;
    CHECK_INT(c->n_skip_files, 2);
    CHECK(appcfg_skipped(c, "node_modules/x/y.js"));
    CHECK(appcfg_skipped(c, "logs/a.log"));
    CHECK(!appcfg_skipped(c, "main.py"));
    CHECK(!appcfg_skipped(c, ".git/config"));    /* the default is replaced */
    CHECK(!appcfg_skipped(c, "src/node_modules/x")); /* matched from the start */
    appcfg_free(c);

    /* a block string: line breaks are dropped, as App Engine does */
    c = P("runtime: python311\nskip_files: |\n  ^(.*/)?\\.bak$|\n  ^tmp/.*\n");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK(appcfg_skipped(c, "a/b/.bak"));
    CHECK(appcfg_skipped(c, "tmp/x"));
    CHECK(!appcfg_skipped(c, "a.bak2"));
    appcfg_free(c);
}

static void put(const char *dir, const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", dir, name);
    CHECK(write_file_atomic(p, text, strlen(text), 0644) == 0);
    free(p);
}

TEST(includes)
{
    char tmpl[] = "/tmp/cz-appyaml-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (!dir) return;
    char *sub = xasprintf("%s/lib", dir);
    CHECK(mkdir_p(sub, 0755) == 0);
    put(dir, "app.yaml",
        "runtime: python311\n"
        "includes:\n"
        "- common.yaml\n"
        "- lib\n"
        "- missing.yaml\n"
        "env_variables:\n  MODE: app\n  KEEP: yes\n"
        "handlers:\n"
        "- url: /.*\n"
        "  script: auto\n");
    put(dir, "common.yaml",
        "handlers:\n"
        "- url: /first\n"
        "  script: first.app\n"
        "- url: /last\n"
        "  script: last.app\n"
        "  position: tail\n"
        "env_variables:\n  MODE: include\n"
        "skip_files:\n- ^secret/.*\n"
        "includes:\n- common.yaml\n");        /* a cycle is merged once */
    put(sub, "include.yaml",
        "handlers:\n"
        "- url: /lib/(.*)\n"
        "  static_files: lib/\\1\n"
        "  upload: lib/.*\n");
    app_config *c = appcfg_load(dir, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->n_handlers, 4);
        /* includes' handlers first, in include order; tail ones last */
        CHECK_STR(c->handlers[0].url, "/first");
        CHECK_STR(c->handlers[1].url, "/lib/(.*)");
        CHECK_STR(c->handlers[2].url, "/.*");
        CHECK_STR(c->handlers[3].url, "/last");
        CHECK_ROUTE(c, "/first", "script:first.app#0");
        CHECK_ROUTE(c, "/lib/a.js", "file:lib/a.js#1");
        CHECK_ROUTE(c, "/last", "script:auto#2");   /* shadowed by the catch-all */
        CHECK_INT(c->n_env, 2);
        for (size_t i = 0; i < c->n_env; i++) {
            if (!strcmp(c->env[i].name, "MODE")) CHECK_STR(c->env[i].value, "include");
            else CHECK_STR(c->env[i].value, "yes");
        }
        /* the app's default skip list plus the include's */
        CHECK_INT(c->n_skip_files, 2);
        CHECK(appcfg_skipped(c, "secret/key"));
        CHECK(appcfg_skipped(c, ".git/HEAD"));
        char *want = realpath(dir, NULL);
        CHECK_STR(c->dir, want);
        free(want);
        appcfg_free(c);
    } else {
        printf("  %s\n", err);
    }

    /* an error in an included file names that file and line */
    put(dir, "common.yaml", "handlers:\n- url: /x\n  static_files: x\n");
    c = appcfg_load(dir, err, sizeof err);
    CHECK(c == NULL);
    CHECK(strstr(err, "/common.yaml:2: ") != NULL);
    CHECK(strstr(err, "upload") != NULL);
    appcfg_free(c);

    /* include keys are limited */
    put(dir, "common.yaml", "runtime: python311\n");
    c = appcfg_load(dir, err, sizeof err);
    CHECK(c == NULL);
    CHECK(strstr(err, "/common.yaml:1: unknown field 'runtime'") != NULL);

    /* and must stay inside the app */
    put(dir, "common.yaml", "includes:\n- /etc/hostname\n");
    c = appcfg_load(dir, err, sizeof err);
    CHECK(c == NULL);
    CHECK(strstr(err, "outside the app directory") != NULL);

    char *cmd = xasprintf("rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(cmd);
    free(sub);
}

/* err must be "/x/app.yaml:LINE: ..." and mention word. */
static int refused(const char *yaml, int line, const char *word)
{
    app_config *c = P(yaml);
    if (c) { appcfg_free(c); printf("  accepted: %s\n", yaml); return 0; }
    char pre[64];
    snprintf(pre, sizeof pre, "/x/app.yaml:%d: ", line);
    if (strncmp(err, pre, strlen(pre)) || !strstr(err, word)) { printf("  got: %s\n", err); return 0; }
    return 1;
}

TEST(errors_with_lines)
{
    CHECK(refused("", 1, "empty"));
    CHECK(refused("# only a comment\n", 1, "empty"));
    CHECK(refused("service: web\n", 1, "runtime is required"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  static_files: a\n", 3, "upload"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  script: auto\n  static_dir: s\n", 3, "exactly one"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  login: everyone\n  script: auto\n", 4, "login"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a(\n  script: auto\n", 3, "regular expression"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  static_dir: s\n  expiration: 1 day\n", 5, "expiration"));
    CHECK(refused("runtime: python311\n\nruntime_typo: x\n", 3, "unknown field 'runtime_typo'"));
    CHECK(refused("runtime: python311\nhandlers:\n  - url: /a\n\tscript: auto\n", 4, "tab"));
    CHECK(refused("runtime: python311\nhandlers: [\n", 3, "invalid YAML"));
    CHECK(refused("runtime: python311\nthreadsafe: maybe\n", 2, "true or false"));
    CHECK(refused("runtime: python311\nmanual_scaling:\n  instances: 0\n", 3, "instances"));
    CHECK(refused("runtime: python311\nautomatic_scaling:\n  max_instances: lots\n", 3, "integer"));
    CHECK(refused("runtime: python311\nautomatic_scaling:\n  target_cpu_utilization: 2\n", 3, "between"));
    CHECK(refused("runtime: python311\nruntime: python312\n", 2, "twice"));
    CHECK(refused("runtime: python311\nenv_variables:\n  1BAD: x\n", 3, "1BAD"));
    CHECK(refused("runtime: python311\nx: &a 1\n", 2, "anchors"));
    CHECK(refused("runtime: python311\n---\nruntime: python311\n", 2, "more than one"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  script: auto\n  position: head\n", 5, "position"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: ^/a\n  script: auto\n", 3, "url"));
    CHECK(refused("- runtime: python311\n", 1, "mapping"));
    CHECK(refused("runtime: python311\nmanual_scaling:\n  instances: 1\nbasic_scaling:\n  max_instances: 1\n", 1, "only one"));
    CHECK(refused("runtime: python311\nhandlers:\n- url: /a\n  static_dir: s\n  http_headers:\n    Content-Length: 5\n", 6, "content-length"));
    CHECK(refused("runtime: python311\ninstance_class: F9\n", 2, "instance_class"));
    CHECK(refused("runtime: python311\nmanual_scaling:\n  instances: 2\ninstance_class: F2\n", 4, "B classes"));
    CHECK(refused("runtime: \"python311\xff\"\n", 1, "UTF-8"));
}

int main(void)
{
    RUN(first_match_wins);
    RUN(anchored_both_ends);
    RUN(groups_and_expand);
    RUN(static_dir_prefix);
    RUN(python_regex_syntax);
    RUN(expiration);
    RUN(defaults_and_catch_all);
    RUN(skip_files);
    RUN(includes);
    RUN(errors_with_lines);
    return test_report();
}
