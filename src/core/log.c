/* log.c - logfmt lines written atomically to one fd. See log.h. */
#include "core/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

static int log_fd = 2;
static volatile log_level log_min = LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_init(int fd, log_level min) { log_fd = fd; log_min = min; }
void log_set_level(log_level min) { log_min = min; }
int log_enabled(log_level lvl) { return lvl >= log_min; }

void logf_(log_level lvl, const char *comp, const char *fmt, ...)
{
    if (lvl < log_min) return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s comp=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     level_names[lvl], comp);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += m;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

const char *log_q(const char *s)
{
    static __thread char bufs[8][512];
    static __thread int next;
    char *b = bufs[next++ & 7];
    size_t o = 0;
    if (!s) s = "";
    b[o++] = '"';
    for (; *s && o < sizeof bufs[0] - 6; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { b[o++] = '\\'; b[o++] = c; }
        else if (c < 0x20 || c == 0x7f) o += snprintf(b + o, 6, "\\x%02x", c);
        else b[o++] = c;
    }
    b[o++] = '"';
    b[o] = 0;
    return b;
}
