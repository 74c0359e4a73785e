/* usercmd.h - the account commands of the `cyclozzo` command line:
 * --add-user, --remove-user, --list-users (accounts of src/users). */
#ifndef CZ_USERCMD_H
#define CZ_USERCMD_H

/* Adds or updates EMAIL; the password comes from the terminal (asked twice,
 * not echoed) or, with password_stdin, from the first line of stdin.
 * Each returns the process exit status. */
int usercmd_add(const char *email, int admin, int password_stdin);
int usercmd_remove(const char *email);
int usercmd_list(void);

#endif
