/* appyaml.c - app.yaml: load, validate, and match request paths to handlers.
 *
 * How it works, in four stages:
 *
 * 1. YAML to a tree.  libyaml's event parser feeds a small node tree (scalar,
 *    sequence, mapping) that remembers each node's line.  Plain scalars are
 *    typed the way App Engine's own loader types them (YAML 1.1: `yes`/`on`
 *    are booleans, `010` is octal, `1:30` is sexagesimal ...), because a value
 *    such as `version: 010` is checked as the string Python would make of it
 *    ("8").  Anchors, aliases, several documents and exotic tags are refused,
 *    as App Engine refuses them.
 *
 * 2. Schema check.  Every key App Engine accepts in app.yaml is described by a
 *    static table (vspec/fieldspec): strings checked against App Engine's
 *    patterns, enumerations, booleans, ranged numbers, nested objects, lists,
 *    string dictionaries, expirations, regular expressions.  Unknown and
 *    duplicate keys are errors.  The rules that span several keys (exactly one
 *    handler type, `upload` with `static_files`, which fields each handler
 *    type allows, one scaling block, ...) are coded after the table walk.
 *
 * 3. Build the app_config.  Values are copied out of the tree; handler `url`
 *    and `upload` patterns are translated from Python regex syntax to PCRE2
 *    where the two differ (\Z, \uXXXX, {,n}), compiled anchored at both ends
 *    and JIT-compiled.  A static_dir handler is compiled as `URL/(.*)` and
 *    gets the template "DIR/\N" in static_files, so the router serves both
 *    static kinds the same way.  `includes:` are read (relative to the
 *    including file, then to the app directory; a directory means its
 *    include.yaml; a missing include is skipped with a warning, as App Engine
 *    does) and merged: their handlers go before the app's own handlers unless
 *    marked `position: tail`, their env_variables override, skip_files add
 *    up.  With no handlers at all a second-generation runtime gets App
 *    Engine's implicit `url: /.*  script: auto`.
 *
 * 4. Matching.  appcfg_match() tries each handler's compiled url in order and
 *    returns the first that matches the whole path, with capture offsets;
 *    appcfg_expand() substitutes \1..\9 into a static_files template.
 *
 * Every error is one sentence "PATH:LINE: reason". */
#include "appcfg/appyaml.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

#define MAX_DEPTH 64          /* YAML nesting accepted */
#define MAX_HANDLERS 100      /* App Engine's limit on url maps */
#define MAX_HEADERS 500       /* per handler */
#define MAX_INCLUDE_DEPTH 16

/* ------------------------------------------------------------------------ */
/* Stage 1: YAML to a tree                                                   */

typedef enum { N_SCALAR, N_SEQ, N_MAP } ntype;
typedef enum { S_NULL, S_BOOL, S_INT, S_FLOAT, S_STR } stype;

typedef struct ynode {
    ntype t;
    int line;
    /* scalars */
    char *text; size_t len;
    stype st;
    int b;
    int64_t i; int i_ovf;      /* i_ovf: integer too big for int64 */
    double d;
    /* sequences: kids[0..n); mappings: key, value pairs in kids[0..n) */
    struct ynode **kids; size_t n, cap;
} ynode;

static void node_free(ynode *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static void node_add(ynode *p, ynode *k)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        p->kids = xrealloc(p->kids, p->cap * sizeof *p->kids);
    }
    p->kids[p->n++] = k;
}

typedef struct {
    const char *path;
    char *err; size_t errlen;
} ctx;

static int fail(ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(c->err, c->errlen, "%s:%d: %s", c->path, line > 0 ? line : 1, msg);
    return -1;
}

/* A user string made safe for an error message: printable ASCII, at most 60
 * characters, written into a buffer the caller holds. */
typedef struct { char s[96]; } qbuf;
static const char *q(qbuf *b, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < 60; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f) b->s[o++] = (char)ch;
        else { snprintf(b->s + o, sizeof b->s - o, "\\x%02x", ch); o += 4; }
    }
    if (o >= 60) { memcpy(b->s + o, "...", 3); o += 3; }
    b->s[o] = 0;
    return b->s;
}
#define QS(qb, str) q(&(qb), (str), strlen(str))

/* --- YAML 1.1 typing of plain scalars, as App Engine's loader does it ---- */

static int is_bool_word(const char *s, int *val)
{
    static const char *t[] = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"};
    static const char *f[] = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(s, t[i])) { *val = 1; return 1; }
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!strcmp(s, f[i])) { *val = 0; return 1; }
    return 0;
}

static int is_null_word(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Accumulate v = v*base + digit with overflow detection. */
static int acc(int64_t *v, int base, int digit)
{
    if (*v > (INT64_MAX - digit) / base) return -1;
    *v = *v * base + digit;
    return 0;
}

/* YAML 1.1 int: [-+]?(0b[01_]+ | 0x[0-9a-fA-F_]+ | 0[0-7_]+ | 0 | [1-9][0-9_]*(:[0-5]?[0-9])*) */
static int parse_int11(const char *s, int64_t *out, int *ovf)
{
    int neg = 0;
    *ovf = 0;
    if (*s == '-' || *s == '+') neg = (*s++ == '-');
    if (!*s) return 0;
    int64_t v = 0;
    int base = 10;
    const char *p = s;
    if (p[0] == '0' && p[1] == 'b') { base = 2; p += 2; }
    else if (p[0] == '0' && p[1] == 'x') { base = 16; p += 2; }
    else if (p[0] == '0' && p[1]) { base = 8; p += 1; }
    if (base != 10) {
        if (!*p) return 0;
        for (; *p; p++) {
            if (*p == '_') continue;
            int dg;
            if (isdigit((unsigned char)*p)) dg = *p - '0';
            else if (base == 16 && isxdigit((unsigned char)*p)) dg = tolower((unsigned char)*p) - 'a' + 10;
            else return 0;
            if (dg >= base) return 0;
            if (acc(&v, base, dg) < 0) *ovf = 1;
        }
    } else {
        if (p[0] == '0') { if (p[1]) return 0; v = 0; }
        else {
            if (!(*p >= '1' && *p <= '9')) return 0;
            int64_t part = 0, total = 0;
            int sexa = 0;
            for (; *p; p++) {
                if (*p == '_') continue;
                if (*p == ':') {
                    /* sexagesimal: following parts are [0-5]?[0-9] */
                    sexa = 1;
                    if (acc(&total, 1, 0) < 0) *ovf = 1;
                    total += part; part = 0;
                    const char *d = p + 1;
                    size_t nd = 0;
                    while (isdigit((unsigned char)d[nd])) nd++;
                    if (nd == 0 || nd > 2 || (nd == 2 && d[0] > '5')) return 0;
                    if (d[nd] && d[nd] != ':') return 0;
                    if (total > INT64_MAX / 60) *ovf = 1; else total *= 60;
                    continue;
                }
                if (!isdigit((unsigned char)*p)) return 0;
                if (sexa && part >= 60) return 0;
                if (acc(&part, 10, *p - '0') < 0) *ovf = 1;
            }
            if (total > INT64_MAX - part) *ovf = 1;
            v = total + part;
        }
    }
    *out = neg ? -v : v;
    return 1;
}

/* YAML 1.1 float (as the loader accepts it, also "1e3"). */
static int parse_float11(const char *s, double *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        *out = (*s == '-') ? -INFINITY : INFINITY; return 1;
    }
    if (p == s && (!strcmp(p, ".nan") || !strcmp(p, ".NaN") || !strcmp(p, ".NAN"))) { *out = NAN; return 1; }
    if (strchr(p, ':')) {
        /* sexagesimal: 1:30.5 is 90.5 */
        double v = 0;
        const char *q2 = p;
        if (!isdigit((unsigned char)*q2)) return 0;
        for (;;) {
            double part = 0;
            const char *st = q2;
            while (isdigit((unsigned char)*q2) || *q2 == '_') { if (*q2 != '_') part = part * 10 + (*q2 - '0'); q2++; }
            if (q2 == st) return 0;
            if (*q2 == ':') {
                v = (v + part) * 60;
                q2++;
                const char *d = q2;
                size_t nd = 0;
                while (isdigit((unsigned char)d[nd])) nd++;
                if (nd == 0 || nd > 2 || (nd == 2 && d[0] > '5')) return 0;
                continue;
            }
            if (*q2 != '.') return 0;
            v += part;
            q2++;
            double scale = 0.1;
            for (; isdigit((unsigned char)*q2) || *q2 == '_'; q2++)
                if (*q2 != '_') { v += (*q2 - '0') * scale; scale /= 10; }
            if (*q2) return 0;
            *out = *s == '-' ? -v : v;
            return 1;
        }
    }
    int digits = 0, dot = 0, exp = 0;
    char clean[128];
    size_t o = 0;
    if (strlen(s) + 2 >= sizeof clean) return 0;
    if (*s == '-') clean[o++] = '-';
    if (isdigit((unsigned char)*p)) {
        for (; isdigit((unsigned char)*p) || *p == '_'; p++) if (*p != '_') { clean[o++] = *p; digits++; }
        if (*p == '.') { dot = 1; clean[o++] = *p++; for (; isdigit((unsigned char)*p) || *p == '_'; p++) if (*p != '_') clean[o++] = *p; }
    } else if (*p == '.') {
        dot = 1; clean[o++] = '0'; clean[o++] = *p++;
        for (; isdigit((unsigned char)*p) || *p == '_'; p++) if (*p != '_') { clean[o++] = *p; digits++; }
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        clean[o++] = *p++;
        if (*p == '-' || *p == '+') clean[o++] = *p++;
        if (!isdigit((unsigned char)*p)) return 0;
        for (; isdigit((unsigned char)*p); p++) clean[o++] = *p;
        exp = 1;
    }
    if (*p || (!dot && !exp)) return 0;
    clean[o] = 0;
    *out = strtod(clean, NULL);
    return 1;
}

static void type_plain(ynode *n)
{
    int b;
    if (is_null_word(n->text)) n->st = S_NULL;
    else if (is_bool_word(n->text, &b)) { n->st = S_BOOL; n->b = b; }
    else if (parse_int11(n->text, &n->i, &n->i_ovf)) n->st = S_INT;
    else if (parse_float11(n->text, &n->d)) n->st = S_FLOAT;
    else n->st = S_STR;
}

static int type_tagged(ctx *c, ynode *n, const char *tag)
{
    const char *y = "tag:yaml.org,2002:";
    if (strncmp(tag, y, strlen(y)))
        { qbuf qb; return fail(c, n->line, "unsupported YAML tag '%s'", QS(qb, tag)); }
    tag += strlen(y);
    if (!strcmp(tag, "str")) { n->st = S_STR; return 0; }
    type_plain(n);
    if ((!strcmp(tag, "null") && n->st == S_NULL) || (!strcmp(tag, "bool") && n->st == S_BOOL) ||
        (!strcmp(tag, "int") && n->st == S_INT) ||
        (!strcmp(tag, "float") && (n->st == S_FLOAT || n->st == S_INT))) {
        if (!strcmp(tag, "float") && n->st == S_INT) { n->st = S_FLOAT; n->d = (double)n->i; }
        return 0;
    }
    qbuf qb, qt;
    return fail(c, n->line, "value '%s' is not a valid !!%s", q(&qb, n->text, n->len), QS(qt, tag));
}

static int line_of_offset(const char *text, size_t len, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off && i < len; i++) if (text[i] == '\n') line++;
    return line;
}

