/* indexyaml.c - index.yaml: composite index definitions.
 *
 * The file is loaded as a libyaml document and walked: a top-level mapping
 * with `indexes:`, a sequence of mappings with `kind`, `ancestor` (yes/no),
 * and `properties`, each a mapping with `name` and `direction` (asc/desc).
 * An index's id is a hash of its definition, so the same definition keeps
 * the same id (and the same index rows) across restarts and edits of the
 * file, and an index created automatically matches one declared later. */
#include "datastore/query.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "core/util.h"
#include "datastore/query_plan.h"
#include "proto/pb.h"

void dsq_index_free(dsq_index *ix)
{
    free(ix->kind);
    for (size_t i = 0; i < ix->n_props; i++) free(ix->props[i].name);
    free(ix->props);
    memset(ix, 0, sizeof *ix);
}

void dsq_index_list_free(dsq_index_list *l)
{
    for (size_t i = 0; i < l->n; i++) dsq_index_free(&l->v[i]);
    free(l->v);
    l->v = NULL; l->n = 0;
}

void dsq_index_set_id(dsq_index *ix)
{
    uint64_t h = 14695981039346656037ULL;
    buf b = BUF_INIT;
    buf_printf(&b, "%s|%d", ix->kind, ix->ancestor);
    for (size_t i = 0; i < ix->n_props; i++)
        buf_printf(&b, "|%s:%c", ix->props[i].name, ix->props[i].desc ? 'd' : 'a');
    for (size_t i = 0; i < buf_unread(&b); i++) { h ^= (uint8_t)b.data[i]; h *= 1099511628211ULL; }
    buf_free(&b);
    ix->id = (int64_t)(h & 0x7fffffffffffffffULL);
    if (ix->id == 0) ix->id = 1;
}

const dsq_index *dsq_index_list_find(const dsq_index_list *l, int64_t id)
{
    for (size_t i = 0; i < l->n; i++) if (l->v[i].id == id) return &l->v[i];
    return NULL;
}

void dsq_index_list_add(dsq_index_list *l, const dsq_index *ix)
{
    if (dsq_index_list_find(l, ix->id)) return;
    l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    dsq_index *c = &l->v[l->n++];
    c->id = ix->id;
    c->kind = xstrdup(ix->kind);
    c->ancestor = ix->ancestor;
    c->n_props = ix->n_props;
    c->props = xcalloc(ix->n_props ? ix->n_props : 1, sizeof *c->props);
    for (size_t i = 0; i < ix->n_props; i++) {
        c->props[i].name = xstrdup(ix->props[i].name);
        c->props[i].desc = ix->props[i].desc;
    }
}

void dsq_index_yaml(const dsq_index *ix, buf *out)
{
    buf_printf(out, "- kind: %s\n", ix->kind);
    if (ix->ancestor) buf_puts(out, "  ancestor: yes\n");
    if (ix->n_props) buf_puts(out, "  properties:\n");
    for (size_t i = 0; i < ix->n_props; i++) {
        buf_printf(out, "  - name: %s\n", ix->props[i].name);
        if (ix->props[i].desc) buf_puts(out, "    direction: desc\n");
    }
}

void dsq_index_encode(const dsq_index *ix, const char *app, buf *out)
{
    pb_put_str(out, 1, app);
    pb_put_int(out, 2, ix->id);
    size_t m = pb_begin(out, 3);
    dsq_index_def_encode(ix, out);
    pb_end(out, m);
    pb_put_int(out, 4, 2);   /* READ_WRITE */
}

/* ---- YAML walking ---- */

typedef struct {
    yaml_document_t *doc;
    const char *path;
    char *err; size_t errlen;
} walker;

static int fail(walker *w, yaml_node_t *n, const char *fmt, const char *arg)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    set_err(w->err, w->errlen, "%s:%lu: %s", w->path, n ? (unsigned long)n->start_mark.line + 1 : 0UL, msg);
    return -1;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int yes_no(const char *s, int *out)
{
    static const char *yes[] = {"yes", "true", "on", "y", NULL};
    static const char *no[] = {"no", "false", "off", "n", NULL};
    for (int i = 0; yes[i]; i++) if (!strcasecmp(s, yes[i])) { *out = 1; return 0; }
    for (int i = 0; no[i]; i++) if (!strcasecmp(s, no[i])) { *out = 0; return 0; }
    return -1;
}

