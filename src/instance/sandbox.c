/* sandbox.c - confines an instance before the app's code runs. See sandbox.h
 * and docs/sandbox.md.
 *
 * Parent side (the instance manager's thread, free to allocate):
 *   - the app's user cz-APP is looked up, or created with useradd;
 *   - the private file tree is compiled into a list of operations (mkdir,
 *     bind read-only/read-write, symlink, tmpfs, write a small file), all
 *     with absolute paths under the instance's mount point;
 *   - the seccomp filter is built with libseccomp and exported as raw BPF;
 *   - per instance, a cgroup (v2 under a "cyclozzo" slice, or the v1 memory
 *     and pids hierarchies) gets memory and pids limits, and its cgroup.procs
 *     files are opened.
 * Child side (after a raw clone() of a multi-threaded process: no malloc, no
 * stdio, no glibc set*id which would signal threads that do not exist here):
 *   join the cgroup, run the operations, mount /proc of the new PID
 *   namespace, pivot_root into the tmpfs, remount it read-only, set rlimits,
 *   drop the capability bounding set, switch to the app's uid/gid with raw
 *   system calls, PR_SET_PDEATHSIG again (a uid change clears it),
 *   no_new_privs, load the BPF program (with SECCOMP_FILTER_FLAG_LOG, so the
 *   kernel logs refusals), then fork the instance and stay behind as init. */
#include "instance/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stddef.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <seccomp.h>

#include "core/log.h"
#include "core/util.h"

#define SB_MAX_INST 65
#define CG_V2_ROOT "/sys/fs/cgroup"

enum { OP_MKDIR, OP_FILE, OP_BIND_RO, OP_BIND_RW, OP_SYMLINK, OP_TMPFS, OP_WRITE };

typedef struct {
    int kind;
    char *src;                 /* bind source, symlink target, tmpfs options, file content */
    char *dst;                 /* relative to the instance root (starts with '/') */
    unsigned long flags;       /* extra remount flags (the source's nosuid/nodev/noexec) */
} mop;

typedef struct {
    char sock_dir[2100];
    char root[2100];           /* the empty directory the tmpfs root is mounted on */
    char cg[2][2400];          /* cgroup directories: v2 (one) or v1 memory, pids */
    int procs_fd[2];
    long long oom_base, pids_base;
} sb_inst;

struct sandbox {
    sandbox_config c;
    char *app, *user;
    uid_t uid; gid_t gid;
    mop *ops; size_t nops, capops;
    struct sock_filter *bpf[2]; unsigned short bpf_len[2];   /* refusals (logged), clone3 (quiet) */
    int cgmode;                /* 0 none, 1 v1, 2 v2 */
    char cgbase[2][1200];      /* slice directories */
    char tmp_opts[64];
    char hostname[64];
    char run_real[2048];
    char app_real[PATH_MAX];
    sb_inst inst[SB_MAX_INST];
};

/* ---------- parent side: the file tree ---------- */

static void add_op(sandbox *sb, int kind, const char *src, const char *dst, unsigned long flags)
{
    if (sb->nops == sb->capops) {
        sb->capops = sb->capops ? sb->capops * 2 : 64;
        sb->ops = xrealloc(sb->ops, sb->capops * sizeof *sb->ops);
    }
    mop *o = &sb->ops[sb->nops++];
    o->kind = kind;
    o->src = src ? xstrdup(src) : NULL;
    o->dst = xstrdup(dst);
    o->flags = flags;
}

/* mkdir operations for every directory above and including path. */
static void add_dirs(sandbox *sb, const char *path, int include_last)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || (i == n && include_last)) {
            char c = tmp[i];
            tmp[i] = 0;
            int dup = 0;
            for (size_t k = 0; k < sb->nops; k++)
                if (sb->ops[k].kind == OP_MKDIR && !strcmp(sb->ops[k].dst, tmp)) { dup = 1; break; }
            if (!dup) add_op(sb, OP_MKDIR, NULL, tmp, 0);
            tmp[i] = c;
        }
    }
}

