/* cron.h - cron.yaml and App Engine's schedule grammar.
 *
 * Schedules (docs/cron.md):
 *   every N minutes|hours [synchronized | from HH:MM to HH:MM]
 *   every day HH:MM
 *   every monday HH:MM            every mon,wed,fri HH:MM
 *   1st,3rd monday of month HH:MM 2nd,third mon,wed of march,june HH:MM
 *   1,15 of month HH:MM           1st of jan,april HH:MM
 * Times are local to the job's `timezone:` (tz database name, default UTC).
 * cron_next() gives the first run time strictly after a given instant. */
#ifndef CZ_CRON_H
#define CZ_CRON_H

#include <stddef.h>
#include <stdint.h>
#include "sched/queueyaml.h"

typedef struct {
    int interval_s;            /* > 0 for "every N minutes|hours" */
    int synchronized;          /* interval aligned to 00:00 (or to `from`) */
    int from_min, to_min;      /* window in minutes of the day, -1 when none */
    int minute_of_day;         /* time-of-day schedules: HH*60+MM */
    uint8_t weekdays;          /* bit 0 = Sunday .. bit 6 = Saturday */
    uint8_t ordinals;          /* bit 0 = 1st .. bit 4 = 5th weekday of the month; 0x1f = every */
    uint32_t monthdays;        /* bit d = day d of month (1..31); 0 = weekday form */
    uint16_t months;           /* bit 0 = January .. bit 11 = December */
} cron_schedule;

/* Parse a schedule; 0, or -1 with one sentence in err. */
int cron_parse(const char *s, cron_schedule *out, char *err, size_t errlen);
/* Next run strictly after `after` (Unix seconds), in timezone tz ("" or
 * NULL = UTC). Non-synchronized intervals without a window run `interval`
 * after `after`. Returns -1 when there is none within 10 years (e.g. a
 * "31 of february"), or when tz is unknown. */
int64_t cron_next(const cron_schedule *s, const char *tz, int64_t after);
/* 1 when tz names a zone in the system's tz database. */
int cron_tz_valid(const char *tz);

typedef struct {
    char *url;
    char *schedule;
    char *timezone;            /* "" = UTC */
    char *target;              /* "" = default */
    char *description;
    int has_retry;
    tq_retry retry;
    cron_schedule sched;
} cron_job;

typedef struct {
    cron_job *jobs;
    size_t n;
} cron_config;

cron_config *cronyaml_parse(const char *text, size_t len, const char *path, char *err, size_t errlen);
/* dir/cron.yaml (or cron.yml); a missing file gives an empty config. */
cron_config *cronyaml_load(const char *dir, char *err, size_t errlen);
void cron_config_free(cron_config *c);

#endif
