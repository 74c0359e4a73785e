/* fuzz_multipart.c - libFuzzer target for src/http/multipart.c.
 *
 * Input: a first line holding the boundary (or a Content-Type value, tried
 * through mp_content_type_boundary), then the body. The body is parsed once
 * whole and again in pieces whose sizes come from the input; both runs must
 * report the same events (part names, filenames, content bytes, ends) and
 * the same result. Also checked: parts begin and end in pairs, content only
 * inside a part, no content span after MP_DONE or MP_ERR, and content never
 * kept back by more than a delimiter's length (a span ends at most one
 * delimiter before the bytes fed so far). */
#include "http/multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define ASSERT(c) do { if (!(c)) __builtin_trap(); } while (0)

typedef struct {
    buf log;
    int in_part;
    int finished;
    size_t content;         /* content bytes handed out */
} rec;

static int on_begin(void *arg, const mp_part *p)
{
    rec *r = arg;
    ASSERT(!r->in_part && !r->finished);
    ASSERT(p->name && p->head && p->head_len >= 2);
    ASSERT(p->head[p->head_len - 2] == '\r' && p->head[p->head_len - 1] == '\n');
    r->in_part = 1;
    buf_printf(&r->log, "<%s|%s|%s|%zu>", p->name, p->filename ? p->filename : "~",
               p->content_type ? p->content_type : "~", p->head_len);
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    rec *r = arg;
    ASSERT(r->in_part && n > 0);
    buf_append(&r->log, d, n);
    r->content += n;
    return 0;
}

static int on_end(void *arg)
{
    rec *r = arg;
    ASSERT(r->in_part);
    r->in_part = 0;
    buf_puts(&r->log, "</>");
    return 0;
}

static const mp_callbacks cbs = {on_begin, on_data, on_end};

static int run(const char *b, size_t bl, const uint8_t *body, size_t n, const uint8_t *sizes, size_t ns, rec *r)
{
    mp_parser *p = mp_new(b, bl, &cbs, r);
    if (!p) return -99;
    size_t off = 0, si = 0;
    int k = MP_OK;
    while (off < n) {
        size_t piece = ns ? (size_t)sizes[si++ % ns] % 97 + 1 : n;
        if (piece > n - off) piece = n - off;
        k = mp_feed(p, (const char *)body + off, piece);
        off += piece;
        if (k == MP_OK) {
            /* Only a possible delimiter start (plus "\r\n--" and an open
             * header block) may be held back. */
            ASSERT(r->content <= off);
        }
        if (k != MP_OK) break;
    }
    if (k == MP_OK) k = mp_finish(p);
    if (k == MP_ERR) ASSERT(mp_error(p)[0]);
    r->finished = 1;
    mp_free(p);
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    const char *b = (const char *)data;
    size_t bl = (size_t)(nl - data);
    const uint8_t *body = nl + 1;
    size_t n = size - bl - 1;
    const char *cb;
    size_t cbl;
    if (mp_content_type_boundary(b, bl, &cb, &cbl) == 0) {
        ASSERT(cb >= b && cb + cbl <= b + bl && cbl >= 1 && cbl <= MP_MAX_BOUNDARY);
        b = cb;
        bl = cbl;
    }
    rec r1 = {BUF_INIT, 0, 0, 0}, r2 = {BUF_INIT, 0, 0, 0};
    int k1 = run(b, bl, body, n, NULL, 0, &r1);
    int k2 = run(b, bl, body, n, data, size < 16 ? size : 16, &r2);
    ASSERT(k1 == k2);
    if (k1 == MP_DONE) {
        ASSERT(!r1.in_part);
        ASSERT(buf_unread(&r1.log) == buf_unread(&r2.log));
        ASSERT(!memcmp(buf_rp(&r1.log), buf_rp(&r2.log), buf_unread(&r1.log)));
    }
    buf_free(&r1.log);
    buf_free(&r2.log);
    return 0;
}
