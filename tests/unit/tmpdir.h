/* tmpdir.h - a scratch directory for unit tests that need files: created
 * under $TMPDIR (or /tmp), removed with everything in it. */
#ifndef CZ_TEST_TMPDIR_H
#define CZ_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline char *test_mkdtemp(char *out, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/cztest.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(out);
}

static int test_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

static inline void test_rmtree(const char *dir)
{
    nftw(dir, test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
