/* queueyaml.c - queue.yaml: parsing, validation, and the retry arithmetic.
 *
 * The file is loaded with libyaml's document API into a node tree; every
 * node keeps its line, so each refusal says "PATH:LINE: reason". Top level:
 * `total_storage_limit` (accepted, not enforced) and `queue:` (a list of
 * mappings). Each queue needs a valid, unique name; push queues take rate,
 * bucket_size, max_concurrent_requests, retry_parameters, target; pull
 * queues (`mode: pull`) take retry_parameters (task_retry_limit only) and
 * acl. The `default` queue is added when the file does not define it. */
#include "sched/queueyaml.h"
#include "sched/yamlutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/util.h"

void tq_retry_default(tq_retry *r)
{
    r->retry_limit = -1;
    r->age_limit_s = -1;
    r->min_backoff_s = 0.1;
    r->max_backoff_s = 3600;
    r->max_doublings = 16;
}

static void queue_default(tq_queue *q, const char *name)
{
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->rate_per_s = 5;
    q->bucket_size = 5;
    tq_retry_default(&q->retry);
}

int tq_valid_queue_name(const char *s, size_t n)
{
    if (n == 0 || n > TQ_MAX_QUEUE_NAME) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-')) return 0;
    return 1;
}

int tq_valid_task_name(const char *s, size_t n)
{
    if (n == 0 || n > 500) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-')) return 0;
    return 1;
}

int tq_parse_rate(const char *s, double *per_s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v) || *end != '/') return -1;
    double div;
    if (!strcmp(end, "/s")) div = 1;
    else if (!strcmp(end, "/m")) div = 60;
    else if (!strcmp(end, "/h")) div = 3600;
    else if (!strcmp(end, "/d")) div = 86400;
    else return -1;
    *per_s = v / div;
    return 0;
}

double tq_backoff_s(const tq_retry *r, int failures)
{
    if (failures < 1) failures = 1;
    int k = failures - 1;
    int d = r->max_doublings < 0 ? 0 : r->max_doublings;
    double step;
    if (k <= d) step = r->min_backoff_s * ldexp(1.0, k > 62 ? 62 : k);
    else step = r->min_backoff_s * ldexp(1.0, d > 62 ? 62 : d) * (double)(k - d + 1);
    if (step > r->max_backoff_s) step = r->max_backoff_s;
    if (step < r->min_backoff_s) step = r->min_backoff_s;
    return step;
}

int tq_retry_exhausted(const tq_retry *r, int failures, int64_t age_us)
{
    int by_count = r->retry_limit >= 0 && failures > r->retry_limit;
    int by_age = r->age_limit_s >= 0 && age_us > r->age_limit_s * 1000000;
    if (r->retry_limit >= 0 && r->age_limit_s >= 0) return by_count && by_age;
    return by_count || by_age;
}

/* "30s", "2m", "1h", "2d": seconds, or -1. */
static int64_t parse_age(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v)) return -1;
    double m = 0;
    if (!strcmp(end, "s")) m = 1;
    else if (!strcmp(end, "m")) m = 60;
    else if (!strcmp(end, "h")) m = 3600;
    else if (!strcmp(end, "d")) m = 86400;
    else return -1;
    double r = v * m;
    if (r > 1e12) return -1;
    return (int64_t)r;
}