static unsigned long locked_flags(const char *path)
{
    struct statvfs v;
    unsigned long f = 0;
    if (statvfs(path, &v) < 0) return 0;
    if (v.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (v.f_flag & ST_NODEV) f |= MS_NODEV;
    if (v.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (v.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (v.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (v.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

/* Bind host path at the same place inside: a symlink is recreated, a
 * missing path skipped. */
static void add_bind(sandbox *sb, const char *path, int rw)
{
    struct stat st;
    if (lstat(path, &st) < 0) return;
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) return;
        target[n] = 0;
        add_dirs(sb, path, 0);
        add_op(sb, OP_SYMLINK, target, path, 0);
        return;
    }
    add_dirs(sb, path, S_ISDIR(st.st_mode));
    if (!S_ISDIR(st.st_mode)) add_op(sb, OP_FILE, NULL, path, 0);
    add_op(sb, rw ? OP_BIND_RW : OP_BIND_RO, path, path, locked_flags(path));
}

static void build_tree(sandbox *sb)
{
    static const char *system_ro[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", NULL};
    for (const char **p = system_ro; *p; p++) add_bind(sb, *p, 0);
    /* A minimal /etc: name resolution, certificates, time zone, the loader's cache. */
    static const char *etc_ro[] = {"/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf",
                                   "/etc/gai.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/localtime",
                                   "/etc/timezone", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                                   "/etc/mime.types", "/etc/alternatives", "/etc/protocols", "/etc/services",
                                   "/etc/python3", "/etc/python3.11", "/etc/java-17-openjdk", "/etc/os-release",
                                   NULL};
    add_dirs(sb, "/etc", 1);
    for (const char **p = etc_ro; *p; p++) add_bind(sb, *p, 0);
    char *passwd = xasprintf("root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                             "%s:x:%u:%u:Cyclozzo app %s:/tmp:/usr/sbin/nologin\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                             sb->user, (unsigned)sb->uid, (unsigned)sb->gid, sb->app);
    char *group = xasprintf("root:x:0:\n%s:x:%u:\nnogroup:x:65534:\n", sb->user, (unsigned)sb->gid);
    add_op(sb, OP_WRITE, passwd, "/etc/passwd", 0);
    add_op(sb, OP_WRITE, group, "/etc/group", 0);
    free(passwd);
    free(group);
    /* /dev with the four harmless devices. */
    add_dirs(sb, "/dev", 1);
    add_op(sb, OP_TMPFS, "size=64k,nr_inodes=64,mode=0755", "/dev", 0);
    static const char *devs[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", NULL};
    for (const char **d = devs; *d; d++) {
        add_op(sb, OP_FILE, NULL, *d, 0);
        add_op(sb, OP_BIND_RW, *d, *d, 0);
    }
    add_op(sb, OP_SYMLINK, "/proc/self/fd", "/dev/fd", 0);
    add_op(sb, OP_SYMLINK, "/proc/self/fd/0", "/dev/stdin", 0);
    add_op(sb, OP_SYMLINK, "/proc/self/fd/1", "/dev/stdout", 0);
    add_op(sb, OP_SYMLINK, "/proc/self/fd/2", "/dev/stderr", 0);
    add_dirs(sb, "/tmp", 1);
    add_op(sb, OP_TMPFS, sb->tmp_opts, "/tmp", 0);
    add_dirs(sb, "/proc", 1);
    /* The program, the app, its virtualenv. */
    add_bind(sb, sb->c.exe, 0);
    add_bind(sb, sb->app_real, 0);
    if (sb->c.venv && *sb->c.venv) {
        char v[PATH_MAX];
        if (realpath(sb->c.venv, v)) add_bind(sb, v, 0);
    }
}

/* An entrypoint's program outside the system directories: its directory is
 * made visible, or the whole virtualenv when it is a venv's bin/python. */
static void add_exe(sandbox *sb, const char *exe)
{
    if (!exe || exe[0] != '/') return;
    char real[PATH_MAX];
    static const char *sys[] = {"/usr/", "/bin/", "/sbin/", "/lib", NULL};
    for (const char **s = sys; *s; s++) if (!strncmp(exe, *s, strlen(*s))) return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", exe);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = 0;
    char cfgp[PATH_MAX + 16];
    snprintf(cfgp, sizeof cfgp, "%s/../pyvenv.cfg", dir);
    if (access(cfgp, R_OK) == 0) { slash = strrchr(dir, '/'); if (slash && slash != dir) *slash = 0; }
    if (!realpath(dir, real)) return;
    add_bind(sb, real, 0);
    if (strcmp(real, dir)) add_bind(sb, dir, 0);   /* the path as named, when it goes through a link */
}

/* ---------- parent side: seccomp ---------- */

/* Compiles ctx to raw BPF in sb->bpf[which] (and releases ctx). */
static int export_bpf(sandbox *sb, scmp_filter_ctx ctx, int which, char *err, size_t errlen)
{
    int fd = memfd_create("cz-seccomp", MFD_CLOEXEC);
    if (fd < 0 || seccomp_export_bpf(ctx, fd) != 0) {
        if (fd >= 0) close(fd);
        seccomp_release(ctx);
        set_err(err, errlen, "cannot export the seccomp filter");
        return -1;
    }
    seccomp_release(ctx);
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0 || len % (off_t)sizeof(struct sock_filter) || len / (off_t)sizeof(struct sock_filter) > 4096) {
        close(fd);
        set_err(err, errlen, "the seccomp filter came out malformed");
        return -1;
    }
    sb->bpf[which] = xcalloc(1, (size_t)len);
    if (pread(fd, sb->bpf[which], (size_t)len, 0) != len) {
        close(fd);
        set_err(err, errlen, "cannot read back the seccomp filter");
        return -1;
    }
    close(fd);
    sb->bpf_len[which] = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
    return 0;
}

/* Two filters: the refusals, loaded so that the kernel logs each; and
 * clone3's ENOSYS, apart, because the C library tries clone3 for every
 * thread it starts and those would flood the log. */
static int build_seccomp(sandbox *sb, char *err, size_t errlen)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) { set_err(err, errlen, "cannot create the seccomp filter"); return -1; }
    const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
    static const char *refused[] = {
        "mount", "umount", "umount2", "ptrace", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "bpf", "unshare", "setns", "keyctl", "add_key", "request_key",
        "perf_event_open", "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
        "adjtimex", "pivot_root", "chroot", "userfaultfd", "open_by_handle_at", "name_to_handle_at",
        "iopl", "ioperm", "acct", "quotactl", "lookup_dcookie", "process_vm_readv", "process_vm_writev",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "syslog",
        "vhangup", "uselib", "sethostname", "setdomainname", "kcmp", "fanotify_init", "nfsservctl",
        "create_module", "get_kernel_syms", "query_module", "vm86", "vm86old", "_sysctl", "stime",
        NULL};
    int rc = 0;
    for (const char **n = refused; *n && rc == 0; n++) {
        int nr = seccomp_syscall_resolve_name(*n);
        if (nr == __NR_SCMP_ERROR) continue;          /* not on this architecture */
        rc = seccomp_rule_add(ctx, eperm, nr, 0);
    }
    /* clone with namespace flags; clone3 hides its flags in memory, so it
     * says ENOSYS and the C library falls back to clone. */
    static const unsigned long nsflags[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                                            CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};
    for (size_t i = 0; i < sizeof nsflags / sizeof *nsflags && rc == 0; i++)
        rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, nsflags[i], nsflags[i]));
    /* Packet and raw sockets. */
    if (rc == 0) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_PACKET));
    if (rc == 0) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
    /* personality: no turning off address randomisation or making reads executable. */
    if (rc == 0) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, 0x0040000, 0x0040000));
    if (rc == 0) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, 0x0400000, 0x0400000));
    /* Typing into the terminal of someone else. */
    if (rc == 0) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TIOCSTI));
    if (rc != 0) {
        seccomp_release(ctx);
        set_err(err, errlen, "cannot build the seccomp filter: %s", strerror(-rc));
        return -1;
    }
    if (export_bpf(sb, ctx, 0, err, errlen) < 0) return -1;
    ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) { set_err(err, errlen, "cannot create the seccomp filter"); return -1; }
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc != 0) {
        seccomp_release(ctx);
        set_err(err, errlen, "cannot build the seccomp filter: %s", strerror(-rc));
        return -1;
    }
    return export_bpf(sb, ctx, 1, err, errlen);
}

