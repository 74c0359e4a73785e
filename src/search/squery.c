/* squery.c - parser and SQL compiler of the Search API query language.
 *
 * The lexer cuts the query into tokens up front: words (anything but blanks
 * and the characters ( ) " : < > = ! ,), quoted strings with backslash
 * escapes, operators, and the keywords AND / OR / NOT (upper case only). A
 * '-', '~' or '+' that starts a term is an operator of its own (negation,
 * stemming, literal); elsewhere it is part of a word ("-3", "2020-01-01").
 * A recursive-descent parser with App Engine's precedence builds the tree:
 *
 *   expr := seq (AND seq)*          seq  := fact fact*
 *   fact := term (OR term)*         term := (NOT | '-') prim | prim
 *   prim := '(' expr ')' | name op value | name (':'|'=') '(' expr ')'
 *         | distance(name, geopoint(lat, lng)) op number | value
 *
 * A field group field:(a OR b) pushes the field into its global terms.
 *
 * The compiler maps each leaf to a set of document ids, as a SQL
 * `d.id IN (SELECT ...)` over the store's tables, and the boolean operators
 * to SQL's. A term matches text and HTML fields through FTS5 (as a phrase
 * of its tokens), tokenized-prefix fields as an FTS5 prefix phrase, atoms by
 * whole value (ASCII case-insensitive), untokenized-prefix fields by
 * leading characters, and, under a field restriction, numbers and dates by
 * equality. <, <=, >, >= compare numbers, or dates at day granularity. */
#include "search/squery.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/util.h"

/* ---- lexer ---- */

typedef enum {
    T_EOF, T_WORD, T_STR, T_LP, T_RP, T_COLON, T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE,
    T_COMMA, T_AND, T_OR, T_NOT, T_MINUS, T_TILDE, T_PLUS
} tok_kind;

typedef struct { tok_kind k; char *text; int pos; } token;

typedef struct {
    token *t;
    int n, cap, i;
    char *err;
    size_t errlen;
    int failed;
    int depth;
} parser;

static void perr(parser *p, int pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void perr(parser *p, int pos, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = 1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(p->err, p->errlen, "The search query has a syntax error at position %d: %s.", pos, msg);
}

static void push_tok(parser *p, tok_kind k, char *text, int pos)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->t = xrealloc(p->t, (size_t)p->cap * sizeof *p->t);
    }
    p->t[p->n++] = (token){ k, text, pos };
}

