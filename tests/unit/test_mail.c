/* test_mail.c - mail messages (src/api/mailmsg.c: addresses, checks, the
 * RFC 5322 / MIME text), the outbox (src/api/outbox.c) and the urlfetch
 * connection guard (src/api/netguard.c). */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/mailmsg.h"
#include "api/netguard.h"
#include "api/outbox.h"
#include "core/util.h"

TEST(addr_spec)
{
    char s[MAIL_ADDR_MAX + 1];
    CHECK_INT(mailmsg_addr_spec("a@example.com", s), 0); CHECK_STR(s, "a@example.com");
    CHECK_INT(mailmsg_addr_spec("Ann Smith <ann.s+x@mail.example.org>", s), 0); CHECK_STR(s, "ann.s+x@mail.example.org");
    CHECK_INT(mailmsg_addr_spec("\"Smith, Ann\" <ann@example.org> ", s), 0); CHECK_STR(s, "ann@example.org");
    CHECK_INT(mailmsg_addr_spec("not an address", s), -1);
    CHECK_INT(mailmsg_addr_spec("@example.org", s), -1);
    CHECK_INT(mailmsg_addr_spec("a@", s), -1);
    CHECK_INT(mailmsg_addr_spec("a@b..c", s), -1);
    CHECK_INT(mailmsg_addr_spec("a b@example.org", s), -1);
    CHECK_INT(mailmsg_addr_spec("a@exa mple.org", s), -1);
    CHECK_INT(mailmsg_addr_spec("<>", s), -1);
}

static mail_message sample(void)
{
    mail_message m = {0};
    m.sender = xstrdup("Bössy <boss@example.com>");
    m.to = xcalloc(2, sizeof *m.to);
    m.to[0] = xstrdup("ann@example.org");
    m.nto = 1;
    m.bcc = xcalloc(1, sizeof *m.bcc);
    m.bcc[0] = xstrdup("secret@example.org");
    m.nbcc = 1;
    m.subject = xstrdup("Grüße aus dem Büro, ein recht langer Betreff damit er gefaltet werden muss\r\nBcc: evil@x.org");
    m.text = xstrdup("line one\nline two\n");
    m.html = xstrdup("<p>hi</p>");
    return m;
}

static int decode_b64(const char *s, size_t n, buf *out)
{
    static const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t v = 0; int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(a, s[i]);
        if (!p || !s[i]) return -1;
        v = v << 6 | (uint32_t)(p - a); bits += 6;
        if (bits >= 8) { bits -= 8; buf_putc(out, (char)(v >> bits & 0xff)); }
    }
    return 0;
}

TEST(check_codes)
{
    mail_message m = sample();
    char err[256];
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_OK);
    m.hdr = xcalloc(1, sizeof *m.hdr);
    m.hdr[0].name = xstrdup("X-Mailer");
    m.hdr[0].value = xstrdup("v");
    m.nhdr = 1;
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_INVALID_HEADER_NAME);
    free(m.hdr[0].name);
    m.hdr[0].name = xstrdup("list-id");        /* names compare case-insensitively */
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_OK);
    m.att = xcalloc(1, sizeof *m.att);
    m.att[0].filename = xstrdup("setup.EXE");
    m.natt = 1;
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_INVALID_ATTACHMENT_TYPE);
    free(m.att[0].filename);
    m.att[0].filename = xstrdup("pic.png");
    m.att[0].content_id = xstrdup("pic");
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_INVALID_CONTENT_ID);
    free(m.att[0].content_id);
    m.att[0].content_id = xstrdup("<pic@x>");
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_OK);
    free(m.to[0]); m.nto = 0; m.nbcc = 0;
    free(m.bcc[0]);
    CHECK_INT(mailmsg_check(&m, 1, err, sizeof err), MAIL_BAD_REQUEST);
    CHECK_INT(mailmsg_check(&m, 0, err, sizeof err), MAIL_OK);    /* SendToAdmins needs none */
    free(m.text); m.text = NULL; free(m.html); m.html = NULL;
    CHECK_INT(mailmsg_check(&m, 0, err, sizeof err), MAIL_BAD_REQUEST);
    mailmsg_free(&m);
}