static int parse_prop(walker *w, yaml_node_t *n, dsq_index_prop *p)
{
    if (n->type != YAML_MAPPING_NODE) return fail(w, n, "an index property must be a mapping with `name`%s", "");
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(w->doc, pr->value);
        const char *key = scalar(k), *val = scalar(v);
        if (!key) return fail(w, k, "an index property has a non-scalar key%s", "");
        if (!strcmp(key, "name")) {
            if (!val || !*val) return fail(w, v, "an index property name must be a non-empty string%s", "");
            free(p->name);
            p->name = xstrdup(val);
        } else if (!strcmp(key, "direction")) {
            if (!val) return fail(w, v, "`direction` must be asc or desc%s", "");
            if (!strcasecmp(val, "asc") || !strcasecmp(val, "ascending")) p->desc = 0;
            else if (!strcasecmp(val, "desc") || !strcasecmp(val, "descending")) p->desc = 1;
            else return fail(w, v, "`direction` must be asc or desc, not \"%s\"", val);
        } else if (!strcmp(key, "mode")) {
            return fail(w, v, "index property mode \"%s\" is not supported", val ? val : "");
        } else return fail(w, k, "unknown index property field `%s`", key);
    }
    if (!p->name) return fail(w, n, "an index property has no `name`%s", "");
    return 0;
}

static int parse_index(walker *w, yaml_node_t *n, dsq_index *ix)
{
    if (n->type != YAML_MAPPING_NODE) return fail(w, n, "an index must be a mapping with `kind`%s", "");
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(w->doc, pr->value);
        const char *key = scalar(k), *val = scalar(v);
        if (!key) return fail(w, k, "an index has a non-scalar key%s", "");
        if (!strcmp(key, "kind")) {
            if (!val || !*val) return fail(w, v, "`kind` must be a non-empty string%s", "");
            free(ix->kind);
            ix->kind = xstrdup(val);
        } else if (!strcmp(key, "ancestor")) {
            if (!val || yes_no(val, &ix->ancestor) < 0)
                return fail(w, v, "`ancestor` must be yes or no, not \"%s\"", val ? val : "");
        } else if (!strcmp(key, "properties")) {
            if (v->type == YAML_SCALAR_NODE && !*val) continue;
            if (v->type != YAML_SEQUENCE_NODE) return fail(w, v, "`properties` must be a list%s", "");
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *pn = yaml_document_get_node(w->doc, *it);
                ix->props = xrealloc(ix->props, (ix->n_props + 1) * sizeof *ix->props);
                dsq_index_prop *p = &ix->props[ix->n_props++];
                memset(p, 0, sizeof *p);
                if (!pn || parse_prop(w, pn, p) < 0) return pn ? -1 : fail(w, v, "bad property%s", "");
            }
        } else return fail(w, k, "unknown index field `%s`", key);
    }
    if (!ix->kind) return fail(w, n, "an index has no `kind`%s", "");
    dsq_index_set_id(ix);
    return 0;
}

int dsq_indexyaml_parse(const char *text, size_t len, const char *path,
                        dsq_index_list *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) { set_err(err, errlen, "%s: cannot start the YAML parser", path); return -1; }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        set_err(err, errlen, "%s:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
                parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return -1;
    }
    walker w = {&doc, path, err, errlen};
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || (root->type == YAML_SCALAR_NODE && !*scalar(root))) goto done;   /* empty file */
    if (root->type != YAML_MAPPING_NODE) { rc = fail(&w, root, "index.yaml must be a mapping with `indexes:`%s", ""); goto done; }
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
        const char *key = scalar(k);
        if (!key || strcmp(key, "indexes") != 0) { rc = fail(&w, k, "unknown top-level field `%s`", key ? key : "?"); goto done; }
        if (v->type == YAML_SCALAR_NODE && !*scalar(v)) continue;
        if (v->type != YAML_SEQUENCE_NODE) { rc = fail(&w, v, "`indexes` must be a list%s", ""); goto done; }
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            yaml_node_t *in = yaml_document_get_node(&doc, *it);
            dsq_index ix = {0};
            if (!in || parse_index(&w, in, &ix) < 0) {
                if (!in) fail(&w, v, "bad index%s", "");
                dsq_index_free(&ix);
                rc = -1;
                goto done;
            }
            dsq_index_list_add(out, &ix);
            dsq_index_free(&ix);
        }
    }
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc < 0) dsq_index_list_free(out);
    return rc;
}

int dsq_indexyaml_load(const char *app_dir, dsq_index_list *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char *path = xasprintf("%s/index.yaml", app_dir);
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        int e = errno;
        if (e == ENOENT) { free(path); return 0; }
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(e));
        free(path);
        return -1;
    }
    int rc = dsq_indexyaml_parse(text, len, path, out, err, errlen);
    free(text);
    free(path);
    return rc;
}
