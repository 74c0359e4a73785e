/* cz-indexes.c - set an app's composite index mode and declare the indexes
 * of its index.yaml in a Cyclozzo datastore.
 *
 *   cz-indexes --home DIR --app APP_ID [--app-dir DIR] [--require-indexes]
 *
 * --require-indexes: a query needing an undeclared composite index fails
 * with NEED_INDEX, as on App Engine; without it the index is created on
 * first use, as the dev server does. --app-dir: the indexes of
 * DIR/index.yaml are created and filled now. The datastore may be in use by
 * a running API server meanwhile (LMDB serves several processes). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "datastore/datastore.h"
#include "datastore/query.h"

int main(int argc, char **argv)
{
    const char *home = NULL, *app = NULL, *app_dir = NULL;
    int strict = 0;
    static const struct option opts[] = {
        {"home", 1, 0, 'h'}, {"app", 1, 0, 'a'}, {"app-dir", 1, 0, 'd'},
        {"require-indexes", 0, 0, 'r'}, {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': home = optarg; break;
        case 'a': app = optarg; break;
        case 'd': app_dir = optarg; break;
        case 'r': strict = 1; break;
        default:
            fputs("usage: cz-indexes --home DIR --app APP_ID [--app-dir DIR] [--require-indexes]\n", stderr);
            return 2;
        }
    }
    if (!home || !app) {
        fputs("usage: cz-indexes --home DIR --app APP_ID [--app-dir DIR] [--require-indexes]\n", stderr);
        return 2;
    }
    char err[300];
    datastore *ds = ds_open(home, err, sizeof err);
    if (!ds) { fprintf(stderr, "cz-indexes: %s\n", err); return 1; }
    ds_err e = {0};
    int rc = dsq_configure_app(ds, app, app_dir, strict, &e);
    ds_close(ds);
    if (rc < 0) { fprintf(stderr, "cz-indexes: %s\n", e.msg); return 1; }
    printf("mode=%s\n", strict ? "strict" : "auto");
    return 0;
}
