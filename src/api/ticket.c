/* ticket.c - stateless, unforgeable API security tickets. See ticket.h for
 * the format and the trust model.
 *
 * Minting encodes the claims as a protocol buffer, base64url-encodes it and
 * appends an HMAC-SHA256 tag over the prefix and payload text. Verification
 * checks the shape, recomputes the tag and compares it in constant time
 * before it decodes a single payload byte, then checks expiry and the app. */
#include "api/ticket.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/buf.h"
#include "core/secret.h"
#include "core/util.h"
#include "proto/pb.h"

#define PREFIX "cz1."
#define PREFIX_LEN 4
#define TAG_LEN 32
#define TAG_B64_LEN 43   /* base64url of 32 bytes, unpadded */

int64_t ticket_now_ms(void) { return wall_us() / 1000; }

/* ---- the key ---- */

int ticket_key_load(const char *home, ticket_key *key, char *err, size_t errlen)
{
    return secret_key_load(home, "ticket.key", "ticket key", key->k, TICKET_KEY_LEN, err, errlen);
}

/* ---- mint ---- */

static void mac(const ticket_key *key, const char *text, size_t n, uint8_t out[TAG_LEN])
{
    unsigned int len = TAG_LEN;
    HMAC(EVP_sha256(), key->k, TICKET_KEY_LEN, (const unsigned char *)text, n, out, &len);
}

static int check_field(const char *name, const char *s, size_t max, char *err, size_t errlen)
{
    size_t n = strnlen(s, max + 1);
    if (n > max) { set_err(err, errlen, "ticket %s is longer than %zu bytes", name, max); return -1; }
    return 0;
}

char *ticket_mint(const ticket_key *key, const ticket_claims *c, int64_t now_ms,
                  int64_t ttl_s, char *err, size_t errlen)
{
    if (!c->app_id[0]) { set_err(err, errlen, "a ticket needs an app id"); return NULL; }
    if (ttl_s < 1 || ttl_s > TICKET_MAX_TTL_S) {
        set_err(err, errlen, "ticket lifetime %lld s is outside 1..%d s", (long long)ttl_s, TICKET_MAX_TTL_S);
        return NULL;
    }
    if (check_field("app id", c->app_id, TICKET_MAX_APP, err, errlen) < 0 ||
        check_field("version", c->version, TICKET_MAX_VERSION, err, errlen) < 0 ||
        check_field("namespace", c->ns, TICKET_MAX_NS, err, errlen) < 0 ||
        check_field("user email", c->user_email, TICKET_MAX_EMAIL, err, errlen) < 0 ||
        check_field("user id", c->user_id, TICKET_MAX_USER_ID, err, errlen) < 0 ||
        check_field("request id", c->request_id, TICKET_MAX_REQ_ID, err, errlen) < 0)
        return NULL;

    buf payload = BUF_INIT, out = BUF_INIT;
    pb_put_str(&payload, 1, c->app_id);
    if (c->version[0]) pb_put_str(&payload, 2, c->version);
    if (c->ns[0]) pb_put_str(&payload, 3, c->ns);
    if (c->user_email[0]) pb_put_str(&payload, 4, c->user_email);
    if (c->user_id[0]) pb_put_str(&payload, 5, c->user_id);
    if (c->user_is_admin) pb_put_bool(&payload, 6, 1);
    if (c->request_id[0]) pb_put_str(&payload, 7, c->request_id);
    pb_put_int(&payload, 8, now_ms);
    pb_put_int(&payload, 9, now_ms + ttl_s * 1000);

    buf_puts(&out, PREFIX);
    buf_put_b64(&out, payload.data, payload.len, 1);
    uint8_t tag[TAG_LEN];
    mac(key, out.data, out.len, tag);
    buf_putc(&out, '.');
    buf_put_b64(&out, tag, TAG_LEN, 1);
    buf_free(&payload);
    if (out.len > TICKET_MAX_LEN) {
        buf_free(&out);
        set_err(err, errlen, "ticket would be longer than %d bytes", TICKET_MAX_LEN);
        return NULL;
    }
    return buf_detach(&out, NULL);
}

char *ticket_mint_home(const char *home, const ticket_claims *c, int64_t ttl_s,
                       char *err, size_t errlen)
{
    ticket_key key;
    if (ticket_key_load(home, &key, err, errlen) < 0) return NULL;
    char *t = ticket_mint(&key, c, ticket_now_ms(), ttl_s, err, errlen);
    OPENSSL_cleanse(&key, sizeof key);
    return t;
}

/* ---- verify ---- */

