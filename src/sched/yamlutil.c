/* yamlutil.c - loading a YAML file into a node tree and reporting errors
 * with their line (see yamlutil.h). Documents must be UTF-8, a single
 * document, and free of anchors/aliases (App Engine's parsers refuse those
 * too, and they would let a tiny file expand enormously). */
#include "sched/yamlutil.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

int yu_fail(yu_doc *d, const yaml_node_t *n, char *err, size_t errlen, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(err, errlen, "%s:%d: %s", d->path, n ? (int)n->start_mark.line + 1 : 1, msg);
    return -1;
}

int yu_read_file(const char *dir, const char *base, char **text, size_t *len, char **path,
                 char *err, size_t errlen)
{
    static const char *exts[] = {"yaml", "yml"};
    for (int i = 0; i < 2; i++) {
        char *p = xasprintf("%s/%s.%s", dir, base, exts[i]);
        char *t = read_file(p, len);
        if (t) { *text = t; *path = p; return 1; }
        if (errno != ENOENT) {
            set_err(err, errlen, "cannot read %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        free(p);
    }
    return 0;
}

int yu_load(yu_doc *d, const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->path = path;
    /* Anchors and aliases are refused before loading (cheap scan of events). */
    yaml_parser_t p;
    yaml_event_t ev;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int docs = 0;
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            set_err(err, errlen, "%s:%d: %s", path, (int)p.problem_mark.line + 1,
                    p.problem ? p.problem : "malformed YAML");
            yaml_parser_delete(&p);
            return -1;
        }
        int t = ev.type;
        int line = (int)ev.start_mark.line + 1;
        int alias = t == YAML_ALIAS_EVENT ||
                    (t == YAML_SCALAR_EVENT && ev.data.scalar.anchor) ||
                    (t == YAML_SEQUENCE_START_EVENT && ev.data.sequence_start.anchor) ||
                    (t == YAML_MAPPING_START_EVENT && ev.data.mapping_start.anchor);
        yaml_event_delete(&ev);
        if (alias) {
            set_err(err, errlen, "%s:%d: anchors and aliases (& and *) are not allowed", path, line);
            yaml_parser_delete(&p);
            return -1;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            set_err(err, errlen, "%s:%d: the file holds more than one YAML document", path, line);
            yaml_parser_delete(&p);
            return -1;
        }
        if (t == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);

    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &d->doc)) {
        set_err(err, errlen, "%s:%d: %s", path, (int)p.problem_mark.line + 1, p.problem ? p.problem : "malformed YAML");
        yaml_parser_delete(&p);
        return -1;
    }
    yaml_parser_delete(&p);
    d->loaded = 1;
    return 0;
}

void yu_free(yu_doc *d)
{
    if (d->loaded) yaml_document_delete(&d->doc);
    d->loaded = 0;
}

const char *yu_scalar(const yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE) return NULL;
    if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length) return NULL;   /* embedded NUL */
    return (const char *)n->data.scalar.value;
}

int yu_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int yu_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}