/* ---------- parent side: user, cgroups ---------- */

static int run_quiet(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    extern char **environ;
    int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int ensure_user(sandbox *sb, char *err, size_t errlen)
{
    char buf[4096];
    struct passwd pw, *res = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (getpwnam_r(sb->user, &pw, buf, sizeof buf, &res) == 0 && res) {
            if (pw.pw_uid == 0 || pw.pw_gid == 0) {
                set_err(err, errlen, "the sandbox user %s exists with uid or gid 0; remove it", sb->user);
                return -1;
            }
            sb->uid = pw.pw_uid;
            sb->gid = pw.pw_gid;
            return 0;
        }
        if (attempt) break;
        char *argv[] = {"/usr/sbin/useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "--comment", "Cyclozzo sandboxed app", sb->user, NULL};
        int r = run_quiet(argv);
        if (r != 0 && r != 9) {            /* 9: created meanwhile by another daemon */
            set_err(err, errlen, "cannot create the system user %s for the app's sandbox (useradd %s %d)",
                    sb->user, r < 0 ? "could not run, status" : "exited with", r);
            return -1;
        }
    }
    set_err(err, errlen, "the system user %s for the app's sandbox cannot be found after useradd", sb->user);
    return -1;
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static long long read_key(const char *path, const char *key)
{
    size_t len;
    char *s = read_file(path, &len);
    if (!s) return -1;
    long long v = -1;
    size_t kl = strlen(key);
    for (char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == ' ') { v = atoll(p + kl + 1); break; }
    }
    free(s);
    return v;
}

/* The daemon's own cgroup path in a v1 hierarchy (e.g. "memory"). */
static int v1_self_path(const char *ctrl, char *out, size_t outlen)
{
    size_t len;
    char *s = read_file("/proc/self/cgroup", &len);
    if (!s) return -1;
    int found = -1;
    char *save1 = NULL, *save2 = NULL;
    for (char *line = strtok_r(s, "\n", &save1); line; line = strtok_r(NULL, "\n", &save1)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        for (char *t = strtok_r(c1 + 1, ",", &save2); t; t = strtok_r(NULL, ",", &save2))
            if (!strcmp(t, ctrl)) { snprintf(out, outlen, "%s", c2 + 1); found = 0; }
        if (!found) break;
    }
    free(s);
    return found;
}

static void detect_cgroups(sandbox *sb)
{
    size_t len;
    char *ctl = read_file(CG_V2_ROOT "/cgroup.controllers", &len);
    if (ctl) {
        int ok = strstr(ctl, "memory") && strstr(ctl, "pids");
        free(ctl);
        if (!ok) return;
        snprintf(sb->cgbase[0], sizeof sb->cgbase[0], "%s/cyclozzo", CG_V2_ROOT);
        if (mkdir(sb->cgbase[0], 0755) < 0 && errno != EEXIST) return;
        /* The root cgroup may hand controllers down; so must the slice. */
        write_str(CG_V2_ROOT "/cgroup.subtree_control", "+memory +pids");
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/cgroup.subtree_control", sb->cgbase[0]);
        if (write_str(p, "+memory +pids") < 0) return;
        sb->cgmode = 2;
        return;
    }
    char mem[1024], pids[1024];
    if (v1_self_path("memory", mem, sizeof mem) < 0 || v1_self_path("pids", pids, sizeof pids) < 0) return;
    snprintf(sb->cgbase[0], sizeof sb->cgbase[0], "%s/memory%s/cyclozzo", CG_V2_ROOT, strcmp(mem, "/") ? mem : "");
    snprintf(sb->cgbase[1], sizeof sb->cgbase[1], "%s/pids%s/cyclozzo", CG_V2_ROOT, strcmp(pids, "/") ? pids : "");
    for (int i = 0; i < 2; i++)
        if (mkdir(sb->cgbase[i], 0755) < 0 && errno != EEXIST) return;
    sb->cgmode = 1;
}

const char *sandbox_limits_kind(const sandbox *sb)
{
    return sb->cgmode == 2 ? "cgroup v2" : sb->cgmode == 1 ? "cgroup v1" : "rlimits only";
}

unsigned sandbox_uid(const sandbox *sb) { return (unsigned)sb->uid; }

/* ---------- lifecycle ---------- */

static int probe_namespaces(char *err, size_t errlen)
{
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD,
                               NULL, NULL, NULL, NULL);
    if (pid < 0) {
        set_err(err, errlen, "this host does not let Cyclozzo create namespaces for the sandbox (%s); pass "
                "--no-sandbox to run the app's code unconfined", strerror(errno));
        return -1;
    }
    if (pid == 0) _exit(0);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return 0;
}