static int special(char c)
{
    return strchr("()\":<>=!,", c) != NULL;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* A term may start here: after nothing, a blank, '(' or a prefix operator. */
static int term_start(parser *p)
{
    if (p->n == 0) return 1;
    tok_kind k = p->t[p->n - 1].k;
    return k == T_LP || k == T_AND || k == T_OR || k == T_NOT || k == T_MINUS;
}

static int lex(parser *p, const char *q, size_t n)
{
    size_t i = 0;
    int after_blank = 1;
    while (i < n) {
        char c = q[i];
        int pos = (int)i + 1;
        if (c == '\0') { perr(p, pos, "a NUL byte is not allowed"); return -1; }
        if (is_blank(c)) { i++; after_blank = 1; continue; }
        int prev_op = p->n > 0 && p->t[p->n - 1].k >= T_COLON && p->t[p->n - 1].k <= T_GE;
        int starts = (after_blank || term_start(p)) && !prev_op;
        after_blank = 0;
        switch (c) {
        case '(': push_tok(p, T_LP, NULL, pos); i++; continue;
        case ')': push_tok(p, T_RP, NULL, pos); i++; continue;
        case ':': push_tok(p, T_COLON, NULL, pos); i++; continue;
        case ',': push_tok(p, T_COMMA, NULL, pos); i++; continue;
        case '=': push_tok(p, T_EQ, NULL, pos); i++; continue;
        case '<':
            if (i + 1 < n && q[i + 1] == '=') { push_tok(p, T_LE, NULL, pos); i += 2; }
            else { push_tok(p, T_LT, NULL, pos); i++; }
            continue;
        case '>':
            if (i + 1 < n && q[i + 1] == '=') { push_tok(p, T_GE, NULL, pos); i += 2; }
            else { push_tok(p, T_GT, NULL, pos); i++; }
            continue;
        case '!':
            if (i + 1 < n && q[i + 1] == '=') { push_tok(p, T_NE, NULL, pos); i += 2; continue; }
            perr(p, pos, "'!' must be followed by '='");
            return -1;
        case '"': {
            buf s = BUF_INIT;
            i++;
            for (;;) {
                if (i >= n) { buf_free(&s); perr(p, pos, "the quoted string is not closed"); return -1; }
                if (q[i] == '\\' && i + 1 < n) { buf_putc(&s, q[i + 1]); i += 2; continue; }
                if (q[i] == '"') { i++; break; }
                if (q[i] == '\0') { buf_free(&s); perr(p, (int)i + 1, "a NUL byte is not allowed"); return -1; }
                buf_putc(&s, q[i++]);
            }
            buf_putc(&s, 0);
            size_t len;
            push_tok(p, T_STR, buf_detach(&s, &len), pos);
            continue;
        }
        default: break;
        }
        if (starts && (c == '-' || c == '~' || c == '+') && i + 1 < n && !is_blank(q[i + 1])) {
            push_tok(p, c == '-' ? T_MINUS : c == '~' ? T_TILDE : T_PLUS, NULL, pos);
            i++;
            continue;
        }
        size_t s = i;
        while (i < n && !is_blank(q[i]) && !special(q[i]) && q[i] != '\0') {
            if (q[i] == '\\' && i + 1 < n) i++;
            i++;
        }
        size_t len = i - s;
        tok_kind k = T_WORD;
        if (len == 3 && !memcmp(q + s, "AND", 3)) k = T_AND;
        else if (len == 2 && !memcmp(q + s, "OR", 2)) k = T_OR;
        else if (len == 3 && !memcmp(q + s, "NOT", 3)) k = T_NOT;
        char *text = NULL;
        if (k == T_WORD) {            /* drop backslash escapes */
            text = xmalloc(len + 1);
            size_t o = 0;
            for (size_t j = s; j < i; j++) {
                if (q[j] == '\\' && j + 1 < i) j++;
                text[o++] = q[j];
            }
            text[o] = 0;
        }
        push_tok(p, k, text, pos);
    }
    push_tok(p, T_EOF, NULL, (int)n + 1);
    return 0;
}

/* ---- parser ---- */

static token *cur(parser *p) { return &p->t[p->i]; }
static token *peek(parser *p, int k) { int j = p->i + k; return &p->t[j < p->n ? j : p->n - 1]; }

static const char *tok_name(const token *t)
{
    switch (t->k) {
    case T_EOF: return "the end of the query";
    case T_WORD: case T_STR: return "a term";
    case T_LP: return "'('";
    case T_RP: return "')'";
    case T_COLON: return "':'";
    case T_EQ: return "'='";
    case T_NE: return "'!='";
    case T_LT: return "'<'";
    case T_LE: return "'<='";
    case T_GT: return "'>'";
    case T_GE: return "'>='";
    case T_COMMA: return "','";
    case T_AND: return "AND";
    case T_OR: return "OR";
    case T_NOT: return "NOT";
    case T_MINUS: return "'-'";
    case T_TILDE: return "'~'";
    case T_PLUS: return "'+'";
    }
    return "?";
}

static sq_node *node(sq_kind k, int pos)
{
    sq_node *n = xcalloc(1, sizeof *n);
    n->kind = k;
    n->pos = pos;
    return n;
}

static void add_kid(sq_node *n, sq_node *k)
{
    /* flatten nested AND/OR of the same kind */
    if (k->kind == n->kind && (k->kind == SQ_AND || k->kind == SQ_OR)) {
        for (int i = 0; i < k->nkids; i++) add_kid(n, k->kids[i]);
        free(k->kids);
        free(k);
        return;
    }
    n->kids = xrealloc(n->kids, (size_t)(n->nkids + 1) * sizeof *n->kids);
    n->kids[n->nkids++] = k;
}

void sq_free(sq_node *n)
{
    if (!n) return;
    for (int i = 0; i < n->nkids; i++) sq_free(n->kids[i]);
    free(n->kids);
    free(n->field);
    free(n->value);
    free(n);
}

static int valid_field_name(const char *s)
{
    if (!isalpha((unsigned char)s[0])) return 0;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_') return 0;
    return strlen(s) <= 500;
}

static int is_op(tok_kind k)
{
    return k == T_COLON || k == T_EQ || k == T_NE || k == T_LT || k == T_LE || k == T_GT || k == T_GE;
}

static sq_op op_of(tok_kind k)
{
    switch (k) {
    case T_COLON: return SQ_HAS;
    case T_EQ: return SQ_EQ;
    case T_NE: return SQ_NE;
    case T_LT: return SQ_LT;
    case T_LE: return SQ_LE;
    case T_GT: return SQ_GT;
    default: return SQ_GE;
    }
}

static sq_node *parse_expr(parser *p, const char *field);

/* value := ['~' | '+'] (WORD | STR) */
static sq_node *parse_value(parser *p, const char *field, sq_op op)
{
    token *t = cur(p);
    if (t->k == T_TILDE || t->k == T_PLUS) { p->i++; t = cur(p); }
    if (t->k != T_WORD && t->k != T_STR) {
        perr(p, t->pos, "expected a search term, found %s", tok_name(t));
        return NULL;
    }
    sq_node *n = node(SQ_TERM, t->pos);
    n->field = field ? xstrdup(field) : NULL;
    n->op = op;
    n->value = xstrdup(t->text);
    n->phrase = t->k == T_STR;
    p->i++;
    return n;
}

static int parse_number_tok(parser *p, double *out)
{
    token *t = cur(p);
    int neg = 0;
    if (t->k == T_MINUS && peek(p, 1)->k == T_WORD && peek(p, 1)->pos == t->pos + 1) {
        neg = 1;                       /* "(-2" lexes as negation; here it is a sign */
        p->i++;
        t = cur(p);
    }
    if (t->k != T_WORD || (neg && t->text[0] == '-') || sq_parse_number(t->text, out) < 0) {
        if (neg) p->i--, t = cur(p);
        perr(p, t->pos, "expected a number, found %s", tok_name(t));
        return -1;
    }
    if (neg) *out = -*out;
    p->i++;
    return 0;
}

static int expect(parser *p, tok_kind k, const char *what)
{
    if (cur(p)->k != k) { perr(p, cur(p)->pos, "expected %s, found %s", what, tok_name(cur(p))); return -1; }
    p->i++;
    return 0;
}

/* distance(field, geopoint(lat, lng)) op number, either argument order. */
static sq_node *parse_distance(parser *p)
{
    int pos = cur(p)->pos;
    p->i += 2;                                    /* distance ( */
    char *field = NULL;
    double lat = 0, lng = 0;
    int have_point = 0;
    for (int arg = 0; arg < 2; arg++) {
        if (arg && expect(p, T_COMMA, "','") < 0) goto fail;
        token *t = cur(p);
        if (t->k == T_WORD && !strcmp(t->text, "geopoint") && peek(p, 1)->k == T_LP && !have_point) {
            p->i += 2;
            if (parse_number_tok(p, &lat) < 0 || expect(p, T_COMMA, "','") < 0 ||
                parse_number_tok(p, &lng) < 0 || expect(p, T_RP, "')'") < 0) goto fail;
            if (lat < -90 || lat > 90 || lng < -180 || lng > 180) {
                perr(p, t->pos, "geopoint latitude must be in [-90, 90] and longitude in [-180, 180]");
                goto fail;
            }
            have_point = 1;
        } else if (t->k == T_WORD && !field && valid_field_name(t->text)) {
            field = xstrdup(t->text);
            p->i++;
        } else {
            perr(p, t->pos, "distance() takes a geo field name and a geopoint(latitude, longitude)");
            goto fail;
        }
    }
    if (expect(p, T_RP, "')'") < 0) goto fail;
    token *op = cur(p);
    if (op->k != T_LT && op->k != T_LE && op->k != T_GT && op->k != T_GE) {
        perr(p, op->pos, "distance() must be compared with <, <=, > or >=, found %s", tok_name(op));
        goto fail;
    }
    p->i++;
    double m;
    if (parse_number_tok(p, &m) < 0) goto fail;
    sq_node *n = node(SQ_DIST, pos);
    n->field = field;
    n->op = op_of(op->k);
    n->value = xasprintf("%.17g", m);
    n->lat = lat;
    n->lng = lng;
    return n;
fail:
    free(field);
    return NULL;
}

static sq_node *parse_prim(parser *p, const char *field)
{
    token *t = cur(p);
    if (t->k == T_LP) {
        p->i++;
        sq_node *e = parse_expr(p, field);
        if (!e) return NULL;
        if (expect(p, T_RP, "')'") < 0) { sq_free(e); return NULL; }
        return e;
    }
    if (t->k == T_WORD && !strcmp(t->text, "distance") && peek(p, 1)->k == T_LP) {
        if (field) { perr(p, t->pos, "distance() cannot appear inside the field restriction on '%s'", field); return NULL; }
        return parse_distance(p);
    }
    if (t->k == T_WORD && is_op(peek(p, 1)->k)) {
        if (field) {
            perr(p, t->pos, "a field restriction cannot appear inside the restriction on '%s'", field);
            return NULL;
        }
        if (!valid_field_name(t->text)) {
            perr(p, t->pos, "'%s' is not a valid field name", t->text);
            return NULL;
        }
        const char *name = t->text;
        tok_kind opk = peek(p, 1)->k;
        p->i += 2;
        if ((opk == T_COLON || opk == T_EQ) && cur(p)->k == T_LP) {
            p->i++;
            sq_node *e = parse_expr(p, name);
            if (!e) return NULL;
            if (expect(p, T_RP, "')'") < 0) { sq_free(e); return NULL; }
            return e;
        }
        return parse_value(p, name, op_of(opk));
    }
    if (t->k == T_WORD || t->k == T_STR || t->k == T_TILDE || t->k == T_PLUS)
        return parse_value(p, field, SQ_HAS);
    perr(p, t->pos, "expected a search term, found %s", tok_name(t));
    return NULL;
}

static sq_node *parse_term(parser *p, const char *field)
{
    token *t = cur(p);
    if (t->k == T_NOT || t->k == T_MINUS) {
        p->i++;
        if (cur(p)->k == T_NOT || cur(p)->k == T_MINUS) {
            perr(p, cur(p)->pos, "expected a search term after %s, found %s", tok_name(t), tok_name(cur(p)));
            return NULL;
        }
        sq_node *k = parse_prim(p, field);
        if (!k) return NULL;
        sq_node *n = node(SQ_NOT, t->pos);
        add_kid(n, k);
        return n;
    }
    return parse_prim(p, field);
}

static sq_node *parse_fact(parser *p, const char *field)
{
    sq_node *a = parse_term(p, field);
    if (!a) return NULL;
    if (cur(p)->k != T_OR) return a;
    sq_node *n = node(SQ_OR, a->pos);
    add_kid(n, a);
    while (cur(p)->k == T_OR) {
        p->i++;
        sq_node *b = parse_term(p, field);
        if (!b) { sq_free(n); return NULL; }
        add_kid(n, b);
    }
    return n;
}

static int starts_term(tok_kind k)
{
    return k == T_WORD || k == T_STR || k == T_LP || k == T_NOT || k == T_MINUS || k == T_TILDE || k == T_PLUS;
}

static sq_node *parse_seq(parser *p, const char *field)
{
    sq_node *a = parse_fact(p, field);
    if (!a) return NULL;
    if (!starts_term(cur(p)->k)) return a;
    sq_node *n = node(SQ_AND, a->pos);
    add_kid(n, a);
    while (starts_term(cur(p)->k)) {
        sq_node *b = parse_fact(p, field);
        if (!b) { sq_free(n); return NULL; }
        add_kid(n, b);
    }
    return n;
}

static sq_node *parse_expr(parser *p, const char *field)
{
    if (++p->depth > SQ_MAX_DEPTH) {
        perr(p, cur(p)->pos, "the query nests deeper than %d levels", SQ_MAX_DEPTH);
        return NULL;
    }
    sq_node *a = parse_seq(p, field);
    if (!a) return NULL;
    if (cur(p)->k == T_AND) {
        sq_node *n = node(SQ_AND, a->pos);
        add_kid(n, a);
        while (cur(p)->k == T_AND) {
            p->i++;
            sq_node *b = parse_seq(p, field);
            if (!b) { sq_free(n); return NULL; }
            add_kid(n, b);
        }
        a = n;
    }
    p->depth--;
    return a;
}

sq_node *sq_parse(const char *q, size_t n, char *err, size_t errlen)
{
    if (n > SQ_MAX_QUERY) {
        set_err(err, errlen, "The search query is %zu bytes long; at most %d are allowed.", n, SQ_MAX_QUERY);
        return NULL;
    }
    parser p = { .err = err, .errlen = errlen };
    sq_node *root = NULL;
    if (lex(&p, q, n) == 0) {
        if (p.t[0].k == T_EOF) root = node(SQ_ALL, 1);
        else {
            root = parse_expr(&p, NULL);
            if (root && cur(&p)->k != T_EOF) {
                perr(&p, cur(&p)->pos, "unexpected %s", tok_name(cur(&p)));
                sq_free(root);
                root = NULL;
            }
        }
    }
    for (int i = 0; i < p.n; i++) free(p.t[i].text);
    free(p.t);
    if (!root && !p.failed) set_err(err, errlen, "The search query could not be parsed.");
    return root;
}

/* ---- dump ---- */

static const char *op_name(sq_op op)
{
    static const char *names[] = { "HAS", "EQ", "NE", "LT", "LE", "GT", "GE" };
    return names[op];
}

void sq_dump(const sq_node *n, buf *out)
{
    switch (n->kind) {
    case SQ_ALL: buf_puts(out, "(ALL)"); return;
    case SQ_AND: case SQ_OR: case SQ_NOT:
        buf_puts(out, n->kind == SQ_AND ? "(AND" : n->kind == SQ_OR ? "(OR" : "(NOT");
        for (int i = 0; i < n->nkids; i++) { buf_putc(out, ' '); sq_dump(n->kids[i], out); }
        buf_putc(out, ')');
        return;
    case SQ_TERM:
        buf_printf(out, "(%s %s %s%s%s)", op_name(n->op), n->field ? n->field : "*",
                   n->phrase ? "\"" : "", n->value, n->phrase ? "\"" : "");
        return;
    case SQ_DIST:
        buf_printf(out, "(DIST %s %g %g %s %s)", n->field, n->lat, n->lng, op_name(n->op), n->value);
        return;
    }
}

/* ---- values ---- */

int sq_parse_number(const char *s, double *out)
{
    if (!*s || is_blank(*s)) return -1;
    char *end;
    double d = strtod(s, &end);
    if (*end || !isfinite(d)) return -1;
    for (const char *c = s; *c; c++)            /* no hex, inf, nan spellings */
        if (!strchr("0123456789+-.eE", *c)) return -1;
    *out = d;
    return 0;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int sq_parse_date(const char *s, double *day_ms)
{
    int y, m, d, used = 0;
    if (strlen(s) < 8 || sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &used) != 3 || s[used]) return -1;
    if (s[4] != '-' || m < 1 || m > 12 || d < 1 || d > 31) return -1;
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (d > mdays[m - 1]) return -1;
    *day_ms = (double)days_from_civil(y, (unsigned)m, (unsigned)d) * 86400000.0;
    return 0;
}

/* Lower case of one code point for the scripts with simple case pairs:
 * ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic. */
static uint32_t lower_cp(uint32_t c)
{
    if (c < 0x80) return (uint32_t)tolower((int)c);
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
    if (c >= 0x100 && c <= 0x137 && c != 0x130) return c | 1;
    if (c >= 0x139 && c <= 0x148) return c & 1 ? c + 1 : c;
    if (c >= 0x14A && c <= 0x177) return c | 1;
    if (c == 0x178) return 0xFF;
    if (c >= 0x179 && c <= 0x17E) return c & 1 ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    return c;
}

static void put_utf8(char *o, size_t *k, uint32_t c)
{
    if (c < 0x80) o[(*k)++] = (char)c;
    else if (c < 0x800) { o[(*k)++] = (char)(0xC0 | c >> 6); o[(*k)++] = (char)(0x80 | (c & 0x3F)); }
    else {
        o[(*k)++] = (char)(0xE0 | c >> 12);
        o[(*k)++] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (c & 0x3F));
    }
}

