/* cron.c - App Engine cron schedules: parsing, next run time, cron.yaml.
 *
 * A schedule is parsed into bit sets (weekdays, ordinals, days of month,
 * months) plus a time of day, or into an interval with an optional window.
 * cron_next() walks local calendar days forward from `after` and builds each
 * candidate in the job's zone with tz_mktime (tzfile.h), which reads the
 * zone's TZif file itself, so daylight-saving changes are followed without
 * ever touching the process's TZ (other threads may call localtime freely):
 * a wall time skipped by a spring-forward runs at the same wall time read
 * with the old offset (02:30 -> 03:30), a repeated one runs once (the first). */
#include "sched/cron.h"
#include "sched/tzfile.h"
#include "sched/yamlutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

static const char *const wday_names[7] = {"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"};
static const char *const month_names[12] = {"january", "february", "march", "april", "may", "june", "july",
                                            "august", "september", "october", "november", "december"};
static const char *const ordinal_words[5] = {"first", "second", "third", "fourth", "fifth"};

/* Full name or its first three letters. */
static int name_index(const char *tok, size_t n, const char *const *names, int count)
{
    for (int i = 0; i < count; i++) {
        size_t l = strlen(names[i]);
        if ((n == l || n == 3) && !strncmp(tok, names[i], n)) return i;
    }
    return -1;
}

/* Comma-separated list: fn(item, len) returns a bit index or -1. */
typedef int (*item_fn)(const char *s, size_t n);

static int list_bits(const char *tok, item_fn fn, uint32_t *bits)
{
    *bits = 0;
    const char *p = tok;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n == 0) return -1;
        int b = fn(p, n);
        if (b < 0) return -1;
        *bits |= 1u << b;
        if (!c) return 0;
        p = c + 1;
    }
}

static int weekday_item(const char *s, size_t n) { return name_index(s, n, wday_names, 7); }
static int month_item(const char *s, size_t n) { return name_index(s, n, month_names, 12); }

static int ordinal_item(const char *s, size_t n)
{
    for (int i = 0; i < 5; i++)
        if (strlen(ordinal_words[i]) == n && !strncmp(s, ordinal_words[i], n)) return i;
    static const char *const suf[5] = {"1st", "2nd", "3rd", "4th", "5th"};
    for (int i = 0; i < 5; i++)
        if (n == 3 && !strncmp(s, suf[i], 3)) return i;
    return -1;
}

/* A day of the month: 1..31, optionally with its English suffix. */
static int monthday_item(const char *s, size_t n)
{
    size_t i = 0;
    int v = 0;
    while (i < n && i < 2 && isdigit((unsigned char)s[i])) v = v * 10 + (s[i++] - '0');
    if (i == 0 || v < 1 || v > 31) return -1;
    if (i < n) {
        if (n - i != 2) return -1;
        const char *want = (v % 10 == 1 && v != 11) ? "st" : (v % 10 == 2 && v != 12) ? "nd" : (v % 10 == 3 && v != 13) ? "rd" : "th";
        if (strncmp(s + i, want, 2)) return -1;
    }
    return v;
}

/* "HH:MM" -> minutes of the day, or -1. */
static int parse_hhmm(const char *s)
{
    int h = 0, m = 0;
    size_t i = 0;
    if (!isdigit((unsigned char)s[0])) return -1;
    while (isdigit((unsigned char)s[i]) && i < 2) h = h * 10 + (s[i++] - '0');
    if (s[i] != ':' || !isdigit((unsigned char)s[i + 1]) || !isdigit((unsigned char)s[i + 2]) || s[i + 3]) return -1;
    m = (s[i + 1] - '0') * 10 + (s[i + 2] - '0');
    if (h > 23 || m > 59) return -1;
    return h * 60 + m;
}

#define MAXTOK 12