TEST(build_layout)
{
    mail_message m = sample();
    m.att = xcalloc(1, sizeof *m.att);
    m.att[0].filename = xstrdup("Bericht Ü.pdf");
    m.att[0].data = xmalloc(100);
    memset(m.att[0].data, 0xAB, 100);
    m.att[0].len = 100;
    m.natt = 1;
    buf out = BUF_INIT;
    mailmsg_build(&m, NULL, 0, "app.appspotmail.com", 1764090000, &out);
    char *s = buf_cstr(&out);
    /* every line ends in CRLF, none is longer than 998 */
    size_t line = 0;
    int bare = 0, longest = 0;
    for (size_t i = 0; i < out.len; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) bare = 1;
        if (s[i] == '\r' && s[i + 1] != '\n') bare = 1;
        if (s[i] == '\n') { if ((int)line > longest) longest = (int)line; line = 0; } else line++;
    }
    CHECK(!bare);
    CHECK(longest <= 998);
    char *end = strstr(s, "\r\n\r\n");
    CHECK(end != NULL);
    size_t hlen = (size_t)(end - s);
    /* headers: no Bcc, no injected header, encoded subject that decodes back */
    CHECK(!memmem(s, out.len, "secret@example.org", 18));
    CHECK(!memmem(s, hlen, "\r\nBcc:", 6));
    CHECK(memmem(s, hlen, "\r\nDate: Tue, 25 Nov 2025 17:00:00 +0000\r\n", 41) != NULL);
    CHECK(strncmp(s, "From: =?UTF-8?B?", 16) == 0);
    char *subj = strstr(s, "\r\nSubject: ");
    CHECK(subj != NULL);
    if (subj) {
        buf dec = BUF_INIT;
        char *p = subj + 11;
        while (p && !strncmp(p, "=?UTF-8?B?", 10)) {
            char *q = strstr(p + 10, "?=");
            if (!q) break;
            decode_b64(p + 10, (size_t)(q - p - 10), &dec);
            p = !strncmp(q + 2, "\r\n ", 3) ? q + 5 : NULL;
        }
        CHECK_STR(buf_cstr(&dec), "Grüße aus dem Büro, ein recht langer Betreff damit er gefaltet werden muss  Bcc: evil@x.org");
        buf_free(&dec);
    }
    CHECK(memmem(s, out.len, "Content-Type: multipart/mixed; boundary=\"=_cz_", 46) != NULL);
    CHECK(memmem(s, out.len, "Content-Type: multipart/alternative;", 36) != NULL);
    CHECK(memmem(s, out.len, "Content-Type: application/pdf; name*=UTF-8''Bericht%20%C3%9C.pdf", 64) != NULL);
    CHECK(memmem(s, out.len, "line one\r\nline two\r\n", 20) != NULL);
    buf_free(&out);
    mailmsg_free(&m);
}

