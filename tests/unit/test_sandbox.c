/* test_sandbox.c - the sandbox from the inside: a shell started through
 * sandbox_clone/sandbox_enter checks what it can see and do, and reports by
 * exit status. Needs root (skipped, and said so, otherwise). */
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/util.h"
#include "instance/sandbox.h"

static char base[] = "/tmp/cz-sbunit-XXXXXX";
static char appdir[256], rundir[256];

/* Runs script in instance 1 of a fresh sandbox; returns its decoded status. */
static int run_in(sandbox *sb, const char *script)
{
    char err[512];
    if (sandbox_prepare(sb, 1, err, sizeof err) < 0) { printf("  prepare: %s\n", err); return -1; }
    pid_t pid = sandbox_clone(sb, 1);
    if (pid < 0) return -1;
    if (pid == 0) {
        sandbox_enter(sb, 1, appdir);
        char *const argv[] = {"/bin/sh", "-c", (char *)script, NULL};
        char *const env[] = {"PATH=/usr/bin:/bin", NULL};
        execve("/bin/sh", argv, env);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return sandbox_status(st);
}

static sandbox *make(int memory_mb)
{
    sandbox_config c = {.app = "Unit_Test", .app_dir = appdir, .run_dir = rundir, .exe = "/bin/sh",
                        .memory_mb = memory_mb, .max_instances = 1, .tmp_mb = 4};
    char err[512];
    sandbox *sb = sandbox_new(&c, err, sizeof err);
    if (!sb) printf("  sandbox_new: %s\n", err);
    return sb;
}

TEST(identity_and_files)
{
    sandbox *sb = make(256);
    CHECK(sb != NULL);
    if (!sb) return;
    CHECK(sandbox_uid(sb) != 0);
    /* Exit 0 only when every statement holds. */
    int st = run_in(sb, "test \"$(id -u)\" != 0 && test $$ = 2 && test ! -e /etc/shadow && test ! -e /root "
                        "&& test -r main.py && ! touch main.py 2>/dev/null && ! touch /usr/x 2>/dev/null "
                        "&& touch /tmp/x && test \"$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)\" = Unit_Test "
                        "&& ! head -c 5000000 /dev/zero > /tmp/big 2>/dev/null "
                        "&& grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status "
                        "&& grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status");
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), 0);
    sandbox_release(sb, 1);
    sandbox_free(sb);
}

TEST(exit_status_and_signals_come_through)
{
    sandbox *sb = make(256);
    if (!sb) { CHECK(0); return; }
    int st = run_in(sb, "exit 7");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
    st = run_in(sb, "kill -TERM $$");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    /* A child left behind does not keep the instance alive. */
    st = run_in(sb, "sleep 100 & exit 3");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    char why[256];
    CHECK_INT(sandbox_explain(sb, 1, st, why, sizeof why), 0);
    sandbox_release(sb, 1);
    sandbox_free(sb);
}

TEST(status_decoding)
{
    CHECK_INT(sandbox_status(7 << 8), 7 << 8);                     /* exit 7 stays */
    int st = sandbox_status((128 + SIGKILL) << 8);                 /* the init's 137 */
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK_INT(sandbox_status(SIGSEGV), SIGSEGV);                   /* the init itself killed */
}

int main(void)
{
    RUN(status_decoding);
    if (geteuid() != 0) {
        printf("test_sandbox: not root, skipping the sandbox runs\n");
        return test_report();
    }
    if (!mkdtemp(base)) { perror("mkdtemp"); return 1; }
    chmod(base, 0755);
    snprintf(appdir, sizeof appdir, "%s/app", base);
    snprintf(rundir, sizeof rundir, "%s/run", base);
    mkdir(appdir, 0755);
    mkdir(rundir, 0700);
    char p[300];
    snprintf(p, sizeof p, "%s/main.py", appdir);
    FILE *f = fopen(p, "w");
    if (f) { fputs("print('hi')\n", f); fclose(f); }
    RUN(identity_and_files);
    RUN(exit_status_and_signals_come_through);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd) != 0) printf("  could not remove %s\n", base);
    return test_report();
}
