/* smtp.c - one message to an SMTP relay over libcurl (smtp.h).
 *
 * The message is uploaded from memory through a read callback; libcurl
 * speaks EHLO, optional STARTTLS (CURLUSESSL_ALL: refuse to go on in
 * clear text), AUTH, MAIL FROM, one RCPT TO per recipient, and DATA with
 * dot-stuffing. Any refusal by the relay comes back as one sentence with
 * libcurl's reason and the relay's last reply code. */
#include "api/smtp.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

typedef struct { const char *p; size_t left; } upload;

static size_t on_read(char *dst, size_t sz, size_t n, void *arg)
{
    upload *u = arg;
    size_t k = sz * n < u->left ? sz * n : u->left;
    memcpy(dst, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

static char *bracket(const char *a) { return xasprintf("<%s>", a); }

int smtp_send(const smtp_config *c, const char *from, char **rcpt, size_t nrcpt,
              const void *msg, size_t len, char *err, size_t errlen)
{
    CURL *h = curl_easy_init();
    if (!h) { set_err(err, errlen, "cannot set up the SMTP client"); return -1; }
    int port = c->port > 0 ? c->port : 25;
    int ipv6 = strchr(c->host, ':') != NULL;
    char *url = xasprintf("smtp://%s%s%s:%d", ipv6 ? "[" : "", c->host, ipv6 ? "]" : "", port);
    char *mfrom = bracket(from);
    struct curl_slist *rl = NULL;
    for (size_t i = 0; i < nrcpt; i++) {
        char *r = bracket(rcpt[i]);
        rl = curl_slist_append(rl, r);
        free(r);
    }
    upload u = {msg, len};
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, mfrom);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rl);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &u);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)(c->timeout_s > 0 ? c->timeout_s : 60));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    if (c->starttls) curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (c->user && *c->user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        set_err(err, errlen, "the SMTP relay %s:%d did not take the message: %s%s%s (last reply %ld)", c->host, port,
                curl_easy_strerror(rc), ebuf[0] ? ": " : "", ebuf, code);
        ret = -1;
    }
    curl_slist_free_all(rl);
    curl_easy_cleanup(h);
    free(mfrom);
    free(url);
    return ret;
}
