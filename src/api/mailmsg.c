/* mailmsg.c - App Engine mail messages: decoding, checks, and the RFC 5322
 * / MIME text (mailmsg.h).
 *
 * Layout of a built message:
 *
 *   From, To, Cc (never Bcc), Reply-To, Subject, Date, Message-ID, the app's
 *   allowed extra headers, MIME-Version, then the body:
 *     - one text part (text/plain or text/html) when there is one body and
 *       no attachment;
 *     - multipart/alternative of text, AMP (text/x-amp-html) and HTML, in
 *       that order (least to most preferred), when there are several;
 *     - multipart/mixed of that body and one part per attachment when there
 *       are attachments (Content-Type from the file name's extension,
 *       base64, Content-ID when given: then inline, else attachment).
 *
 * Text parts are UTF-8: 7bit when pure ASCII with short lines, else
 * base64; line ends are normalised to CRLF. Header values that are not
 * plain short ASCII become RFC 2047 encoded words (UTF-8, "B"), split at
 * character boundaries and folded; file names use RFC 2231 (name*=). CR
 * and LF inside header values become spaces, so no header can be
 * injected. Boundaries are random. */
#include "api/mailmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/util.h"
#include "http/mime.h"
#include "proto/pb.h"

/* ---- decoding ---- */

static int take_str(pb_reader *r, int wt, char **out)
{
    const uint8_t *p;
    size_t n;
    if (pb_bytes(r, wt, &p, &n) < 0) return -1;
    if (memchr(p, 0, n)) return -2;
    free(*out);
    *out = xstrndup((const char *)p, n);
    return 0;
}

static int push_str(pb_reader *r, int wt, char ***arr, size_t *n)
{
    char *s = NULL;
    int rc = take_str(r, wt, &s);
    if (rc < 0) return rc;
    *arr = xrealloc(*arr, (*n + 1) * sizeof **arr);
    (*arr)[(*n)++] = s;
    return 0;
}

static int decode_attachment(pb_reader *r, int wt, mail_message *m)
{
    pb_reader sub;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    mail_attachment a = {0};
    uint32_t f; int w, rc;
    while ((rc = pb_next(&sub, &f, &w)) > 0) {
        if (f == 1) rc = take_str(&sub, w, &a.filename);
        else if (f == 3) rc = take_str(&sub, w, &a.content_id);
        else if (f == 2) {
            const uint8_t *p; size_t n;
            rc = pb_bytes(&sub, w, &p, &n);
            if (rc == 0) { free(a.data); a.data = xmalloc(n ? n : 1); memcpy(a.data, p, n); a.len = n; }
        } else rc = pb_skip(&sub, w, f);
        if (rc < 0) break;
    }
    m->att = xrealloc(m->att, (m->natt + 1) * sizeof *m->att);
    m->att[m->natt++] = a;               /* owned by m from here, even on error */
    return rc < 0 ? rc : 0;
}

static int decode_header(pb_reader *r, int wt, mail_message *m)
{
    pb_reader sub;
    if (pb_sub(r, wt, &sub) < 0) return -1;
    mail_header h = {0};
    uint32_t f; int w, rc;
    while ((rc = pb_next(&sub, &f, &w)) > 0) {
        if (f == 1) rc = take_str(&sub, w, &h.name);
        else if (f == 2) rc = take_str(&sub, w, &h.value);
        else rc = pb_skip(&sub, w, f);
        if (rc < 0) break;
    }
    m->hdr = xrealloc(m->hdr, (m->nhdr + 1) * sizeof *m->hdr);
    m->hdr[m->nhdr++] = h;
    return rc < 0 ? rc : 0;
}

