/* log.h - structured logging for every Cyclozzo component.
 *
 * One line per event, logfmt style:
 *   ts=2026-11-25T14:00:00.123Z level=info comp=router app=guestbook msg="..." k=v
 * The caller passes the component and a printf format that yields the rest
 * ("key=value ..." pairs, values quoted with log_q() when they may hold spaces).
 * Thread-safe: each line is written with a single write(2). */
#ifndef CZ_LOG_H
#define CZ_LOG_H

#include <stdarg.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Send log lines to fd (default 2) and drop lines below min. */
void log_init(int fd, log_level min);
void log_set_level(log_level min);
int  log_enabled(log_level lvl);

void logf_(log_level lvl, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) do { if (log_enabled(LOG_DEBUG)) logf_(LOG_DEBUG, comp, __VA_ARGS__); } while (0)
#define log_info(comp, ...)  logf_(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...)  logf_(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) logf_(LOG_ERROR, comp, __VA_ARGS__)

/* Quote s for a logfmt value: returns a pointer to a thread-local buffer
 * (one of 8 rotating, each up to 512 bytes; longer values are truncated).
 * Quotes and backslashes are escaped, control bytes become \xNN. */
const char *log_q(const char *s);

#endif