char *sq_lower(const char *s, size_t n)
{
    /* every case pair handled keeps its UTF-8 length, so n bytes suffice */
    char *o = xmalloc(n + 1);
    size_t k = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] >= 0xC2 && u[i] <= 0xDF && i + 1 < n && (u[i + 1] & 0xC0) == 0x80) {
            uint32_t c = (uint32_t)(u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F);
            uint32_t l = lower_cp(c);
            if (l >= 0x80 && l < 0x800) { put_utf8(o, &k, l); i += 2; continue; }
        }
        if (u[i] < 0x80) { o[k++] = (char)tolower(u[i]); i++; continue; }
        o[k++] = (char)u[i++];
    }
    o[k] = 0;
    return o;
}

/* ---- compiler ---- */

void sq_add_text(sq_sql *s, const char *p, size_t n)
{
    if (s->nparams == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->params = xrealloc(s->params, (size_t)s->cap * sizeof *s->params);
    }
    s->params[s->nparams++] = (sq_param){ 0, xstrndup(p, n), 0 };
}

void sq_add_num(sq_sql *s, double d)
{
    if (s->nparams == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->params = xrealloc(s->params, (size_t)s->cap * sizeof *s->params);
    }
    s->params[s->nparams++] = (sq_param){ 1, NULL, d };
}

