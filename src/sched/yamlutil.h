/* yamlutil.h - the little YAML layer under queue.yaml and cron.yaml.
 *
 * A file is loaded whole with libyaml's document API; nodes keep their
 * position, so refusals read "PATH:LINE: reason". Internal to src/sched. */
#ifndef CZ_SCHED_YAMLUTIL_H
#define CZ_SCHED_YAMLUTIL_H

#include <stddef.h>
#include <yaml.h>
#include "sched/queueyaml.h"

typedef struct {
    yaml_document_t doc;
    const char *path;
    int loaded;
} yu_doc;

/* Read DIR/BASE.yaml, else DIR/BASE.yml: 1 with *text (malloc'ed, length
 * *len) and *path (malloc'ed) when one exists, 0 when neither does, -1 with
 * a sentence in err when one exists but cannot be read. */
int  yu_read_file(const char *dir, const char *base, char **text, size_t *len, char **path,
                  char *err, size_t errlen);
/* Load exactly one document; 0, or -1 with "PATH:LINE: reason". */
int  yu_load(yu_doc *d, const char *text, size_t len, const char *path, char *err, size_t errlen);
void yu_free(yu_doc *d);
/* Fill err with "PATH:LINE: " + message and return -1. */
int  yu_fail(yu_doc *d, const yaml_node_t *n, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The text of a scalar node (NUL-terminated by libyaml), or NULL. */
const char *yu_scalar(const yaml_node_t *n);
int yu_long(const char *s, long lo, long hi, long *out);
int yu_double(const char *s, double *out);
/* retry_parameters (queueyaml.c); pull = only task_retry_limit allowed. */
int yu_retry(yu_doc *d, yaml_node_t *n, tq_retry *r, int pull, char *err, size_t errlen);

#endif