sandbox *sandbox_new(const sandbox_config *c, char *err, size_t errlen)
{
    if (geteuid() != 0) {
        set_err(err, errlen, "the sandbox needs Cyclozzo to run as root (it creates namespaces and a user per "
                "app); run it as root, or pass --no-sandbox to run the app's code unconfined");
        return NULL;
    }
    if (probe_namespaces(err, errlen) < 0) return NULL;
    sandbox *sb = xcalloc(1, sizeof *sb);
    sb->c = *c;
    for (int i = 0; i < SB_MAX_INST; i++) sb->inst[i].procs_fd[0] = sb->inst[i].procs_fd[1] = -1;
    if (!sb->c.tmp_mb) sb->c.tmp_mb = 128;
    if (!sb->c.pids_max) sb->c.pids_max = 256;
    if (!sb->c.nofile) sb->c.nofile = 4096;
    if (!sb->c.fsize_mb) sb->c.fsize_mb = 512;
    if (sb->c.max_instances < 1) sb->c.max_instances = 1;
    sb->app = xstrdup(c->app);
    /* cz-APP: lower case letters, digits and '-', at most 32 characters. */
    char name[33] = "cz-";
    size_t n = 3;
    for (const char *p = c->app; *p && n < 32; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) ch = '-';
        name[n++] = ch;
    }
    name[n] = 0;
    sb->user = xstrdup(name);
    snprintf(sb->tmp_opts, sizeof sb->tmp_opts, "size=%dm,mode=1777", sb->c.tmp_mb);
    snprintf(sb->hostname, sizeof sb->hostname, "%s", c->app);
    char rr[PATH_MAX];
    if (!realpath(c->run_dir, rr) || !realpath(c->app_dir, sb->app_real)) {
        set_err(err, errlen, "cannot resolve %s: %s", c->run_dir, strerror(errno));
        goto fail;
    }
    if (strlen(rr) >= sizeof sb->run_real - 16) {
        set_err(err, errlen, "the run directory %s is too long for the sandbox", rr);
        goto fail;
    }
    memcpy(sb->run_real, rr, strlen(rr) + 1);
    struct stat st;
    if (stat(sb->app_real, &st) < 0 || (st.st_mode & 05) != 05) {
        set_err(err, errlen, "the app directory %s must be readable by others (chmod o+rx): its instances run "
                "as the unprivileged user %s", sb->app_real, sb->user);
        goto fail;
    }
    if (ensure_user(sb, err, errlen) < 0) goto fail;
    if (build_seccomp(sb, err, errlen) < 0) goto fail;
    build_tree(sb);
    add_exe(sb, c->exe);
    detect_cgroups(sb);
    return sb;
