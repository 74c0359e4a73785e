/* venv.h - per-app Python virtualenvs, built from the app's requirements.txt.
 *
 * An app with requirements.txt runs with a virtualenv built by Debian's
 * /usr/bin/python3 (the interpreter bin/cyclozzo-pyrt embeds) under
 * CYCLOZZO_HOME/venvs/<sha256 of requirements.txt>/. Apps with the same
 * requirements share one. A virtualenv is built in a temporary directory next
 * to its final place and renamed into place only when pip succeeded, so a
 * crash or a failed install never leaves a half-made one; the app directory is
 * only read. pip's progress (each package as it reports it) goes to stderr as
 * log lines. */
#ifndef CZ_VENV_H
#define CZ_VENV_H

#include <stddef.h>

/* Ensure the app's virtualenv exists. On success returns 0 and puts its path
 * in venv_out, or "" when the app has no requirements.txt. On failure returns
 * -1 with one sentence in err (naming pip's last complaint when pip failed). */
int venv_ensure(const char *home, const char *app_dir, char *venv_out, size_t venv_len,
                char *err, size_t errlen);

#endif