int mailmsg_decode(const uint8_t *in, size_t len, mail_message *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    pb_reader r;
    pb_reader_init(&r, in, len);
    uint32_t f; int wt, rc;
    while ((rc = pb_next(&r, &f, &wt)) > 0) {
        switch (f) {
        case 1: rc = take_str(&r, wt, &m->sender); break;
        case 2: rc = take_str(&r, wt, &m->reply_to); break;
        case 3: rc = push_str(&r, wt, &m->to, &m->nto); break;
        case 4: rc = push_str(&r, wt, &m->cc, &m->ncc); break;
        case 5: rc = push_str(&r, wt, &m->bcc, &m->nbcc); break;
        case 6: rc = take_str(&r, wt, &m->subject); break;
        case 7: rc = take_str(&r, wt, &m->text); break;
        case 8: rc = take_str(&r, wt, &m->html); break;
        case 11: rc = take_str(&r, wt, &m->amp); break;
        case 9: rc = decode_attachment(&r, wt, m); break;
        case 10: rc = decode_header(&r, wt, m); break;
        default: rc = pb_skip(&r, wt, f);
        }
        if (rc == -2) { set_err(err, errlen, "a text field of the message holds a NUL character"); return -1; }
        if (rc < 0) break;
    }
    if (rc < 0 || r.err) { set_err(err, errlen, "the mail Send request could not be parsed"); return -1; }
    return 0;
}

static void free_list(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++) free(a[i]);
    free(a);
}

void mailmsg_free(mail_message *m)
{
    free(m->sender); free(m->reply_to); free(m->subject); free(m->text); free(m->html); free(m->amp);
    free_list(m->to, m->nto); free_list(m->cc, m->ncc); free_list(m->bcc, m->nbcc);
    for (size_t i = 0; i < m->natt; i++) { free(m->att[i].filename); free(m->att[i].data); free(m->att[i].content_id); }
    free(m->att);
    for (size_t i = 0; i < m->nhdr; i++) { free(m->hdr[i].name); free(m->hdr[i].value); }
    free(m->hdr);
    memset(m, 0, sizeof *m);
}

/* ---- addresses ---- */

static int local_char(unsigned char c)
{
    return c > 32 && c < 127 && !strchr("()<>[]:;@\\,\"", c);
}