static int copy_str(pb_reader *rd, int wt, char *dst, size_t max)
{
    const uint8_t *p;
    size_t n;
    if (pb_bytes(rd, wt, &p, &n) < 0 || n > max || memchr(p, 0, n)) return -1;
    memcpy(dst, p, n);
    dst[n] = 0;
    return 0;
}

static int decode_payload(const uint8_t *p, size_t n, ticket_claims *c)
{
    memset(c, 0, sizeof *c);
    pb_reader rd;
    pb_reader_init(&rd, p, n);
    int have_exp = 0, have_iss = 0;
    uint32_t field;
    int wt, st;
    while ((st = pb_next(&rd, &field, &wt)) == 1) {
        int r;
        switch (field) {
        case 1: r = copy_str(&rd, wt, c->app_id, TICKET_MAX_APP); break;
        case 2: r = copy_str(&rd, wt, c->version, TICKET_MAX_VERSION); break;
        case 3: r = copy_str(&rd, wt, c->ns, TICKET_MAX_NS); break;
        case 4: r = copy_str(&rd, wt, c->user_email, TICKET_MAX_EMAIL); break;
        case 5: r = copy_str(&rd, wt, c->user_id, TICKET_MAX_USER_ID); break;
        case 6: r = pb_bool(&rd, wt, &c->user_is_admin); break;
        case 7: r = copy_str(&rd, wt, c->request_id, TICKET_MAX_REQ_ID); break;
        case 8: r = pb_int64(&rd, wt, &c->issued_ms); have_iss = 1; break;
        case 9: r = pb_int64(&rd, wt, &c->expires_ms); have_exp = 1; break;
        default: r = pb_skip(&rd, wt, field);
        }
        if (r < 0) return -1;
    }
    if (st < 0 || rd.err || !c->app_id[0] || !have_exp || !have_iss) return -1;
    return 0;
}

ticket_status ticket_verify(const ticket_key *key, const char *text, size_t len,
                            int64_t now_ms, const char *expect_app,
                            ticket_claims *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!text || len == 0) {
        set_err(err, errlen, "The API call carried no security ticket.");
        return TICKET_MISSING;
    }
    const char *dot = len > PREFIX_LEN ? memchr(text + PREFIX_LEN, '.', len - PREFIX_LEN) : NULL;
    if (len > TICKET_MAX_LEN || len < PREFIX_LEN || memcmp(text, PREFIX, PREFIX_LEN) != 0 || !dot ||
        (size_t)(text + len - dot - 1) != TAG_B64_LEN) {
        set_err(err, errlen, "The API call's security ticket is malformed.");
        return TICKET_MALFORMED;
    }
    uint8_t want[TAG_LEN];
    buf given = BUF_INIT;
    int bad = buf_get_b64url(&given, dot + 1, TAG_B64_LEN) < 0 || given.len != TAG_LEN;
    if (bad) {
        buf_free(&given);
        set_err(err, errlen, "The API call's security ticket is malformed.");
        return TICKET_MALFORMED;
    }
    mac(key, text, (size_t)(dot - text), want);
    bad = CRYPTO_memcmp(given.data, want, TAG_LEN) != 0;
    buf_free(&given);
    if (bad) {
        set_err(err, errlen, "The API call's security ticket was not issued by this Cyclozzo installation.");
        return TICKET_FORGED;
    }
    const char *p64 = text + PREFIX_LEN;
    buf payload = BUF_INIT;
    ticket_claims c;
    bad = buf_get_b64url(&payload, p64, (size_t)(dot - p64)) < 0 ||
          decode_payload((const uint8_t *)payload.data, payload.len, &c) < 0;
    buf_free(&payload);
    if (bad) {
        set_err(err, errlen, "The API call's security ticket is malformed.");
        return TICKET_MALFORMED;
    }
    if (now_ms >= c.expires_ms) {
        set_err(err, errlen, "The API call's security ticket expired %lld s ago.",
                (long long)((now_ms - c.expires_ms) / 1000));
        return TICKET_EXPIRED;
    }
    if (c.expires_ms - now_ms > (int64_t)TICKET_MAX_TTL_S * 1000 || c.expires_ms < c.issued_ms) {
        set_err(err, errlen, "The API call's security ticket has an impossible lifetime.");
        return TICKET_EXPIRED;
    }
    if (expect_app && strcmp(expect_app, c.app_id) != 0) {
        set_err(err, errlen, "The API call's security ticket belongs to another application.");
        return TICKET_WRONG_APP;
    }
    *out = c;
    return TICKET_OK;
}
