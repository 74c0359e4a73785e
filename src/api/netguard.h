/* netguard.h - keeps apps' outbound connections (urlfetch) away from the
 * platform's own internal ports.
 *
 * netguard_check() is asked at connect time, with the address libcurl is
 * about to connect to (so redirects and DNS answers are covered). A
 * destination is refused when it is a local address (loopback, unspecified,
 * or an address of one of this host's interfaces) and its port is
 *   - one named with netguard_deny_port (the API server's), or
 *   - a listening socket owned by a Cyclozzo process: this daemon, the app
 *     daemons recorded under CYCLOZZO_HOME/run/ (app-PORT.state, "pid=" line),
 *     or any process they started (instances),
 * unless the port was named with netguard_allow_port (an app's public router
 * port). Everything else, including ordinary loopback services, is allowed. */
#ifndef CZ_NETGUARD_H
#define CZ_NETGUARD_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct netguard netguard;

netguard *netguard_new(const char *home);
void netguard_free(netguard *g);

/* what: a few words for the refusal, e.g. "the API server". */
void netguard_deny_port(netguard *g, int port, const char *what);
void netguard_allow_port(netguard *g, int port);

/* 0: allowed. 1: refused, with one sentence in why. */
int netguard_check(netguard *g, const struct sockaddr *sa, socklen_t len, char *why, size_t whylen);

#endif
