/* mailcmd.h - the mail commands of the `cyclozzo` command line:
 * --mail-outbox (read an app's kept mail) and --deliver-mail (hand an
 * inbound message to a running app's /_ah/mail/ handler). */
#ifndef CZ_MAILCMD_H
#define CZ_MAILCMD_H

/* Lists the outbox of app, or prints message show_id when not NULL.
 * Each returns the process exit status. */
int mailcmd_outbox(const char *app, const char *show_id);

/* Reads a message from file (NULL or "-": stdin) and POSTs it to the running
 * app's /_ah/mail/ADDRESS as a platform-internal request. */
int mailcmd_deliver(const char *app, const char *address, const char *file);

#endif
