/* outbox.h - the durable mail outbox: messages kept under
 * CYCLOZZO_HOME/mail/outbox/APP/ when no SMTP relay is configured (or the
 * relay failed), for the operator to read with `cyclozzo --mail-outbox`.
 *
 * One message is two files named by its id (UTC time + random,
 * "20261125T171500Z-1a2b3c4d"): ID.env, the envelope and listing facts
 * ("from ADDR", "to ADDR" per recipient, "subject TEXT", "status TEXT"),
 * and ID.eml, the RFC 5322 message exactly as it would be relayed. Both are
 * written atomically (temporary file, fsync, rename), .env first, and a
 * message counts once its .eml exists. Mode 0600 in a 0700 directory. */
#ifndef CZ_OUTBOX_H
#define CZ_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#define OUTBOX_ID_MAX 40

/* Stores a message; its id goes to id_out. 0, or -1 with a sentence. */
int outbox_put(const char *home, const char *app, const char *from, char **rcpt, size_t nrcpt,
               const char *subject, const char *status, const void *msg, size_t len,
               char id_out[OUTBOX_ID_MAX + 1], char *err, size_t errlen);

typedef struct {
    char id[OUTBOX_ID_MAX + 1];
    char *from, *to, *subject, *status;   /* to: recipients joined with ", " */
    int64_t size;                         /* bytes of the .eml */
} outbox_entry;

/* Calls fn for every message of app, oldest first; returns the count, or -1
 * with a sentence. A missing outbox is an empty one. */
int outbox_list(const char *home, const char *app, void (*fn)(const outbox_entry *e, void *arg), void *arg,
                char *err, size_t errlen);

/* The .eml of one message (malloc'd, NUL-terminated), or NULL with a sentence. */
char *outbox_read(const char *home, const char *app, const char *id, size_t *len, char *err, size_t errlen);

/* 1 if app is a plausible app name (letters, digits, '-', '_', '.'; no "..";
 * not empty): it becomes a directory name. */
int outbox_app_ok(const char *app);

#endif