void sq_sql_free(sq_sql *s)
{
    for (int i = 0; i < s->nparams; i++) free(s->params[i].s);
    free(s->params);
    buf_free(&s->sql);
    memset(s, 0, sizeof *s);
}

static int has_token_chars(const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (isalnum(*c) || *c >= 0x80) return 1;
    return 0;
}

/* The FTS5 phrase for a term: "tok tok" with quotes doubled, '*' for prefix. */
static void fts_phrase(sq_sql *s, const char *v, int prefix)
{
    buf b = BUF_INIT;
    buf_putc(&b, '"');
    for (const char *c = v; *c; c++) {
        if (*c == '"') buf_putc(&b, '"');
        buf_putc(&b, *c);
    }
    buf_putc(&b, '"');
    if (prefix) buf_putc(&b, '*');
    sq_add_text(s, b.data, b.len);
    buf_free(&b);
}

static void field_cond(sq_sql *s, const char *field)
{
    if (!field) return;
    buf_puts(&s->sql, " AND field=?");
    sq_add_text(s, field, strlen(field));
}

static void or_sep(sq_sql *s, int *first)
{
    if (!*first) buf_puts(&s->sql, " OR ");
    *first = 0;
}

static void compile_match(const sq_node *n, sq_sql *s)
{
    int first = 1;
    buf_putc(&s->sql, '(');
    if (has_token_chars(n->value)) {
        for (int prefix = 0; prefix < 2; prefix++) {
            or_sep(s, &first);
            buf_puts(&s->sql, "d.id IN (SELECT rowid>>10 FROM fts WHERE fts MATCH ?");
            fts_phrase(s, n->value, prefix);
            buf_printf(&s->sql, " AND kind=%d", prefix);
            field_cond(s, n->field);
            buf_putc(&s->sql, ')');
        }
    }
    char *m = sq_lower(n->value, strlen(n->value));
    or_sep(s, &first);
    buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND m=?", SF_ATOM);
    sq_add_text(s, m, strlen(m));
    field_cond(s, n->field);
    buf_putc(&s->sql, ')');
    if (*m) {
        or_sep(s, &first);
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND substr(m,1,length(?))=?", SF_UPREFIX);
        sq_add_text(s, m, strlen(m));
        sq_add_text(s, m, strlen(m));
        field_cond(s, n->field);
        buf_putc(&s->sql, ')');
    }
    free(m);
    double v;
    if (n->field && sq_parse_number(n->value, &v) == 0) {
        or_sep(s, &first);
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND field=? AND n=?)", SF_NUMBER);
        sq_add_text(s, n->field, strlen(n->field));
        sq_add_num(s, v);
    }
    if (n->field && sq_parse_date(n->value, &v) == 0) {
        or_sep(s, &first);
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND field=? AND n>=? AND n<?)", SF_DATE);
        sq_add_text(s, n->field, strlen(n->field));
        sq_add_num(s, v);
        sq_add_num(s, v + 86400000.0);
    }
    buf_putc(&s->sql, ')');
}

