/* services.c - the list of every API service Cyclozzo provides.
 *
 * api_register_all() is the one call the daemon (and bin/cz-apiserver) makes
 * after api_server_new(): it asks each service module to register its
 * methods. Adding a service is adding its call below, in its own block (the
 * blocks are kept apart so that independent additions merge cleanly). */
#include "api/api.h"
#include "api/blobstore.h"
#include "api/images.h"
#include "api/memcache.h"
#include "api/users.h"
#include "api/app_identity.h"
#include "api/modules.h"
#include "api/logservice.h"
#include "api/urlfetch.h"
#include "api/mail.h"

void datastore_v3_register(api_server *srv, const char *home);   /* datastore_v3.c */

void api_register_all(api_server *srv, const char *home)
{
    /* capability_service (capability.c) */
    capability_register(srv, home);

    /* datastore_v3 (datastore_v3.c; queries from datastore/query_api.c) */
    datastore_v3_register(srv, home);

    /* memcache (memcache.c: in-process store, memcache_store.c) */
    memcache_register(srv, home);

    /* user (users.c: login/logout URLs, GetOAuthUser) */
    users_register(srv, home);

    /* taskqueue (taskqueue.c: rows in datastore_v3's kv engine, so after it;
     * delivery by src/sched/scheduler.c in the daemon) */
    taskqueue_register(srv, home);

    /* app_identity_service (app_identity.c: per-app RSA key, tokens, metadata server) */
    app_identity_register(srv, home);

    /* modules and system (modules.c: answers from the running app and its instances) */
    modules_register(srv, home);

    /* logservice (logservice.c: request and app logs in logs/store.c) */
    logservice_register(srv, home);

    /* search (search.c: the Search API over src/search/, SQLite FTS5 per app) */
    search_register(srv, home);

    /* urlfetch (urlfetch.c over libcurl; netguard.c keeps apps off internal ports) */
    urlfetch_register(srv, home);

    /* mail (mail.c: mailmsg.c builds the messages, smtp.c relays them,
     * outbox.c keeps them when no relay is configured) */
    mail_register(srv, home);

    /* blobstore (blobstore.c: metadata in datastore_v3's kv engine, so after
     * it; bytes in the blob store under blob.dir or home/blobs) */
    blobstore_register(srv, home);

    /* images (images.c: Transform, Composite, Histogram on libvips via
     * images/image.c, libvips started on the first call; blobs and serving
     * URLs through the blobstore and the "kv" engine, so after both) */
    images_register(srv, home);

    /* (further services: one block each, above this line) */
}
