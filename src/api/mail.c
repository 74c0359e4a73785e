/* mail.c - App Engine's Mail service ("mail": Send, SendToAdmins).
 *
 * A call decodes the MailMessage (mailmsg.c), checks it, checks the
 * sender, builds the RFC 5322 message and delivers it:
 *   - with an SMTP relay configured (mail_configure; the daemon's --smtp-*
 *     options), it is relayed during the call (smtp.c, inside
 *     api_blocking_begin/end). If the relay refuses, the message is kept
 *     in the outbox with the reason and the call fails with INTERNAL_ERROR;
 *   - without one, it is kept in the durable outbox (outbox.c) of the app,
 *     where `cyclozzo --mail-outbox APP` shows it.
 *
 * Who may send (App Engine's rule, on this installation's accounts): the
 * sender's address must be an administrator account (src/users), the
 * signed-in user of the calling request, or any address at
 * APP.appspotmail.com. Anything else is UNAUTHORIZED_SENDER, which the SDK
 * raises as InvalidSenderError. SendToAdmins goes to every administrator
 * account. */
#include "api/mail.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/mailmsg.h"
#include "api/outbox.h"
#include "api/smtp.h"
#include "core/log.h"
#include "core/util.h"
#include "users/accounts.h"

typedef struct {
    char *home;
    pthread_mutex_t mu;          /* guards the relay settings */
    char *host, *user, *password;
    int port, starttls;
} mail_service;

static void bare_app(const char *id, char *out, size_t n)
{
    const char *t = strchr(id, '~');
    snprintf(out, n, "%s", t ? t + 1 : id);
}

typedef struct { char **v; size_t n; } strlist;