fail:
    sandbox_free(sb);
    return NULL;
}

const char *sandbox_sock_dir(sandbox *sb, int id)
{
    if (id < 1 || id >= SB_MAX_INST) return NULL;
    sb_inst *in = &sb->inst[id];
    if (!in->sock_dir[0]) {
        snprintf(in->sock_dir, sizeof in->sock_dir, "%s/i%d", sb->run_real, id);
        snprintf(in->root, sizeof in->root, "%s/.root%d", sb->run_real, id);
    }
    return in->sock_dir;
}

static void close_procs(sb_inst *in)
{
    for (int i = 0; i < 2; i++) if (in->procs_fd[i] >= 0) { close(in->procs_fd[i]); in->procs_fd[i] = -1; }
}

int sandbox_prepare(sandbox *sb, int id, char *err, size_t errlen)
{
    if (!sandbox_sock_dir(sb, id)) { set_err(err, errlen, "instance number %d is out of range", id); return -1; }
    sb_inst *in = &sb->inst[id];
    if ((mkdir(in->sock_dir, 0700) < 0 && errno != EEXIST) || chown(in->sock_dir, sb->uid, sb->gid) < 0 ||
        chmod(in->sock_dir, 0700) < 0) {
        set_err(err, errlen, "cannot prepare the socket directory %s: %s", in->sock_dir, strerror(errno));
        return -1;
    }
    if (mkdir(in->root, 0700) < 0 && errno != EEXIST) {
        set_err(err, errlen, "cannot create the sandbox mount point %s: %s", in->root, strerror(errno));
        return -1;
    }
    close_procs(in);
    if (!sb->cgmode) return 0;
    long long mem = (long long)sb->c.memory_mb << 20;
    char v[64], p[2600] = "";
    const char *base = strrchr(sb->run_real, '/');
    base = base ? base + 1 : sb->run_real;
    int nh = sb->cgmode == 2 ? 1 : 2;
    for (int h = 0; h < nh; h++) {
        snprintf(in->cg[h], sizeof in->cg[h], "%s/%s-i%d", sb->cgbase[h], base, id);
        if (mkdir(in->cg[h], 0755) < 0 && errno != EEXIST) goto cgfail;
    }
    if (sb->cgmode == 2) {
        snprintf(v, sizeof v, "%lld", mem);
        snprintf(p, sizeof p, "%s/memory.max", in->cg[0]);
        if (write_str(p, v) < 0) goto cgfail;
        snprintf(p, sizeof p, "%s/memory.swap.max", in->cg[0]);
        write_str(p, "0");
        snprintf(v, sizeof v, "%d", sb->c.pids_max);
        snprintf(p, sizeof p, "%s/pids.max", in->cg[0]);
        if (write_str(p, v) < 0) goto cgfail;
        snprintf(p, sizeof p, "%s/memory.events", in->cg[0]);
        in->oom_base = read_key(p, "oom_kill");
        snprintf(p, sizeof p, "%s/pids.events", in->cg[0]);
        in->pids_base = read_key(p, "max");
    } else {
        snprintf(v, sizeof v, "%lld", mem);
        snprintf(p, sizeof p, "%s/memory.limit_in_bytes", in->cg[0]);
        if (write_str(p, v) < 0) goto cgfail;
        snprintf(p, sizeof p, "%s/memory.memsw.limit_in_bytes", in->cg[0]);
        write_str(p, v);
        snprintf(v, sizeof v, "%d", sb->c.pids_max);
        snprintf(p, sizeof p, "%s/pids.max", in->cg[1]);
        if (write_str(p, v) < 0) goto cgfail;
        snprintf(p, sizeof p, "%s/memory.oom_control", in->cg[0]);
        in->oom_base = read_key(p, "oom_kill");
        snprintf(p, sizeof p, "%s/pids.events", in->cg[1]);
        in->pids_base = read_key(p, "max");
    }
    for (int h = 0; h < nh; h++) {
        snprintf(p, sizeof p, "%s/cgroup.procs", in->cg[h]);
        in->procs_fd[h] = open(p, O_WRONLY | O_CLOEXEC);
        if (in->procs_fd[h] < 0) goto cgfail;
    }
    return 0;
cgfail:
    set_err(err, errlen, "cannot set up the instance's cgroup %s: %s", p[0] ? p : in->cg[0], strerror(errno));
    close_procs(in);
    return -1;
}

