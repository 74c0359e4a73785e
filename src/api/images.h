/* images.h - App Engine's images service ("images") for the API server:
 * Transform, Composite and Histogram on libvips (images/image.h), and
 * GetUrlBase / DeleteUrlBase for serving URLs of blobs. Images come inline
 * (ImageData.content) or by blob key. Errors are ImagesServiceError codes
 * with one sentence; see docs/images.md for every limit. */
#ifndef CZ_API_IMAGES_H
#define CZ_API_IMAGES_H

#include "api/api.h"

/* Register every method on srv. Blobs come from the blobstore service and
 * published serving URLs live in the "kv" engine, so this registers after
 * datastore_v3 and blobstore; it shares its images/serving.h server as
 * "images" for the router's /_ah/img/ pages, and reads the app's host name
 * (for serving URLs) from "app.hostname" when the daemon shares it. */
void images_register(api_server *srv, const char *home);

/* The method implementing `method` (e.g. "Transform"), or NULL. The methods
 * need only ctx->app_id; with ctx->service_data NULL (no images_register)
 * they take inline images only and refuse blob keys and serving URLs, so
 * tests and fuzzers can call them without a server. */
api_method_fn images_method(const char *method);

#endif
