/* test_blobstore.c - the blob store interface over the local driver:
 * streaming writes, commit visibility, ranged reads, sizes, deletes, key
 * checks, aborted writers leaving nothing, and a second store handle on the
 * same directory seeing the same blobs (several nodes on one mount). */
#include "test.h"
#include "tmpdir.h"

#include <dirent.h>
#include <sys/stat.h>

#include "blob/blobstore.h"

static char dir[256];
static char err[256];

static int count_files(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) if (de->d_name[0] != '.' || strlen(de->d_name) > 2) n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

TEST(keys)
{
    char k1[BLOB_KEY_MAX + 1], k2[BLOB_KEY_MAX + 1];
    blob_key_new(k1);
    blob_key_new(k2);
    CHECK_INT(strlen(k1), 32);
    CHECK(strcmp(k1, k2) != 0);
    CHECK(blob_key_valid(k1, strlen(k1)));
    CHECK(!blob_key_valid("", 0));
    CHECK(!blob_key_valid("a/b", 3));
    CHECK(!blob_key_valid("..", 2));
    CHECK(!blob_key_valid("a b", 3));
    char longk[BLOB_KEY_MAX + 2];
    memset(longk, 'a', sizeof longk);
    CHECK(blob_key_valid(longk, BLOB_KEY_MAX));
    CHECK(!blob_key_valid(longk, BLOB_KEY_MAX + 1));
    CHECK(blob_app_valid("dev~guestbook"));
    CHECK(!blob_app_valid("a/b"));
    CHECK(!blob_app_valid(".."));
    CHECK(!blob_app_valid(""));
}

TEST(write_read_delete)
{
    blob_store *s = blob_store_open(dir, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    CHECK_STR(blob_store_driver(s), "local");
    char key[BLOB_KEY_MAX + 1];
    blob_key_new(key);
    blob_writer *w;
    CHECK_INT(blob_create(s, "dev~app", key, &w, err, sizeof err), BLOB_OK);
    /* Not visible before commit. */
    uint64_t sz = 0;
    CHECK_INT(blob_size(s, "dev~app", key, &sz, err, sizeof err), BLOB_NOT_FOUND);
    char chunk[1000];
    for (int i = 0; i < 300; i++) {                 /* 300000 bytes, streamed */
        for (int j = 0; j < 1000; j++) chunk[j] = (char)((i * 1000 + j) % 251);
        CHECK_INT(blob_write(w, chunk, sizeof chunk, err, sizeof err), BLOB_OK);
    }
    CHECK_INT(blob_written(w), 300000);
    CHECK_INT(blob_commit(w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_size(s, "dev~app", key, &sz, err, sizeof err), BLOB_OK);
    CHECK_INT(sz, 300000);

    /* Another handle on the same directory (another node) sees it. */
    blob_store *s2 = blob_store_local(dir, err, sizeof err);
    blob_reader *r;
    CHECK_INT(blob_open(s2, "dev~app", key, &r, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_reader_size(r), 300000);
    CHECK(blob_reader_fd(r) >= 0);
    char got[5000];
    CHECK_INT(blob_pread(r, got, sizeof got, 123456, err, sizeof err), 5000);
    int ok = 1;
    for (int j = 0; j < 5000; j++) if (got[j] != (char)((123456 + j) % 251)) ok = 0;
    CHECK(ok);
    CHECK_INT(blob_pread(r, got, sizeof got, 299990, err, sizeof err), 10);   /* short at the end */
    CHECK_INT(blob_pread(r, got, sizeof got, 300000, err, sizeof err), 0);
    CHECK_INT(blob_pread(r, got, sizeof got, 900000, err, sizeof err), 0);

    /* Another app does not see it. */
    blob_reader *r2;
    CHECK_INT(blob_open(s, "dev~other", key, &r2, err, sizeof err), BLOB_NOT_FOUND);
    CHECK(strstr(err, key) != NULL);

    /* A key is written once. */
    CHECK_INT(blob_create(s, "dev~app", key, &w, err, sizeof err), BLOB_ERR);
    CHECK(strstr(err, "already exists") != NULL);

    /* Delete: gone for new readers; an open reader keeps reading. */
    CHECK_INT(blob_delete(s, "dev~app", key, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_delete(s, "dev~app", key, err, sizeof err), BLOB_NOT_FOUND);
    CHECK_INT(blob_open(s, "dev~app", key, &r2, err, sizeof err), BLOB_NOT_FOUND);
    CHECK_INT(blob_pread(r, got, 10, 0, err, sizeof err), 10);
    CHECK_INT(got[1], 1);
    blob_close(r);
    blob_store_free(s2);
    blob_store_free(s);
}

TEST(abort_leaves_nothing)
{
    blob_store *s = blob_store_local(dir, err, sizeof err);
    char key[BLOB_KEY_MAX + 1];
    blob_key_new(key);
    blob_writer *w;
    CHECK_INT(blob_create(s, "dev~ab", key, &w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_write(w, "hello", 5, err, sizeof err), BLOB_OK);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/dev~ab/.tmp", dir);
    CHECK_INT(count_files(tmp), 1);
    blob_abort(w);
    CHECK_INT(count_files(tmp), 0);
    uint64_t sz;
    CHECK_INT(blob_size(s, "dev~ab", key, &sz, err, sizeof err), BLOB_NOT_FOUND);
    /* An empty blob is a blob. */
    CHECK_INT(blob_create(s, "dev~ab", key, &w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_commit(w, err, sizeof err), BLOB_OK);
    CHECK_INT(blob_size(s, "dev~ab", key, &sz, err, sizeof err), BLOB_OK);
    CHECK_INT(sz, 0);
    blob_store_free(s);
}

TEST(bad_arguments)
{
    blob_store *s = blob_store_local(dir, err, sizeof err);
    blob_writer *w;
    blob_reader *r;
    CHECK_INT(blob_create(s, "dev~app", "../../etc", &w, err, sizeof err), BLOB_ERR);
    CHECK(strstr(err, "not a valid blob key") != NULL);
    CHECK(w == NULL);
    CHECK_INT(blob_open(s, "../x", "abc", &r, err, sizeof err), BLOB_ERR);
    CHECK(strstr(err, "cannot own blobs") != NULL);
    CHECK_INT(blob_delete(s, "dev~app", "a.b", err, sizeof err), BLOB_ERR);
    blob_store_free(s);
    CHECK(blob_store_open("hdfs://nn:9870/x", err, sizeof err) == NULL);
    CHECK(strstr(err, "unknown scheme") != NULL);
    CHECK(blob_store_open("", err, sizeof err) == NULL);
    CHECK(blob_store_local("/proc/no/such/dir", err, sizeof err) == NULL);
    CHECK(strstr(err, "/proc/no/such/dir") != NULL);
    char sub[300];
    snprintf(sub, sizeof sub, "file://%s/viaurl", dir);
    s = blob_store_open(sub, err, sizeof err);
    CHECK(s != NULL);
    blob_store_free(s);
}

int main(void)
{
    if (!test_mkdtemp(dir, sizeof dir)) { perror("mkdtemp"); return 1; }
    RUN(keys);
    RUN(write_read_delete);
    RUN(abort_leaves_nothing);
    RUN(bad_arguments);
    test_rmtree(dir);
    return test_report();
}
