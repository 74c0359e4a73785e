/* mailmsg.h - App Engine mail messages: the MailMessage protobuf decoded
 * into C strings, its checks, and the RFC 5322 / MIME text built from it
 * (see mailmsg.c for the message layout). */
#ifndef CZ_MAILMSG_H
#define CZ_MAILMSG_H

#include <stddef.h>
#include <stdint.h>
#include "core/buf.h"

/* MailServiceError codes (mail_service.proto). */
enum {
    MAIL_OK = 0,
    MAIL_INTERNAL_ERROR = 1,
    MAIL_BAD_REQUEST = 2,
    MAIL_UNAUTHORIZED_SENDER = 3,
    MAIL_INVALID_ATTACHMENT_TYPE = 4,
    MAIL_INVALID_HEADER_NAME = 5,
    MAIL_INVALID_CONTENT_ID = 6,
};

#define MAIL_ADDR_MAX 254

typedef struct { char *filename; uint8_t *data; size_t len; char *content_id; } mail_attachment;
typedef struct { char *name, *value; } mail_header;

typedef struct {
    char *sender, *reply_to, *subject, *text, *html, *amp;
    char **to, **cc, **bcc;
    size_t nto, ncc, nbcc;
    mail_attachment *att;
    size_t natt;
    mail_header *hdr;
    size_t nhdr;
} mail_message;

/* Decodes a MailMessage. 0, or -1 with a sentence (malformed protobuf or a
 * string holding NUL). */
int  mailmsg_decode(const uint8_t *in, size_t len, mail_message *m, char *err, size_t errlen);
void mailmsg_free(mail_message *m);

/* The address part of "Name <local@domain>" or "local@domain", lower-cased
 * domain kept as given; 0, or -1 when it is not a plausible address. */
int  mailmsg_addr_spec(const char *addr, char out[MAIL_ADDR_MAX + 1]);

/* Checks everything but the sender's right to send: a MAIL_* code (0 = ok)
 * with a sentence in err. need_recipients: Send (1) or SendToAdmins (0). */
int  mailmsg_check(const mail_message *m, int need_recipients, char *err, size_t errlen);

/* 1 if name is one of the extra headers App Engine lets apps set. */
int  mailmsg_header_allowed(const char *name);

/* Appends the whole message (CRLF line ends) to out. to_override, when not
 * NULL, replaces the To header (SendToAdmins). msgid_domain names the
 * Message-ID's domain; now_s is the Date. */
void mailmsg_build(const mail_message *m, char **to_override, size_t nto_override,
                   const char *msgid_domain, int64_t now_s, buf *out);

/* Base64 with CRLF every 76 characters (MIME bodies). */
void mailmsg_base64_lines(buf *out, const uint8_t *p, size_t n);

#endif
