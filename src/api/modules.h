/* modules.h - the modules and system API services, answered from the app
 * this daemon runs: its service (module) name, its version, the address it
 * is served on and its instances (instance manager). See docs/modules.md. */
#ifndef CZ_MODULES_H
#define CZ_MODULES_H

#include "api/api.h"
#include "instance/manager.h"

typedef struct {
    const char *module;          /* app.yaml service:/module:, or "default" */
    const char *version;         /* app.yaml version:, or "1" */
    const char *hostname;        /* host:port the app is served on */
    int manual_scaling;          /* manual_scaling: a fixed instance count */
    int instances;               /* that count (manual scaling) */
    int memory_mb;               /* per-instance memory limit */
    instmgr *im;                 /* live instances (may be NULL: none known) */
} modules_info;

void modules_register(api_server *srv, const char *home);
/* Tell the services what runs (strings copied). Until then every call
 * answers TRANSIENT_ERROR / INTERNAL_ERROR. */
void modules_configure(api_server *srv, const modules_info *info);
/* Forget the instance manager (before it is stopped). */
void modules_detach(api_server *srv);

#endif
