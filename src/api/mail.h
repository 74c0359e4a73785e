/* mail.h - App Engine's Mail service ("mail": Send, SendToAdmins). See
 * mail.c and docs/mail.md. */
#ifndef CZ_MAIL_H
#define CZ_MAIL_H

#include <stddef.h>
#include "api/api.h"

typedef struct {
    const char *smtp_host;           /* NULL or "": no relay, messages go to the outbox */
    int smtp_port;                   /* 0 = 25 */
    const char *smtp_user;           /* NULL: no AUTH */
    const char *smtp_password_file;  /* first line is the password */
    int smtp_starttls;
} mail_config;

void mail_register(api_server *srv, const char *home);

/* Sets the relay (after api_register_all, before serving). 0, or -1 with a
 * sentence (unreadable password file, password without user...). */
int mail_configure(api_server *srv, const mail_config *c, char *err, size_t errlen);

#endif
