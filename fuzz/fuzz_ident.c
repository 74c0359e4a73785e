/* fuzz_ident.c - libFuzzer target for the app_identity, modules, system and
 * logservice request decoders and for access-token verification.
 *
 * The first input byte picks one of their methods; the rest is its request
 * message, sent as a correctly ticketed call through the API server's
 * protocol engine (api_conn_feed), which must always answer. The whole input
 * is also checked as an access token. The server is created once with a
 * throw-away CYCLOZZO_HOME; the modules service is configured without an
 * instance manager. No sockets; the log store's writer thread runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/app_identity.h"
#include "api/modules.h"
#include "api/ticket.h"
#include "core/log.h"
#include "proto/remote_api.h"

static api_server *srv;
static char *ticket;
static char home[] = "/tmp/cz-fuzz-ident-XXXXXX";

static const char *calls[][2] = {
    {"app_identity_service", "SignForApp"}, {"app_identity_service", "GetPublicCertificatesForApp"},
    {"app_identity_service", "GetServiceAccountName"}, {"app_identity_service", "GetAccessToken"},
    {"app_identity_service", "GetDefaultGcsBucketName"},
    {"modules", "GetModules"}, {"modules", "GetVersions"}, {"modules", "GetDefaultVersion"},
    {"modules", "GetNumInstances"}, {"modules", "SetNumInstances"}, {"modules", "StartModule"},
    {"modules", "StopModule"}, {"modules", "GetHostname"},
    {"system", "GetSystemStats"}, {"system", "StartBackgroundRequest"},
    {"logservice", "Read"}, {"logservice", "Flush"}, {"logservice", "SetStatus"},
};
#define NCALLS (sizeof calls / sizeof calls[0])

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (!mkdtemp(home)) { perror("mkdtemp"); abort(); }
    log_init(2, LOG_ERROR);
    char err[256];
    api_server_config cfg = { .home = home, .max_request = 1 << 16 };
    srv = api_server_new(&cfg, err, sizeof err);
    if (!srv) { fprintf(stderr, "%s\n", err); abort(); }
    api_register_all(srv, home);
    modules_info mi = {.module = "default", .version = "1", .hostname = "127.0.0.1:8080",
                       .manual_scaling = 1, .instances = 2, .memory_mb = 256};
    modules_configure(srv, &mi);
    ticket_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.app_id, sizeof c.app_id, "dev~fuzz");
    snprintf(c.version, sizeof c.version, "1");
    snprintf(c.request_id, sizeof c.request_id, "0123456789abcdef");
    ticket = ticket_mint_home(home, &c, TICKET_MAX_TTL_S, err, sizeof err);
    if (!ticket) { fprintf(stderr, "%s\n", err); abort(); }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok = malloc(size + 1);
    memcpy(tok, data, size);
    tok[size] = 0;
    appid_token t;
    char err[256];
    appid_verify_token(home, tok, 0, &t, err, sizeof err);
    free(tok);
    if (!size) return 0;

    const char **call = calls[data[0] % NCALLS];
    remote_api_request r = {
        .service = call[0], .service_len = strlen(call[0]), .method = call[1], .method_len = strlen(call[1]),
        .request = data + 1, .request_len = size - 1, .request_id = ticket, .request_id_len = strlen(ticket),
    };
    buf body = BUF_INIT, in = BUF_INIT, out = BUF_INIT;
    remote_api_request_encode(&body, &r);
    buf_printf(&in, "POST /rpc_http HTTP/1.1\r\nHost: api\r\nContent-Length: %zu\r\n\r\n", body.len);
    buf_append(&in, body.data, body.len);
    api_conn *c = api_conn_new(srv);
    if (api_conn_feed(c, in.data, in.len, &out) != 0 || !buf_unread(&out)) abort();
    api_conn_free(c);
    buf_free(&body); buf_free(&in); buf_free(&out);
    return 0;
}