static const char *sql_op(sq_op op)
{
    switch (op) {
    case SQ_LT: return "<";
    case SQ_LE: return "<=";
    case SQ_GT: return ">";
    default: return ">=";
    }
}

static int compile_compare(const sq_node *n, sq_sql *s, char *err, size_t errlen)
{
    double v;
    if (sq_parse_number(n->value, &v) == 0) {
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND field=? AND n%s?)",
                   SF_NUMBER, sql_op(n->op));
        sq_add_text(s, n->field, strlen(n->field));
        sq_add_num(s, v);
        return 0;
    }
    if (sq_parse_date(n->value, &v) == 0) {
        /* day granularity: > D means from the next day on, <= D up to its end */
        const char *o = n->op == SQ_LT || n->op == SQ_GE ? (n->op == SQ_LT ? "<" : ">=") : (n->op == SQ_LE ? "<" : ">=");
        if (n->op == SQ_LE || n->op == SQ_GT) v += 86400000.0;
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND field=? AND n%s?)", SF_DATE, o);
        sq_add_text(s, n->field, strlen(n->field));
        sq_add_num(s, v);
        return 0;
    }
    set_err(err, errlen, "The search query compares field '%s' at position %d with '%s', "
            "which is neither a number nor a date (YYYY-MM-DD).", n->field, n->pos, n->value);
    return -1;
}

