/* multipart.c - the streaming multipart/form-data parser (see multipart.h).
 *
 * Incoming bytes are appended to a small hold buffer that is processed and
 * compacted on every feed. The body is read as if it began with CRLF, so
 * every delimiter, the first included, is "CRLF--BOUNDARY". States:
 *   PREAMBLE    drop bytes until a delimiter
 *   AFTER       after a delimiter: "--" ends the body; else optional
 *               spaces/tabs and CRLF start a part's headers
 *   HEADERS     gather up to the blank line, parse, call part_begin
 *   BODY        hand content to part_data up to the next delimiter, keeping
 *               back only the last (delimiter length - 1) bytes, which may
 *               be the start of one; at the delimiter call part_end
 *   DONE/ERROR  ignore input */
#include "http/multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"

enum { S_PREAMBLE, S_AFTER, S_HEADERS, S_BODY, S_DONE, S_ERROR };

struct mp_parser {
    int state;
    char delim[MP_MAX_BOUNDARY + 4];   /* "\r\n--" + boundary */
    size_t dlen;
    buf hold;
    const mp_callbacks *cb;
    void *arg;
    size_t nparts;
    char err[200];
};

mp_parser *mp_new(const char *boundary, size_t blen, const mp_callbacks *cb, void *arg)
{
    if (!boundary || blen == 0 || blen > MP_MAX_BOUNDARY) return NULL;
    for (size_t i = 0; i < blen; i++)
        if ((unsigned char)boundary[i] < 0x20 || boundary[i] == 0x7f) return NULL;
    mp_parser *p = xcalloc(1, sizeof *p);
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, blen);
    p->dlen = blen + 4;
    p->cb = cb;
    p->arg = arg;
    p->state = S_PREAMBLE;
    buf_append(&p->hold, "\r\n", 2);
    return p;
}

void mp_free(mp_parser *p)
{
    if (!p) return;
    buf_free(&p->hold);
    free(p);
}

void mp_fail(mp_parser *p, const char *msg)
{
    if (p->state == S_ERROR) return;
    snprintf(p->err, sizeof p->err, "%s", msg);
    p->state = S_ERROR;
}

const char *mp_error(const mp_parser *p) { return p->err[0] ? p->err : "The multipart body is malformed."; }

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A parameter value at s[*i, n): a token or a quoted-string, unescaped into
 * out (size outlen, NUL-terminated). 0 or -1. */
static int param_value(const char *s, size_t n, size_t *i, char *out, size_t outlen)
{
    size_t o = 0;
    if (*i < n && s[*i] == '"') {
        (*i)++;
        while (*i < n && s[*i] != '"') {
            char c = s[*i];
            if (c == '\\') { if (++*i >= n) return -1; c = s[*i]; }
            if (o + 1 >= outlen) return -1;
            out[o++] = c;
            (*i)++;
        }
        if (*i >= n) return -1;
        (*i)++;
    } else {
        while (*i < n && is_tchar((unsigned char)s[*i])) {
            if (o + 1 >= outlen) return -1;
            out[o++] = s[(*i)++];
        }
        if (o == 0) return -1;
    }
    out[o] = 0;
    return 0;
}

/* Content-Disposition: form-data; name="x"; filename="y". 0 or -1. */
static int parse_disposition(const char *v, size_t n, char *name, size_t namelen, char *fname, size_t fnamelen, int *has_fname)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)v[i])) i++;
    if (!strn_case_eq(v, i, "form-data")) return -1;
    int has_name = 0;
    *has_fname = 0;
    for (;;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        if (i >= n) break;
        if (v[i] != ';') return -1;
        i++;
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        if (i >= n) break;                      /* a trailing ';' */
        size_t ks = i;
        while (i < n && is_tchar((unsigned char)v[i])) i++;
        size_t kl = i - ks;
        if (!kl) return -1;
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        if (i >= n || v[i] != '=') return -1;
        i++;
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        char tmp[1024];
        if (param_value(v, n, &i, tmp, sizeof tmp) < 0) return -1;
        if (strn_case_eq(v + ks, kl, "name")) { snprintf(name, namelen, "%s", tmp); has_name = 1; }
        else if (strn_case_eq(v + ks, kl, "filename")) { snprintf(fname, fnamelen, "%s", tmp); *has_fname = 1; }
    }
    return has_name ? 0 : -1;
}