TEST(base64_lines)
{
    uint8_t d[200];
    for (int i = 0; i < 200; i++) d[i] = (uint8_t)i;
    buf out = BUF_INIT;
    mailmsg_base64_lines(&out, d, sizeof d);
    char *s = buf_cstr(&out);
    CHECK(strncmp(s, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\n", 78) == 0);
    buf dec = BUF_INIT;
    for (char *l = s; *l;) {
        char *e = strstr(l, "\r\n");
        CHECK(e && e - l <= 76);
        if (!e) break;
        decode_b64(l, (size_t)(e - l), &dec);
        l = e + 2;
    }
    CHECK_INT(dec.len, 200);
    CHECK(dec.len == 200 && !memcmp(dec.data, d, 200));
    buf_free(&dec);
    buf_free(&out);
}

static int listed;
static void count_entry(const outbox_entry *e, void *arg)
{
    listed++;
    CHECK_STR(e->from, "a@app.appspotmail.com");
    CHECK_STR(e->to, "x@example.org, y@example.org");
    CHECK_STR(e->subject, "hello  there");
    CHECK_STR(e->status, "held");
    CHECK_INT(e->size, 5);
}

TEST(outbox_roundtrip)
{
    char tmpl[] = "/tmp/cz-test-mail-XXXXXX";
    char *home = mkdtemp(tmpl);
    CHECK(home != NULL);
    if (!home) return;
    char id[OUTBOX_ID_MAX + 1], err[256];
    char *rcpt[] = {"x@example.org", "y@example.org"};
    CHECK_INT(outbox_put(home, "app", "a@app.appspotmail.com", rcpt, 2, "hello\r\nthere", "held", "12345", 5, id, err, sizeof err), 0);
    listed = 0;
    CHECK_INT(outbox_list(home, "app", count_entry, NULL, err, sizeof err), 1);
    CHECK_INT(listed, 1);
    size_t len;
    char *m = outbox_read(home, "app", id, &len, err, sizeof err);
    CHECK(m && len == 5 && !memcmp(m, "12345", 5));
    free(m);
    CHECK(outbox_read(home, "app", "../../etc/passwd", &len, err, sizeof err) == NULL);
    CHECK(outbox_read(home, "app", "20200101T000000Z-00000000", &len, err, sizeof err) == NULL);
    CHECK_INT(outbox_list(home, "other", count_entry, NULL, err, sizeof err), 0);
    CHECK_INT(outbox_list(home, "../x", count_entry, NULL, err, sizeof err), -1);
    char *cmd = xasprintf("rm -rf '%s'", home);
    CHECK_INT(system(cmd), 0);
    free(cmd);
}

static struct sockaddr_in v4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

TEST(netguard_ports)
{
    netguard *g = netguard_new("/nonexistent");
    char why[256];
    /* a port this very process listens on is the platform's */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4("127.0.0.1", 0);
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_INT(listen(fd, 1), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    int port = ntohs(a.sin_port);
    struct sockaddr_in d = v4("127.0.0.1", port);
    CHECK_INT(netguard_check(g, (struct sockaddr *)&d, sizeof d, why, sizeof why), 1);
    CHECK(strstr(why, "internal port 127.0.0.1:") != NULL);
    d = v4("127.0.0.2", port);                  /* any loopback address */
    CHECK_INT(netguard_check(g, (struct sockaddr *)&d, sizeof d, why, sizeof why), 1);
    struct sockaddr_in6 six = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &six.sin6_addr);
    CHECK_INT(netguard_check(g, (struct sockaddr *)&six, sizeof six, why, sizeof why), 1);
    d = v4("192.0.2.1", port);                  /* not this host */
    CHECK_INT(netguard_check(g, (struct sockaddr *)&d, sizeof d, why, sizeof why), 0);
    netguard_allow_port(g, port);
    d = v4("127.0.0.1", port);
    CHECK_INT(netguard_check(g, (struct sockaddr *)&d, sizeof d, why, sizeof why), 0);
    close(fd);
    /* nobody listens any more: allowed (the connection simply fails) */
    netguard *g2 = netguard_new("/nonexistent");
    CHECK_INT(netguard_check(g2, (struct sockaddr *)&d, sizeof d, why, sizeof why), 0);
    netguard_free(g2);
    netguard_deny_port(g, 1, "the API server");
    d = v4("0.0.0.0", 1);
    CHECK_INT(netguard_check(g, (struct sockaddr *)&d, sizeof d, why, sizeof why), 1);
    CHECK(strstr(why, "(the API server)") != NULL);
    netguard_free(g);
}

int main(void)
{
    RUN(addr_spec);
    RUN(check_codes);
    RUN(build_layout);
    RUN(base64_lines);
    RUN(outbox_roundtrip);
    RUN(netguard_ports);
    return test_report();
}
