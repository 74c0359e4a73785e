/* cyclozzo-venv - build (or find) an app's virtualenv from the command line.
 *
 *   cyclozzo-venv APP_DIR
 *
 * Calls venv_ensure() with CYCLOZZO_HOME and prints the virtualenv's path on
 * stdout ("" line when the app has no requirements.txt); pip's progress goes
 * to stderr. Exit 1 with one sentence on stderr when it fails. Used by
 * operators to pre-build virtualenvs and by the integration tests. */
#include <stdio.h>
#include <limits.h>

#include "core/log.h"
#include "core/util.h"
#include "instance/venv.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fputs("usage: cyclozzo-venv APP_DIR\n", stderr);
        return 2;
    }
    log_init(2, LOG_INFO);
    char venv[PATH_MAX], err[1024];
    if (venv_ensure(cyclozzo_home(), argv[1], venv, sizeof venv, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo-venv: %s\n", err);
        return 1;
    }
    printf("%s\n", venv);
    return 0;
}