/* The header block hold[0, hl) (lines ending in CRLF, without the blank line). */
static int parse_headers(mp_parser *p, const char *h, size_t hl)
{
    char name[1024] = "", fname[1024] = "";
    char ctype[1024];
    int has_disp = 0, has_fname = 0, has_ct = 0;
    size_t i = 0;
    while (i < hl) {
        const char *eol = memchr(h + i, '\n', hl - i);
        if (!eol || eol == h + i || eol[-1] != '\r') { mp_fail(p, "A part's header line does not end in CRLF."); return -1; }
        const char *line = h + i;
        size_t ll = (size_t)(eol - 1 - line);
        i = (size_t)(eol + 1 - h);
        if (ll == 0 || line[0] == ' ' || line[0] == '\t') { mp_fail(p, "A part has a folded or empty header line."); return -1; }
        size_t c = 0;
        while (c < ll && is_tchar((unsigned char)line[c])) c++;
        if (c == 0 || c >= ll || line[c] != ':') { mp_fail(p, "A part has a header line without a name and a colon."); return -1; }
        for (size_t k = 0; k < ll; k++)
            if ((unsigned char)line[k] < 0x20 && line[k] != '\t') { mp_fail(p, "A part's header has a control character."); return -1; }
        const char *v = line + c + 1;
        size_t vl = ll - c - 1;
        while (vl && (*v == ' ' || *v == '\t')) { v++; vl--; }
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
        if (strn_case_eq(line, c, "content-disposition")) {
            if (has_disp) { mp_fail(p, "A part has two Content-Disposition headers."); return -1; }
            has_disp = 1;
            if (parse_disposition(v, vl, name, sizeof name, fname, sizeof fname, &has_fname) < 0) {
                mp_fail(p, "A part's Content-Disposition is not form-data with a name.");
                return -1;
            }
        } else if (strn_case_eq(line, c, "content-type")) {
            if (vl >= sizeof ctype) { mp_fail(p, "A part's Content-Type is too long."); return -1; }
            memcpy(ctype, v, vl);
            ctype[vl] = 0;
            has_ct = 1;
        }
    }
    if (!has_disp) { mp_fail(p, "A part has no Content-Disposition header."); return -1; }
    if (++p->nparts > MP_MAX_PARTS) { mp_fail(p, "The form has too many parts."); return -1; }
    mp_part part = {.head = h, .head_len = hl, .name = name, .filename = has_fname ? fname : NULL,
                    .content_type = has_ct ? ctype : NULL};
    if (p->cb->part_begin && p->cb->part_begin(p->arg, &part) < 0) { mp_fail(p, "The upload was refused."); return -1; }
    return 0;
}

static int emit(mp_parser *p, const char *d, size_t n)
{
    if (!n || !p->cb->part_data) return 0;
    if (p->cb->part_data(p->arg, d, n) < 0) { mp_fail(p, "The upload was refused."); return -1; }
    return 0;
}