static int compile(const sq_node *n, sq_sql *s, char *err, size_t errlen)
{
    switch (n->kind) {
    case SQ_ALL:
        buf_puts(&s->sql, "1");
        return 0;
    case SQ_AND: case SQ_OR:
        buf_putc(&s->sql, '(');
        for (int i = 0; i < n->nkids; i++) {
            if (i) buf_puts(&s->sql, n->kind == SQ_AND ? " AND " : " OR ");
            if (compile(n->kids[i], s, err, errlen) < 0) return -1;
        }
        buf_putc(&s->sql, ')');
        return 0;
    case SQ_NOT:
        buf_puts(&s->sql, "(NOT ");
        if (compile(n->kids[0], s, err, errlen) < 0) return -1;
        buf_putc(&s->sql, ')');
        return 0;
    case SQ_TERM:
        if (n->op == SQ_HAS || n->op == SQ_EQ) { compile_match(n, s); return 0; }
        if (n->op == SQ_NE) {
            buf_puts(&s->sql, "(NOT ");
            compile_match(n, s);
            buf_putc(&s->sql, ')');
            return 0;
        }
        return compile_compare(n, s, err, errlen);
    case SQ_DIST: {
        double m;
        if (sq_parse_number(n->value, &m) < 0) {
            set_err(err, errlen, "The distance at position %d is not a number.", n->pos);
            return -1;
        }
        buf_printf(&s->sql, "d.id IN (SELECT doc FROM fv WHERE type=%d AND field=? "
                   "AND cz_geo_distance(lat,lng,?,?)%s?)", SF_GEO, sql_op(n->op));
        sq_add_text(s, n->field, strlen(n->field));
        sq_add_num(s, n->lat);
        sq_add_num(s, n->lng);
        sq_add_num(s, m);
        return 0;
    }
    }
    return -1;
}

