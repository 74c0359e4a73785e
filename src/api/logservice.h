/* logservice.h - the logservice API (Flush, Read, SetStatus) over the
 * per-app request log of src/logs/store.h. See docs/logs.md. */
#ifndef CZ_LOGSERVICE_H
#define CZ_LOGSERVICE_H

#include "api/api.h"
#include "logs/store.h"

void logservice_register(api_server *srv, const char *home);
/* The (writable) store of app_id, opened on first use and owned by the
 * service (closed in api_server_stop). The daemon hands it to its router.
 * NULL with err set when it cannot be opened. */
logstore *logservice_store(api_server *srv, const char *app_id, char *err, size_t errlen);

#endif