int cron_parse(const char *src, cron_schedule *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->from_min = out->to_min = -1;
    char text[256];
    size_t len = strlen(src);
    if (len == 0 || len >= sizeof text) { set_err(err, errlen, "the schedule is empty or longer than 255 characters"); return -1; }
    for (size_t i = 0; i <= len; i++) text[i] = (char)tolower((unsigned char)src[i]);
    char *tok[MAXTOK];
    int nt = 0;
    for (char *save = NULL, *t = strtok_r(text, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (nt == MAXTOK) { set_err(err, errlen, "the schedule \"%s\" has too many words", src); return -1; }
        tok[nt++] = t;
    }
    if (nt < 2) goto bad;

    /* every N minutes|hours [synchronized | from HH:MM to HH:MM] */
    if (!strcmp(tok[0], "every") && isdigit((unsigned char)tok[1][0])) {
        long n;
        if (yu_long(tok[1], 1, 100000, &n) < 0 || nt < 3) goto bad;
        const char *u = tok[2];
        if (!strcmp(u, "minutes") || !strcmp(u, "minute") || !strcmp(u, "mins") || !strcmp(u, "min")) out->interval_s = (int)n * 60;
        else if (!strcmp(u, "hours") || !strcmp(u, "hour")) out->interval_s = (int)n * 3600;
        else goto bad;
        if (out->interval_s > 7 * 86400) { set_err(err, errlen, "the interval in \"%s\" is longer than a week", src); return -1; }
        if (nt == 3) return 0;
        if (nt == 4 && !strcmp(tok[3], "synchronized")) {
            if (86400 % out->interval_s) {
                set_err(err, errlen, "a synchronized interval must divide 24 hours evenly, and \"%s\" does not", src);
                return -1;
            }
            out->synchronized = 1;
            out->from_min = 0;
            out->to_min = 1439;
            return 0;
        }
        if (nt == 7 && !strcmp(tok[3], "from") && !strcmp(tok[5], "to")) {
            out->from_min = parse_hhmm(tok[4]);
            out->to_min = parse_hhmm(tok[6]);
            if (out->from_min < 0 || out->to_min < 0) goto bad;
            return 0;
        }
        goto bad;
    }

    /* [every|ordinals|monthdays] (day|weekdays)? [of (month|months)] HH:MM */
    int i = 0;
    uint32_t bits;
    if (!strcmp(tok[0], "every")) {
        out->ordinals = 0x1f;
        i = 1;
    } else if (nt >= 3 && !strcmp(tok[1], "of")) {
        if (list_bits(tok[0], monthday_item, &bits) < 0) goto bad;
        out->monthdays = bits;
        i = 1;
    } else {
        if (list_bits(tok[0], ordinal_item, &bits) < 0) goto bad;
        out->ordinals = (uint8_t)bits;
        i = 1;
    }
    if (!out->monthdays) {
        if (i >= nt) goto bad;
        if (!strcmp(tok[i], "day")) out->weekdays = 0x7f;
        else if (list_bits(tok[i], weekday_item, &bits) == 0) out->weekdays = (uint8_t)bits;
        else goto bad;
        i++;
    }
    out->months = 0xfff;
    if (i < nt && !strcmp(tok[i], "of")) {
        if (i + 1 >= nt) goto bad;
        if (strcmp(tok[i + 1], "month")) {
            if (list_bits(tok[i + 1], month_item, &bits) < 0) goto bad;
            out->months = (uint16_t)bits;
        }
        i += 2;
    } else if (out->monthdays) {
        goto bad;
    }
    if (i != nt - 1) goto bad;
    out->minute_of_day = parse_hhmm(tok[i]);
    if (out->minute_of_day < 0) goto bad;
    return 0;
bad:
    set_err(err, errlen, "the schedule \"%s\" is not one App Engine understands "
            "(for example: every 5 minutes, every day 09:00, every mon,fri 17:30, 1st monday of month 08:00)", src);
    return -1;
}

/* ---- time zones ---- */

int cron_tz_valid(const char *tz)
{
    char err[300];
    tz_zone *z = tz_load(tz, err, sizeof err);
    tz_free(z);
    return z != NULL;
}

#define HORIZON_DAYS (366 * 10 + 3)

int64_t cron_next(const cron_schedule *s, const char *tz, int64_t after)
{
    if (s->interval_s > 0 && s->from_min < 0) return after + s->interval_s;
    char err[300];
    tz_zone *zone = tz_load(tz, err, sizeof err);
    if (!zone) return -1;
    struct tm day;
    tz_localtime(zone, after, &day);
    /* Start one day early: a window spanning midnight may run after 00:00. */
    day.tm_mday -= 1;
    day.tm_hour = 12;
    day.tm_min = day.tm_sec = 0;
    int64_t best = -1;
    for (int d = 0; d < HORIZON_DAYS && best < 0; d++) {
        struct tm noon = day;
        noon.tm_mday += d;
        tz_mktime(zone, &noon);               /* normalise: date, weekday */
        if (s->interval_s > 0) {
            int step = s->interval_s / 60;
            int end = s->to_min >= s->from_min ? s->to_min : s->to_min + 1440;
            for (int off = s->from_min; off <= end; off += step) {
                struct tm c = noon;
                c.tm_hour = 0;
                c.tm_min = off;
                int64_t t = tz_mktime(zone, &c);
                if (t > after) { best = t; break; }
            }
            continue;
        }
        if (!(s->months & (1u << noon.tm_mon))) continue;
        if (s->monthdays) {
            if (!(s->monthdays & (1u << noon.tm_mday))) continue;
        } else {
            if (!(s->weekdays & (1u << noon.tm_wday))) continue;
            if (!(s->ordinals & (1u << ((noon.tm_mday - 1) / 7)))) continue;
        }
        struct tm c = noon;
        c.tm_hour = s->minute_of_day / 60;
        c.tm_min = s->minute_of_day % 60;
        int64_t t = tz_mktime(zone, &c);
        if (t > after) best = t;
    }
    tz_free(zone);
    return best;
}

/* ---- cron.yaml ---- */

static void job_free(cron_job *j)
{
    free(j->url);
    free(j->schedule);
    free(j->timezone);
    free(j->target);
    free(j->description);
}

static int parse_job(yu_doc *d, yaml_node_t *n, cron_job *j, char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    tq_retry_default(&j->retry);
    j->retry.min_backoff_s = 0.1;
    if (n->type != YAML_MAPPING_NODE) return yu_fail(d, n, err, errlen, "each cron entry must be a mapping (url: ..., schedule: ...)");
    yaml_node_t *sched_node = NULL;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&d->doc, p->key), *v = yaml_document_get_node(&d->doc, p->value);
        const char *key = yu_scalar(k);
        if (!key) return yu_fail(d, k, err, errlen, "cron keys must be plain names");
        if (!strcmp(key, "retry_parameters")) {
            if (j->has_retry) return yu_fail(d, k, err, errlen, "retry_parameters appears twice");
            j->has_retry = 1;
            if (yu_retry(d, v, &j->retry, 0, err, errlen) < 0) return -1;
            continue;
        }
        const char *val = yu_scalar(v);
        if (!val) return yu_fail(d, v, err, errlen, "%s must be a single value", key);
        char **slot = !strcmp(key, "url") ? &j->url : !strcmp(key, "schedule") ? &j->schedule :
                      !strcmp(key, "timezone") ? &j->timezone : !strcmp(key, "target") ? &j->target :
                      !strcmp(key, "description") ? &j->description : NULL;
        if (!slot) return yu_fail(d, k, err, errlen, "unknown cron key \"%s\"", key);
        if (*slot) return yu_fail(d, k, err, errlen, "the key \"%s\" appears twice in this job", key);
        *slot = xstrdup(val);
        if (slot == &j->schedule) sched_node = v;
        if (slot == &j->url && (val[0] != '/' || strlen(val) > 2083 || strpbrk(val, " \t\r\n")))
            return yu_fail(d, v, err, errlen, "url must be a path starting with / (no spaces), not \"%s\"", val);
        if (slot == &j->timezone && !cron_tz_valid(val))
            return yu_fail(d, v, err, errlen, "timezone \"%s\" is not in the tz database (for example America/New_York)", val);
    }
    if (!j->url) return yu_fail(d, n, err, errlen, "a cron job has no url");
    if (!j->schedule) return yu_fail(d, n, err, errlen, "the cron job for %s has no schedule", j->url);
    char e2[400];
    if (cron_parse(j->schedule, &j->sched, e2, sizeof e2) < 0) return yu_fail(d, sched_node, err, errlen, "%s", e2);
    if (!j->timezone) j->timezone = xstrdup("");
    if (!j->target) j->target = xstrdup("");
    if (!j->description) j->description = xstrdup("");
    return 0;
}