static int yaml_fail(ctx *c, yaml_parser_t *p, const char *text, size_t len)
{
    int line;
    if (p->error == YAML_READER_ERROR)
        return fail(c, line_of_offset(text, len, p->problem_offset),
                    "the file is not valid UTF-8 text (%s)", p->problem ? p->problem : "reader error");
    if (p->error == YAML_MEMORY_ERROR) return fail(c, 1, "out of memory while reading YAML");
    line = (int)p->problem_mark.line + 1;
    size_t idx = p->problem_mark.index;
    if (p->problem && ((strstr(p->problem, "cannot start any token") && idx < len && text[idx] == '\t') ||
                       strstr(p->problem, "tab character")))
        return fail(c, line, "invalid YAML: a tab character cannot be used for indentation");
    if (p->context)
        return fail(c, line, "invalid YAML: %s %s", p->problem ? p->problem : "syntax error", p->context);
    return fail(c, line, "invalid YAML: %s", p->problem ? p->problem : "syntax error");
}

/* Parse text into one document's root node.  *root stays NULL for a file
 * with no document (empty, or comments only). */
static int yaml_tree(ctx *c, const char *text, size_t len, ynode **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    ynode *stack[MAX_DEPTH + 1];
    int depth = 0, docs = 0, rc = -1;
    *root = NULL;
    if (!yaml_parser_initialize(&p)) return fail(c, 1, "out of memory while reading YAML");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) { yaml_fail(c, &p, text, len); goto out; }
        int line = (int)ev.start_mark.line + 1;
        yaml_event_type_t t = ev.type;
        const unsigned char *anchor = NULL;
        if (t == YAML_SCALAR_EVENT) anchor = ev.data.scalar.anchor;
        else if (t == YAML_SEQUENCE_START_EVENT) anchor = ev.data.sequence_start.anchor;
        else if (t == YAML_MAPPING_START_EVENT) anchor = ev.data.mapping_start.anchor;
        if (anchor || t == YAML_ALIAS_EVENT) {
            fail(c, line, "YAML anchors and aliases (& and *) are not supported in app.yaml");
            yaml_event_delete(&ev); goto out;
        }
        if (t == YAML_STREAM_END_EVENT) { yaml_event_delete(&ev); break; }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            fail(c, line, "the file holds more than one YAML document");
            yaml_event_delete(&ev); goto out;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) {
            ynode *n = xcalloc(1, sizeof *n);
            n->line = line;
            if (t == YAML_SCALAR_EVENT) {
                n->t = N_SCALAR;
                n->len = ev.data.scalar.length;
                n->text = xmalloc(n->len + 1);
                memcpy(n->text, ev.data.scalar.value, n->len);
                n->text[n->len] = 0;
                if (memchr(n->text, 0, n->len)) {
                    fail(c, line, "a value holds a NUL character");
                    node_free(n); yaml_event_delete(&ev); goto out;
                }
                if (ev.data.scalar.tag && strcmp((char *)ev.data.scalar.tag, "!")) {
                    if (type_tagged(c, n, (const char *)ev.data.scalar.tag) < 0) {
                        node_free(n); yaml_event_delete(&ev); goto out;
                    }
                } else if (ev.data.scalar.plain_implicit) {
                    type_plain(n);
                } else {
                    n->st = S_STR;
                }
            } else {
                const unsigned char *tag = t == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.tag
                                                                          : ev.data.mapping_start.tag;
                n->t = t == YAML_SEQUENCE_START_EVENT ? N_SEQ : N_MAP;
                if (tag && strcmp((const char *)tag, n->t == N_SEQ ? "tag:yaml.org,2002:seq" : "tag:yaml.org,2002:map")) {
                    qbuf qb;
                    fail(c, line, "unsupported YAML tag '%s'", QS(qb, (const char *)tag));
                    node_free(n); yaml_event_delete(&ev); goto out;
                }
            }
            if (depth > 0) node_add(stack[depth - 1], n);
            else *root = n;
            if (n->t != N_SCALAR) {
                if (depth >= MAX_DEPTH) {
                    fail(c, line, "the YAML is nested more than %d levels deep", MAX_DEPTH);
                    yaml_event_delete(&ev); goto out;
                }
                stack[depth++] = n;
            }
        } else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
            if (depth > 0) depth--;
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
out:
    yaml_parser_delete(&p);
    if (rc < 0) { node_free(*root); *root = NULL; }
    return rc;
}

/* App Engine's YAML reader refuses a tab anywhere in block context except
 * inside a quoted or block scalar or a comment (libyaml takes tabs as
 * spaces between words).  Refuse the same files, naming the tab's line. */
typedef struct { size_t a, b; int ok; } span;

static int check_tabs(ctx *c, const char *text, size_t len)
{
    if (!memchr(text, '\t', len)) return 0;
    yaml_parser_t p;
    yaml_token_t tok;
    span *sp = NULL;
    size_t n = 0, cap = 0, flow_start = 0;
    int flow = 0, rc = 0;
    if (!yaml_parser_initialize(&p)) return 0;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (!yaml_parser_scan(&p, &tok)) break;    /* the parser reports it */
        yaml_token_type_t t = tok.type;
        span s = {tok.start_mark.index, tok.end_mark.index, 0};
        int add = 0;
        if (t == YAML_FLOW_SEQUENCE_START_TOKEN || t == YAML_FLOW_MAPPING_START_TOKEN) {
            if (flow++ == 0) flow_start = s.a;
        } else if (t == YAML_FLOW_SEQUENCE_END_TOKEN || t == YAML_FLOW_MAPPING_END_TOKEN) {
            if (flow > 0 && --flow == 0) { s.a = flow_start; s.ok = 1; add = 1; }
        } else if (t == YAML_SCALAR_TOKEN) {
            s.ok = tok.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            add = 1;
        }
        yaml_token_delete(&tok);
        if (add) {
            if (n == cap) { cap = cap ? cap * 2 : 32; sp = xrealloc(sp, cap * sizeof *sp); }
            sp[n++] = s;
        }
        if (t == YAML_STREAM_END_TOKEN) break;
    }
    yaml_parser_delete(&p);
    for (size_t i = 0; i < len && rc == 0; i++) {
        if (text[i] != '\t') continue;
        int in_ok = 0, in_any = 0;
        for (size_t k = 0; k < n; k++)
            if (i >= sp[k].a && i < sp[k].b) { in_any = 1; if (sp[k].ok) in_ok = 1; }
        if (in_ok) continue;
        if (!in_any) {
            /* after a comment's '#' on the same line? */
            size_t ls = i;
            while (ls > 0 && text[ls - 1] != '\n') ls--;
            int comment = 0;
            for (size_t j = ls; j < i && !comment; j++) {
                if (text[j] != '#' || (j > ls && text[j - 1] != ' ' && text[j - 1] != '\t')) continue;
                int inside = 0;
                for (size_t k = 0; k < n; k++) if (j >= sp[k].a && j < sp[k].b) inside = 1;
                if (!inside) comment = 1;
            }
            if (comment) continue;
        }
        rc = fail(c, line_of_offset(text, len, i),
                  "invalid YAML: a tab character can only appear inside quotes; use spaces");
    }
    free(sp);
    return rc;
}

/* --- Python's str() of a scalar, for checks App Engine runs on it -------- */

static void py_float(double d, char *out, size_t n)
{
    if (isnan(d)) { snprintf(out, n, "nan"); return; }
    if (isinf(d)) { snprintf(out, n, d < 0 ? "-inf" : "inf"); return; }
    char e[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d) break;
    }
    /* e = [-]D.DDDDe[+-]XX */
    char *ep = strchr(e, 'e');
    int exp = atoi(ep + 1);
    *ep = 0;
    char digits[32]; size_t nd = 0;
    int neg = e[0] == '-';
    for (char *p = e; *p; p++) if (isdigit((unsigned char)*p)) digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    buf b = BUF_INIT;
    if (neg) buf_putc(&b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            buf_puts(&b, "0.");
            for (int i = -1; i > exp; i--) buf_putc(&b, '0');
            buf_puts(&b, digits);
        } else {
            for (int i = 0; i <= exp; i++) buf_putc(&b, (size_t)i < nd ? digits[i] : '0');
            buf_putc(&b, '.');
            if ((size_t)exp + 1 < nd) buf_puts(&b, digits + exp + 1);
            else buf_putc(&b, '0');
        }
    } else {
        buf_putc(&b, digits[0]);
        if (nd > 1) { buf_putc(&b, '.'); buf_puts(&b, digits + 1); }
        buf_printf(&b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    snprintf(out, n, "%s", buf_cstr(&b));
    buf_free(&b);
}

/* Python's str() of a typed scalar: the text for strings, "True", "8" for
 * 010, "1000.0" for 1e3, "None" for null.  tmp holds the non-string cases. */
static const char *pystr(const ynode *n, char *tmp, size_t tn)
{
    switch (n->st) {
    case S_NULL: return "None";
    case S_BOOL: return n->b ? "True" : "False";
    case S_INT:
        if (n->i_ovf) return n->text;
        snprintf(tmp, tn, "%lld", (long long)n->i);
        return tmp;
    case S_FLOAT: py_float(n->d, tmp, tn); return tmp;
    default: return n->text;
    }
}

/* ------------------------------------------------------------------------ */
/* Regular expressions                                                       */

/* Python regex syntax to PCRE2 where they differ. */
static char *py_to_pcre(const char *s, size_t n)
{
    buf b = BUF_INIT;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\' && i + 1 < n) {
            char nx = s[i + 1];
            if (nx == 'Z' && !in_class) { buf_puts(&b, "\\z"); i++; continue; }
            if (nx == 'u' || nx == 'U') {
                size_t want = nx == 'u' ? 4 : 8, k;
                for (k = 0; k < want && i + 2 + k < n && isxdigit((unsigned char)s[i + 2 + k]); k++) {}
                if (k == want) {
                    buf_puts(&b, "\\x{");
                    buf_append(&b, s + i + 2, want);
                    buf_putc(&b, '}');
                    i += 1 + want;
                    continue;
                }
            }
            buf_putc(&b, ch); buf_putc(&b, nx); i++;
            continue;
        }
        if (in_class) {
            if (ch == ']') in_class = 0;
            buf_putc(&b, ch);
            continue;
        }
        if (ch == '[') {
            in_class = 1;
            buf_putc(&b, ch);
            /* a ']' or '^]' right after '[' is a literal */
            if (i + 1 < n && s[i + 1] == '^') { buf_putc(&b, '^'); i++; }
            if (i + 1 < n && s[i + 1] == ']') { buf_putc(&b, ']'); i++; }
            continue;
        }
        if (ch == '{' && i + 1 < n && s[i + 1] == ',') {
            /* Python's {,n} means {0,n}, {,} means {0,} */
            size_t k = i + 2;
            while (k < n && isdigit((unsigned char)s[k])) k++;
            if (k < n && s[k] == '}') { buf_puts(&b, "{0"); continue; }
        }
        if (ch == '(' && i + 2 < n && s[i + 1] == '?' && strchr("aiLmsux-", s[i + 2])) {
            /* inline flags: PCRE2 knows neither a (ASCII) nor u (Unicode,
             * always on for Python 3 str patterns); drop both */
            size_t k = i + 2;
            while (k < n && strchr("aiLmsux-", s[k])) k++;
            if (k < n && (s[k] == ')' || s[k] == ':')) {
                buf kept = BUF_INIT;
                for (size_t j = i + 2; j < k; j++) if (s[j] != 'a' && s[j] != 'u') buf_putc(&kept, s[j]);
                if (kept.len || s[k] == ':') {
                    buf_puts(&b, "(?");
                    if (kept.len) buf_append(&b, kept.data, kept.len);
                    buf_putc(&b, s[k]);
                }
                buf_free(&kept);
                i = k;
                continue;
            }
        }
        buf_putc(&b, ch);
    }
    size_t len;
    char *out = buf_detach(&b, &len);
    if (!out) out = xstrdup("");
    return out;
}

