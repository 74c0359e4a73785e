/* applog.h - a request's app log lines, kept while it runs and sent to the
 * logservice (logservice.Flush) when it ends. See applog.c. */
#ifndef CZ_APPLOG_H
#define CZ_APPLOG_H

#include <stddef.h>

/* Start keeping lines for the calling thread's request (ticket = its
 * X-AppEngine-Api-Ticket; none: lines are not kept). */
void applog_begin(const char *ticket, size_t n);
/* Keep one record (Python levelno) of the current request. */
void applog_add(int levelno, const char *msg, size_t len);
/* Send the kept lines (blocking; call without the GIL). */
void applog_end(const char *app_id, const char *rid);

#endif