/* Process what is held; returns when more input is needed or the state is final. */
static void run(mp_parser *p)
{
    buf *h = &p->hold;
    for (;;) {
        const char *d = buf_rp(h);
        size_t n = buf_unread(h);
        switch (p->state) {
        case S_PREAMBLE: {
            const char *f = memmem(d, n, p->delim, p->dlen);
            if (!f) {
                if (n >= p->dlen) buf_consume(h, n - (p->dlen - 1));
                return;
            }
            buf_consume(h, (size_t)(f - d) + p->dlen);
            p->state = S_AFTER;
            continue;
        }
        case S_AFTER: {
            if (n < 2) return;
            if (d[0] == '-' && d[1] == '-') { p->state = S_DONE; buf_reset(h); return; }
            size_t i = 0;
            while (i < n && (d[i] == ' ' || d[i] == '\t')) i++;
            if (i > 64) { mp_fail(p, "A delimiter line has too much padding."); return; }
            if (i + 2 > n) return;
            if (d[i] != '\r' || d[i + 1] != '\n') { mp_fail(p, "A delimiter is not followed by CRLF."); return; }
            buf_consume(h, i + 2);
            p->state = S_HEADERS;
            continue;
        }
        case S_HEADERS: {
            if (n >= 2 && d[0] == '\r' && d[1] == '\n') {
                mp_fail(p, "A part has no Content-Disposition header.");
                return;
            }
            const char *f = memmem(d, n, "\r\n\r\n", 4);
            if (!f) {
                if (n > MP_MAX_HEAD) mp_fail(p, "A part's headers are longer than 16 KiB.");
                return;
            }
            size_t hl = (size_t)(f - d) + 2;
            if (hl > MP_MAX_HEAD) { mp_fail(p, "A part's headers are longer than 16 KiB."); return; }
            if (parse_headers(p, d, hl) < 0) return;
            buf_consume(h, hl + 2);
            p->state = S_BODY;
            continue;
        }
        case S_BODY: {
            const char *f = memmem(d, n, p->delim, p->dlen);
            if (f) {
                if (emit(p, d, (size_t)(f - d)) < 0) return;
                buf_consume(h, (size_t)(f - d) + p->dlen);
                if (p->cb->part_end && p->cb->part_end(p->arg) < 0) { mp_fail(p, "The upload was refused."); return; }
                p->state = S_AFTER;
                continue;
            }
            if (n >= p->dlen) {
                size_t safe = n - (p->dlen - 1);
                /* Keep back a possible delimiter start only from the last CR on. */
                const char *cr = memchr(d + safe, '\r', n - safe);
                if (!cr) safe = n;
                else safe = (size_t)(cr - d);
                if (emit(p, d, safe) < 0) return;
                buf_consume(h, safe);
            }
            return;
        }
        default:
            return;
        }
    }
}

int mp_feed(mp_parser *p, const char *data, size_t n)
{
    if (p->state == S_ERROR) return MP_ERR;
    if (p->state == S_DONE) return MP_DONE;
    buf_compact(&p->hold);
    buf_append(&p->hold, data, n);
    run(p);
    if (p->state == S_ERROR) { buf_reset(&p->hold); return MP_ERR; }
    return p->state == S_DONE ? MP_DONE : MP_OK;
}

int mp_finish(mp_parser *p)
{
    if (p->state == S_DONE) return MP_DONE;
    if (p->state != S_ERROR) mp_fail(p, p->state == S_PREAMBLE ? "The body has no multipart delimiter for its boundary."
                                               : "The multipart body ends before its closing delimiter.");
    return MP_ERR;
}

int mp_content_type_boundary(const char *ct, size_t n, const char **b, size_t *blen)
{
    size_t i = 0;
    while (i < n && (ct[i] == ' ' || ct[i] == '\t')) i++;
    size_t ts = i;
    while (i < n && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t') i++;
    if (!strn_case_eq(ct + ts, i - ts, "multipart/form-data")) return -1;
    while (i < n) {
        while (i < n && (ct[i] == ' ' || ct[i] == '\t' || ct[i] == ';')) i++;
        size_t ks = i;
        while (i < n && is_tchar((unsigned char)ct[i])) i++;
        size_t kl = i - ks;
        if (!kl) return -1;
        if (i >= n || ct[i] != '=') return -1;
        i++;
        const char *vs;
        size_t vl;
        if (i < n && ct[i] == '"') {
            vs = ct + ++i;
            while (i < n && ct[i] != '"') { if (ct[i] == '\\') return -1; i++; }
            if (i >= n) return -1;
            vl = (size_t)(ct + i - vs);
            i++;
        } else {
            vs = ct + i;
            while (i < n && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t') i++;
            vl = (size_t)(ct + i - vs);
        }
        if (strn_case_eq(ct + ks, kl, "boundary")) {
            if (vl == 0 || vl > MP_MAX_BOUNDARY) return -1;
            for (size_t k = 0; k < vl; k++)
                if ((unsigned char)vs[k] < 0x20 || vs[k] == 0x7f) return -1;
            *b = vs;
            *blen = vl;
            return 0;
        }
    }
    return -1;
}
