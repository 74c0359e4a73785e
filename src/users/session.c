/* session.c - signing and checking the session cookie. See session.h.
 *
 * The MAC covers "v1:EMAIL:ADMIN:EXPIRES:STAMP" exactly as sent, so there is no
 * canonicalisation to get wrong: any changed byte fails the constant-time
 * comparison. After the MAC, the fields are parsed strictly (the email must
 * be normalised already, ADMIN 0 or 1, EXPIRES digits) and the expiry is
 * checked against the caller's clock. */
#include "users/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define PREFIX "v1:"
#define MAC_HEX 64

static void mac_hex(const uint8_t key[USERS_KEY_LEN], const char *p, size_t n, char out[MAC_HEX + 1])
{
    uint8_t m[32];
    unsigned int ml = sizeof m;
    HMAC(EVP_sha256(), key, USERS_KEY_LEN, (const unsigned char *)p, n, m, &ml);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) { out[2 * i] = hx[m[i] >> 4]; out[2 * i + 1] = hx[m[i] & 15]; }
    out[MAC_HEX] = 0;
}

static int stamp_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= USERS_STAMP_LEN && strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz") == n;
}

int users_session_sign(const uint8_t key[USERS_KEY_LEN], const char *email, int admin, int64_t expires,
                       const char *stamp, char *out, size_t outlen)
{
    char norm[USERS_EMAIL_MAX + 1], e[8];
    if (users_email_normalise(email, norm, e, sizeof e) < 0 || strcmp(norm, email) || expires < 0 || !stamp_ok(stamp))
        return -1;
    int n = snprintf(out, outlen, PREFIX "%s:%d:%lld:%s:", email, admin ? 1 : 0, (long long)expires, stamp);
    if (n < 0 || (size_t)n + MAC_HEX + 1 > outlen || (size_t)n + MAC_HEX > USERS_COOKIE_MAX) return -1;
    mac_hex(key, out, (size_t)n - 1, out + n);
    return 0;
}

int users_session_verify(const uint8_t key[USERS_KEY_LEN], const char *value, size_t len, int64_t now,
                         users_session *s)
{
    if (len > USERS_COOKIE_MAX || len < sizeof PREFIX + MAC_HEX + 5) return 0;
    if (memcmp(value, PREFIX, sizeof PREFIX - 1) != 0) return 0;
    size_t body = len - MAC_HEX - 1;
    if (value[body] != ':') return 0;
    char want[MAC_HEX + 1];
    mac_hex(key, value, body, want);
    if (CRYPTO_memcmp(want, value + body + 1, MAC_HEX) != 0) return 0;

    /* Authentic: now parse "EMAIL:ADMIN:EXPIRES:STAMP". */
    char f[USERS_COOKIE_MAX + 1];
    size_t fl = body - (sizeof PREFIX - 1);
    memcpy(f, value + sizeof PREFIX - 1, fl);
    f[fl] = 0;
    char *c3 = strrchr(f, ':');
    if (!c3 || !stamp_ok(c3 + 1)) return 0;
    *c3 = 0;
    char *c2 = strrchr(f, ':');
    if (!c2) return 0;
    *c2 = 0;
    char *c1 = strrchr(f, ':');
    if (!c1 || c2 != c1 + 2 || (c1[1] != '0' && c1[1] != '1')) return 0;
    *c1 = 0;
    const char *ex = c2 + 1;
    if (!*ex || strlen(ex) > 18) return 0;
    int64_t expires = 0;
    for (const char *p = ex; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        expires = expires * 10 + (*p - '0');
    }
    char norm[USERS_EMAIL_MAX + 1], e[8];
    if (users_email_normalise(f, norm, e, sizeof e) < 0 || strcmp(norm, f)) return 0;
    if (expires <= now) return 0;
    memcpy(s->email, norm, strlen(norm) + 1);
    s->admin = c1[1] == '1';
    s->expires = expires;
    memcpy(s->stamp, c3 + 1, strlen(c3 + 1) + 1);
    return 1;
}

int users_cookie_find(const char *hdr, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < len) {
        while (i < len && (hdr[i] == ' ' || hdr[i] == '\t' || hdr[i] == ';')) i++;
        size_t ns = i;
        while (i < len && hdr[i] != '=' && hdr[i] != ';') i++;
        size_t ne = i;
        while (ne > ns && (hdr[ne - 1] == ' ' || hdr[ne - 1] == '\t')) ne--;
        if (i >= len || hdr[i] != '=') continue;
        i++;
        while (i < len && (hdr[i] == ' ' || hdr[i] == '\t')) i++;
        size_t vs = i;
        while (i < len && hdr[i] != ';') i++;
        size_t ve = i;
        while (ve > vs && (hdr[ve - 1] == ' ' || hdr[ve - 1] == '\t')) ve--;
        if (ve - vs >= 2 && hdr[vs] == '"' && hdr[ve - 1] == '"') { vs++; ve--; }
        if (ne - ns == nl && memcmp(hdr + ns, name, nl) == 0) {
            *val = hdr + vs;
            *vlen = ve - vs;
            return 1;
        }
    }
    return 0;
}

size_t users_cookie_without(const char *hdr, size_t len, const char *name, char *out)
{
    size_t nl = strlen(name), o = 0, i = 0;
    while (i < len) {
        while (i < len && (hdr[i] == ' ' || hdr[i] == '\t' || hdr[i] == ';')) i++;
        size_t s = i;
        while (i < len && hdr[i] != ';') i++;
        size_t e = i;
        while (e > s && (hdr[e - 1] == ' ' || hdr[e - 1] == '\t')) e--;
        if (e == s) continue;
        size_t k = s;
        while (k < e && hdr[k] != '=') k++;
        size_t ke = k;
        while (ke > s && (hdr[ke - 1] == ' ' || hdr[ke - 1] == '\t')) ke--;
        if (ke - s == nl && memcmp(hdr + s, name, nl) == 0) continue;
        if (o) { out[o++] = ';'; out[o++] = ' '; }
        memcpy(out + o, hdr + s, e - s);
        o += e - s;
    }
    out[o] = 0;
    return o;
}