pid_t sandbox_clone(sandbox *sb, int id)
{
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD,
                               NULL, NULL, NULL, NULL);
    if (pid > 0 && id >= 1 && id < SB_MAX_INST) close_procs(&sb->inst[id]);
    return pid;
}

/* ---------- child side: async-signal-safe only ---------- */

static void die(const char *what, const char *path)
{
    int e = errno;
    char num[16];
    int i = (int)sizeof num;
    num[--i] = 0;
    do { num[--i] = (char)('0' + e % 10); e /= 10; } while (e && i > 0);
    const char *parts[] = {"cyclozzo sandbox: cannot ", what, " ", path ? path : "", " (errno ", num + i, ")\n"};
    for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
        ssize_t w = write(2, parts[k], strlen(parts[k]));
        (void)w;
    }
    _exit(125);
}

/* dst is the path inside; buf receives root + dst. */
static const char *at_root(char *buf, size_t len, const char *root, const char *dst)
{
    size_t rl = strlen(root), dl = strlen(dst);
    if (rl + dl + 1 > len) { errno = ENAMETOOLONG; die("build path", dst); }
    memcpy(buf, root, rl);
    memcpy(buf + rl, dst, dl + 1);
    return buf;
}

static void run_ops(sandbox *sb, const char *root)
{
    char p[PATH_MAX * 2];
    for (size_t i = 0; i < sb->nops; i++) {
        const mop *o = &sb->ops[i];
        at_root(p, sizeof p, root, o->dst);
        switch (o->kind) {
        case OP_MKDIR:
            if (mkdir(p, 0755) < 0 && errno != EEXIST) die("create directory", p);
            break;
        case OP_FILE: {
            int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) die("create mount point", p);
            close(fd);
            break;
        }
        case OP_SYMLINK:
            if (symlink(o->src, p) < 0 && errno != EEXIST) die("create symlink", p);
            break;
        case OP_TMPFS:
            if (mount("cyclozzo", p, "tmpfs", MS_NOSUID | MS_NODEV, o->src) < 0) die("mount tmpfs on", p);
            break;
        case OP_WRITE: {
            int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) die("write", p);
            size_t n = strlen(o->src);
            if (write(fd, o->src, n) != (ssize_t)n) die("write", p);
            close(fd);
            break;
        }
        case OP_BIND_RO:
        case OP_BIND_RW:
            if (mount(o->src, p, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind", o->src);
            if (o->kind == OP_BIND_RO &&
                mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | o->flags, NULL) < 0)
                die("make read-only", o->src);
            break;
        }
    }
}