static int domain_ok(const char *d, size_t n)
{
    if (!n || d[0] == '.' || d[n - 1] == '.' || d[0] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        if (c == '.' && i && d[i - 1] == '.') return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Splits "Name <addr>" into the display name [*np, *np + *nn) and the
 * address [*ap, *ap + *an). */
static void split_addr(const char *s, const char **np, size_t *nn, const char **ap, size_t *an)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    const char *lt = NULL;
    if (n && s[n - 1] == '>') lt = memrchr(s, '<', n);
    if (!lt) { *np = s; *nn = 0; *ap = s; *an = n; return; }
    *ap = lt + 1;
    *an = (size_t)(s + n - 1 - *ap);
    size_t dn = (size_t)(lt - s);
    while (dn && (s[dn - 1] == ' ' || s[dn - 1] == '\t')) dn--;
    if (dn >= 2 && s[0] == '"' && s[dn - 1] == '"') { *np = s + 1; *nn = dn - 2; }
    else { *np = s; *nn = dn; }
}

int mailmsg_addr_spec(const char *addr, char out[MAIL_ADDR_MAX + 1])
{
    const char *np, *ap;
    size_t nn, an;
    split_addr(addr, &np, &nn, &ap, &an);
    if (!an || an > MAIL_ADDR_MAX) return -1;
    const char *at = memrchr(ap, '@', an);
    if (!at || at == ap) return -1;
    for (const char *p = ap; p < at; p++) if (!local_char((unsigned char)*p)) return -1;
    if (!domain_ok(at + 1, (size_t)(ap + an - at - 1))) return -1;
    memcpy(out, ap, an);
    out[an] = 0;
    return 0;
}

/* ---- checks ---- */

int mailmsg_header_allowed(const char *name)
{
    static const char *ok[] = {"Auto-Submitted", "In-Reply-To", "List-Id", "List-Unsubscribe",
                               "List-Unsubscribe-Post", "On-Behalf-Of", "References", "Resent-Date",
                               "Resent-From", "Resent-To", NULL};
    for (int i = 0; ok[i]; i++) if (!strcasecmp(name, ok[i])) return 1;
    return 0;
}

static int ext_blocked(const char *filename)
{
    static const char *no[] = {"ade", "adp", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "ins", "isp",
                               "jse", "lib", "mde", "msc", "msp", "mst", "pif", "scr", "sct", "shb", "sys",
                               "vb", "vbe", "vbs", "vxd", "wsc", "wsf", "wsh", NULL};
    const char *dot = strrchr(filename, '.');
    if (!dot) return 0;
    for (int i = 0; no[i]; i++) if (!strcasecmp(dot + 1, no[i])) return 1;
    return 0;
}

static int check_list(char **a, size_t n, const char *what, char *err, size_t errlen)
{
    char spec[MAIL_ADDR_MAX + 1];
    for (size_t i = 0; i < n; i++)
        if (mailmsg_addr_spec(a[i], spec) < 0) {
            set_err(err, errlen, "The %s address \"%.100s\" is not a valid email address.", what, a[i]);
            return -1;
        }
    return 0;
}

int mailmsg_check(const mail_message *m, int need_recipients, char *err, size_t errlen)
{
    char spec[MAIL_ADDR_MAX + 1];
    if (!m->sender || !*m->sender) { set_err(err, errlen, "The message has no sender."); return MAIL_BAD_REQUEST; }
    if (mailmsg_addr_spec(m->sender, spec) < 0) {
        set_err(err, errlen, "The sender \"%.100s\" is not a valid email address.", m->sender);
        return MAIL_BAD_REQUEST;
    }
    if (m->reply_to && *m->reply_to && mailmsg_addr_spec(m->reply_to, spec) < 0) {
        set_err(err, errlen, "The reply-to \"%.100s\" is not a valid email address.", m->reply_to);
        return MAIL_BAD_REQUEST;
    }
    if (need_recipients && !m->nto && !m->ncc && !m->nbcc) {
        set_err(err, errlen, "The message has no recipients (to, cc or bcc).");
        return MAIL_BAD_REQUEST;
    }
    if (check_list(m->to, m->nto, "to", err, errlen) < 0 || check_list(m->cc, m->ncc, "cc", err, errlen) < 0 ||
        check_list(m->bcc, m->nbcc, "bcc", err, errlen) < 0)
        return MAIL_BAD_REQUEST;
    if (!m->subject) { set_err(err, errlen, "The message has no subject."); return MAIL_BAD_REQUEST; }
    if (!(m->text && *m->text) && !(m->html && *m->html)) {
        set_err(err, errlen, "The message has neither a text nor an HTML body.");
        return MAIL_BAD_REQUEST;
    }
    for (size_t i = 0; i < m->natt; i++) {
        const mail_attachment *a = &m->att[i];
        if (!a->filename || !*a->filename) { set_err(err, errlen, "An attachment has no file name."); return MAIL_BAD_REQUEST; }
        if (ext_blocked(a->filename)) {
            set_err(err, errlen, "The attachment \"%.100s\" has a file type that may not be sent.", a->filename);
            return MAIL_INVALID_ATTACHMENT_TYPE;
        }
        if (a->content_id) {
            size_t l = strlen(a->content_id);
            int ok = l >= 3 && a->content_id[0] == '<' && a->content_id[l - 1] == '>';
            for (size_t j = 1; ok && j + 1 < l; j++) {
                unsigned char c = (unsigned char)a->content_id[j];
                if (c <= 32 || c >= 127 || c == '<' || c == '>') ok = 0;
            }
            if (!ok) {
                set_err(err, errlen, "The content id \"%.100s\" is not of the form <id>.", a->content_id);
                return MAIL_INVALID_CONTENT_ID;
            }
        }
    }
    for (size_t i = 0; i < m->nhdr; i++)
        if (!m->hdr[i].name || !mailmsg_header_allowed(m->hdr[i].name)) {
            set_err(err, errlen, "The header \"%.64s\" may not be set by apps.", m->hdr[i].name ? m->hdr[i].name : "");
            return MAIL_INVALID_HEADER_NAME;
        }
    return MAIL_OK;
}

/* ---- encoding helpers ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(buf *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {B64[v >> 18 & 63], B64[v >> 12 & 63], i + 1 < n ? B64[v >> 6 & 63] : '=', i + 2 < n ? B64[v & 63] : '='};
        buf_append(out, q, 4);
    }
}

void mailmsg_base64_lines(buf *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 57) {           /* 57 bytes = 76 characters */
        b64(out, p + i, n - i < 57 ? n - i : 57);
        buf_puts(out, "\r\n");
    }
}