cron_config *cronyaml_parse(const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    yu_doc d;
    if (yu_load(&d, text, len, path, err, errlen) < 0) return NULL;
    cron_config *c = xcalloc(1, sizeof *c);
    yaml_node_t *root = yaml_document_get_root_node(&d.doc);
    if (root && root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0) root = NULL;
    if (root) {
        if (root->type != YAML_MAPPING_NODE) { yu_fail(&d, root, err, errlen, "cron.yaml must be a mapping with a cron: list"); goto bad; }
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(&d.doc, p->key), *v = yaml_document_get_node(&d.doc, p->value);
            const char *key = yu_scalar(k);
            if (!key || strcmp(key, "cron")) { yu_fail(&d, k, err, errlen, "unknown top-level key \"%s\" (expected cron)", key ? key : "?"); goto bad; }
            if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0) continue;
            if (v->type != YAML_SEQUENCE_NODE) { yu_fail(&d, v, err, errlen, "cron must be a list of jobs"); goto bad; }
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                cron_job j;
                if (parse_job(&d, yaml_document_get_node(&d.doc, *it), &j, err, errlen) < 0) { job_free(&j); goto bad; }
                c->jobs = xrealloc(c->jobs, (c->n + 1) * sizeof *c->jobs);
                c->jobs[c->n++] = j;
            }
        }
    }
    yu_free(&d);
    return c;
bad:
    yu_free(&d);
    cron_config_free(c);
    return NULL;
}

cron_config *cronyaml_load(const char *dir, char *err, size_t errlen)
{
    char *text, *path;
    size_t n;
    int k = yu_read_file(dir, "cron", &text, &n, &path, err, errlen);
    if (k < 0) return NULL;
    if (k == 0) return xcalloc(1, sizeof(cron_config));
    cron_config *c = cronyaml_parse(text, n, path, err, errlen);
    free(text);
    free(path);
    return c;
}

void cron_config_free(cron_config *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) job_free(&c->jobs[i]);
    free(c->jobs);
    free(c);
}