int sq_compile(const sq_node *n, sq_sql *out, char *err, size_t errlen)
{
    return compile(n, out, err, errlen);
}

void sq_terms(const sq_node *n, void (*fn)(void *arg, const char *term), void *arg)
{
    if (n->kind == SQ_NOT) return;
    if (n->kind == SQ_TERM && (n->op == SQ_HAS || n->op == SQ_EQ)) { fn(arg, n->value); return; }
    for (int i = 0; i < n->nkids; i++) sq_terms(n->kids[i], fn, arg);
}

typedef struct { sq_sql *s; int n; } score_acc;

static void score_term(const sq_node *n, score_acc *a)
{
    if (n->kind == SQ_NOT) return;
    if (n->kind == SQ_TERM && (n->op == SQ_HAS || n->op == SQ_EQ)) {
        if (!has_token_chars(n->value)) return;
        if (a->n++) buf_puts(&a->s->sql, " + ");
        /* the best-matching field; FTS5 refuses bm25 inside an aggregate */
        buf_puts(&a->s->sql, "coalesce((SELECT -bm25(fts) FROM fts WHERE fts MATCH ? "
                             "AND fts.rowid BETWEEN d.id * 1024 AND d.id * 1024 + 1023");
        fts_phrase(a->s, n->value, 0);
        field_cond(a->s, n->field);
        buf_puts(&a->s->sql, " ORDER BY rank LIMIT 1), 0)");
        return;
    }
    for (int i = 0; i < n->nkids; i++) score_term(n->kids[i], a);
}

void sq_score_sql(const sq_node *n, sq_sql *out)
{
    score_acc a = { out, 0 };
    buf_putc(&out->sql, '(');
    score_term(n, &a);
    if (!a.n) buf_putc(&out->sql, '0');
    buf_putc(&out->sql, ')');
}