static int is_plain(const char *s, size_t n, size_t maxlen)
{
    if (n > maxlen) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 127 || (c < 32 && c != '\t')) return 0;
    }
    return 1;
}

/* Length of the longest prefix of s[0, n) of at most max bytes that ends on
 * a UTF-8 character boundary (at least one byte). */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k ? k : max;
}

/* A header value, s[0, n): as is when plain short ASCII, else encoded
 * words folded onto continuation lines. CR/LF never reach the output. */
static void put_hvalue(buf *out, const char *s, size_t n)
{
    char *c = xstrndup(s, n);
    for (char *p = c; *p; p++) if (*p == '\r' || *p == '\n') *p = ' ';
    if (is_plain(c, n, 900)) { buf_append(out, c, n); free(c); return; }
    size_t off = 0;
    int first = 1;
    while (off < n) {
        size_t k = utf8_cut(c + off, n - off, 45);
        if (!first) buf_puts(out, "\r\n ");
        buf_puts(out, "=?UTF-8?B?");
        b64(out, (const uint8_t *)c + off, k);
        buf_puts(out, "?=");
        off += k;
        first = 0;
    }
    free(c);
}

/* One address for a header: display name quoted or encoded, then <addr>. */
static void put_addr(buf *out, const char *a)
{
    const char *np, *ap;
    size_t nn, an;
    split_addr(a, &np, &nn, &ap, &an);
    if (nn) {
        if (is_plain(np, nn, 200)) {
            buf_putc(out, '"');
            for (size_t i = 0; i < nn; i++) {
                if (np[i] == '"' || np[i] == '\\') buf_putc(out, '\\');
                buf_putc(out, np[i]);
            }
            buf_putc(out, '"');
        } else {
            put_hvalue(out, np, nn);
        }
        buf_puts(out, " <");
        buf_append(out, ap, an);
        buf_putc(out, '>');
    } else {
        buf_append(out, ap, an);
    }
}

static void put_addr_header(buf *out, const char *name, char **a, size_t n)
{
    if (!n) return;
    buf_puts(out, name);
    buf_puts(out, ": ");
    for (size_t i = 0; i < n; i++) {
        if (i) buf_puts(out, ",\r\n ");
        put_addr(out, a[i]);
    }
    buf_puts(out, "\r\n");
}

static void boundary(char out[40])
{
    uint8_t r[12];
    if (random_bytes(r, sizeof r) < 0) memset(r, 0x5a, sizeof r);
    char hex[25];
    hex_encode(r, sizeof r, hex);
    snprintf(out, 40, "=_cz_%s", hex);
}

/* Text with line ends normalised to CRLF. */
static void crlf(buf *out, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\r') { buf_puts(out, "\r\n"); if (p[1] == '\n') p++; }
        else if (*p == '\n') buf_puts(out, "\r\n");
        else buf_putc(out, *p);
    }
}

static int short_ascii_lines(const char *s)
{
    size_t line = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n' || *p == '\r') { line = 0; continue; }
        if (*p >= 127 || (*p < 32 && *p != '\t')) return 0;
        if (++line > 900) return 0;
    }
    return 1;
}

static void text_part(buf *out, const char *ctype, const char *text)
{
    buf norm = BUF_INIT;
    crlf(&norm, text);
    buf_printf(out, "Content-Type: %s; charset=UTF-8\r\n", ctype);
    if (short_ascii_lines(text)) {
        buf_puts(out, "Content-Transfer-Encoding: 7bit\r\n\r\n");
        buf_append(out, norm.data ? norm.data : "", norm.len);
        if (norm.len < 2 || memcmp(norm.data + norm.len - 2, "\r\n", 2)) buf_puts(out, "\r\n");
    } else {
        buf_puts(out, "Content-Transfer-Encoding: base64\r\n\r\n");
        mailmsg_base64_lines(out, (const uint8_t *)(norm.data ? norm.data : ""), norm.len);
    }
    buf_free(&norm);
}

