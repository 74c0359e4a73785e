/* test_blobsvc.c - the Blobstore API service (src/api/blobstore.c) over a
 * real datastore and local blob store in a scratch CYCLOZZO_HOME: requests
 * encoded by hand, run through the method functions, responses and error
 * codes checked; sessions and BlobInfo read back through the helpers the
 * router uses; apps kept apart. */
#include "test.h"
#include "tmpdir.h"

#include <stdlib.h>
#include <unistd.h>

#include "api/blobstore.h"
#include "core/util.h"
#include "proto/pb.h"

static char home[256];
static api_server *srv;
static blob_service *svc;

static api_reply call(const char *app, const char *method, buf *req)
{
    api_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.app_id = app;
    ctx.version = ctx.ns = ctx.user_email = ctx.user_id = ctx.request_id = "";
    ctx.service_data = svc;
    api_reply r;
    memset(&r, 0, sizeof r);
    blobstore_method(method)(&ctx, (const uint8_t *)buf_rp(req), buf_unread(req), &r);
    buf_reset(req);
    return r;
}

static int field_bytes(api_reply *r, uint32_t field, const uint8_t **p, size_t *n)
{
    pb_reader rd;
    pb_reader_init(&rd, buf_rp(&r->response), buf_unread(&r->response));
    uint32_t f; int wt;
    while (pb_next(&rd, &f, &wt) > 0) {
        if (f == field) return pb_bytes(&rd, wt, p, n);
        pb_skip(&rd, wt, f);
    }
    return -1;
}

TEST(upload_url_and_session)
{
    buf q = BUF_INIT;
    pb_put_str(&q, 1, "/done?x=1");
    pb_put_int(&q, 2, 5000);
    pb_put_int(&q, 3, 1000);
    api_reply r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    const uint8_t *u; size_t un;
    CHECK_INT(field_bytes(&r, 1, &u, &un), 0);
    const char *pre = "http://h:1/_ah/upload/";
    CHECK(un > strlen(pre) && !memcmp(u, pre, strlen(pre)));
    char sid[BLOB_KEY_MAX + 1];
    snprintf(sid, sizeof sid, "%.*s", (int)(un - strlen(pre)), (const char *)u + strlen(pre));
    buf_free(&r.response);
    char err[300];
    blob_session s;
    CHECK_INT(blobsvc_session_get(svc, "dev~a", sid, &s, err, sizeof err), 1);
    CHECK_STR(s.success_path, "/done?x=1");
    CHECK_INT(s.max_bytes_total, 5000);
    CHECK_INT(s.max_bytes_per_blob, 1000);
    CHECK(s.expires_us > wall_us());
    CHECK_INT(blobsvc_session_get(svc, "dev~other", sid, &s, err, sizeof err), 0);   /* another app's */
    CHECK_INT(blobsvc_session_get(svc, "dev~a", "../x", &s, err, sizeof err), 0);
    CHECK_INT(blobsvc_session_delete(svc, "dev~a", sid, err, sizeof err), 0);
    CHECK_INT(blobsvc_session_get(svc, "dev~a", sid, &s, err, sizeof err), 0);

    /* url_expiry_time_seconds: an expired session is unknown (and removed). */
    pb_put_str(&q, 1, "/soon");
    pb_put_int(&q, 5, 1);
    r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(field_bytes(&r, 1, &u, &un), 0);
    snprintf(sid, sizeof sid, "%.*s", (int)(un - strlen(pre)), (const char *)u + strlen(pre));
    buf_free(&r.response);
    CHECK_INT(blobsvc_session_get(svc, "dev~a", sid, &s, err, sizeof err), 1);
    usleep(1100 * 1000);
    CHECK_INT(blobsvc_session_get(svc, "dev~a", sid, &s, err, sizeof err), 0);

    pb_put_str(&q, 1, "/done");
    pb_put_str(&q, 4, "bucket");
    r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(r.kind, API_REPLY_APP_ERROR);
    CHECK_INT(r.code, BLOBSTORE_PERMISSION_DENIED);
    CHECK(strstr(r.detail, "gs_bucket_name") != NULL);
    pb_put_str(&q, 1, "relative");
    r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(r.code, BLOBSTORE_ARGUMENT_OUT_OF_RANGE);
    char *lng = xmalloc(3000);
    memset(lng, 'a', 2999);
    lng[0] = '/';
    lng[2999] = 0;
    pb_put_str(&q, 1, lng);
    free(lng);
    r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(r.code, BLOBSTORE_URL_TOO_LONG);
    buf_append(&q, "\xff\xff", 2);
    r = call("dev~a", "CreateUploadURL", &q);
    CHECK_INT(r.kind, API_REPLY_RPC_ERROR);
    buf_free(&q);
}

