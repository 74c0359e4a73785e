/* venv.c - builds and caches per-app virtualenvs. See venv.h.
 *
 * venv_ensure(): hash requirements.txt (SHA-256 of its bytes); if
 * HOME/venvs/<hash> exists it is complete (it only ever appears by rename)
 * and is reused. Otherwise: remove build directories left by dead processes,
 * copy requirements.txt into HOME/venvs/.build-<hash>.<pid>/, run
 * `/usr/bin/python3 -m venv` there and then its python -m pip install -r on
 * the copy, with the build directory as working directory (pip never sees the
 * app directory, so it cannot write there). pip's combined output is read
 * line by line and logged; the last line is kept for the error sentence.
 * Finally rename() the build directory into place; losing a race with
 * another builder just means using theirs.
 *
 * Virtualenv scripts (bin/pip, console scripts) keep the build path in their
 * #! lines; the runtime only uses lib/python3.X/site-packages and
 * bin/python (a symlink), which do not depend on it. */
#include "instance/venv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include "core/log.h"
#include "core/util.h"

#define VENV_PYTHON "/usr/bin/python3"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* Build directories are ".build-<hash>.<pid>"; remove those whose pid is gone. */
static void remove_stale_builds(const char *venvs)
{
    DIR *d = opendir(venvs);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".build-", 7)) continue;
        const char *dot = strrchr(e->d_name, '.');
        long pid = dot && dot != e->d_name ? strtol(dot + 1, NULL, 10) : 0;
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) continue;
        char *p = xasprintf("%s/%s", venvs, e->d_name);
        rm_rf(p);
        free(p);
    }
    closedir(d);
}

/* Run argv in cwd with stdout+stderr logged line by line. Returns the exit
 * status (0 ok), or -1 when it could not run. last gets the last line. */
static void keep_last(char *last, size_t lastlen, const char *s)
{
    size_t k = strlen(s);
    if (!lastlen) return;
    if (k >= lastlen) k = lastlen - 1;
    memcpy(last, s, k);
    last[k] = 0;
}

static int run_logged(char *const argv[], const char *cwd, const char *what,
                      char *last, size_t lastlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -1;
    pid_t pid = fork();
    if (pid < 0) { close(pfd[0]); close(pfd[1]); return -1; }
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        if (chdir(cwd) < 0) _exit(126);
        unsetenv("PYTHONPATH");
        unsetenv("PYTHONHOME");
        unsetenv("VIRTUAL_ENV");
        unsetenv("PIP_TARGET");
        unsetenv("PIP_PREFIX");
        unsetenv("PIP_USER");
        execv(argv[0], argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    char line[2048];
    size_t n = 0;
    char chunk[4096];
    for (;;) {
        ssize_t r = read(pfd[0], chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; i++) {
            char ch = chunk[i];
            if (ch != '\n' && ch != '\r') { if (n < sizeof line - 1) line[n++] = ch; continue; }
            line[n] = 0;
            char *s = line;
            while (*s == ' ') s++;
            if (*s) {
                log_info("venv", "msg=%s step=%s", log_q(s), what);
                keep_last(last, lastlen, s);
            }
            n = 0;
        }
    }
    if (n) { line[n] = 0; log_info("venv", "msg=%s step=%s", log_q(line), what); keep_last(last, lastlen, line); }
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return -1;
    hex_encode(md, 32, out);
    return 0;
}

int venv_ensure(const char *home, const char *app_dir, char *venv_out, size_t venv_len,
                char *err, size_t errlen)
{
    if (venv_len) venv_out[0] = 0;
    char *req_path = xasprintf("%s/requirements.txt", app_dir);
    size_t len;
    char *req = read_file(req_path, &len);
    if (!req) {
        int e = errno;
        free(req_path);
        if (e == ENOENT) return 0;          /* no requirements: no virtualenv */
        set_err(err, errlen, "cannot read %s/requirements.txt: %s", app_dir, strerror(e));
        return -1;
    }
    free(req_path);

    char hash[65];
    if (sha256_hex(req, len, hash) < 0) {
        free(req);
        set_err(err, errlen, "cannot hash %s/requirements.txt (OpenSSL SHA-256 failed)", app_dir);
        return -1;
    }
    char *venvs = xasprintf("%s/venvs", home);
    char *final = xasprintf("%s/%s", venvs, hash);
    char *build = NULL;
    int rc = -1;
    struct stat st;
    if (stat(final, &st) == 0 && S_ISDIR(st.st_mode)) {
        log_info("venv", "msg=\"reusing virtualenv\" app_dir=%s venv=%s", log_q(app_dir), log_q(final));
        goto done;
    }
    if (mkdir_p(venvs, 0755) < 0) {
        set_err(err, errlen, "cannot create %s: %s", venvs, strerror(errno));
        goto out;
    }
    remove_stale_builds(venvs);
    build = xasprintf("%s/.build-%s.%d", venvs, hash, (int)getpid());
    rm_rf(build);
    if (mkdir(build, 0755) < 0) {
        set_err(err, errlen, "cannot create %s: %s", build, strerror(errno));
        goto out;
    }
    char *req_copy = xasprintf("%s/requirements.txt", build);
    int w = write_file_atomic(req_copy, req, len, 0644);
    free(req_copy);
    if (w < 0) {
        set_err(err, errlen, "cannot write a copy of requirements.txt into %s: %s", build, strerror(errno));
        goto out;
    }
    log_info("venv", "msg=\"building virtualenv\" app_dir=%s venv=%s", log_q(app_dir), log_q(final));
    char last[512] = "";
    char *env_dir = xasprintf("%s/env", build);
    char *venv_argv[] = {VENV_PYTHON, "-m", "venv", env_dir, NULL};
    int r = run_logged(venv_argv, build, "venv", last, sizeof last);
    if (r != 0) {
        set_err(err, errlen, "%s -m venv failed for %s (%s); is python3-venv installed?",
                VENV_PYTHON, app_dir, r < 0 ? strerror(errno) : last[0] ? last : "no output");
        free(env_dir);
        goto out;
    }
    char *py = xasprintf("%s/bin/python", env_dir);
    char *pip_argv[] = {py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                        "--progress-bar", "off", "-r", "../requirements.txt", NULL};
    char *env_cwd = env_dir;
    r = run_logged(pip_argv, env_cwd, "pip", last, sizeof last);
    free(py);
    free(env_dir);
    if (r != 0) {
        set_err(err, errlen, "pip could not install %s/requirements.txt: %s", app_dir,
                r < 0 ? strerror(errno) : last[0] ? last : "pip failed without output");
        goto out;
    }
    /* the virtualenv is build/env; move it into place, then drop the rest */
    char *env_src = xasprintf("%s/env", build);
    if (rename(env_src, final) < 0) {
        int e = errno;
        free(env_src);
        if (!(e == ENOTEMPTY || e == EEXIST) || stat(final, &st) < 0) {
            set_err(err, errlen, "cannot move the new virtualenv into %s: %s", final, strerror(e));
            goto out;
        }
        log_info("venv", "msg=\"another build finished first; using it\" venv=%s", log_q(final));
    } else {
        free(env_src);
        log_info("venv", "msg=\"virtualenv ready\" app_dir=%s venv=%s", log_q(app_dir), log_q(final));
    }
done:
    if (strlen(final) >= venv_len) {
        set_err(err, errlen, "virtualenv path %s is too long", final);
        goto out;
    }
    strcpy(venv_out, final);
    rc = 0;
out:
    if (build) { rm_rf(build); free(build); }
    free(req);
    free(venvs);
    free(final);
    return rc;
}
