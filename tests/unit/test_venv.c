/* test_venv.c - venv_ensure() paths that need no network: no
 * requirements.txt, an unreadable one, reuse of a finished virtualenv (named
 * by the SHA-256 of requirements.txt), and a too-small output buffer. The
 * pip path is covered by tests/integration/test_pyrt.py. */
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "instance/venv.h"

static char root[256];

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/cz-test-venv-%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) return;
    mkdir_p(root, 0755);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

TEST(no_requirements_means_no_venv)
{
    char app[300], home[300], out[512] = "x", err[256] = "";
    snprintf(app, sizeof app, "%s/app1", root);
    snprintf(home, sizeof home, "%s/home1", root);
    mkdir_p(app, 0755);
    CHECK_INT(venv_ensure(home, app, out, sizeof out, err, sizeof err), 0);
    CHECK_STR(out, "");
    CHECK(!is_dir(home));                    /* nothing created */
}

TEST(unreadable_requirements_is_an_error)
{
    char app[300], req[340], home[300], out[512], err[256] = "";
    snprintf(app, sizeof app, "%s/app2", root);
    snprintf(req, sizeof req, "%s/requirements.txt", app);
    snprintf(home, sizeof home, "%s/home2", root);
    mkdir_p(req, 0755);                      /* a directory where the file should be */
    CHECK_INT(venv_ensure(home, app, out, sizeof out, err, sizeof err), -1);
    CHECK(strstr(err, "requirements.txt") != NULL);
}

TEST(finished_venv_is_reused)
{
    char app[300], req[340], home[300], out[512], err[256] = "", want[600];
    snprintf(app, sizeof app, "%s/app3", root);
    snprintf(req, sizeof req, "%s/requirements.txt", app);
    snprintf(home, sizeof home, "%s/home3", root);
    mkdir_p(app, 0755);
    CHECK_INT(write_file_atomic(req, "abc", 3, 0644), 0);
    /* sha256("abc") */
    snprintf(want, sizeof want, "%s/venvs/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", home);
    mkdir_p(want, 0755);
    CHECK_INT(venv_ensure(home, app, out, sizeof out, err, sizeof err), 0);
    CHECK_STR(out, want);

    /* a too-small output buffer is refused, not truncated */
    char tiny[8];
    CHECK_INT(venv_ensure(home, app, tiny, sizeof tiny, err, sizeof err), -1);
    CHECK(strstr(err, "too long") != NULL);

}

int main(void)
{
    setup();
    RUN(no_requirements_means_no_venv);
    RUN(unreadable_requirements_is_an_error);
    RUN(finished_venv_is_reused);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) printf("cannot remove %s\n", root);
    return test_report();
}