int yu_retry(yu_doc *d, yaml_node_t *n, tq_retry *r, int pull, char *err, size_t errlen)
{
    if (n->type != YAML_MAPPING_NODE) return yu_fail(d, n, err, errlen, "retry_parameters must be a mapping");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&d->doc, p->key), *v = yaml_document_get_node(&d->doc, p->value);
        const char *key = yu_scalar(k);
        const char *val = yu_scalar(v);
        if (!key) return yu_fail(d, k, err, errlen, "retry_parameters keys must be plain names");
        if (!val) return yu_fail(d, v, err, errlen, "retry_parameters.%s must be a single value", key);
        if (pull && strcmp(key, "task_retry_limit"))
            return yu_fail(d, k, err, errlen, "a pull queue takes only task_retry_limit in retry_parameters, not %s", key);
        if (!strcmp(key, "task_retry_limit")) {
            long x;
            if (yu_long(val, 0, 1000000000, &x) < 0)
                return yu_fail(d, v, err, errlen, "task_retry_limit must be a whole number of at least 0, not \"%s\"", val);
            r->retry_limit = (int)x;
        } else if (!strcmp(key, "task_age_limit")) {
            int64_t a = parse_age(val);
            if (a < 0) return yu_fail(d, v, err, errlen, "task_age_limit must look like 30s, 10m, 2h or 1d, not \"%s\"", val);
            r->age_limit_s = a;
        } else if (!strcmp(key, "min_backoff_seconds") || !strcmp(key, "max_backoff_seconds")) {
            double x;
            if (yu_double(val, &x) < 0 || x < 0)
                return yu_fail(d, v, err, errlen, "%s must be a number of seconds of at least 0, not \"%s\"", key, val);
            if (key[1] == 'i') r->min_backoff_s = x; else r->max_backoff_s = x;
        } else if (!strcmp(key, "max_doublings")) {
            long x;
            if (yu_long(val, 0, 1000, &x) < 0)
                return yu_fail(d, v, err, errlen, "max_doublings must be a whole number of at least 0, not \"%s\"", val);
            r->max_doublings = (int)x;
        } else {
            return yu_fail(d, k, err, errlen, "unknown retry_parameters key \"%s\"", key);
        }
    }
    if (r->max_backoff_s < r->min_backoff_s)
        return yu_fail(d, n, err, errlen, "max_backoff_seconds is smaller than min_backoff_seconds");
    return 0;
}

static int parse_queue(yu_doc *d, yaml_node_t *n, tq_queue *q, char *err, size_t errlen)
{
    if (n->type != YAML_MAPPING_NODE) return yu_fail(d, n, err, errlen, "each queue entry must be a mapping (name: ..., rate: ...)");
    queue_default(q, "");
    q->name[0] = 0;
    int have_rate = 0, have_mode = 0;
    yaml_node_t *rate_node = NULL, *bucket_node = NULL, *conc_node = NULL, *target_node = NULL;
    /* mode first: it decides which keys are allowed. */
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = yu_scalar(yaml_document_get_node(&d->doc, p->key));
        yaml_node_t *v = yaml_document_get_node(&d->doc, p->value);
        if (key && !strcmp(key, "mode")) {
            const char *m = yu_scalar(v);
            if (!m || (strcmp(m, "push") && strcmp(m, "pull")))
                return yu_fail(d, v, err, errlen, "mode must be push or pull");
            q->pull = !strcmp(m, "pull");
            have_mode = 1;
        }
    }
    (void)have_mode;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&d->doc, p->key), *v = yaml_document_get_node(&d->doc, p->value);
        const char *key = yu_scalar(k);
        if (!key) return yu_fail(d, k, err, errlen, "queue keys must be plain names");
        for (yaml_node_pair_t *p2 = n->data.mapping.pairs.start; p2 < p; p2++) {
            const char *k2 = yu_scalar(yaml_document_get_node(&d->doc, p2->key));
            if (k2 && !strcmp(k2, key)) return yu_fail(d, k, err, errlen, "the key \"%s\" appears twice in this queue", key);
        }
        const char *val = yu_scalar(v);
        if (!strcmp(key, "retry_parameters")) {
            if (yu_retry(d, v, &q->retry, q->pull, err, errlen) < 0) return -1;
            continue;
        }
        if (!strcmp(key, "acl")) {
            if (v->type != YAML_SEQUENCE_NODE) return yu_fail(d, v, err, errlen, "acl must be a list");
            continue;
        }
        if (!val) return yu_fail(d, v, err, errlen, "%s must be a single value", key);
        if (!strcmp(key, "name")) {
            if (!tq_valid_queue_name(val, strlen(val)))
                return yu_fail(d, v, err, errlen, "queue name \"%s\" is invalid: use 1 to 100 letters, digits, - or _", val);
            snprintf(q->name, sizeof q->name, "%s", val);
        } else if (!strcmp(key, "mode")) {
        } else if (!strcmp(key, "rate")) {
            rate_node = v;
            if (tq_parse_rate(val, &q->rate_per_s) < 0)
                return yu_fail(d, v, err, errlen, "rate must look like 5/s, 10/m, 1/h or 1/d, not \"%s\"", val);
            have_rate = 1;
        } else if (!strcmp(key, "bucket_size")) {
            long x;
            bucket_node = v;
            if (yu_long(val, 1, 500, &x) < 0)
                return yu_fail(d, v, err, errlen, "bucket_size must be a whole number from 1 to 500, not \"%s\"", val);
            q->bucket_size = (int)x;
        } else if (!strcmp(key, "max_concurrent_requests")) {
            long x;
            conc_node = v;
            if (yu_long(val, 1, 1000000, &x) < 0)
                return yu_fail(d, v, err, errlen, "max_concurrent_requests must be a whole number of at least 1, not \"%s\"", val);
            q->max_concurrent = (int)x;
        } else if (!strcmp(key, "target")) {
            target_node = v;
            if (strlen(val) >= sizeof q->target) return yu_fail(d, v, err, errlen, "target is longer than 100 characters");
            snprintf(q->target, sizeof q->target, "%s", val);
        } else {
            return yu_fail(d, k, err, errlen, "unknown queue key \"%s\"", key);
        }
    }
    if (!q->name[0]) return yu_fail(d, n, err, errlen, "a queue has no name");
    if (q->pull) {
        yaml_node_t *bad = rate_node ? rate_node : bucket_node ? bucket_node : conc_node ? conc_node : target_node;
        if (bad) return yu_fail(d, bad, err, errlen, "pull queue %s cannot have rate, bucket_size, max_concurrent_requests or target", q->name);
        q->rate_per_s = 0;
        q->bucket_size = 0;
    } else if (!have_rate) {
        return yu_fail(d, n, err, errlen, "push queue %s needs a rate (for example rate: 5/s)", q->name);
    }
    return 0;
}

