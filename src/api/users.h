/* users.h - the API half of App Engine's Users service ("user" in the
 * API server): login/logout URLs pointing at the router's /_ah/login and
 * /_ah/logout pages, and GetOAuthUser (there is never an OAuth user). */
#ifndef CZ_USERS_H
#define CZ_USERS_H

#include "api/api.h"

/* Error codes of UserServiceError. */
enum {
    USERS_OK = 0,
    USERS_REDIRECT_URL_TOO_LONG = 1,
    USERS_NOT_ALLOWED = 2,
    USERS_OAUTH_INVALID_TOKEN = 3,
    USERS_OAUTH_INVALID_REQUEST = 4,
    USERS_OAUTH_ERROR = 5,
};

#define USERS_MAX_DESTINATION 4096

void users_register(api_server *srv, const char *home);

/* Append "<page>?continue=<escaped destination>" to out; returns its length. */
size_t users_build_url(buf *out, const char *page, const uint8_t *dest, size_t dest_len);

#endif
