/* blobstore.h - App Engine's Blobstore API ("blobstore" in the API server)
 * and the pieces of it the router uses for uploads and send_blob.
 *
 * Blob bytes live in a blob store (blob/blobstore.h): by default the local
 * driver over CYCLOZZO_HOME/blobs, or the location the daemon shares as
 * "blob.dir" before api_register_all. Metadata lives in the app's datastore,
 * as App Engine keeps it: one __BlobInfo__ entity per blob (key name = blob
 * key; content_type, creation, filename, size, md5_hash), so the SDK's
 * BlobInfo.get/all/gql work unchanged, and one __BlobUploadSession__ entity
 * per upload URL (success path and size limits), so upload URLs survive a
 * restart. See docs/blobstore.md. */
#ifndef CZ_API_BLOBSTORE_H
#define CZ_API_BLOBSTORE_H

#include <stddef.h>
#include <stdint.h>
#include "api/api.h"
#include "blob/blobstore.h"

/* BlobstoreServiceError.ErrorCode. */
enum {
    BLOBSTORE_OK = 0,
    BLOBSTORE_INTERNAL_ERROR = 1,
    BLOBSTORE_URL_TOO_LONG = 2,
    BLOBSTORE_PERMISSION_DENIED = 3,
    BLOBSTORE_BLOB_NOT_FOUND = 4,
    BLOBSTORE_DATA_INDEX_OUT_OF_RANGE = 5,
    BLOBSTORE_BLOB_FETCH_SIZE_TOO_LARGE = 6,
    BLOBSTORE_ARGUMENT_OUT_OF_RANGE = 8,
    BLOBSTORE_INVALID_BLOB_KEY = 9,
};

/* The SDK's MAX_BLOB_FETCH_SIZE: the most one FetchData returns. */
#define BLOBSTORE_MAX_FETCH ((1 << 20) - (1 << 15))
#define BLOBSTORE_UPLOAD_PREFIX "/_ah/upload/"
#define BLOBSTORE_MAX_SUCCESS_PATH 2048

typedef struct blob_service blob_service;

/* An upload URL's session. */
typedef struct {
    char success_path[BLOBSTORE_MAX_SUCCESS_PATH + 1];
    int64_t max_bytes_per_blob;       /* 0 = no limit */
    int64_t max_bytes_total;          /* 0 = no limit */
    int64_t expires_us;               /* wall clock; 0 = never */
} blob_session;

/* One blob's metadata (the __BlobInfo__ entity). */
typedef struct {
    char key[BLOB_KEY_MAX + 1];
    char *content_type;               /* malloc'ed */
    char *filename;                   /* malloc'ed */
    uint64_t size;
    char md5_hex[33];
    int64_t creation_us;              /* wall clock, microseconds */
} blob_info;

void blobstore_register(api_server *srv, const char *home);
/* A method by name ("FetchData", ...), for tests; NULL when unknown. */
api_method_fn blobstore_method(const char *name);
/* The service the daemon's router shares, or NULL when not registered. */
blob_service *blobstore_service(api_server *srv);
blob_store *blobsvc_store(blob_service *s);

/* The session with id sid of app: 1 found (and not expired), 0 not found,
 * -1 error (err). Delete removes it (after a successful upload). */
int blobsvc_session_get(blob_service *s, const char *app, const char *sid, blob_session *out, char *err, size_t errlen);
int blobsvc_session_delete(blob_service *s, const char *app, const char *sid, char *err, size_t errlen);

/* Write n __BlobInfo__ entities in one datastore call; 0 or -1 (err). */
int blobsvc_put_infos(blob_service *s, const char *app, const blob_info *bi, size_t n, char *err, size_t errlen);
/* Read one; 1 found, 0 not found, -1 error. Free with blob_info_clear. */
int blobsvc_get_info(blob_service *s, const char *app, const char *key, blob_info *out, char *err, size_t errlen);
void blob_info_clear(blob_info *bi);

#endif