static void set_limit(int res, rlim_t v, const char *what)
{
    struct rlimit rl = {v, v};
    if (setrlimit(res, &rl) < 0) die("set limit", what);
}

static volatile pid_t init_child;     /* the instance, in the namespace's init only */

static void forward(int sig)
{
    if (init_child > 0) kill(init_child, sig);
}

int sandbox_enter(sandbox *sb, int id, const char *workdir)
{
    sb_inst *in = &sb->inst[id];
    /* Into the cgroup first, so everything after is accounted. */
    for (int h = 0; h < 2; h++)
        if (in->procs_fd[h] >= 0 && write(in->procs_fd[h], "0", 1) != 1) die("join cgroup", in->cg[h]);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make mounts private", "/");
    const char *root = in->root;
    if (mount("cyclozzo", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755") < 0)
        die("mount the root tmpfs on", root);
    run_ops(sb, root);
    char p[PATH_MAX * 2];
    /* The instance's socket directory, writable. */
    at_root(p, sizeof p, root, in->sock_dir);
    {
        /* mkdir -p inside the tmpfs (parents may not exist yet) */
        for (char *s = p + strlen(root) + 1; *s; s++) {
            if (*s != '/') continue;
            *s = 0;
            if (mkdir(p, 0755) < 0 && errno != EEXIST) die("create directory", p);
            *s = '/';
        }
        if (mkdir(p, 0755) < 0 && errno != EEXIST) die("create directory", p);
        if (mount(in->sock_dir, p, NULL, MS_BIND, NULL) < 0) die("bind", in->sock_dir);
    }
    at_root(p, sizeof p, root, "/proc");
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount /proc on", p);
    at_root(p, sizeof p, root, "/.old");
    if (mkdir(p, 0700) < 0 && errno != EEXIST) die("create directory", p);
    if (syscall(SYS_pivot_root, root, p) < 0) die("pivot_root into", root);
    if (chdir("/") < 0) die("chdir", "/");
    if (umount2("/.old", MNT_DETACH) < 0) die("detach the host tree", "/.old");
    rmdir("/.old");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0) die("make read-only", "/");
    if (sethostname(sb->hostname, strlen(sb->hostname)) < 0) die("set host name", sb->hostname);
    /* The init never execs: it must not keep the daemon's descriptors (its
     * listening sockets, the CLI's readiness pipe) alive. */
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0)
        for (int fd = 3; fd < 65536; fd++) close(fd);

    /* Limits. Memory: the cgroup when there is one, else the data segment
     * (which also counts address space reserved but never touched, as
     * sanitizers and JITs do: so only as the fallback). */
    if (!sb->cgmode) set_limit(RLIMIT_DATA, (rlim_t)sb->c.memory_mb << 20, "RLIMIT_DATA");
    set_limit(RLIMIT_NPROC, (rlim_t)sb->c.pids_max * (rlim_t)sb->c.max_instances, "RLIMIT_NPROC");
    set_limit(RLIMIT_NOFILE, (rlim_t)sb->c.nofile, "RLIMIT_NOFILE");
    set_limit(RLIMIT_FSIZE, (rlim_t)sb->c.fsize_mb << 20, "RLIMIT_FSIZE");
    set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
    set_limit(RLIMIT_MEMLOCK, 64 << 10, "RLIMIT_MEMLOCK");

    /* No capabilities: empty the bounding set, then leave uid 0 (which
     * clears the permitted, effective and ambient sets). */
    for (int cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) die("drop capabilities", "");
    gid_t g = sb->gid;
    if (syscall(SYS_setgroups, 1, &g) < 0) die("set groups for", sb->user);
    if (syscall(SYS_setresgid, sb->gid, sb->gid, sb->gid) < 0) die("switch to the group of", sb->user);
    if (syscall(SYS_setresuid, sb->uid, sb->uid, sb->uid) < 0) die("switch to the user", sb->user);
    /* A daemon dying in the moment between the uid change and this call
     * would leave the instance running; the window is a few system calls. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) die("set the parent-death signal", "");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("set", "no_new_privs");
    struct sock_fprog prog = {.len = sb->bpf_len[0], .filter = sb->bpf[0]};
    /* FLAG_LOG: the kernel logs each refusal (type=SECCOMP, with the system
     * call and pid) to its audit log; older kernels load it without. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, &prog) < 0 &&
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        die("load the seccomp filter", "");
    struct sock_fprog quiet = {.len = sb->bpf_len[1], .filter = sb->bpf[1]};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &quiet) < 0) die("load the seccomp filter", "(clone3)");
#ifdef __x86_64__
    /* x32 system calls report the x86_64 architecture with bit 30 set in the
     * number, which the filters above would let through: refuse them all. */
    struct sock_filter x32[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog x32prog = {.len = sizeof x32 / sizeof *x32, .filter = x32};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &x32prog) < 0) die("load the seccomp filter", "(x32)");
