/* smtp.h - hands one message to an SMTP relay (libcurl's SMTP client):
 * MAIL FROM the envelope sender, RCPT TO every recipient, DATA the message
 * (libcurl dot-stuffs it). STARTTLS when asked (then required), AUTH when a
 * user is given. */
#ifndef CZ_SMTP_H
#define CZ_SMTP_H

#include <stddef.h>

typedef struct {
    const char *host;
    int port;               /* 0 = 25 */
    const char *user;       /* NULL = no AUTH */
    const char *password;
    int starttls;
    int timeout_s;          /* whole exchange; 0 = 60 */
} smtp_config;

/* 0 sent, or -1 with one sentence naming what failed. */
int smtp_send(const smtp_config *c, const char *from, char **rcpt, size_t nrcpt,
              const void *msg, size_t len, char *err, size_t errlen);

#endif