#define RE_OPTS (PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF)

/* 1 if the pattern turns on verbose mode for all of itself: "(?x)" at the
 * start (Python allows global flags only there).  A '#' comment then runs to
 * the end of the line, so a group wrapped around the pattern must close on a
 * new line. */
static int py_verbose(const char *s, size_t n)
{
    if (n < 3 || s[0] != '(' || s[1] != '?') return 0;
    size_t k = 2;
    int x = 0;
    while (k < n && strchr("aiLmsux", s[k])) x |= s[k++] == 'x';
    return x && k < n && s[k] == ')';
}

/* Compile a Python-syntax pattern.  full: anchored at both ends.  NULL with
 * a reason in emsg when it does not compile. */
static pcre2_code *re_py(const char *pat, size_t n, int full, int jit, char *emsg, size_t emlen)
{
    char *tr = py_to_pcre(pat, n);
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = RE_OPTS | (full ? PCRE2_ANCHORED | PCRE2_ENDANCHORED : PCRE2_ANCHORED);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)tr, strlen(tr), opts, &ec, &eo, NULL);
    free(tr);
    if (!re) {
        PCRE2_UCHAR m[160];
        pcre2_get_error_message(ec, m, sizeof m);
        snprintf(emsg, emlen, "%s", (char *)m);
        return NULL;
    }
    if (jit) pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* falls back to the interpreter */
    return re;
}

/* 1 if s (whole) matches one of App Engine's own field patterns. */
static int re_full(const char *pattern, const char *s)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &ec, &eo, NULL);
    if (!re) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

static int re_captures(const pcre2_code *re)
{
    uint32_t n = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n);
    return (int)n;
}

/* ------------------------------------------------------------------------ */
/* Stage 2: schema                                                           */

typedef enum {
    V_STR,        /* any scalar, used as a string */
    V_RE,         /* scalar whose str() matches re */
    V_BOOL,
    V_INT,        /* integer (or integer string); range lo..hi */
    V_FLOAT,      /* number; range lo..hi */
    V_OPTS,       /* str() is one of opts */
    V_OBJ,        /* mapping with fields */
    V_LIST,       /* sequence of elem */
    V_DICT,       /* mapping: keys match re, values scalars */
    V_HEADERS,    /* http_headers */
    V_EXPIRATION,
    V_REGEXSTR,   /* a regex, or a list of them */
    V_BUILTINS,   /* list of one-key mappings on|off */
} vkind;

typedef struct vspec vspec;
typedef struct { const char *name; const vspec *v; int required; } fieldspec;
struct vspec {
    vkind k;
    const char *re;
    const char *const *opts;
    double lo, hi;
    const fieldspec *fields;
    const vspec *elem;
};

#define BIG 9.2e18
static const vspec v_str = {.k = V_STR};
static const vspec v_bool = {.k = V_BOOL};
static const vspec v_float = {.k = V_FLOAT, .lo = -BIG, .hi = BIG};
static const vspec v_int = {.k = V_INT, .lo = -BIG, .hi = BIG};
static const vspec v_int0 = {.k = V_INT, .lo = 0, .hi = BIG};
static const vspec v_int1 = {.k = V_INT, .lo = 1, .hi = BIG};
static const vspec v_files = {.k = V_RE, .re = ".+"};
static const vspec v_url = {.k = V_RE, .re = "(?!\\^)/.*|\\..*|(\\(.).*(?!\\$)."};
static const vspec v_expiration = {.k = V_EXPIRATION};
static const vspec v_regexstr = {.k = V_REGEXSTR};
static const vspec v_nonspace = {.k = V_RE, .re = "\\S+"};
static const vspec v_envdict = {.k = V_DICT, .re = "[a-zA-Z_][a-zA-Z0-9_]*"};
static const vspec v_strlist = {.k = V_LIST, .elem = &v_str};

static const char *const o_login[] = {"optional", "required", "admin", NULL};
static const char *const o_authfail[] = {"redirect", "unauthorized", NULL};
static const char *const o_secure[] = {"optional", "never", "always", "default", NULL};
static const char *const o_position[] = {"head", "tail", NULL};
static const char *const o_onoff[] = {"on", "yes", "y", "True", "t", "1", "true",
                                      "off", "no", "n", "False", "f", "0", "false", NULL};
static const char *const o_redirect[] = {"301", "302", "303", "307", NULL};
static const char *const o_idpolicy[] = {"legacy", "default", NULL};
static const char *const o_derived[] = {"java_precompiled", "python_precompiled", NULL};
static const char *const o_rollout[] = {"fixed", "managed", NULL};
static const char *const o_egress[] = {"private-ranges-only", "all-traffic", NULL};
static const vspec v_login = {.k = V_OPTS, .opts = o_login};
static const vspec v_authfail = {.k = V_OPTS, .opts = o_authfail};
static const vspec v_secure = {.k = V_OPTS, .opts = o_secure};

static const fieldspec f_handler[] = {
    {"url", &v_url, 0},
    {"login", &v_login, 0},
    {"auth_fail_action", &v_authfail, 0},
    {"secure", &v_secure, 0},
    {"script", &v_files, 0},
    {"static_files", &v_files, 0},
    {"upload", &v_files, 0},
    {"application_readable", &v_bool, 0},
    {"static_dir", &v_files, 0},
    {"mime_type", &v_str, 0},
    {"expiration", &v_expiration, 0},
    {"require_matching_file", &v_bool, 0},
    {"http_headers", &(const vspec){.k = V_HEADERS}, 0},
    {"position", &(const vspec){.k = V_OPTS, .opts = o_position}, 0},
    {"api_endpoint", &(const vspec){.k = V_OPTS, .opts = o_onoff}, 0},
    {"redirect_http_response_code", &(const vspec){.k = V_OPTS, .opts = o_redirect}, 0},
    {NULL, NULL, 0},
};
static const vspec v_handler = {.k = V_OBJ, .fields = f_handler};

