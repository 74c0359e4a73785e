/* fuzz_mail.c - libFuzzer target for src/api/mailmsg.c: arbitrary bytes as
 * a MailMessage protobuf (decode, check, build) and as an address string.
 * It aborts when an invariant breaks: a built message with a bare CR or LF,
 * without the blank line ending its head, with a header line that is
 * neither a header nor a continuation, or showing a Bcc header; an address
 * spec that is empty, longer than allowed, or does not come back unchanged
 * when parsed again. */
#include "api/mailmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    mail_message m;
    if (mailmsg_decode(data, size, &m, err, sizeof err) == 0 && mailmsg_check(&m, 1, err, sizeof err) == MAIL_OK) {
        buf out = BUF_INIT;
        mailmsg_build(&m, NULL, 0, "app.appspotmail.com", 1764090000, &out);
        const char *s = buf_cstr(&out);
        for (size_t i = 0; i < out.len; i++) {
            if (s[i] == '\n') ASSERT(i > 0 && s[i - 1] == '\r');
            if (s[i] == '\r') ASSERT(i + 1 < out.len && s[i + 1] == '\n');
        }
        const char *end = strstr(s, "\r\n\r\n");
        ASSERT(end != NULL);
        for (const char *l = s; l <= end; ) {
            const char *e = strstr(l, "\r\n");
            if (l != s) ASSERT(*l == ' ' || (memchr(l, ':', (size_t)(e - l)) && *l != ':'));
            ASSERT(strncasecmp(l, "Bcc:", 4) != 0);
            l = e + 2;
        }
        buf_free(&out);
    }
    mailmsg_free(&m);

    char *str = malloc(size + 1);
    memcpy(str, data, size);
    str[size] = 0;
    char spec[MAIL_ADDR_MAX + 1], again[MAIL_ADDR_MAX + 1];
    if (mailmsg_addr_spec(str, spec) == 0) {
        ASSERT(spec[0] && strlen(spec) <= MAIL_ADDR_MAX && strchr(spec, '@'));
        ASSERT(mailmsg_addr_spec(spec, again) == 0 && !strcmp(spec, again));
    }
    free(str);
    return 0;
}
