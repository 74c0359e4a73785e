/* logscmd.h - `cyclozzo --logs APP [--follow]` (an app's request log, one
 * line per request with its app log lines under it) and `cyclozzo
 * --verify-token TOKEN` (check an app_identity access token). */
#ifndef CZ_LOGSCMD_H
#define CZ_LOGSCMD_H

/* Each returns the process exit status. */
int logscmd_show(const char *app, int follow, int count);
int logscmd_verify_token(const char *token);

#endif