#endif
    if (workdir && chdir(workdir) < 0) die("chdir to", workdir);

    /* Block the forwarded signals while forking, so none is lost. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
    if (child < 0) die("start the instance", "");
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 0;
    }
    init_child = child;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0) {
            if (errno == EINTR) continue;
            _exit(125);
        }
        if (w != child) continue;                       /* an orphan, reaped */
        /* Leaving ends the namespace: the kernel kills what is left in it. */
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
}

int sandbox_status(int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) > 128 && WEXITSTATUS(status) < 128 + 65)
        return (WEXITSTATUS(status) - 128) & 0x7f;     /* as if killed by that signal */
    return status;
}

int sandbox_explain(sandbox *sb, int id, int status, char *out, size_t outlen)
{
    if (id < 1 || id >= SB_MAX_INST) return 0;
    sb_inst *in = &sb->inst[id];
    char p[2600];
    if (sb->cgmode) {
        if (sb->cgmode == 2) snprintf(p, sizeof p, "%s/memory.events", in->cg[0]);
        else snprintf(p, sizeof p, "%s/memory.oom_control", in->cg[0]);
        long long oom = read_key(p, "oom_kill");
        if (oom > in->oom_base && in->oom_base >= 0) {
            in->oom_base = oom;
            snprintf(out, outlen, "rule=memory reason=\"the instance went over its memory limit of %d MB "
                     "(instance_class) and the kernel killed it\"", sb->c.memory_mb);
            return 1;
        }
    }
    if (WIFSIGNALED(status)) {
        int s = WTERMSIG(status);
        if (s == SIGXFSZ) {
            snprintf(out, outlen, "rule=file-size reason=\"the instance wrote a file larger than %d MB\"", sb->c.fsize_mb);
            return 1;
        }
        if (s == SIGSYS) {
            snprintf(out, outlen, "rule=seccomp reason=\"the instance made a system call the sandbox forbids\"");
            return 1;
        }
        if (s == SIGKILL && !sb->cgmode) {
            snprintf(out, outlen, "rule=memory reason=\"the instance was killed (signal 9), most likely for "
                     "memory over its %d MB limit\"", sb->c.memory_mb);
            return 1;
        }
    }
    if (sb->cgmode) {
        snprintf(p, sizeof p, "%s/pids.events", in->cg[sb->cgmode == 2 ? 0 : 1]);
        long long mx = read_key(p, "max");
        if (mx > in->pids_base && in->pids_base >= 0) {
            in->pids_base = mx;
            snprintf(out, outlen, "rule=pids reason=\"the instance reached its limit of %d processes and "
                     "threads; forks were refused\"", sb->c.pids_max);
            return 2;
        }
    }
    return 0;
}

void sandbox_release(sandbox *sb, int id)
{
    if (id < 1 || id >= SB_MAX_INST) return;
    sb_inst *in = &sb->inst[id];
    close_procs(in);
    for (int h = 0; h < 2; h++) {
        if (!in->cg[h][0]) continue;
        /* The namespace's last processes may take a moment to go. */
        for (int t = 0; t < 50 && rmdir(in->cg[h]) < 0 && errno == EBUSY; t++) usleep(10000);
        in->cg[h][0] = 0;
    }
    if (in->root[0]) rmdir(in->root);
    if (in->sock_dir[0]) rmdir(in->sock_dir);
}

void sandbox_free(sandbox *sb)
{
    if (!sb) return;
    for (int i = 1; i < SB_MAX_INST; i++) close_procs(&sb->inst[i]);
    for (size_t i = 0; i < sb->nops; i++) { free(sb->ops[i].src); free(sb->ops[i].dst); }
    free(sb->ops);
    free(sb->bpf[0]);
    free(sb->bpf[1]);
    free(sb->app);
    free(sb->user);
    free(sb);
}