static void add_admin(const users_account *a, void *arg)
{
    strlist *l = arg;
    if (!a->admin) return;
    l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = xstrdup(a->email);
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* 1 if spec may send for this call; else 0 with the reason in why. */
static int sender_allowed(mail_service *ms, api_ctx *ctx, const char *app, const char *spec, char *why, size_t whylen)
{
    if (ctx->user_email && *ctx->user_email && !strcasecmp(ctx->user_email, spec)) return 1;
    const char *at = strrchr(spec, '@');
    char dom[200];
    snprintf(dom, sizeof dom, "%s.appspotmail.com", app);
    if (at && !strcasecmp(at + 1, dom)) return 1;
    char norm[USERS_EMAIL_MAX + 1], err[256];
    users_account acct;
    if (users_email_normalise(spec, norm, err, sizeof err) == 0) {
        int f = accounts_find(ms->home, norm, &acct, err, sizeof err);
        if (f < 0) log_warn("mail", "app=%s msg=\"cannot read the accounts\" err=%s", log_q(app), log_q(err));
        if (f == 1 && acct.admin) return 1;
    }
    set_err(why, whylen, "Unauthorized sender %s: the sender must be an administrator of the app, the signed-in user, "
            "or an address at %s.", spec, dom);
    return 0;
}

static void send_common(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply, int to_admins)
{
    mail_service *ms = ctx->service_data;
    const char *call = to_admins ? "SendToAdmins" : "Send";
    char app[128], err[512], spec[MAIL_ADDR_MAX + 1];
    bare_app(ctx->app_id, app, sizeof app);
    mail_message m;
    if (mailmsg_decode(in, len, &m, err, sizeof err) < 0) {
        mailmsg_free(&m);
        api_app_error(reply, MAIL_BAD_REQUEST, "The %s request could not be read: %s.", call, err);
        return;
    }
    strlist rcpt = {0}, admins = {0};
    buf msg = BUF_INIT;
    int code = mailmsg_check(&m, !to_admins, err, sizeof err);
    if (code) { api_app_error(reply, code, "%s", err); goto out; }
    mailmsg_addr_spec(m.sender, spec);
    if (!sender_allowed(ms, ctx, app, spec, err, sizeof err)) {
        api_app_error(reply, MAIL_UNAUTHORIZED_SENDER, "%s", err);
        log_info("mail", "app=%s request_id=%s call=%s msg=\"sender refused\" sender=%s", log_q(app),
                 log_q(ctx->request_id), call, log_q(spec));
        goto out;
    }
    if (to_admins) {
        if (accounts_list(ms->home, add_admin, &admins, err, sizeof err) < 0) {
            api_app_error(reply, MAIL_INTERNAL_ERROR, "The administrator accounts cannot be read: %s.", err);
            goto out;
        }
        if (!admins.n) {
            api_app_error(reply, MAIL_BAD_REQUEST, "This installation has no administrator accounts to send to "
                          "(add one with cyclozzo --add-user EMAIL --admin).");
            goto out;
        }
        for (size_t i = 0; i < admins.n; i++) {
            rcpt.v = xrealloc(rcpt.v, (rcpt.n + 1) * sizeof *rcpt.v);
            rcpt.v[rcpt.n++] = xstrdup(admins.v[i]);
        }
    } else {
        char **lists[3] = {m.to, m.cc, m.bcc};
        size_t counts[3] = {m.nto, m.ncc, m.nbcc};
        for (int l = 0; l < 3; l++)
            for (size_t i = 0; i < counts[l]; i++) {
                char s[MAIL_ADDR_MAX + 1];
                if (mailmsg_addr_spec(lists[l][i], s) < 0) continue;     /* checked above */
                rcpt.v = xrealloc(rcpt.v, (rcpt.n + 1) * sizeof *rcpt.v);
                rcpt.v[rcpt.n++] = xstrdup(s);
            }
    }
    char domain[200];
    snprintf(domain, sizeof domain, "%s.appspotmail.com", app);
    mailmsg_build(&m, to_admins ? admins.v : NULL, admins.n, domain, wall_us() / 1000000, &msg);

    pthread_mutex_lock(&ms->mu);
    smtp_config sc = {0};
    char *host = ms->host ? xstrdup(ms->host) : NULL, *user = ms->user ? xstrdup(ms->user) : NULL;
    char *pw = ms->password ? xstrdup(ms->password) : NULL;
    sc.host = host; sc.user = user; sc.password = pw; sc.port = ms->port; sc.starttls = ms->starttls;
    pthread_mutex_unlock(&ms->mu);

    char id[OUTBOX_ID_MAX + 1] = "", oerr[512];
    if (host) {
        api_blocking_begin(ctx);
        int r = smtp_send(&sc, spec, rcpt.v, rcpt.n, msg.data, msg.len, err, sizeof err);
        api_blocking_end(ctx);
        if (r == 0) {
            log_info("mail", "app=%s request_id=%s call=%s msg=\"relayed\" sender=%s recipients=%zu bytes=%zu",
                     log_q(app), log_q(ctx->request_id), call, log_q(spec), rcpt.n, msg.len);
        } else {
            char *status = xasprintf("failed: %s", err);
            int kept = outbox_put(ms->home, app, spec, rcpt.v, rcpt.n, m.subject, status, msg.data, msg.len,
                                  id, oerr, sizeof oerr) == 0;
            free(status);
            log_error("mail", "app=%s request_id=%s call=%s msg=\"relay failed\" err=%s outbox_id=%s",
                      log_q(app), log_q(ctx->request_id), call, log_q(err), log_q(kept ? id : "-"));
            if (kept)
                api_app_error(reply, MAIL_INTERNAL_ERROR, "The mail was not sent: %s. It is kept in the outbox as %s.", err, id);
            else
                api_app_error(reply, MAIL_INTERNAL_ERROR, "The mail was not sent: %s; and it could not be kept: %s.", err, oerr);
        }
    } else {
        if (outbox_put(ms->home, app, spec, rcpt.v, rcpt.n, m.subject, "held (no SMTP relay configured)",
                       msg.data, msg.len, id, oerr, sizeof oerr) < 0) {
            api_app_error(reply, MAIL_INTERNAL_ERROR, "The mail could not be kept: %s.", oerr);
            log_error("mail", "app=%s msg=\"outbox write failed\" err=%s", log_q(app), log_q(oerr));
        } else {
            log_info("mail", "app=%s request_id=%s call=%s msg=\"kept in the outbox\" id=%s sender=%s recipients=%zu bytes=%zu",
                     log_q(app), log_q(ctx->request_id), call, id, log_q(spec), rcpt.n, msg.len);
        }
    }
    free(host); free(user); free(pw);
out:
    strlist_free(&rcpt);
    strlist_free(&admins);
    buf_free(&msg);
    mailmsg_free(&m);
}

static void m_send(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    send_common(ctx, in, len, reply, 0);
}

static void m_send_admins(api_ctx *ctx, const uint8_t *in, size_t len, api_reply *reply)
{
    send_common(ctx, in, len, reply, 1);
}

static void mail_stop(void *arg)
{
    mail_service *ms = arg;
    pthread_mutex_destroy(&ms->mu);
    free(ms->home); free(ms->host); free(ms->user);
    if (ms->password) { memset(ms->password, 0, strlen(ms->password)); free(ms->password); }
    free(ms);
}

void mail_register(api_server *srv, const char *home)
{
    mail_service *ms = xcalloc(1, sizeof *ms);
    ms->home = xstrdup(home ? home : cyclozzo_home());
    pthread_mutex_init(&ms->mu, NULL);
    api_register(srv, "mail", "Send", m_send, ms);
    api_register(srv, "mail", "SendToAdmins", m_send_admins, ms);
    api_share(srv, "mail", ms);
    api_on_stop(srv, mail_stop, ms);
}

int mail_configure(api_server *srv, const mail_config *c, char *err, size_t errlen)
{
    mail_service *ms = api_shared(srv, "mail");
    if (!ms) { set_err(err, errlen, "the mail service is not registered"); return -1; }
    if (!c->smtp_host || !*c->smtp_host) {
        if (c->smtp_user || c->smtp_password_file || c->smtp_starttls || c->smtp_port) {
            set_err(err, errlen, "the --smtp-port, --smtp-user, --smtp-password-file and --smtp-starttls options need --smtp-host");
            return -1;
        }
        return 0;
    }
    if (c->smtp_port < 0 || c->smtp_port > 65535) { set_err(err, errlen, "--smtp-port must be between 1 and 65535"); return -1; }
    if (!!c->smtp_user != !!c->smtp_password_file) {
        set_err(err, errlen, "--smtp-user and --smtp-password-file go together");
        return -1;
    }
    char *pw = NULL;
    if (c->smtp_password_file) {
        size_t n;
        pw = read_file(c->smtp_password_file, &n);
        if (!pw) { set_err(err, errlen, "cannot read the SMTP password file %s", c->smtp_password_file); return -1; }
        pw[strcspn(pw, "\r\n")] = 0;
    }
    pthread_mutex_lock(&ms->mu);
    free(ms->host); free(ms->user); free(ms->password);
    ms->host = xstrdup(c->smtp_host);
    ms->user = c->smtp_user ? xstrdup(c->smtp_user) : NULL;
    ms->password = pw;
    ms->port = c->smtp_port;
    ms->starttls = c->smtp_starttls;
    pthread_mutex_unlock(&ms->mu);
    return 0;
}
