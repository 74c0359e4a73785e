/* mailcmd.c - `cyclozzo --mail-outbox` and `cyclozzo --deliver-mail`
 * (mailcmd.h).
 *
 * --mail-outbox reads CYCLOZZO_HOME/mail/outbox/APP (src/api/outbox.h).
 * --deliver-mail finds the running app by name in the state files, checks
 * that its app.yaml lists `mail` under inbound_services, reads the message
 * (at most 32 MiB, the router's body limit) and POSTs it with libcurl to
 * http://HOST:PORT/_ah/mail/ADDRESS, Content-Type message/rfc822, carrying
 * the scheduler's X-Cyclozzo-Internal proof (src/sched/scheduler.h) so
 * that the router treats it as App Engine's own mail delivery: it passes
 * `login: admin` handlers. */
#include "cli/mailcmd.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/mailmsg.h"
#include "api/outbox.h"
#include "appcfg/appyaml.h"
#include "cli/state.h"
#include "core/buf.h"
#include "core/util.h"
#include "sched/scheduler.h"

#define MAX_INBOUND (32u << 20)

static void print_entry(const outbox_entry *e, void *arg)
{
    (void)arg;
    printf("%-26s %-9lld %-28s %-30s %-30s %s\n", e->id, (long long)e->size, e->from, e->to,
           e->subject, e->status);
}

int mailcmd_outbox(const char *app, const char *show_id)
{
    char err[512];
    const char *home = cyclozzo_home();
    if (show_id) {
        size_t len;
        char *m = outbox_read(home, app, show_id, &len, err, sizeof err);
        if (!m) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
        fwrite(m, 1, len, stdout);
        free(m);
        return 0;
    }
    printf("%-26s %-9s %-28s %-30s %-30s %s\n", "ID", "BYTES", "FROM", "TO", "SUBJECT", "STATUS");
    int n = outbox_list(home, app, print_entry, NULL, err, sizeof err);
    if (n < 0) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    if (!n) printf("(no messages in the outbox of %s)\n", app);
    return 0;
}

typedef struct { const char *app; app_state st; int found; } find_app;

static void match_app(const app_state *s, void *arg)
{
    find_app *f = arg;
    if (!f->found && !strcmp(s->app, f->app)) { f->st = *s; f->found = 1; }
}

static char *read_all(const char *file, size_t *len, char *err, size_t errlen)
{
    FILE *f = file && strcmp(file, "-") ? fopen(file, "rb") : stdin;
    if (!f) { set_err(err, errlen, "cannot open %s", file); return NULL; }
    buf b = BUF_INIT;
    char tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (b.len + r > MAX_INBOUND) {
            set_err(err, errlen, "the message is larger than %u bytes", MAX_INBOUND);
            buf_free(&b);
            if (f != stdin) fclose(f);
            return NULL;
        }
        buf_append(&b, tmp, r);
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (bad) { set_err(err, errlen, "cannot read the message"); buf_free(&b); return NULL; }
    *len = b.len;
    buf_cstr(&b);
    return buf_detach(&b, len);
}

static size_t keep_body(char *p, size_t sz, size_t n, void *arg)
{
    buf_append(arg, p, sz * n);
    return sz * n;
}

static void put_path_escaped(buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~@+", *p))
            buf_putc(b, (char)*p);
        else
            buf_printf(b, "%%%02X", *p);
    }
}

int mailcmd_deliver(const char *app, const char *address, const char *file)
{
    char err[2048], spec[MAIL_ADDR_MAX + 1];
    if (mailmsg_addr_spec(address, spec) < 0 || strcmp(spec, address)) {
        fprintf(stderr, "cyclozzo: --to takes a plain email address like someone@%s.appspotmail.com, not \"%s\"\n", app, address);
        return 2;
    }
    find_app f = {.app = app};
    state_each(match_app, &f);
    if (!f.found) {
        fprintf(stderr, "cyclozzo: no app named %s is running (see cyclozzo --status)\n", app);
        return 1;
    }
    app_config *cfg = appcfg_load(f.st.dir, err, sizeof err);
    if (!cfg) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    int inbound = appcfg_has_inbound(cfg, "mail");
    appcfg_free(cfg);
    if (!inbound) {
        fprintf(stderr, "cyclozzo: %s does not receive mail: its app.yaml has no `mail` under inbound_services\n", app);
        return 1;
    }
    size_t len = 0;
    char *msg = read_all(file, &len, err, sizeof err);
    if (!msg) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    uint8_t key[SCHED_KEY_LEN];
    if (sched_internal_key(cyclozzo_home(), key, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        free(msg);
        return 1;
    }
    char tok[128];
    sched_internal_token(key, wall_us() / 1000000, tok, sizeof tok);
    const char *host = f.st.host;
    if (!*host || !strcmp(host, "0.0.0.0")) host = "127.0.0.1";
    else if (!strcmp(host, "::")) host = "::1";
    buf url = BUF_INIT;
    buf_printf(&url, strchr(host, ':') ? "http://[%s]:%d/_ah/mail/" : "http://%s:%d/_ah/mail/", host, f.st.port);
    put_path_escaped(&url, address);
    char *hk = xasprintf("X-Cyclozzo-Internal: %s", tok);
    struct curl_slist *hl = curl_slist_append(NULL, hk);
    hl = curl_slist_append(hl, "Content-Type: message/rfc822");
    hl = curl_slist_append(hl, "Expect:");
    buf body = BUF_INIT;
    CURL *h = curl_easy_init();
    int rc = 1;
    if (!h) { fprintf(stderr, "cyclozzo: cannot set up the HTTP client\n"); goto out; }
    curl_easy_setopt(h, CURLOPT_URL, buf_cstr(&url));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, msg);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    CURLcode cr = curl_easy_perform(h);
    long status = 0;
    if (cr == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cr != CURLE_OK) {
        fprintf(stderr, "cyclozzo: cannot reach %s on port %d: %s\n", app, f.st.port, curl_easy_strerror(cr));
    } else if (status < 200 || status > 299) {
        fprintf(stderr, "cyclozzo: %s's mail handler answered HTTP %ld to %s: %.300s\n", app, status, address,
                body.len ? buf_cstr(&body) : "");
    } else {
        printf("cyclozzo: delivered %zu bytes to %s of %s (HTTP %ld)\n", len, address, app, status);
        rc = 0;
    }
    curl_easy_cleanup(h);
out:
    curl_slist_free_all(hl);
    free(hk);
    buf_free(&url);
    buf_free(&body);
    free(msg);
    return rc;
}
