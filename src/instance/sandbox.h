/* sandbox.h - confines an instance before the app's code runs.
 *
 * The instance manager prepares one sandbox per app (sandbox_new: the app's
 * system user, the private file tree to build, the seccomp program, the
 * limits from instance_class) and, per instance, its cgroup
 * (sandbox_prepare). sandbox_clone() then starts the instance's process in
 * new mount, PID, IPC and UTS namespaces; in the child, after the caller has
 * set up its file descriptors, sandbox_enter() builds the private root,
 * drops to the app's user with no capabilities, no_new_privs and the seccomp
 * filter, and returns in a grandchild that the caller execve()s. The child
 * itself stays as the namespace's init (pid 1): it reaps orphans, passes
 * SIGTERM/SIGINT/SIGHUP on, and exits with the instance's status (a signal s
 * as exit status 128+s; sandbox_status() decodes it). Everything after the
 * clone is async-signal-safe: raw system calls on data prepared beforehand.
 * See docs/sandbox.md for what is isolated and what is not. */
#ifndef CZ_SANDBOX_H
#define CZ_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

typedef struct sandbox sandbox;

typedef struct {
    const char *app;             /* short app id, e.g. "guestbook" (names the user cz-APP) */
    const char *app_dir;         /* read-only, at the same path inside */
    const char *venv;            /* read-only when non-empty */
    const char *run_dir;         /* the app's socket directory (its per-instance subdirs are writable) */
    const char *exe;             /* the program started: bin/cyclozzo-pyrt, or an entrypoint's first word */
    int memory_mb;               /* from instance_class */
    int max_instances;
    int tmp_mb;                  /* size of the private /tmp; 0 = 128 */
    int pids_max;                /* processes + threads per instance; 0 = 256 */
    int nofile;                  /* open files; 0 = 4096 */
    int fsize_mb;                /* largest file written; 0 = 512 */
} sandbox_config;

/* NULL with one sentence in err when the sandbox cannot be had here (not
 * root, no namespaces, no user for the app). */
sandbox *sandbox_new(const sandbox_config *c, char *err, size_t errlen);
void sandbox_free(sandbox *sb);

/* Instance id's writable socket directory inside run_dir (created, owned by
 * the app's user). */
const char *sandbox_sock_dir(sandbox *sb, int id);
/* Before each start of instance id: its cgroup (when the host has one). */
int sandbox_prepare(sandbox *sb, int id, char *err, size_t errlen);
/* fork() into new namespaces: pid in the parent, 0 in the child, -1 on error. */
pid_t sandbox_clone(sandbox *sb, int id);
/* In the child of sandbox_clone(): returns 0 in the process to execve; on a
 * setup failure writes one line to fd 2 and exits 125. Never returns in the
 * namespace's init. */
int sandbox_enter(sandbox *sb, int id, const char *workdir);
/* Turns the init's wait status back into the instance's own (signals). */
int sandbox_status(int status);
/* After instance id exited with (decoded) status: when it broke a rule,
 * writes "rule=R reason=\"...\"" into out and returns 1; else 0. Also
 * notes soft breaches (process limit reached) as rule=... with 2. */
int sandbox_explain(sandbox *sb, int id, int status, char *out, size_t outlen);
/* Removes instance id's cgroup (after its process is gone). */
void sandbox_release(sandbox *sb, int id);
/* "cgroup v2", "cgroup v1" or "rlimits only", for the log. */
const char *sandbox_limits_kind(const sandbox *sb);
unsigned sandbox_uid(const sandbox *sb);

#endif
