/* util.h - small helpers shared by every module: memory, time, files, fds,
 * error strings.
 *
 * Errors are values: functions that can fail take (char *err, size_t errlen)
 * and fill it with one sentence naming what was wrong (set_err). */
#ifndef CZ_UTIL_H
#define CZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int64_t now_ms(void);        /* CLOCK_MONOTONIC, milliseconds */
int64_t now_us(void);        /* CLOCK_MONOTONIC, microseconds */
int64_t wall_us(void);       /* CLOCK_REALTIME, microseconds since epoch */

int   mkdir_p(const char *path, mode_t mode);           /* 0 or -1 (errno) */
char *read_file(const char *path, size_t *len);         /* NUL-terminated; NULL+errno */
int   write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
int   set_nonblock(int fd);
int   set_cloexec(int fd);
void  raise_fd_limit(void);  /* raise RLIMIT_NOFILE soft limit to the hard limit */

/* Cyclozzo's data directory: $CYCLOZZO_HOME, else ~/.cyclozzo (/var/lib/cyclozzo
 * for root). Returned string is static. */
const char *cyclozzo_home(void);

/* ASCII case-insensitive compare of a length-delimited string with a C string. */
int  strn_case_eq(const char *s, size_t n, const char *lit);
/* Random bytes from the kernel; 0 or -1. */
int  random_bytes(void *p, size_t n);
void hex_encode(const uint8_t *in, size_t n, char *out); /* out holds 2n+1 */
/* Hex digits s[0, n) (n even, either case) into n/2 bytes; 0 or -1. */
int  hex_decode(const char *s, size_t n, uint8_t *out);

#endif