tq_config *queueyaml_parse(const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    yu_doc d;
    if (yu_load(&d, text, len, path, err, errlen) < 0) return NULL;
    tq_config *c = xcalloc(1, sizeof *c);
    yaml_node_t *root = yaml_document_get_root_node(&d.doc);
    if (root && root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0) root = NULL;
    if (root) {
        if (root->type != YAML_MAPPING_NODE) { yu_fail(&d, root, err, errlen, "queue.yaml must be a mapping with a queue: list"); goto bad; }
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(&d.doc, p->key), *v = yaml_document_get_node(&d.doc, p->value);
            const char *key = yu_scalar(k);
            if (!key) { yu_fail(&d, k, err, errlen, "top-level keys must be plain names"); goto bad; }
            if (!strcmp(key, "total_storage_limit")) continue;
            if (strcmp(key, "queue")) { yu_fail(&d, k, err, errlen, "unknown top-level key \"%s\" (expected queue or total_storage_limit)", key); goto bad; }
            if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0) continue;
            if (v->type != YAML_SEQUENCE_NODE) { yu_fail(&d, v, err, errlen, "queue must be a list of queues"); goto bad; }
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *qn = yaml_document_get_node(&d.doc, *it);
                tq_queue q;
                if (parse_queue(&d, qn, &q, err, errlen) < 0) goto bad;
                if (tq_find(c, q.name)) { yu_fail(&d, qn, err, errlen, "queue %s is defined twice", q.name); goto bad; }
                if (!strcmp(q.name, "default") && q.pull) { yu_fail(&d, qn, err, errlen, "the default queue cannot be a pull queue"); goto bad; }
                c->q = xrealloc(c->q, (c->n + 1) * sizeof *c->q);
                c->q[c->n++] = q;
            }
        }
    }
    if (!tq_find(c, "default")) {
        c->q = xrealloc(c->q, (c->n + 1) * sizeof *c->q);
        queue_default(&c->q[c->n++], "default");
    }
    yu_free(&d);
    return c;
bad:
    yu_free(&d);
    tq_config_free(c);
    return NULL;
}

tq_config *queueyaml_load(const char *dir, char *err, size_t errlen)
{
    char *text, *path;
    size_t n;
    int k = yu_read_file(dir, "queue", &text, &n, &path, err, errlen);
    if (k < 0) return NULL;
    if (k == 0) return queueyaml_parse("", 0, "queue.yaml", err, errlen);
    tq_config *c = queueyaml_parse(text, n, path, err, errlen);
    free(text);
    free(path);
    return c;
}

void tq_config_free(tq_config *c)
{
    if (!c) return;
    free(c->q);
    free(c);
}

const tq_queue *tq_find(const tq_config *c, const char *name)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (!strcmp(c->q[i].name, name)) return &c->q[i];
    return NULL;
}