static void make_blob(const char *app, const char *key, const char *data)
{
    char err[300];
    blob_writer *w;
    CHECK_INT(blob_create(blobsvc_store(svc), app, key, &w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_write(w, data, strlen(data), err, sizeof err), BLOB_OK);
    CHECK_INT(blob_commit(w, err, sizeof err), BLOB_OK);
    blob_info bi = {.content_type = "text/plain", .filename = "f.txt", .size = strlen(data),
                    .md5_hex = "00112233445566778899aabbccddeeff", .creation_us = 1700000000123456};
    snprintf(bi.key, sizeof bi.key, "%s", key);
    CHECK_INT(blobsvc_put_infos(svc, app, &bi, 1, err, sizeof err), 0);
}

static api_reply fetch(const char *app, const char *key, int64_t a, int64_t b)
{
    buf q = BUF_INIT;
    pb_put_str(&q, 1, key);
    pb_put_int(&q, 2, a);
    pb_put_int(&q, 3, b);
    api_reply r = call(app, "FetchData", &q);
    buf_free(&q);
    return r;
}

/* 0 for success, else the application error code; frees the response. */
static int fcode(const char *app, const char *key, int64_t a, int64_t b)
{
    api_reply r = fetch(app, key, a, b);
    buf_free(&r.response);
    return r.kind == API_REPLY_OK ? 0 : r.kind == API_REPLY_APP_ERROR ? r.code : -1;
}

TEST(fetch_info_delete)
{
    make_blob("dev~a", "key1", "0123456789");
    char err[300];
    blob_info bi;
    CHECK_INT(blobsvc_get_info(svc, "dev~a", "key1", &bi, err, sizeof err), 1);
    CHECK_STR(bi.content_type, "text/plain");
    CHECK_STR(bi.filename, "f.txt");
    CHECK_INT(bi.size, 10);
    CHECK_STR(bi.md5_hex, "00112233445566778899aabbccddeeff");
    CHECK_INT(bi.creation_us, 1700000000123456);
    blob_info_clear(&bi);
    CHECK_INT(blobsvc_get_info(svc, "dev~b", "key1", &bi, err, sizeof err), 0);

    const uint8_t *p; size_t n;
    api_reply r = fetch("dev~a", "key1", 2, 5);
    CHECK_INT(r.kind, API_REPLY_OK);
    CHECK_INT(field_bytes(&r, 1000, &p, &n), 0);
    CHECK(n == 4 && !memcmp(p, "2345", 4));
    buf_free(&r.response);
    r = fetch("dev~a", "key1", 8, 100);
    CHECK_INT(field_bytes(&r, 1000, &p, &n), 0);
    CHECK(n == 2 && !memcmp(p, "89", 2));
    buf_free(&r.response);
    r = fetch("dev~a", "key1", 10, 20);
    CHECK_INT(field_bytes(&r, 1000, &p, &n), 0);
    CHECK_INT(n, 0);
    buf_free(&r.response);
    CHECK_INT(fcode("dev~a", "key1", -1, 3), BLOBSTORE_DATA_INDEX_OUT_OF_RANGE);
    CHECK_INT(fcode("dev~a", "key1", 5, 4), BLOBSTORE_DATA_INDEX_OUT_OF_RANGE);
    CHECK_INT(fcode("dev~a", "key1", 0, BLOBSTORE_MAX_FETCH), BLOBSTORE_BLOB_FETCH_SIZE_TOO_LARGE);
    r = fetch("dev~a", "key1", 0, BLOBSTORE_MAX_FETCH - 1);
    CHECK_INT(r.kind, API_REPLY_OK);
    buf_free(&r.response);
    CHECK_INT(fcode("dev~b", "key1", 0, 3), BLOBSTORE_BLOB_NOT_FOUND);   /* another app's blob */
    CHECK_INT(fcode("dev~a", "no/such", 0, 3), BLOBSTORE_BLOB_NOT_FOUND);

    buf q = BUF_INIT;
    pb_put_str(&q, 1, "key1");
    pb_put_str(&q, 1, "never-existed");
    pb_put_str(&q, 1, "bad key/..");
    r = call("dev~b", "DeleteBlob", &q);             /* another app cannot delete it */
    CHECK_INT(r.kind, API_REPLY_OK);
    CHECK_INT(fcode("dev~a", "key1", 0, 3), 0);
    pb_put_str(&q, 1, "key1");
    pb_put_str(&q, 1, "never-existed");
    r = call("dev~a", "DeleteBlob", &q);
    CHECK_INT(r.kind, API_REPLY_OK);
    CHECK_INT(fcode("dev~a", "key1", 0, 3), BLOBSTORE_BLOB_NOT_FOUND);
    CHECK_INT(blobsvc_get_info(svc, "dev~a", "key1", &bi, err, sizeof err), 0);

    pb_put_str(&q, 1, "k1");
    pb_put_str(&q, 1, "k2");
    r = call("dev~a", "DecodeBlobKey", &q);
    CHECK_INT(buf_unread(&r.response), 8);
    CHECK(!memcmp(buf_rp(&r.response), "\x0a\x02k1\x0a\x02k2", 8));
    buf_free(&r.response);
    pb_put_str(&q, 1, "/gs/b/o");
    r = call("dev~a", "CreateEncodedGoogleStorageKey", &q);
    CHECK_INT(field_bytes(&r, 1, &p, &n), 0);
    CHECK(n == 16 + 12 && !memcmp(p, "encoded_gs_file:L2dzL2Ivbw==", n));
    buf_free(&r.response);
    buf_free(&q);
}

int main(void)
{
    if (!test_mkdtemp(home, sizeof home)) { perror("mkdtemp"); return 1; }
    char err[300];
    api_server_config cfg = {.home = home};
    srv = api_server_new(&cfg, err, sizeof err);
    if (!srv) { printf("%s\n", err); return 1; }
    char *bdir = xasprintf("%s/shared-blobs", home);
    api_share(srv, "blob.dir", bdir);
    api_share(srv, "app.hostname", "h:1");
    api_register_all(srv, home);
    svc = blobstore_service(srv);
    if (!svc) { printf("no blobstore service\n"); return 1; }
    CHECK(blobsvc_store(svc) != NULL);
    RUN(upload_url_and_session);
    RUN(fetch_info_delete);
    api_server_stop(srv);
    free(bdir);
    test_rmtree(home);
    return test_report();
}