static const fieldspec f_cpu_util[] = {
    {"target_utilization", &(const vspec){.k = V_FLOAT, .lo = 1e-6, .hi = 1.0}, 0},
    {"aggregation_window_length_sec", &v_int1, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_custom_metric[] = {
    {"metric_name", &v_nonspace, 1},
    {"target_type", &(const vspec){.k = V_RE, .re = "GAUGE|DELTA_PER_SECOND|DELTA_PER_MINUTE"}, 1},
    {"target_utilization", &v_float, 0},
    {"single_instance_assignment", &v_float, 0},
    {"filter", &v_str, 0},
    {NULL, NULL, 0},
};
static const vspec v_idle = {.k = V_RE, .re = "[0-9]+|automatic"};
static const vspec v_latency = {.k = V_RE, .re = "[0-9]+(?:(?:\\.[0-9]{1,3})?s|ms)|automatic"};
/* App Engine documents 0.5..0.95 for both utilization targets, 0..1000 for
 * min_instances, 0..2147483647 for max_instances, 1..1000 for
 * max_concurrent_requests. */
static const fieldspec f_auto[] = {
    {"min_idle_instances", &v_idle, 0},
    {"max_idle_instances", &v_idle, 0},
    {"min_pending_latency", &v_latency, 0},
    {"max_pending_latency", &v_latency, 0},
    {"max_concurrent_requests", &(const vspec){.k = V_INT, .lo = 1, .hi = 1000}, 0},
    {"min_num_instances", &v_int1, 0},
    {"max_num_instances", &v_int1, 0},
    {"cool_down_period_sec", &(const vspec){.k = V_INT, .lo = 60, .hi = BIG}, 0},
    {"cpu_utilization", &(const vspec){.k = V_OBJ, .fields = f_cpu_util}, 0},
    {"max_instances", &(const vspec){.k = V_INT, .lo = 0, .hi = 2147483647}, 0},
    {"min_instances", &(const vspec){.k = V_INT, .lo = 0, .hi = 1000}, 0},
    {"target_cpu_utilization", &(const vspec){.k = V_FLOAT, .lo = 0.5, .hi = 0.95}, 0},
    {"target_throughput_utilization", &(const vspec){.k = V_FLOAT, .lo = 0.5, .hi = 0.95}, 0},
    {"target_network_sent_bytes_per_sec", &v_int1, 0},
    {"target_network_sent_packets_per_sec", &v_int1, 0},
    {"target_network_received_bytes_per_sec", &v_int1, 0},
    {"target_network_received_packets_per_sec", &v_int1, 0},
    {"target_disk_write_bytes_per_sec", &v_int1, 0},
    {"target_disk_write_ops_per_sec", &v_int1, 0},
    {"target_disk_read_bytes_per_sec", &v_int1, 0},
    {"target_disk_read_ops_per_sec", &v_int1, 0},
    {"target_request_count_per_sec", &v_int1, 0},
    {"target_concurrent_requests", &v_int1, 0},
    {"custom_metrics", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_custom_metric}}, 0},
    {NULL, NULL, 0},
};
static const vspec v_instances = {.k = V_RE, .re = "[1-9][0-9]*"};
static const fieldspec f_manual[] = {{"instances", &v_instances, 1}, {NULL, NULL, 0}};
static const fieldspec f_basic[] = {
    {"max_instances", &v_instances, 1},
    {"idle_timeout", &(const vspec){.k = V_RE, .re = "[0-9]+(?:s|m)"}, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_health[] = {
    {"enable_health_check", &v_bool, 0},
    {"check_interval_sec", &v_int0, 0},
    {"timeout_sec", &v_int0, 0},
    {"unhealthy_threshold", &v_int0, 0},
    {"healthy_threshold", &v_int0, 0},
    {"restart_threshold", &v_int0, 0},
    {"host", &v_str, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_liveness[] = {
    {"check_interval_sec", &v_int0, 0},
    {"timeout_sec", &v_int0, 0},
    {"failure_threshold", &v_int0, 0},
    {"success_threshold", &v_int0, 0},
    {"initial_delay_sec", &v_int0, 0},
    {"path", &v_str, 0},
    {"host", &v_str, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_readiness[] = {
    {"check_interval_sec", &v_int0, 0},
    {"timeout_sec", &v_int0, 0},
    {"app_start_timeout_sec", &v_int0, 0},
    {"failure_threshold", &v_int0, 0},
    {"success_threshold", &v_int0, 0},
    {"path", &v_str, 0},
    {"host", &v_str, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_volume[] = {
    {"name", &v_str, 1}, {"size_gb", &v_float, 1}, {"volume_type", &v_str, 1}, {NULL, NULL, 0},
};
static const fieldspec f_resources[] = {
    {"cpu", &v_float, 0},
    {"memory_gb", &v_float, 0},
    {"disk_size_gb", &v_int, 0},
    {"volumes", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_volume}}, 0},
    {NULL, NULL, 0},
};
static const vspec v_gce_name = {.k = V_RE, .re = "[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"};
static const fieldspec f_network[] = {
    {"forwarded_ports", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_RE, .re = "[0-9]+(?::[0-9]+)?(?:/(?:udp|tcp))?"}}, 0},
    {"instance_tag", &v_gce_name, 0},
    {"name", &(const vspec){.k = V_RE, .re = "[a-z0-9-]+(?:/[a-z0-9-]+)*"}, 0},
    {"subnetwork_name", &v_gce_name, 0},
    {"session_affinity", &v_bool, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_vpc[] = {
    {"name", &(const vspec){.k = V_RE, .re = "[a-z0-9-]+(?:/.+)*"}, 1},
    {"egress_setting", &(const vspec){.k = V_OPTS, .opts = o_egress}, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_endpoints[] = {
    {"name", &v_nonspace, 1},
    {"rollout_strategy", &(const vspec){.k = V_OPTS, .opts = o_rollout}, 0},
    {"config_id", &v_nonspace, 0},
    {"trace_sampling", &v_bool, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_library[] = {{"name", &v_str, 1}, {"version", &v_str, 1}, {NULL, NULL, 0}};
static const fieldspec f_page[] = {{"url", &v_url, 1}, {"name", &(const vspec){.k = V_RE, .re = ".+"}, 1}, {NULL, NULL, 0}};
static const fieldspec f_admin_console[] = {
    {"pages", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_page}}, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_error_handler[] = {
    {"error_code", &(const vspec){.k = V_RE, .re = "default|over_quota|dos_api_denial|timeout"}, 0},
    {"file", &v_files, 1},
    {"mime_type", &v_str, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_backend[] = {
    {"name", &(const vspec){.k = V_RE, .re = "[a-z\\d\\-]{1,100}"}, 1},
    {"class", &(const vspec){.k = V_RE, .re = "B1|B2|B4|B4_1G|B8"}, 0},
    {"instances", &v_int, 0},
    {"max_concurrent_requests", &v_int, 0},
    {"options", &(const vspec){.k = V_RE, .re = "[a-z, ]*"}, 0},
    {"public", &v_bool, 0},
    {"dynamic", &v_bool, 0},
    {"failfast", &v_bool, 0},
    {"start", &v_files, 0},
    {"state", &(const vspec){.k = V_RE, .re = "(START|STOP|DISABLED)"}, 0},
    {NULL, NULL, 0},
};
static const fieldspec f_api_config[] = {
    {"url", &v_url, 1},
    {"script", &v_files, 1},
    {"login", &v_login, 0},
    {"auth_fail_action", &v_authfail, 0},
    {"secure", &v_secure, 0},
    {NULL, NULL, 0},
};
static const vspec v_module_id = {.k = V_RE, .re = "(?!-)[a-z\\d\\-]{0,62}[a-z\\d]"};
static const vspec v_app_id = {.k = V_RE, .re = "(?:[a-z\\d\\-]{1,100}\\~)?(?:(?!\\-)[a-z\\d\\-\\.]{1,100}:)?(?!-)[a-z\\d\\-]{0,99}[a-z\\d]"};

static const fieldspec f_app[] = {
    {"application", &v_app_id, 0},
    {"project", &v_app_id, 0},
    {"service", &v_module_id, 0},
    {"module", &v_module_id, 0},
    {"version", &v_module_id, 0},
    {"runtime", &(const vspec){.k = V_RE, .re = "(?:gs://[a-z0-9\\-\\._/]+)|(?:[a-z][a-z0-9\\-\\.]{0,29})"}, 0},
    {"runtime_channel", &v_str, 0},
    {"api_version", &(const vspec){.k = V_RE, .re = "[\\w.]{1,32}"}, 0},
    {"main", &v_files, 0},
    {"env", &(const vspec){.k = V_RE, .re = "1|2|standard|flex|flexible"}, 0},
    {"endpoints_api_service", &(const vspec){.k = V_OBJ, .fields = f_endpoints}, 0},
    {"entrypoint", &v_str, 0},
    {"runtime_config", &v_envdict, 0},
    {"instance_class", &v_str, 0},
    {"source_language", &(const vspec){.k = V_RE, .re = "[\\w.\\-]{1,32}"}, 0},
    {"automatic_scaling", &(const vspec){.k = V_OBJ, .fields = f_auto}, 0},
    {"manual_scaling", &(const vspec){.k = V_OBJ, .fields = f_manual}, 0},
    {"basic_scaling", &(const vspec){.k = V_OBJ, .fields = f_basic}, 0},
    {"vm", &v_bool, 0},
    {"vm_settings", &v_envdict, 0},
    {"beta_settings", &v_envdict, 0},
    {"vm_health_check", &(const vspec){.k = V_OBJ, .fields = f_health}, 0},
    {"health_check", &(const vspec){.k = V_OBJ, .fields = f_health}, 0},
    {"resources", &(const vspec){.k = V_OBJ, .fields = f_resources}, 0},
    {"liveness_check", &(const vspec){.k = V_OBJ, .fields = f_liveness}, 0},
    {"readiness_check", &(const vspec){.k = V_OBJ, .fields = f_readiness}, 0},
    {"network", &(const vspec){.k = V_OBJ, .fields = f_network}, 0},
    {"vpc_access_connector", &(const vspec){.k = V_OBJ, .fields = f_vpc}, 0},
    {"zones", &v_strlist, 0},
    {"builtins", &(const vspec){.k = V_BUILTINS}, 0},
    {"includes", &v_strlist, 0},
    {"handlers", &(const vspec){.k = V_LIST, .elem = &v_handler}, 0},
    {"libraries", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_library}}, 0},
    {"inbound_services", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_RE, .re = "mail|mail_bounce|rest|warmup"}}, 0},
    {"default_expiration", &v_expiration, 0},
    {"skip_files", &v_regexstr, 0},
    {"nobuild_files", &v_regexstr, 0},
    {"derived_file_type", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OPTS, .opts = o_derived}}, 0},
    {"admin_console", &(const vspec){.k = V_OBJ, .fields = f_admin_console}, 0},
    {"error_handlers", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_error_handler}}, 0},
    {"backends", &(const vspec){.k = V_LIST, .elem = &(const vspec){.k = V_OBJ, .fields = f_backend}}, 0},
    {"threadsafe", &v_bool, 0},
    {"service_account", &v_str, 0},
    {"auto_id_policy", &(const vspec){.k = V_OPTS, .opts = o_idpolicy}, 0},
    {"api_config", &(const vspec){.k = V_OBJ, .fields = f_api_config}, 0},
    {"code_lock", &v_bool, 0},
    {"env_variables", &v_envdict, 0},
    {"build_env_variables", &v_envdict, 0},
    {"standard_websocket", &v_bool, 0},
    {"app_engine_apis", &v_bool, 0},
    {NULL, NULL, 0},
};
static const vspec v_app = {.k = V_OBJ, .fields = f_app};

/* What an included file may hold. */
static const fieldspec f_include[] = {
    {"builtins", &(const vspec){.k = V_BUILTINS}, 0},
    {"includes", &v_strlist, 0},
    {"handlers", &(const vspec){.k = V_LIST, .elem = &v_handler}, 0},
    {"admin_console", &(const vspec){.k = V_OBJ, .fields = f_admin_console}, 0},
    {"manual_scaling", &(const vspec){.k = V_OBJ, .fields = f_manual}, 0},
    {"vm", &v_bool, 0},
    {"vm_settings", &v_envdict, 0},
    {"beta_settings", &v_envdict, 0},
    {"env_variables", &v_envdict, 0},
    {"build_env_variables", &v_envdict, 0},
    {"skip_files", &v_regexstr, 0},
    {NULL, NULL, 0},
};
static const vspec v_include = {.k = V_OBJ, .fields = f_include};

static const char *kind_word(const ynode *n)
{
    if (n->t == N_MAP) return "a mapping";
    if (n->t == N_SEQ) return "a list";
    return "a value";
}

/* Value of key in a mapping node, or NULL (also for an explicit null). */
static const ynode *map_get(const ynode *m, const char *key)
{
    if (!m || m->t != N_MAP) return NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->kids[i]->t == N_SCALAR && !strcmp(m->kids[i]->text, key)) {
            const ynode *v = m->kids[i + 1];
            if (v->t == N_SCALAR && v->st == S_NULL) return NULL;
            return v;
        }
    return NULL;
}

/* Expiration "4d 5h 30m 15s" ("10" is seconds) in seconds; -1 if malformed,
 * -2 if too large. */
int64_t appcfg_parse_expiration(const char *s)
{
    const int64_t cap = (int64_t)1 << 40;
    int64_t total = 0;
    int terms = 0;
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    while (*p) {
        if (terms && !isspace((unsigned char)p[-1])) return -1;
        if (!isdigit((unsigned char)*p)) return -1;
        int64_t v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p++ - '0');
            if (v > cap) return -2;
        }
        int64_t mul = 1;
        switch (*p) {
        case 'd': case 'D': mul = 86400; p++; break;
        case 'h': case 'H': mul = 3600; p++; break;
        case 'm': case 'M': mul = 60; p++; break;
        case 's': case 'S': p++; break;
        default: break;
        }
        total += v * mul;
        if (total > cap) return -2;
        terms++;
        if (*p && !isspace((unsigned char)*p)) return -1;
        while (isspace((unsigned char)*p)) p++;
    }
    return terms ? total : -1;
}

static int check_regex_value(ctx *c, const ynode *n, const char *name)
{
    const ynode *items[1] = {n};
    const ynode *const *list = items;
    size_t cnt = 1;
    if (n->t == N_SEQ) { list = (const ynode *const *)n->kids; cnt = n->n; }
    else if (n->t != N_SCALAR) return fail(c, n->line, "%s must be a regular expression or a list of them", name);
    for (size_t i = 0; i < cnt; i++) {
        const ynode *it = list[i];
        if (it->t != N_SCALAR || it->st == S_NULL)
            return fail(c, it->line, "%s must be a regular expression or a list of them", name);
        char tmp[64], em[160];
        const char *s = pystr(it, tmp, sizeof tmp);
        /* App Engine drops line breaks from these patterns (block scalars). */
        buf b = BUF_INIT;
        for (const char *p = s; *p; p++) if (*p != '\n' && *p != '\r') buf_putc(&b, *p);
        pcre2_code *re = re_py(b.data ? b.data : "", b.len, 0, 0, em, sizeof em);
        qbuf qb;
        if (!re) {
            fail(c, it->line, "%s pattern '%s' is not a valid regular expression: %s", name,
                 q(&qb, b.data ? b.data : "", b.len), em);
            buf_free(&b);
            return -1;
        }
        pcre2_code_free(re);
        buf_free(&b);
    }
    return 0;
}

static const char *hop_by_hop[] = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                                   "te", "trailers", "transfer-encoding", "upgrade", NULL};
static const char *request_only[] = {"accept", "accept-charset", "accept-encoding", "accept-language",
                                     "authorization", "expect", "from", "host", "if-match",
                                     "if-modified-since", "if-none-match", "if-range",
                                     "if-unmodified-since", "max-forwards", "proxy-authorization",
                                     "range", "referer", "te", "user-agent", NULL};
static const char *disallowed_headers[] = {"content-encoding", "content-length", "date", "server", NULL};

static int in_list(const char *const *l, const char *s)
{
    for (; *l; l++) if (!strcmp(*l, s)) return 1;
    return 0;
}

static size_t header_value_max(const char *lname)
{
    if (!strcmp(lname, "content-security-policy") || !strcmp(lname, "x-content-security-policy") ||
        !strcmp(lname, "x-webkit-csp") || !strcmp(lname, "content-security-policy-report-only"))
        return 10240;
    if (!strcmp(lname, "set-cookie") || !strcmp(lname, "set-cookie2")) return 4096;
    if (!strcmp(lname, "location")) return 2047;
    return 0;
}

