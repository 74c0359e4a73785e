/* usercmd.c - `cyclozzo --add-user/--remove-user/--list-users`. See usercmd.h.
 *
 * Passwords typed at the terminal are read from /dev/tty with echo turned
 * off (restored on every path) and asked twice; scripts pass one line on
 * stdin with --password-stdin. Buffers holding a password are wiped. */
#include "cli/usercmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/util.h"
#include "users/accounts.h"
#include "users/login.h"

/* One line from fd into out (without the newline); length or -1. */
static long read_line(int fd, char *out, size_t outlen)
{
    size_t n = 0;
    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (ch == '\n') break;
        if (n + 1 >= outlen) return -1;
        out[n++] = ch;
    }
    if (n && out[n - 1] == '\r') n--;
    out[n] = 0;
    return (long)n;
}

static long ask(int tty, const char *prompt, char *out, size_t outlen)
{
    struct termios old, quiet;
    ssize_t w = write(tty, prompt, strlen(prompt));
    (void)w;
    int have = tcgetattr(tty, &old) == 0;
    if (have) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(tty, TCSAFLUSH, &quiet);
    }
    long n = read_line(tty, out, outlen);
    if (have) tcsetattr(tty, TCSAFLUSH, &old);
    return n;
}

int usercmd_add(const char *email, int admin, int password_stdin)
{
    char err[512];
    char norm[USERS_EMAIL_MAX + 1];
    if (users_email_normalise(email, norm, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        return 2;
    }
    char pw[USERS_PASSWORD_MAX + 2], pw2[USERS_PASSWORD_MAX + 2];
    long n;
    if (password_stdin) {
        n = read_line(0, pw, sizeof pw);
        if (n < 0) { fprintf(stderr, "cyclozzo: the password is longer than %d characters\n", USERS_PASSWORD_MAX); return 2; }
    } else {
        int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
        if (tty < 0) {
            fprintf(stderr, "cyclozzo: there is no terminal to read the password from; pass it on stdin with --password-stdin\n");
            return 2;
        }
        char prompt[400];
        snprintf(prompt, sizeof prompt, "Password for %s: ", norm);
        n = ask(tty, prompt, pw, sizeof pw);
        long n2 = n >= 0 ? ask(tty, "Again: ", pw2, sizeof pw2) : -1;
        close(tty);
        int same = n >= 0 && n2 == n && strcmp(pw, pw2) == 0;
        OPENSSL_cleanse(pw2, sizeof pw2);
        if (n < 0) { fprintf(stderr, "cyclozzo: the password is longer than %d characters\n", USERS_PASSWORD_MAX); return 2; }
        if (!same) {
            OPENSSL_cleanse(pw, sizeof pw);
            fprintf(stderr, "cyclozzo: the two passwords differ; nothing was changed\n");
            return 2;
        }
    }
    int rc = accounts_add(cyclozzo_home(), norm, pw, admin, err, sizeof err);
    OPENSSL_cleanse(pw, sizeof pw);
    if (rc < 0) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    printf("cyclozzo: account %s saved%s\n", norm, admin ? " (administrator)" : "");
    return 0;
}

int usercmd_remove(const char *email)
{
    char err[512];
    if (accounts_remove(cyclozzo_home(), email, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        return 1;
    }
    printf("cyclozzo: account %s removed\n", email);
    return 0;
}

typedef struct { uint8_t key[USERS_KEY_LEN]; } list_arg;

static void print_account(const users_account *a, void *arg)
{
    list_arg *la = arg;
    char id[USERS_ID_LEN + 1];
    users_user_id(la->key, a->email, id);
    printf("%-40s %-5s %s\n", a->email, a->admin ? "yes" : "no", id);
}

int usercmd_list(void)
{
    char err[512];
    list_arg la;
    if (users_key_load(cyclozzo_home(), "users.key", la.key, err, sizeof err) < 0) {
        fprintf(stderr, "cyclozzo: %s\n", err);
        return 1;
    }
    printf("%-40s %-5s %s\n", "EMAIL", "ADMIN", "USER ID");
    int n = accounts_list(cyclozzo_home(), print_account, &la, err, sizeof err);
    OPENSSL_cleanse(&la, sizeof la);
    if (n < 0) { fprintf(stderr, "cyclozzo: %s\n", err); return 1; }
    if (!n) printf("(no accounts; add one with cyclozzo --add-user EMAIL)\n");
    return 0;
}
