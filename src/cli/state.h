/* state.h - the record of each running app, kept under CYCLOZZO_HOME/run/.
 *
 * One file per app, named app-<port>.state, holding key=value lines (pid,
 * port, host, dir, app, started, log, instances). The daemon writes it
 * atomically when it is ready and whenever its instance count changes, and
 * removes it when it stops; `--status` and `--stop` read it. A file whose pid
 * is gone is stale and is removed by whoever finds it. */
#ifndef CZ_STATE_H
#define CZ_STATE_H

#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    int port;
    char host[64];
    char dir[1024];
    char app[128];
    int64_t started;      /* unix seconds */
    char log[1024];
    int instances;
} app_state;

int  state_write(const app_state *s);               /* 0 or -1 */
int  state_read_port(int port, app_state *s);       /* 0 found and alive, -1 none */
void state_remove(int port);
/* Calls fn for every live app (removing stale files); returns how many. */
int  state_each(void (*fn)(const app_state *s, void *arg), void *arg);
char *state_dir(void);                               /* malloc'ed CYCLOZZO_HOME/run */

#endif