static int check_headers(ctx *c, const ynode *n)
{
    qbuf qb;
    if (n->t != N_MAP) return fail(c, n->line, "http_headers must be a mapping of header names to values");
    if (n->n / 2 > MAX_HEADERS) return fail(c, n->line, "http_headers lists more than %d headers", MAX_HEADERS);
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const ynode *k = n->kids[i], *v = n->kids[i + 1];
        char lname[128];
        if (k->len == 0 || k->len >= sizeof lname)
            return fail(c, k->line, "HTTP header name '%s' is not a valid token", q(&qb, k->text, k->len));
        for (size_t j = 0; j < k->len; j++) {
            unsigned char ch = (unsigned char)k->text[j];
            if (ch <= 0x20 || ch >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", ch))
                return fail(c, k->line, "HTTP header name '%s' is not a valid token", q(&qb, k->text, k->len));
            lname[j] = (char)tolower(ch);
        }
        lname[k->len] = 0;
        if (in_list(request_only, lname))
            return fail(c, k->line, "HTTP header '%s' can only be sent in requests, not responses", lname);
        if (!strncmp(lname, "x-appengine", 11))
            return fail(c, k->line, "HTTP header names beginning with X-AppEngine are reserved");
        if (in_list(hop_by_hop, lname))
            return fail(c, k->line, "HTTP header '%s' is hop-by-hop; only end-to-end headers may be set", lname);
        if (in_list(disallowed_headers, lname))
            return fail(c, k->line, "HTTP header '%s' cannot be set by the app", lname);
        if (v->t != N_SCALAR)
            return fail(c, v->line, "the value of HTTP header '%s' must be a string", lname);
        char tmp[64];
        const char *val = pystr(v, tmp, sizeof tmp);
        for (const char *p = val; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                return fail(c, v->line, "the value of HTTP header '%s' must be printable ASCII", lname);
        size_t total = strlen(lname) + 2 + strlen(val) + 2;
        if (total >= 500) {
            size_t max = header_value_max(lname);
            if (!max) return fail(c, v->line, "HTTP header '%s' is too long (name and value must stay under 500 bytes)", lname);
            if (strlen(val) > max) return fail(c, v->line, "the value of HTTP header '%s' is longer than %zu bytes", lname, max);
        }
        for (size_t j = 0; j < i; j += 2)
            if (!strcmp(n->kids[j]->text, k->text))
                return fail(c, k->line, "HTTP header '%s' is given twice", q(&qb, k->text, k->len));
    }
    return 0;
}

static int check(ctx *c, const ynode *n, const vspec *v, const char *name, int depth);

static int check_obj(ctx *c, const ynode *n, const fieldspec *fs, const char *name, int depth)
{
    qbuf qb;
    if (n->t != N_MAP) return fail(c, n->line, "%s must be a mapping, not %s", name, kind_word(n));
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const ynode *k = n->kids[i], *val = n->kids[i + 1];
        if (k->t != N_SCALAR) return fail(c, k->line, "a key in %s is %s; keys must be plain names", name, kind_word(k));
        const fieldspec *f;
        for (f = fs; f->name; f++) if (!strcmp(f->name, k->text)) break;
        if (!f->name) {
            if (depth == 0) return fail(c, k->line, "unknown field '%s'", q(&qb, k->text, k->len));
            return fail(c, k->line, "unknown field '%s' in %s%s", q(&qb, k->text, k->len),
                        !strcmp(name, "handler") ? "a " : "", name);
        }
        for (size_t j = 0; j < i; j += 2)
            if (n->kids[j]->t == N_SCALAR && !strcmp(n->kids[j]->text, k->text))
                return fail(c, k->line, "field '%s' is given twice", f->name);
        if (val->t == N_SCALAR && val->st == S_NULL) continue;    /* left unset */
        if (check(c, val, f->v, f->name, depth + 1) < 0) return -1;
    }
    for (const fieldspec *f = fs; f->name; f++)
        if (f->required && !map_get(n, f->name))
            return fail(c, n->line, "%s is missing its required field '%s'", name, f->name);
    return 0;
}

static int check(ctx *c, const ynode *n, const vspec *v, const char *name, int depth)
{
    char tmp[64];
    qbuf qb;
    switch (v->k) {
    case V_OBJ: return check_obj(c, n, v->fields, name, depth);
    case V_LIST:
        if (n->t != N_SEQ) return fail(c, n->line, "%s must be a list, not %s", name, kind_word(n));
        for (size_t i = 0; i < n->n; i++) {
            const ynode *e = n->kids[i];
            if (e->t == N_SCALAR && e->st == S_NULL) return fail(c, e->line, "%s has an empty entry", name);
            if (check(c, e, v->elem, v->elem == &v_handler ? "handler" : name, depth + 1) < 0) return -1;
        }
        return 0;
    case V_DICT:
        if (n->t != N_MAP) return fail(c, n->line, "%s must be a mapping, not %s", name, kind_word(n));
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            const ynode *k = n->kids[i], *val = n->kids[i + 1];
            if (k->t != N_SCALAR || !re_full(v->re, k->text))
                return fail(c, k->line, "'%s' is not a valid name in %s", k->t == N_SCALAR ? q(&qb, k->text, k->len) : "?", name);
            for (size_t j = 0; j < i; j += 2)
                if (!strcmp(n->kids[j]->text, k->text))
                    return fail(c, k->line, "'%s' is given twice in %s", q(&qb, k->text, k->len), name);
            if (val->t != N_SCALAR)
                return fail(c, val->line, "the value of '%s' in %s must be a string, not %s", q(&qb, k->text, k->len), name, kind_word(val));
        }
        return 0;
    case V_HEADERS: return check_headers(c, n);
    case V_BUILTINS:
        if (n->t != N_SEQ) return fail(c, n->line, "builtins must be a list, not %s", kind_word(n));
        for (size_t i = 0; i < n->n; i++) {
            const ynode *e = n->kids[i];
            if (e->t != N_MAP || e->n != 2 || e->kids[0]->t != N_SCALAR)
                return fail(c, e->line, "each builtins entry must name one builtin: '- name: on'");
            const ynode *val = e->kids[1];
            if (val->t != N_SCALAR || !in_list(o_onoff, pystr(val, tmp, sizeof tmp)))
                return fail(c, val->line, "builtin '%s' must be on or off", q(&qb, e->kids[0]->text, e->kids[0]->len));
            for (size_t j = 0; j < i; j++)
                if (n->kids[j]->t == N_MAP && n->kids[j]->n == 2 && !strcmp(n->kids[j]->kids[0]->text, e->kids[0]->text))
                    return fail(c, e->line, "builtin '%s' is given twice", q(&qb, e->kids[0]->text, e->kids[0]->len));
        }
        return 0;
    case V_REGEXSTR: return check_regex_value(c, n, name);
    default: break;
    }
    /* scalar kinds */
    if (n->t != N_SCALAR) return fail(c, n->line, "%s must be a single value, not %s", name, kind_word(n));
    const char *s = pystr(n, tmp, sizeof tmp);
    switch (v->k) {
    case V_STR: return 0;
    case V_RE:
        if (!re_full(v->re, s)) {
            if (v == &v_url)
                return fail(c, n->line, "%s '%s' must be a path pattern starting with '/' (without ^)", name, QS(qb, s));
            return fail(c, n->line, "'%s' is not a valid %s", QS(qb, s), name);
        }
        return 0;
    case V_BOOL:
        if (n->st != S_BOOL) return fail(c, n->line, "%s must be true or false, not '%s'", name, QS(qb, s));
        return 0;
    case V_OPTS:
        if (!in_list(v->opts, s)) {
            buf b = BUF_INIT;
            for (const char *const *o = v->opts; *o; o++) buf_printf(&b, "%s%s", o == v->opts ? "" : ", ", *o);
            fail(c, n->line, "%s must be one of %s, not '%s'", name, buf_cstr(&b), QS(qb, s));
            buf_free(&b);
            return -1;
        }
        return 0;
    case V_INT: case V_FLOAT: {
        double d;
        if (n->st == S_INT && !n->i_ovf) d = (double)n->i;
        else if (n->st == S_FLOAT && v->k == V_FLOAT) d = n->d;
        else if (n->st == S_STR) {
            char *end;
            errno = 0;
            if (v->k == V_INT) { long long ll = strtoll(s, &end, 10); d = (double)ll; }
            else d = strtod(s, &end);
            while (end && isspace((unsigned char)*end)) end++;
            if (end == s || *end || errno)
                return fail(c, n->line, "%s must be %s, not '%s'", name, v->k == V_INT ? "an integer" : "a number", QS(qb, s));
        } else return fail(c, n->line, "%s must be %s, not '%s'", name, v->k == V_INT ? "an integer" : "a number", QS(qb, s));
        if (isnan(d) || d < v->lo || d > v->hi) {
            if (v->hi >= BIG) return fail(c, n->line, "%s must be at least %g, not %s", name, v->lo, QS(qb, s));
            return fail(c, n->line, "%s must be between %g and %g, not %s", name, v->lo, v->hi, QS(qb, s));
        }
        return 0;
    }
    case V_EXPIRATION: {
        int64_t e = appcfg_parse_expiration(s);
        if (e == -2) return fail(c, n->line, "%s '%s' is too long", name, QS(qb, s));
        if (e < 0) return fail(c, n->line, "%s '%s' is not a time like \"4d 5h 30m 15s\"", name, QS(qb, s));
        return 0;
    }
    default: return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Stage 3: build the app_config                                             */

static char *sdup(const ynode *n)
{
    char tmp[64];
    if (!n) return NULL;
    return xstrdup(pystr(n, tmp, sizeof tmp));
}

/* Raw text for string-valued maps (env_variables): what the user wrote. */
static char *rawdup(const ynode *n) { return xstrdup(n->st == S_NULL ? "" : n->text); }

static int opt_index(const char *const *opts, const char *s)
{
    for (int i = 0; opts[i]; i++) if (!strcmp(opts[i], s)) return i;
    return -1;
}

static void handler_free(app_handler *h)
{
    free(h->url); free(h->static_files); free(h->upload); free(h->static_dir);
    free(h->script); free(h->mime_type);
    if (h->url_re) pcre2_code_free(h->url_re);
    if (h->upload_re) pcre2_code_free(h->upload_re);
    for (size_t i = 0; i < h->n_http_headers; i++) { free(h->http_headers[i].name); free(h->http_headers[i].value); }
    free(h->http_headers);
    memset(h, 0, sizeof *h);
}

static const char *handler_fields_static_files[] = {"mime_type", "upload", "expiration", "require_matching_file",
                                                    "http_headers", "application_readable", NULL};
static const char *handler_fields_static_dir[] = {"mime_type", "expiration", "require_matching_file",
                                                  "http_headers", "application_readable", NULL};
static const char *handler_fields_script[] = {"position", NULL};
static const char *handler_fields_common[] = {"url", "login", "auth_fail_action", "secure",
                                              "redirect_http_response_code", NULL};

/* Cross-field rules of one handler, then fill h.  in_include: `position`
 * is allowed.  *tail receives 1 for `position: tail`. */
static int build_handler(ctx *c, const ynode *n, app_handler *h, int in_include, int *tail)
{
    char tmp[64], em[160];
    qbuf qb;
    memset(h, 0, sizeof *h);
    h->line = n->line;
    h->expiration_s = -1;
    *tail = 0;
    static const char *types[] = {"static_files", "static_dir", "script", NULL};
    const char *type = NULL;
    if (map_get(n, "api_endpoint"))
        return fail(c, n->line, "api_endpoint handlers (Cloud Endpoints v1) are not supported");
    for (const char **t = types; *t; t++) {
        if (!map_get(n, *t)) continue;
        if (type) return fail(c, n->line, "handler has both %s and %s; give exactly one of script, static_files, static_dir", type, *t);
        type = *t;
    }
    if (!type) return fail(c, n->line, "handler needs one of script, static_files or static_dir");
    const char **allowed = !strcmp(type, "static_files") ? handler_fields_static_files
                         : !strcmp(type, "static_dir") ? handler_fields_static_dir : handler_fields_script;
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const char *k = n->kids[i]->text;
        const ynode *val = n->kids[i + 1];
        if (val->t == N_SCALAR && val->st == S_NULL) continue;
        if (!strcmp(k, type) || in_list(allowed, k) || in_list(handler_fields_common, k)) continue;
        return fail(c, n->kids[i]->line, "field '%s' is not allowed in a %s handler", k, type);
    }
    if (!strcmp(type, "static_files") && !map_get(n, "upload"))
        return fail(c, n->line, "a static_files handler needs an upload pattern");
    const ynode *pos = map_get(n, "position");
    if (pos) {
        if (!in_include) return fail(c, pos->line, "position is only allowed in included files, not in app.yaml");
        *tail = !strcmp(pystr(pos, tmp, sizeof tmp), "tail");
    }
    const ynode *url = map_get(n, "url");
    if (!url) return fail(c, n->line, "handler has no url");
    if (map_get(n, "mime_type")) {
        const ynode *hh = map_get(n, "http_headers");
        for (size_t i = 0; hh && i + 1 < hh->n; i += 2)
            if (!strcasecmp(hh->kids[i]->text, "content-type"))
                return fail(c, hh->kids[i]->line, "handler sets both mime_type and a Content-Type header");
    }

    h->url = sdup(url);
    pcre2_code *re = re_py(h->url, strlen(h->url), 1, 1, em, sizeof em);
    if (!re) return fail(c, url->line, "url '%s' is not a valid regular expression: %s", QS(qb, h->url), em);
    if (!strcmp(type, "static_dir")) {
        /* URL/(.*) -> DIR/\N, N being the group after the url's own */
        int ng = re_captures(re);
        pcre2_code_free(re);
        if (ng + 1 > APPCFG_MAX_GROUPS - 1)
            return fail(c, url->line, "url '%s' has too many groups for a static_dir handler", QS(qb, h->url));
        size_t ul = strlen(h->url);
        while (ul > 1 && h->url[ul - 1] == '/') ul--;
        if (ul == 1 && h->url[0] == '/') ul = 0;
        char *pat = xasprintf("(?:%.*s%s)/(.*)", (int)ul, h->url, py_verbose(h->url, ul) ? "\n" : "");
        re = re_py(pat, strlen(pat), 1, 1, em, sizeof em);
        free(pat);
        if (!re) return fail(c, url->line, "url '%s' is not a valid regular expression: %s", QS(qb, h->url), em);
        h->kind = HANDLER_STATIC_DIR;
        h->static_dir = sdup(map_get(n, "static_dir"));
        size_t dl = strlen(h->static_dir);
        while (dl > 1 && h->static_dir[dl - 1] == '/') dl--;
        h->static_files = xasprintf("%.*s/\\%d", (int)dl, h->static_dir, ng + 1);
    } else if (!strcmp(type, "static_files")) {
        if (re_captures(re) > APPCFG_MAX_GROUPS - 1) {
            pcre2_code_free(re);
            return fail(c, url->line, "url '%s' has more than %d groups", QS(qb, h->url), APPCFG_MAX_GROUPS - 1);
        }
        h->kind = HANDLER_STATIC_FILES;
        h->static_files = sdup(map_get(n, "static_files"));
        h->upload = sdup(map_get(n, "upload"));
        h->upload_re = re_py(h->upload, strlen(h->upload), 1, 1, em, sizeof em);
        if (!h->upload_re) {
            pcre2_code_free(re);
            return fail(c, map_get(n, "upload")->line, "upload '%s' is not a valid regular expression: %s",
                        QS(qb, h->upload), em);
        }
    } else {
        h->kind = HANDLER_SCRIPT;
        h->script = sdup(map_get(n, "script"));
    }
    h->url_re = re;
    const ynode *x;
    if ((x = map_get(n, "login"))) h->login = (login_rule)opt_index(o_login, pystr(x, tmp, sizeof tmp));
    if ((x = map_get(n, "auth_fail_action"))) h->auth_fail = (auth_fail_action)opt_index(o_authfail, pystr(x, tmp, sizeof tmp));
    if ((x = map_get(n, "secure"))) {
        int i = opt_index(o_secure, pystr(x, tmp, sizeof tmp));
        h->secure = i == 0 ? SECURE_OPTIONAL : i == 1 ? SECURE_NEVER : i == 2 ? SECURE_ALWAYS : SECURE_DEFAULT;
    }
    if ((x = map_get(n, "redirect_http_response_code"))) h->redirect_http_response_code = atoi(pystr(x, tmp, sizeof tmp));
    if ((x = map_get(n, "expiration"))) h->expiration_s = appcfg_parse_expiration(pystr(x, tmp, sizeof tmp));
    if ((x = map_get(n, "mime_type"))) h->mime_type = sdup(x);
    if ((x = map_get(n, "application_readable"))) h->application_readable = x->b;
    if ((x = map_get(n, "http_headers"))) {
        h->n_http_headers = x->n / 2;
        h->http_headers = xcalloc(h->n_http_headers, sizeof *h->http_headers);
        for (size_t i = 0; i < h->n_http_headers; i++) {
            h->http_headers[i].name = xstrdup(x->kids[2 * i]->text);
            h->http_headers[i].value = sdup(x->kids[2 * i + 1]);
        }
    }
    return 0;
}

