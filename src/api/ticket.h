/* ticket.h - API security tickets: who may call the API server, as whom.
 *
 * The router mints a ticket for every request it hands to an instance and
 * passes it in the X-AppEngine-Api-Ticket header; the SDK inside the instance
 * copies it into remote_api Request.request_id of each API call; the API
 * server verifies it and takes the calling app, version, namespace and user
 * from it. Nothing is stored: a ticket is
 *
 *     "cz1." base64url(payload) "." base64url(HMAC-SHA256(key, "cz1." base64url(payload)))
 *
 * (base64url without padding, so the text is safe in an HTTP header), where
 * the payload is a small protocol buffer: 1 app_id, 2 version, 3 namespace,
 * 4 user_email, 5 user_id, 6 user_is_admin, 7 request_id, 8 issued (Unix ms),
 * 9 expires (Unix ms). The key is 32 random bytes kept, hex-encoded, in
 * CYCLOZZO_HOME/secrets/ticket.key (mode 0600, created on first use); a
 * cluster shares the file. Without the key no one can mint a ticket, and any
 * change to a ticket breaks its MAC.
 *
 * There is no revocation: a ticket lives only as long as the request it was
 * minted for plus a short grace (the router mints with ttl = request deadline
 * + TICKET_GRACE_S), so a leaked ticket is worthless minutes later. Rotating
 * the key file invalidates every ticket at once. */
#ifndef CZ_TICKET_H
#define CZ_TICKET_H

#include <stddef.h>
#include <stdint.h>

#define TICKET_GRACE_S      30            /* added by the router to the request deadline */
#define TICKET_MAX_TTL_S    (7 * 86400)   /* longest life a ticket may have */
#define TICKET_MAX_LEN      2048          /* longest ticket text accepted */
#define TICKET_KEY_LEN      32

/* Field limits (bytes, NUL excluded): longer values cannot be minted. */
#define TICKET_MAX_APP      100
#define TICKET_MAX_VERSION  100
#define TICKET_MAX_NS       100
#define TICKET_MAX_EMAIL    254
#define TICKET_MAX_USER_ID  64
#define TICKET_MAX_REQ_ID   64

typedef struct { uint8_t k[TICKET_KEY_LEN]; } ticket_key;

/* What a ticket says. Verification fills it; the API server points its
 * api_ctx strings at these fields. */
typedef struct {
    char app_id[TICKET_MAX_APP + 1];        /* with partition, e.g. "dev~guestbook"; never empty */
    char version[TICKET_MAX_VERSION + 1];
    char ns[TICKET_MAX_NS + 1];
    char user_email[TICKET_MAX_EMAIL + 1];
    char user_id[TICKET_MAX_USER_ID + 1];
    int  user_is_admin;
    char request_id[TICKET_MAX_REQ_ID + 1];  /* request log id */
    int64_t issued_ms;                        /* Unix time, milliseconds */
    int64_t expires_ms;
} ticket_claims;

/* Load the installation's key from home/secrets/ticket.key, creating the
 * directory (0700) and the file (0600, atomically: a concurrent creator's key
 * wins and both processes end up with the same one) when missing. Refuses a
 * key file that others may read. 0, or -1 with one sentence in err. */
int ticket_key_load(const char *home, ticket_key *key, char *err, size_t errlen);

/* Mint a ticket for c (app_id required; the other strings may be empty),
 * valid from now_ms for ttl_s seconds (1..TICKET_MAX_TTL_S); c->issued_ms and
 * c->expires_ms are ignored. Returns a malloc'd NUL-terminated string, or
 * NULL with one sentence in err. */
char *ticket_mint(const ticket_key *key, const ticket_claims *c, int64_t now_ms,
                  int64_t ttl_s, char *err, size_t errlen);

/* One call for tools: load home's key and mint with the wall clock. */
char *ticket_mint_home(const char *home, const ticket_claims *c, int64_t ttl_s,
                       char *err, size_t errlen);

/* Why a ticket was refused. */
typedef enum {
    TICKET_OK = 0,
    TICKET_MISSING,      /* empty text */
    TICKET_MALFORMED,    /* not our format, bad base64, bad payload */
    TICKET_FORGED,       /* MAC does not match: wrong key or altered */
    TICKET_EXPIRED,      /* past expires_ms, or impossibly far in the future */
    TICKET_WRONG_APP,    /* valid, but for another app than expected */
} ticket_status;

/* Verify text[0, len) at wall-clock time now_ms. When expect_app is non-NULL
 * the ticket must be for exactly that app. On success fills *out and returns
 * TICKET_OK; otherwise returns the reason, with one sentence in err (safe to
 * show the caller: it never echoes the ticket). */
ticket_status ticket_verify(const ticket_key *key, const char *text, size_t len,
                            int64_t now_ms, const char *expect_app,
                            ticket_claims *out, char *err, size_t errlen);

/* Wall clock in Unix milliseconds (what tickets are stamped with). */
int64_t ticket_now_ms(void);

#endif
