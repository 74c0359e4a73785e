/* secret.h - per-installation secret keys under CYCLOZZO_HOME/secrets/.
 *
 * A key is KEYLEN random bytes kept as hex in one file (mode 0600). The first
 * caller creates it: a private temporary file is written, synced and link()ed
 * into place, which fails if a concurrent creator won, so every process ends
 * up with the same key. A key file that others may read, that is not a
 * regular file, or that does not hold exactly 2*KEYLEN hex digits is refused.
 * The API tickets, the scheduler's internal token, session cookies and user
 * ids each take their key from here. */
#ifndef CZ_SECRET_H
#define CZ_SECRET_H

#include <stddef.h>
#include <stdint.h>

/* Load (creating if missing) HOME/secrets/NAME into key[0, keylen); `what`
 * names the key in error sentences ("ticket key"). 0, or -1 with err set. */
int secret_key_load(const char *home, const char *name, const char *what,
                    uint8_t *key, size_t keylen, char *err, size_t errlen);

#endif