/* Handlers, env and skip_files gathered from one file (app.yaml or an
 * include), before merging. */
typedef struct {
    app_handler *h; size_t n, cap;
    unsigned char *tail;          /* per handler: position: tail */
    appcfg_pair *env; size_t n_env;
    char **skip; size_t n_skip;
    int manual_instances;         /* 0 = none */
} part;

static void part_free(part *p)
{
    for (size_t i = 0; i < p->n; i++) handler_free(&p->h[i]);
    free(p->h); free(p->tail);
    for (size_t i = 0; i < p->n_env; i++) { free(p->env[i].name); free(p->env[i].value); }
    free(p->env);
    for (size_t i = 0; i < p->n_skip; i++) free(p->skip[i]);
    free(p->skip);
    memset(p, 0, sizeof *p);
}

static void env_set(appcfg_pair **env, size_t *n, const char *k, const char *v)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*env)[i].name, k)) { free((*env)[i].value); (*env)[i].value = xstrdup(v); return; }
    *env = xrealloc(*env, (*n + 1) * sizeof **env);
    (*env)[*n].name = xstrdup(k);
    (*env)[*n].value = xstrdup(v);
    (*n)++;
}

static void skip_add(char ***l, size_t *n, const char *pat)
{
    *l = xrealloc(*l, (*n + 1) * sizeof **l);
    (*l)[(*n)++] = xstrdup(pat);
}

/* Skip patterns as App Engine keeps them: line breaks removed. */
static void skip_collect(const ynode *sf, char ***l, size_t *n)
{
    char tmp[64];
    size_t cnt = sf->t == N_SEQ ? sf->n : 1;
    for (size_t i = 0; i < cnt; i++) {
        const ynode *it = sf->t == N_SEQ ? sf->kids[i] : sf;
        const char *s = pystr(it, tmp, sizeof tmp);
        char *d = xstrdup(s), *o = d;
        for (const char *p = s; *p; p++) if (*p != '\n' && *p != '\r') *o++ = *p;
        *o = 0;
        skip_add(l, n, d);
        free(d);
    }
}

static int build_part(ctx *c, const ynode *root, part *p, int in_include)
{
    const ynode *hs = map_get(root, "handlers"), *x;
    if (hs) {
        for (size_t i = 0; i < hs->n; i++) {
            if (p->n == p->cap) {
                p->cap = p->cap ? p->cap * 2 : 8;
                p->h = xrealloc(p->h, p->cap * sizeof *p->h);
                p->tail = xrealloc(p->tail, p->cap);
            }
            int tail;
            if (build_handler(c, hs->kids[i], &p->h[p->n], in_include, &tail) < 0) {
                handler_free(&p->h[p->n]);
                return -1;
            }
            p->tail[p->n++] = (unsigned char)tail;
        }
    }
    if ((x = map_get(root, "env_variables")))
        for (size_t i = 0; i + 1 < x->n; i += 2) {
            char *v = rawdup(x->kids[i + 1]);
            env_set(&p->env, &p->n_env, x->kids[i]->text, v);
            free(v);
        }
    if ((x = map_get(root, "skip_files"))) skip_collect(x, &p->skip, &p->n_skip);
    if ((x = map_get(root, "manual_scaling")) && (x = map_get(x, "instances"))) {
        char tmp[64];
        long v = strtol(pystr(x, tmp, sizeof tmp), NULL, 10);
        p->manual_instances = v > INT_MAX ? INT_MAX : (int)v;
    }
    return 0;
}

/* Parse and check one file's tree against vs. */
static int load_tree(ctx *c, const char *text, size_t len, const vspec *vs, ynode **root, int is_app)
{
    if (yaml_tree(c, text, len, root) < 0) return -1;
    if (check_tabs(c, text, len) < 0) return -1;
    if (!*root) {
        if (is_app) return fail(c, 1, "the file is empty; app.yaml needs at least a runtime");
        return 0;
    }
    if ((*root)->t == N_SCALAR && (*root)->st == S_NULL) {
        if (is_app) return fail(c, (*root)->line, "the file is empty; app.yaml needs at least a runtime");
        return 0;
    }
    if ((*root)->t != N_MAP)
        return fail(c, (*root)->line, "the file must be a mapping of fields (key: value), not %s", kind_word(*root));
    return check(c, *root, vs, is_app ? "app.yaml" : "the included file", 0);
}

/* Resolve an include as App Engine does: relative to the including file's
 * directory, then to the app directory; a directory stands for its
 * include.yaml.  Must stay inside the app directory.  NULL when missing. */
static char *resolve_include(const char *from_dir, const char *app_dir, const char *inc)
{
    const char *bases[2] = {from_dir, app_dir};
    for (int i = 0; i < 2; i++) {
        char *p = inc[0] == '/' ? xstrdup(inc) : xasprintf("%s/%s", bases[i], inc);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            char *q2 = xasprintf("%s/include.yaml", p);
            free(p);
            p = q2;
        }
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            char *r = realpath(p, NULL);
            free(p);
            return r;
        }
        free(p);
    }
    return NULL;
}

static int path_inside(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    return !strncmp(dir, path, n) && (path[n] == '/' || (n == 1 && dir[0] == '/'));
}

typedef struct {
    const char *app_dir;          /* realpath of the app dir, or as given */
    char **seen; size_t n_seen;   /* include files already merged */
    part agg;                     /* handlers etc. of all includes, in order */
} incstate;

