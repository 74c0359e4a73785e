/* urlfetch.h - App Engine's URL Fetch service ("urlfetch": Fetch), over
 * libcurl. See urlfetch.c and docs/urlfetch.md. */
#ifndef CZ_URLFETCH_H
#define CZ_URLFETCH_H

#include "api/api.h"

/* URLFetchServiceError codes (urlfetch_service.proto). */
enum {
    URLFETCH_OK = 0,
    URLFETCH_INVALID_URL = 1,
    URLFETCH_FETCH_ERROR = 2,
    URLFETCH_UNSPECIFIED_ERROR = 3,
    URLFETCH_RESPONSE_TOO_LARGE = 4,
    URLFETCH_DEADLINE_EXCEEDED = 5,
    URLFETCH_SSL_CERTIFICATE_ERROR = 6,
    URLFETCH_DNS_ERROR = 7,
    URLFETCH_CLOSED = 8,
    URLFETCH_INTERNAL_TRANSIENT_ERROR = 9,
    URLFETCH_TOO_MANY_REDIRECTS = 10,
    URLFETCH_MALFORMED_REPLY = 11,
    URLFETCH_CONNECTION_ERROR = 12,
    URLFETCH_PAYLOAD_TOO_LARGE = 13,
};

#define URLFETCH_MAX_RESPONSE   (32u << 20)   /* content beyond this is truncated */
#define URLFETCH_MAX_PAYLOAD    (10u << 20)   /* larger request bodies are refused */
#define URLFETCH_MAX_URL        10240
#define URLFETCH_MAX_REDIRECTS  5
#define URLFETCH_DEFAULT_DEADLINE_S 5.0
#define URLFETCH_MAX_DEADLINE_S     600.0

void urlfetch_register(api_server *srv, const char *home);

/* The app's public router port: fetches to it stay allowed although the
 * daemon owns it (an app may fetch its own URLs). Call after
 * api_register_all; no effect when urlfetch is not registered. */
void urlfetch_allow_port(api_server *srv, int port);

#endif
