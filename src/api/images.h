/* images.h - App Engine's images service ("images") for the API server:
 * Transform, Composite and Histogram on libvips (images/image.h), and
 * GetUrlBase / DeleteUrlBase for serving URLs of blobs. Images come inline
 * (ImageData.content) or by blob key. Errors are ImagesServiceError codes
 * with one sentence; see docs/images.md for every limit. */
#ifndef CZ_API_IMAGES_H
#define CZ_API_IMAGES_H

#include "api/api.h"

/* Register every method on srv. */
void images_register(api_server *srv, const char *home);

/* The method implementing `method` (e.g. "Transform"), or NULL. The methods
 * need only ctx->app_id (and ctx->service_data as images_register sets it
 * for blob keys; NULL means inline images only), so tests and fuzzers can
 * call them without a server. */
api_method_fn images_method(const char *method);

#endif