static int do_includes(ctx *c, const ynode *root, const char *from_path, incstate *st, int depth)
{
    const ynode *incs = map_get(root, "includes");
    if (!incs) return 0;
    if (depth > MAX_INCLUDE_DEPTH) return fail(c, incs->line, "includes are nested more than %d deep", MAX_INCLUDE_DEPTH);
    char *from_dir = xstrdup(from_path);
    char *slash = strrchr(from_dir, '/');
    if (slash) *slash = 0; else { free(from_dir); from_dir = xstrdup("."); }
    int rc = 0;
    for (size_t i = 0; i < incs->n && rc == 0; i++) {
        char tmp[64];
        const char *name = pystr(incs->kids[i], tmp, sizeof tmp);
        char *p = resolve_include(from_dir, st->app_dir, name);
        qbuf qb;
        if (!p) {
            log_warn("appcfg", "msg=\"nothing to include\" file=%s include=%s", log_q(from_path), log_q(name));
            continue;
        }
        char *appreal = realpath(st->app_dir, NULL);
        int inside = appreal && path_inside(appreal, p);
        free(appreal);
        if (!inside) {
            rc = fail(c, incs->kids[i]->line, "include '%s' is outside the app directory", QS(qb, name));
            free(p);
            break;
        }
        int dup = 0;
        for (size_t j = 0; j < st->n_seen; j++) if (!strcmp(st->seen[j], p)) dup = 1;
        if (dup) { free(p); continue; }
        st->seen = xrealloc(st->seen, (st->n_seen + 1) * sizeof *st->seen);
        st->seen[st->n_seen++] = p;
        size_t len;
        char *text = read_file(p, &len);
        if (!text) { rc = fail(c, incs->kids[i]->line, "cannot read include '%s': %s", QS(qb, name), strerror(errno)); break; }
        ctx ic = {p, c->err, c->errlen};
        ynode *iroot = NULL;
        part ip = {0};
        rc = load_tree(&ic, text, len, &v_include, &iroot, 0);
        if (rc == 0 && iroot && iroot->t == N_MAP) {
            rc = build_part(&ic, iroot, &ip, 1);
            if (rc == 0) {
                /* append to the aggregate, in order */
                for (size_t k = 0; k < ip.n; k++) {
                    if (st->agg.n == st->agg.cap) {
                        st->agg.cap = st->agg.cap ? st->agg.cap * 2 : 8;
                        st->agg.h = xrealloc(st->agg.h, st->agg.cap * sizeof *st->agg.h);
                        st->agg.tail = xrealloc(st->agg.tail, st->agg.cap);
                    }
                    st->agg.h[st->agg.n] = ip.h[k];
                    st->agg.tail[st->agg.n++] = ip.tail[k];
                }
                ip.n = 0;
                for (size_t k = 0; k < ip.n_env; k++) env_set(&st->agg.env, &st->agg.n_env, ip.env[k].name, ip.env[k].value);
                for (size_t k = 0; k < ip.n_skip; k++) skip_add(&st->agg.skip, &st->agg.n_skip, ip.skip[k]);
                if (ip.manual_instances > st->agg.manual_instances) st->agg.manual_instances = ip.manual_instances;
                rc = do_includes(&ic, iroot, p, st, depth + 1);
            }
        }
        part_free(&ip);
        node_free(iroot);
        free(text);
    }
    free(from_dir);
    return rc;
}

static const char *const default_skip = "^(.*/)?((#.*#)|(.*~)|(.*\\.py[co])|(.*/RCS/.*)|(\\..*)|)$";

static int first_gen(const char *rt)
{
    static const char *l[] = {"python27", "python25", "python", "java", "java7", "java8", "php", "php55", "go", NULL};
    return in_list(l, rt);
}

static int is_vm(const ynode *root)
{
    char tmp[64];
    const ynode *vm = map_get(root, "vm"), *env = map_get(root, "env");
    if (vm && vm->st == S_BOOL && vm->b) return 1;
    if (env) {
        const char *e = pystr(env, tmp, sizeof tmp);
        if (!strcmp(e, "2") || !strcmp(e, "flex") || !strcmp(e, "flexible")) return 1;
    }
    return 0;
}

/* Rules of app.yaml that span several fields. */
static int check_app_rules(ctx *c, const ynode *root)
{
    char tmp[64], tmp2[64];
    qbuf qb;
    const ynode *x, *y;
    if (!map_get(root, "runtime") && !is_vm(root)) return fail(c, root->line, "runtime is required");
    if ((x = map_get(root, "application")) && (y = map_get(root, "project")))
        return fail(c, y->line, "give only one of application and project");
    if ((x = map_get(root, "service")) && (y = map_get(root, "module")))
        return fail(c, y->line, "give only one of service and module (module is the old name of service)");
    if ((x = map_get(root, "version"))) {
        const char *v = pystr(x, tmp, sizeof tmp);
        if (strstr(v, "-dot-")) return fail(c, x->line, "version '%s' cannot contain '-dot-'", QS(qb, v));
        if (!strncmp(v, "ah-builtin", 10)) return fail(c, x->line, "version '%s' cannot start with the reserved prefix 'ah-builtin'", QS(qb, v));
    }
    const ynode *hs = map_get(root, "handlers");
    if (hs && hs->n > MAX_HANDLERS) return fail(c, hs->kids[MAX_HANDLERS]->line, "more than %d handlers", MAX_HANDLERS);
    const char *rt = (x = map_get(root, "runtime")) ? pystr(x, tmp, sizeof tmp) : "";
    if ((x = map_get(root, "libraries"))) {
        if (strcmp(rt, "python27") != 0)
            return fail(c, x->line, "libraries are only supported by the python27 runtime");
        for (size_t i = 0; i < x->n; i++)
            for (size_t j = 0; j < i; j++) {
                const ynode *a = map_get(x->kids[i], "name"), *b = map_get(x->kids[j], "name");
                if (a && b && !strcmp(pystr(a, tmp, sizeof tmp), pystr(b, tmp2, sizeof tmp2)))
                    return fail(c, x->kids[i]->line, "library '%s' is listed twice", QS(qb, tmp));
            }
    }
    if (!strcmp(rt, "python27") && hs) {
        const ynode *ts = map_get(root, "threadsafe"), *as = map_get(root, "automatic_scaling");
        const ynode *mcr = as ? map_get(as, "max_concurrent_requests") : NULL;
        int threadsafe = (!ts || ts->b) && !(mcr && !strcmp(pystr(mcr, tmp2, sizeof tmp2), "1"));
        for (size_t i = 0; threadsafe && i < hs->n; i++) {
            const ynode *s = map_get(hs->kids[i], "script");
            if (!s) continue;
            const char *sc = pystr(s, tmp2, sizeof tmp2);
            size_t sl = strlen(sc);
            if ((sl >= 3 && !strcmp(sc + sl - 3, ".py")) || strchr(sc, '/'))
                return fail(c, s->line, "threadsafe cannot be enabled with the CGI handler '%s'", QS(qb, sc));
        }
    }
    int scalings = !!map_get(root, "automatic_scaling") + !!map_get(root, "manual_scaling") + !!map_get(root, "basic_scaling");
    if (scalings > 1) return fail(c, root->line, "give only one of automatic_scaling, manual_scaling and basic_scaling");
    if ((x = map_get(root, "automatic_scaling")) && (y = map_get(x, "custom_metrics")))
        for (size_t i = 0; i < y->n; i++) {
            const ynode *tu = map_get(y->kids[i], "target_utilization"), *si = map_get(y->kids[i], "single_instance_assignment");
            if (!!tu == !!si)
                return fail(c, y->kids[i]->line, "a custom metric needs exactly one of target_utilization and single_instance_assignment");
        }
    if ((x = map_get(root, "endpoints_api_service"))) {
        const ynode *rs = map_get(x, "rollout_strategy"), *cid = map_get(x, "config_id");
        int managed = rs && !strcmp(pystr(rs, tmp2, sizeof tmp2), "managed");
        if (!managed && !cid) return fail(c, x->line, "endpoints_api_service needs a config_id unless rollout_strategy is managed");
        if (managed && cid) return fail(c, cid->line, "endpoints_api_service cannot have a config_id when rollout_strategy is managed");
    }
    if ((x = map_get(root, "backends")))
        for (size_t i = 0; i < x->n; i++)
            for (const char *const *f = (const char *const[]){"public", "dynamic", "failfast", NULL}; *f; f++)
                if ((y = map_get(x->kids[i], *f)) && y->b) return fail(c, y->line, "backend field '%s' is not allowed", *f);
    if ((x = map_get(root, "instance_class"))) {
        /* App Engine's classes: F* for automatic scaling, B* for manual/basic */
        static const char *fcls[] = {"F1", "F2", "F4", "F4_1G", NULL};
        static const char *bcls[] = {"B1", "B2", "B4", "B4_1G", "B8", NULL};
        const char *ic = pystr(x, tmp2, sizeof tmp2);
        int isf = in_list(fcls, ic), isb = in_list(bcls, ic);
        int autos = !map_get(root, "manual_scaling") && !map_get(root, "basic_scaling");
        if (!isf && !isb && !is_vm(root))
            return fail(c, x->line, "instance_class '%s' is not one of F1, F2, F4, F4_1G, B1, B2, B4, B4_1G, B8", QS(qb, ic));
        if (isb && autos) return fail(c, x->line, "instance_class '%s' needs manual_scaling or basic_scaling; automatic scaling uses F classes", ic);
        if (isf && !autos) return fail(c, x->line, "instance_class '%s' is for automatic scaling; manual and basic scaling use B classes", ic);
    }
    return 0;
}

static void scaling_fill(app_scaling *s, const ynode *root)
{
    char tmp[64];
    const ynode *a, *x;
    if ((a = map_get(root, "manual_scaling"))) {
        s->kind = SCALING_MANUAL;
        if ((x = map_get(a, "instances"))) s->instances = atoi(pystr(x, tmp, sizeof tmp));
    } else if ((a = map_get(root, "basic_scaling"))) {
        s->kind = SCALING_BASIC;
        if ((x = map_get(a, "max_instances"))) s->max_instances = atoi(pystr(x, tmp, sizeof tmp));
        if ((x = map_get(a, "idle_timeout"))) s->idle_timeout = sdup(x);
    } else if ((a = map_get(root, "automatic_scaling"))) {
        s->kind = SCALING_AUTOMATIC;
#define INTF(f) if ((x = map_get(a, #f))) s->f = (int)strtol(pystr(x, tmp, sizeof tmp), NULL, 10)
        INTF(min_instances); INTF(max_instances); INTF(max_concurrent_requests);
#undef INTF
        if ((x = map_get(a, "min_idle_instances"))) s->min_idle_instances = atoi(pystr(x, tmp, sizeof tmp));
        if ((x = map_get(a, "max_idle_instances"))) s->max_idle_instances = atoi(pystr(x, tmp, sizeof tmp));
        if ((x = map_get(a, "target_cpu_utilization"))) s->target_cpu_utilization = strtod(pystr(x, tmp, sizeof tmp), NULL);
        if ((x = map_get(a, "target_throughput_utilization"))) s->target_throughput_utilization = strtod(pystr(x, tmp, sizeof tmp), NULL);
        if ((x = map_get(a, "min_pending_latency"))) s->min_pending_latency = sdup(x);
        if ((x = map_get(a, "max_pending_latency"))) s->max_pending_latency = sdup(x);
    }
}

