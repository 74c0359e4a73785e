/* accounts.h - Cyclozzo's local user accounts, for App Engine's users
 * service (sign-in to `login: required` / `login: admin` handlers).
 *
 * Accounts live in CYCLOZZO_HOME/users/accounts, mode 0600, one line each:
 *
 *     EMAIL ADMIN scrypt$N$r$p$SALT$HASH
 *
 * EMAIL is normalised (lower case) and validated; ADMIN is 0 or 1; the
 * password is hashed with scrypt (OpenSSL EVP_PBE_scrypt, N=2^15, r=8, p=1,
 * 16-byte random salt, 32-byte hash, hex) and compared in constant time.
 * Writers take an flock on users/accounts.lock and replace the file
 * atomically (write, fsync, rename), so readers always see a whole file.
 *
 * User ids are stable per email: 21 decimal digits like App Engine's,
 * from HMAC-SHA256(installation secret, email); the secret is
 * CYCLOZZO_HOME/secrets/users.key (32 random bytes, hex, 0600, created on
 * first use), so an email keeps its id on this installation and ids cannot
 * be guessed elsewhere. */
#ifndef CZ_USERS_ACCOUNTS_H
#define CZ_USERS_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

#define USERS_EMAIL_MAX     254     /* bytes, NUL excluded */
#define USERS_ID_LEN        21      /* digits, NUL excluded */
#define USERS_KEY_LEN       32
#define USERS_PASSWORD_MIN  8
#define USERS_PASSWORD_MAX  1024
#define USERS_STAMP_LEN     16      /* hex digits */

typedef struct {
    char email[USERS_EMAIL_MAX + 1];
    int admin;
    /* First 16 hex digits of SHA-256 of the account's line hash: changes
     * with every password set (new salt), so sessions can be tied to it. */
    char stamp[USERS_STAMP_LEN + 1];
} users_account;

/* Lower-cases and validates an email address (local@domain, ASCII letters,
 * digits and ._%+- in the local part, a dotted domain of letters, digits and
 * hyphens). 0, or -1 with one sentence in err. out holds USERS_EMAIL_MAX+1. */
int users_email_normalise(const char *in, char *out, char *err, size_t errlen);

/* Loads home/secrets/NAME (64 hex digits), creating it (0600, in a 0700
 * directory, atomically) when missing; refuses a file others can read. */
int users_key_load(const char *home, const char *name, uint8_t key[USERS_KEY_LEN], char *err, size_t errlen);

/* The stable 21-digit id of a normalised email under key. */
void users_user_id(const uint8_t key[USERS_KEY_LEN], const char *email, char out[USERS_ID_LEN + 1]);

/* Password hashing: a malloc'd "scrypt$N$r$p$SALT$HASH", or NULL with err. */
char *users_hash_password(const char *password, char *err, size_t errlen);
/* 1 if password matches the encoded hash, 0 if not (or the hash is malformed). */
int users_check_password(const char *encoded, const char *password);

/* Adds EMAIL (or replaces its password and admin flag). */
int accounts_add(const char *home, const char *email, const char *password, int admin, char *err, size_t errlen);
/* Removes EMAIL; -1 with a sentence when there is no such account. */
int accounts_remove(const char *home, const char *email, char *err, size_t errlen);
/* Calls fn for each account in file order; returns the count, or -1 with err.
 * A missing file is no accounts. */
int accounts_list(const char *home, void (*fn)(const users_account *a, void *arg), void *arg,
                  char *err, size_t errlen);
/* Checks a sign-in: 1 and *out filled when email and password match, 0 when
 * they do not (unknown email or wrong password: the same work is done, so
 * timing does not tell them apart), -1 with err when the file is unreadable. */
int accounts_verify(const char *home, const char *email, const char *password, users_account *out,
                    char *err, size_t errlen);
/* Looks an account up without a password: 1 found (*out filled), 0 not, -1 err. */
int accounts_find(const char *home, const char *email, users_account *out, char *err, size_t errlen);

#endif
