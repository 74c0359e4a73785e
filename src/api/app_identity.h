/* app_identity.h - the app_identity_service API and the app's own key pair.
 *
 * Every app has one RSA-2048 key pair and a self-signed X.509 certificate
 * for it, created with OpenSSL on first use and kept (PEM, key then
 * certificate, mode 0600) in CYCLOZZO_HOME/secrets/app-identity-PROJECT.pem.
 * SignForApp signs with it (RSA PKCS#1 v1.5, SHA-256), GetPublicCertificates
 * hands out the certificate, and GetAccessToken returns a token the platform
 * can verify (appid_verify_token; `cyclozzo --verify-token`):
 *
 *     "cz1at." base64url(payload) "." base64url(RSA-SHA256 over the text before the last '.')
 *
 * where the payload is "app=PROJECT\nexp=UNIX_SECONDS\nscope=S1 S2...\n".
 * See docs/app-identity.md. */
#ifndef CZ_APP_IDENTITY_H
#define CZ_APP_IDENTITY_H

#include <stddef.h>
#include <stdint.h>
#include "api/api.h"

#define APPID_TOKEN_TTL_S 3600        /* life of an access token */

/* The service account an app signs as: "PROJECT@appspot.gserviceaccount.com". */
void appid_service_account(const char *app_id, char *out, size_t outlen);

/* What a verified access token says. */
typedef struct {
    char app[101];                    /* project id, without partition */
    int64_t expires;                  /* Unix seconds */
    char scopes[2048];                /* space-separated */
} appid_token;

/* Verify token against the key of the app it names, at Unix time now.
 * 0 (filled *out), or -1 with one sentence in err (malformed, unknown app,
 * bad signature, expired). */
int appid_verify_token(const char *home, const char *token, int64_t now,
                       appid_token *out, char *err, size_t errlen);

void app_identity_register(api_server *srv, const char *home);

/* Serve the metadata-server paths the Python SDK's get_access_token uses
 * (GET /SECRET/computeMetadata/v1/instance/service-accounts/default/token)
 * on the API server's port, for app_id. Returns SECRET, the random path
 * segment that guards them: instances get GCE_METADATA_HOST=host:port/SECRET.
 * Call before api_server_start; NULL if the service is not registered. */
const char *app_identity_metadata_enable(api_server *srv, const char *app_id);

#endif