static int compile_skip(ctx *c, app_config *cfg)
{
    buf b = BUF_INIT;
    char em[160];
    for (size_t i = 0; i < cfg->n_skip_files; i++)
        buf_printf(&b, "%s(?:%s%s)", i ? "|" : "", cfg->skip_files[i],
                   py_verbose(cfg->skip_files[i], strlen(cfg->skip_files[i])) ? "\n" : "");
    if (!b.len) { buf_free(&b); return 0; }
    cfg->skip_re = re_py(b.data, b.len, 0, 1, em, sizeof em);
    buf_free(&b);
    if (!cfg->skip_re) return fail(c, 1, "skip_files do not form a valid regular expression: %s", em);
    return 0;
}

app_config *appcfg_parse(const char *text, size_t len, const char *path, const char *app_dir,
                         char *err, size_t errlen)
{
    ctx c = {path ? path : "app.yaml", err, errlen};
    ynode *root = NULL;
    app_config *cfg = NULL;
    part own = {0};
    incstate st = {0};
    char tmp[64];
    const ynode *x;

    if (load_tree(&c, text, len, &v_app, &root, 1) < 0) goto bad;
    if (check_app_rules(&c, root) < 0) goto bad;
    if (build_part(&c, root, &own, 0) < 0) goto bad;
    st.app_dir = app_dir ? app_dir : ".";
    if (do_includes(&c, root, c.path, &st, 0) < 0) goto bad;

    cfg = xcalloc(1, sizeof *cfg);
    cfg->dir = xstrdup(st.app_dir);
    cfg->path = xstrdup(c.path);
    cfg->threadsafe = -1;
    cfg->default_expiration_s = -1;
    if ((x = map_get(root, "application")) || (x = map_get(root, "project"))) cfg->application = sdup(x);
    if ((x = map_get(root, "service")) || (x = map_get(root, "module"))) cfg->service = sdup(x);
    else cfg->service = xstrdup("default");
    cfg->version = sdup(map_get(root, "version"));
    cfg->runtime = sdup(map_get(root, "runtime"));
    if (!cfg->runtime) cfg->runtime = xstrdup("custom");
    cfg->entrypoint = sdup(map_get(root, "entrypoint"));
    cfg->api_version = sdup(map_get(root, "api_version"));
    if ((x = map_get(root, "threadsafe"))) cfg->threadsafe = x->b;
    if ((x = map_get(root, "app_engine_apis"))) cfg->app_engine_apis = x->b;
    if ((x = map_get(root, "default_expiration"))) cfg->default_expiration_s = appcfg_parse_expiration(pystr(x, tmp, sizeof tmp));
    if ((x = map_get(root, "inbound_services"))) {
        cfg->n_inbound_services = x->n;
        cfg->inbound_services = xcalloc(x->n, sizeof *cfg->inbound_services);
        for (size_t i = 0; i < x->n; i++) cfg->inbound_services[i] = sdup(x->kids[i]);
    }
    scaling_fill(&cfg->scaling, root);
    if (st.agg.manual_instances) {
        if (cfg->scaling.kind == SCALING_AUTOMATIC && map_get(root, "automatic_scaling")) {
            fail(&c, root->line, "an included file sets manual_scaling but app.yaml uses automatic_scaling");
            goto bad;
        }
        if (cfg->scaling.kind == SCALING_BASIC) {
            fail(&c, root->line, "an included file sets manual_scaling but app.yaml uses basic_scaling");
            goto bad;
        }
        cfg->scaling.kind = SCALING_MANUAL;
        if (st.agg.manual_instances > cfg->scaling.instances) cfg->scaling.instances = st.agg.manual_instances;
    }
    if ((x = map_get(root, "instance_class"))) cfg->instance_class = sdup(x);
    else cfg->instance_class = xstrdup(cfg->scaling.kind == SCALING_AUTOMATIC ? "F1" : "B2");

    /* handlers: includes' head handlers, app.yaml's, includes' tail handlers */
    size_t total = own.n + st.agg.n;
    if (total > MAX_HANDLERS) {
        fail(&c, root->line, "more than %d handlers once includes are merged", MAX_HANDLERS);
        goto bad;
    }
    cfg->handlers = xcalloc(total ? total : 1, sizeof *cfg->handlers);
    for (size_t i = 0; i < st.agg.n; i++) if (!st.agg.tail[i]) cfg->handlers[cfg->n_handlers++] = st.agg.h[i];
    for (size_t i = 0; i < own.n; i++) cfg->handlers[cfg->n_handlers++] = own.h[i];
    for (size_t i = 0; i < st.agg.n; i++) if (st.agg.tail[i]) cfg->handlers[cfg->n_handlers++] = st.agg.h[i];
    own.n = st.agg.n = 0;
    if (cfg->n_handlers == 0 && !first_gen(cfg->runtime)) {
        /* App Engine sends every request to the app */
        char em[160];
        app_handler *h = &cfg->handlers[0];
        memset(h, 0, sizeof *h);
        h->url = xstrdup("/.*");
        h->url_re = re_py(h->url, 3, 1, 1, em, sizeof em);
        h->kind = HANDLER_SCRIPT;
        h->script = xstrdup("auto");
        h->expiration_s = -1;
        h->line = 0;
        cfg->n_handlers = 1;
    }

    /* env: app.yaml's, overridden by includes' */
    for (size_t i = 0; i < own.n_env; i++) env_set(&cfg->env, &cfg->n_env, own.env[i].name, own.env[i].value);
    for (size_t i = 0; i < st.agg.n_env; i++) env_set(&cfg->env, &cfg->n_env, st.agg.env[i].name, st.agg.env[i].value);

    /* skip_files: app.yaml's (or App Engine's default), then includes' */
    if (own.n_skip) for (size_t i = 0; i < own.n_skip; i++) skip_add(&cfg->skip_files, &cfg->n_skip_files, own.skip[i]);
    else skip_add(&cfg->skip_files, &cfg->n_skip_files, default_skip);
    for (size_t i = 0; i < st.agg.n_skip; i++) skip_add(&cfg->skip_files, &cfg->n_skip_files, st.agg.skip[i]);
    if (compile_skip(&c, cfg) < 0) goto bad;

    part_free(&own);
    part_free(&st.agg);
    for (size_t i = 0; i < st.n_seen; i++) free(st.seen[i]);
    free(st.seen);
    node_free(root);
    return cfg;
bad:
    part_free(&own);
    part_free(&st.agg);
    for (size_t i = 0; i < st.n_seen; i++) free(st.seen[i]);
    free(st.seen);
    node_free(root);
    appcfg_free(cfg);
    return NULL;
}

app_config *appcfg_load(const char *app_dir, char *err, size_t errlen)
{
    char *dir = realpath(app_dir, NULL);
    if (!dir) { set_err(err, errlen, "%s: cannot open the app directory: %s", app_dir, strerror(errno)); return NULL; }
    char *path = xasprintf("%s/app.yaml", dir);
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        set_err(err, errlen, "%s: cannot read app.yaml: %s", path, strerror(errno));
        free(path); free(dir);
        return NULL;
    }
    app_config *cfg = appcfg_parse(text, len, path, dir, err, errlen);
    free(text); free(path); free(dir);
    return cfg;
}

void appcfg_free(app_config *cfg)
{
    if (!cfg) return;
    free(cfg->dir); free(cfg->path); free(cfg->application); free(cfg->service); free(cfg->version);
    free(cfg->runtime); free(cfg->entrypoint); free(cfg->api_version); free(cfg->instance_class);
    for (size_t i = 0; i < cfg->n_env; i++) { free(cfg->env[i].name); free(cfg->env[i].value); }
    free(cfg->env);
    for (size_t i = 0; i < cfg->n_handlers; i++) handler_free(&cfg->handlers[i]);
    free(cfg->handlers);
    for (size_t i = 0; i < cfg->n_skip_files; i++) free(cfg->skip_files[i]);
    free(cfg->skip_files);
    if (cfg->skip_re) pcre2_code_free(cfg->skip_re);
    for (size_t i = 0; i < cfg->n_inbound_services; i++) free(cfg->inbound_services[i]);
    free(cfg->inbound_services);
    free(cfg->scaling.min_pending_latency); free(cfg->scaling.max_pending_latency); free(cfg->scaling.idle_timeout);
    free(cfg);
}

/* ------------------------------------------------------------------------ */
/* Stage 4: matching                                                         */

int appcfg_match(const app_config *cfg, const char *path, size_t len, app_match *m)
{
    memset(m, 0, sizeof *m);
    m->index = -1;
    m->subject = path;
    m->subject_len = len;
    for (int i = 0; i < 2 * APPCFG_MAX_GROUPS; i++) m->ovec[i] = (size_t)-1;
    if (!cfg) return 0;
    pcre2_match_data *md = pcre2_match_data_create(APPCFG_MAX_GROUPS, NULL);
    if (!md) return 0;
    int found = 0;
    for (size_t i = 0; i < cfg->n_handlers; i++) {
        const app_handler *h = &cfg->handlers[i];
        if (!h->url_re) continue;
        int rc = pcre2_match(h->url_re, (PCRE2_SPTR)path, len, 0, 0, md, NULL);
        if (rc < 0) continue;
        if (rc == 0) rc = APPCFG_MAX_GROUPS;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        m->handler = h;
        m->index = (int)i;
        m->ngroups = rc;
        for (int g = 0; g < rc; g++) {
            m->ovec[2 * g] = ov[2 * g] == PCRE2_UNSET ? (size_t)-1 : ov[2 * g];
            m->ovec[2 * g + 1] = ov[2 * g + 1] == PCRE2_UNSET ? (size_t)-1 : ov[2 * g + 1];
        }
        found = 1;
        break;
    }
    pcre2_match_data_free(md);
    return found;
}

char *appcfg_expand(const char *tmpl, const app_match *m)
{
    buf b = BUF_INIT;
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '\\' && p[1] >= '1' && p[1] <= '9') {
            int g = p[1] - '0';
            if (m && g < m->ngroups && m->ovec[2 * g] != (size_t)-1 && m->ovec[2 * g + 1] >= m->ovec[2 * g])
                buf_append(&b, m->subject + m->ovec[2 * g], m->ovec[2 * g + 1] - m->ovec[2 * g]);
            p++;
            continue;
        }
        buf_putc(&b, *p);
    }
    size_t n;
    char *out = buf_detach(&b, &n);
    return out ? out : xstrdup("");
}

int appcfg_skipped(const app_config *cfg, const char *relpath)
{
    if (!cfg || !cfg->skip_re) return 0;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return 0;
    int rc = pcre2_match(cfg->skip_re, (PCRE2_SPTR)relpath, strlen(relpath), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

int appcfg_static_uploaded(const app_handler *h, const char *relpath)
{
    if (!h || h->kind == HANDLER_SCRIPT) return 0;
    if (h->kind == HANDLER_STATIC_DIR || !h->upload_re) return 1;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return 0;
    int rc = pcre2_match(h->upload_re, (PCRE2_SPTR)relpath, strlen(relpath), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

int appcfg_has_inbound(const app_config *cfg, const char *name)
{
    if (!cfg) return 0;
    for (size_t i = 0; i < cfg->n_inbound_services; i++)
        if (!strcmp(cfg->inbound_services[i], name)) return 1;
    return 0;
}

int appcfg_memory_mb(const app_config *cfg)
{
    static const struct { const char *cls; int mb; } t[] = {
        {"F1", 384}, {"F2", 768}, {"F4", 1536}, {"F4_1G", 3072},
        {"B1", 384}, {"B2", 768}, {"B4", 1536}, {"B4_1G", 3072}, {"B8", 3072},
    };
    const char *cls = cfg && cfg->instance_class ? cfg->instance_class : "F1";
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) if (!strcmp(t[i].cls, cls)) return t[i].mb;
    return 384;
}