static void body_part(buf *out, const mail_message *m)
{
    int ntext = (m->text && *m->text) + (m->html && *m->html) + (m->amp && *m->amp);
    if (ntext == 1) {
        if (m->text && *m->text) text_part(out, "text/plain", m->text);
        else text_part(out, "text/html", m->html);
        return;
    }
    char b[40];
    boundary(b);
    buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", b);
    if (m->text && *m->text) { buf_printf(out, "--%s\r\n", b); text_part(out, "text/plain", m->text); }
    if (m->amp && *m->amp) { buf_printf(out, "--%s\r\n", b); text_part(out, "text/x-amp-html", m->amp); }
    if (m->html && *m->html) { buf_printf(out, "--%s\r\n", b); text_part(out, "text/html", m->html); }
    buf_printf(out, "--%s--\r\n", b);
}

/* name="x" for plain names, name*=UTF-8''%xx for others (RFC 2231). */
static void put_param(buf *out, const char *param, const char *v)
{
    size_t n = strlen(v);
    if (is_plain(v, n, 200)) {
        buf_printf(out, "%s=\"", param);
        for (size_t i = 0; i < n; i++) {
            if (v[i] == '"' || v[i] == '\\') buf_putc(out, '\\');
            buf_putc(out, v[i] == '\t' ? ' ' : v[i]);
        }
        buf_putc(out, '"');
        return;
    }
    buf_printf(out, "%s*=UTF-8''", param);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
            buf_putc(out, (char)c);
        else
            buf_printf(out, "%%%02X", c);
    }
}

static void attachment_part(buf *out, const mail_attachment *a)
{
    const char *ct = mime_type_for(a->filename);
    size_t cl = strcspn(ct, ";");
    buf_printf(out, "Content-Type: %.*s; ", (int)cl, ct);
    put_param(out, "name", a->filename);
    buf_printf(out, "\r\nContent-Disposition: %s; ", a->content_id ? "inline" : "attachment");
    put_param(out, "filename", a->filename);
    buf_puts(out, "\r\n");
    if (a->content_id) buf_printf(out, "Content-ID: %s\r\n", a->content_id);
    buf_puts(out, "Content-Transfer-Encoding: base64\r\n\r\n");
    mailmsg_base64_lines(out, a->data ? a->data : (const uint8_t *)"", a->len);
}

static void put_date(buf *out, int64_t now_s)
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)now_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
               mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void mailmsg_build(const mail_message *m, char **to_override, size_t nto_override,
                   const char *msgid_domain, int64_t now_s, buf *out)
{
    char *from[1] = {m->sender};
    put_addr_header(out, "From", from, 1);
    if (to_override) put_addr_header(out, "To", to_override, nto_override);
    else put_addr_header(out, "To", m->to, m->nto);
    put_addr_header(out, "Cc", m->cc, m->ncc);
    if (m->reply_to && *m->reply_to) { char *rt[1] = {m->reply_to}; put_addr_header(out, "Reply-To", rt, 1); }
    buf_puts(out, "Subject: ");
    put_hvalue(out, m->subject ? m->subject : "", m->subject ? strlen(m->subject) : 0);
    buf_puts(out, "\r\n");
    put_date(out, now_s);
    uint8_t r[8];
    char hex[17];
    if (random_bytes(r, sizeof r) < 0) memset(r, 0, sizeof r);
    hex_encode(r, sizeof r, hex);
    buf_printf(out, "Message-ID: <%lld.%s@%s>\r\n", (long long)now_s, hex, msgid_domain);
    for (size_t i = 0; i < m->nhdr; i++) {
        buf_printf(out, "%s: ", m->hdr[i].name);
        put_hvalue(out, m->hdr[i].value ? m->hdr[i].value : "", m->hdr[i].value ? strlen(m->hdr[i].value) : 0);
        buf_puts(out, "\r\n");
    }
    buf_puts(out, "MIME-Version: 1.0\r\n");
    if (!m->natt) { body_part(out, m); return; }
    char b[40];
    boundary(b);
    buf_printf(out, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", b);
    buf_printf(out, "--%s\r\n", b);
    body_part(out, m);
    for (size_t i = 0; i < m->natt; i++) {
        buf_printf(out, "--%s\r\n", b);
        attachment_part(out, &m->att[i]);
    }
    buf_printf(out, "--%s--\r\n", b);
}
