/* tzfile.c - a small TZif reader and the conversions cron needs (tzfile.h).
 *
 * A TZif file holds a version-1 block with 32-bit times and, from version 2,
 * a second block with 64-bit times followed by a footer line holding a POSIX
 * TZ string ("EST5EDT,M3.2.0,M11.1.0") that describes every instant after
 * the last transition. We read the 64-bit block when there is one (else the
 * 32-bit one): transition times, the local time type index of each, and the
 * types (UT offset, is-DST). Looking up an instant is a binary search over
 * the transitions; past the last one the footer rule decides, computed per
 * year from its "Mm.w.d", "Jn" or "n" dates.
 *
 * Local-to-UTC (tz_mktime) tries the offsets in force a day before and a day
 * after the wall time and keeps the earliest instant that maps back to it;
 * when none does, the wall time fell into a forward gap and the earlier
 * offset is used. Civil dates use the proleptic Gregorian day count, so no
 * C library time zone function is ever called. */
#include "sched/tzfile.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

typedef struct {
    int32_t utoff;
    int isdst;
} tz_type;

/* A POSIX TZ rule date: kind 'M' (month, week 1-5, weekday), 'J' (1-365,
 * no Feb 29) or 'n' (0-365 counting Feb 29); time = seconds after local midnight. */
typedef struct {
    char kind;
    int m, w, d, n;
    int32_t time;
} tz_rule_date;

typedef struct {
    int present;
    int32_t std_off, dst_off;  /* east positive */
    int has_dst;
    tz_rule_date start, end;
} tz_posix;

struct tz_zone {
    size_t ntrans;
    int64_t *trans;
    uint8_t *idx;
    size_t ntypes;
    tz_type *types;
    tz_posix footer;
};

/* ---- civil calendar ---- */

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int64_t floordiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* Seconds of the local civil time in tm (any field out of range), as if UTC. */
static int64_t tm_to_local_seconds(const struct tm *tm)
{
    int64_t mon = tm->tm_mon;
    int64_t year = (int64_t)tm->tm_year + 1900 + floordiv(mon, 12);
    mon -= floordiv(mon, 12) * 12;
    int64_t days = days_from_civil(year, (int)mon + 1, 1) + tm->tm_mday - 1;
    return days * 86400 + (int64_t)tm->tm_hour * 3600 + (int64_t)tm->tm_min * 60 + tm->tm_sec;
}

static void local_seconds_to_tm(int64_t s, struct tm *tm)
{
    int64_t days = floordiv(s, 86400), rem = s - days * 86400;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    memset(tm, 0, sizeof *tm);
    tm->tm_year = (int)(y - 1900);
    tm->tm_mon = m - 1;
    tm->tm_mday = d;
    tm->tm_hour = (int)(rem / 3600);
    tm->tm_min = (int)(rem / 60 % 60);
    tm->tm_sec = (int)(rem % 60);
    tm->tm_wday = (int)((days % 7 + 11) % 7);            /* 1970-01-01 was a Thursday */
    tm->tm_yday = (int)(days - days_from_civil(y, 1, 1));
}

/* ---- POSIX TZ strings ---- */

static const char *posix_name(const char *p)
{
    if (*p == '<') {
        const char *e = strchr(p, '>');
        return e && e - p >= 4 ? e + 1 : NULL;
    }
    const char *s = p;
    while (isalpha((unsigned char)*p)) p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] into seconds; hours up to 167 (rule times may exceed 24). */
static const char *posix_hms(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (!isdigit((unsigned char)*p)) return NULL;
    long h = strtol(p, (char **)&p, 10), m = 0, s = 0;
    if (h > 167) return NULL;
    if (*p == ':') {
        if (!isdigit((unsigned char)p[1])) return NULL;
        m = strtol(p + 1, (char **)&p, 10);
        if (*p == ':') {
            if (!isdigit((unsigned char)p[1])) return NULL;
            s = strtol(p + 1, (char **)&p, 10);
        }
    }
    if (m > 59 || s > 59) return NULL;
    *out = (int32_t)(sign * (h * 3600 + m * 60 + s));
    return p;
}

static const char *posix_date(const char *p, tz_rule_date *r)
{
    memset(r, 0, sizeof *r);
    char *e;
    if (*p == 'M') {
        r->kind = 'M';
        r->m = (int)strtol(p + 1, &e, 10);
        if (*e != '.' || r->m < 1 || r->m > 12) return NULL;
        r->w = (int)strtol(e + 1, &e, 10);
        if (*e != '.' || r->w < 1 || r->w > 5) return NULL;
        r->d = (int)strtol(e + 1, &e, 10);
        if (r->d < 0 || r->d > 6) return NULL;
    } else if (*p == 'J') {
        r->kind = 'J';
        r->n = (int)strtol(p + 1, &e, 10);
        if (e == p + 1 || r->n < 1 || r->n > 365) return NULL;
    } else if (isdigit((unsigned char)*p)) {
        r->kind = 'n';
        r->n = (int)strtol(p, &e, 10);
        if (r->n > 365) return NULL;
    } else return NULL;
    p = e;
    r->time = 7200;
    if (*p == '/') p = posix_hms(p + 1, &r->time);
    return p;
}

static int posix_parse(const char *s, tz_posix *z)
{
    memset(z, 0, sizeof *z);
    const char *p = posix_name(s);
    int32_t off;
    if (!p || !(p = posix_hms(p, &off))) return -1;
    z->std_off = -off;
    z->dst_off = z->std_off;
    if (*p) {
        if (!(p = posix_name(p))) return -1;
        z->has_dst = 1;
        z->dst_off = z->std_off + 3600;
        if (*p && *p != ',') {
            if (!(p = posix_hms(p, &off))) return -1;
            z->dst_off = -off;
        }
        if (*p != ',') return -1;   /* no rule: POSIX leaves it to the system; the tz database always has one */
        if (!(p = posix_date(p + 1, &z->start)) || *p != ',') return -1;
        if (!(p = posix_date(p + 1, &z->end))) return -1;
        if (*p) return -1;
    }
    z->present = 1;
    return 0;
}

/* Day number (since the epoch) of rule date r in year y. */
static int64_t rule_day(const tz_rule_date *r, int64_t y)
{
    if (r->kind == 'J') {
        int64_t d = r->n - 1;
        if (is_leap(y) && r->n >= 60) d++;
        return days_from_civil(y, 1, 1) + d;
    }
    if (r->kind == 'n') return days_from_civil(y, 1, 1) + r->n;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t first = days_from_civil(y, r->m, 1);
    int wd_first = (int)((first % 7 + 11) % 7);
    int64_t d = first + (r->d - wd_first + 7) % 7 + (int64_t)(r->w - 1) * 7;
    int len = mdays[r->m - 1] + (r->m == 2 && is_leap(y));
    while (d >= first + len) d -= 7;     /* week 5 = the last such weekday */
    return d;
}

static int32_t posix_offset(const tz_posix *z, int64_t t, int *isdst)
{
    *isdst = 0;
    if (!z->has_dst) return z->std_off;
    int64_t y;
    int m, d;
    civil_from_days(floordiv(t + z->std_off, 86400), &y, &m, &d);
    /* Check the neighbouring years too: a rule time past midnight may move a change across New Year. */
    int dst = 0;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t start = rule_day(&z->start, yy) * 86400 + z->start.time - z->std_off;
        int64_t end = rule_day(&z->end, yy) * 86400 + z->end.time - z->dst_off;
        if (start < end) { if (t >= start && t < end) dst = 1; }
        else {
            /* southern hemisphere: DST from start of yy to end of yy+1 */
            int64_t end_next = rule_day(&z->end, yy + 1) * 86400 + z->end.time - z->dst_off;
            if (t >= start && t < end_next) dst = 1;
        }
    }
    *isdst = dst;
    return dst ? z->dst_off : z->std_off;
}

/* ---- TZif ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

typedef struct { uint32_t isut, isstd, leap, time, type, chars; } tzif_counts;

static int read_header(const uint8_t *p, size_t n, tzif_counts *c, int *version)
{
    if (n < 44 || memcmp(p, "TZif", 4)) return -1;
    *version = p[4] ? p[4] - '0' : 1;
    c->isut = be32(p + 20); c->isstd = be32(p + 24); c->leap = be32(p + 28);
    c->time = be32(p + 32); c->type = be32(p + 36); c->chars = be32(p + 40);
    if (c->type == 0 || c->type > 256 || c->time > 100000 || c->chars > 100000 || c->leap > 100000 ||
        c->isut > 256 || c->isstd > 256) return -1;
    return 0;
}

static size_t block_len(const tzif_counts *c, int tsize)
{
    return (size_t)c->time * tsize + c->time + (size_t)c->type * 6 + c->chars + (size_t)c->leap * (tsize + 4) +
           c->isstd + c->isut;
}

static int parse_tzif(const uint8_t *data, size_t n, tz_zone *z)
{
    tzif_counts c;
    int version;
    if (read_header(data, n, &c, &version) < 0) return -1;
    size_t v1 = block_len(&c, 4);
    const uint8_t *p = data + 44;
    int tsize = 4;
    const uint8_t *end = data + n;
    if (version >= 2) {
        if ((size_t)(end - p) < v1) return -1;
        p += v1;
        if (read_header(p, (size_t)(end - p), &c, &version) < 0) return -1;
        p += 44;
        tsize = 8;
    }
    if ((size_t)(end - p) < block_len(&c, tsize)) return -1;
    z->ntrans = c.time;
    z->trans = xcalloc(c.time ? c.time : 1, sizeof *z->trans);
    z->idx = xcalloc(c.time ? c.time : 1, 1);
    for (uint32_t i = 0; i < c.time; i++, p += tsize) z->trans[i] = tsize == 8 ? be64(p) : (int32_t)be32(p);
    for (uint32_t i = 0; i < c.time; i++, p++) {
        if (*p >= c.type) return -1;
        z->idx[i] = *p;
    }
    z->ntypes = c.type;
    z->types = xcalloc(c.type, sizeof *z->types);
    for (uint32_t i = 0; i < c.type; i++, p += 6) {
        z->types[i].utoff = (int32_t)be32(p);
        z->types[i].isdst = p[4] != 0;
    }
    p += c.chars + (size_t)c.leap * (tsize + 4) + c.isstd + c.isut;
    if (tsize == 8 && p < end && *p == '\n') {
        const uint8_t *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
        if (!nl) return -1;
        if (nl > p + 1) {
            char *s = xstrndup((const char *)p + 1, (size_t)(nl - p - 1));
            int r = posix_parse(s, &z->footer);
            free(s);
            if (r < 0) return -1;
        }
    }
    return 0;
}

tz_zone *tz_parse(const void *data, size_t n, const char *name, char *err, size_t errlen)
{
    tz_zone *z = xcalloc(1, sizeof *z);
    if (parse_tzif(data, n, z) < 0) {
        set_err(err, errlen, "the time zone data for \"%s\" is not a valid TZif file", name);
        tz_free(z);
        return NULL;
    }
    return z;
}

static int utc_name(const char *name) { return !name || !*name || !strcmp(name, "UTC"); }

tz_zone *tz_load(const char *name, char *err, size_t errlen)
{
    tz_zone *z = xcalloc(1, sizeof *z);
    if (utc_name(name)) {
        z->types = xcalloc(1, sizeof *z->types);
        z->ntypes = 1;
        return z;
    }
    int ok = name[0] != '/' && !strstr(name, "..") && strlen(name) <= 100;
    for (const char *p = name; ok && *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("/_-+", *p))) ok = 0;
    if (!ok) {
        set_err(err, errlen, "the time zone \"%.100s\" is not a tz database name (for example America/New_York)", name);
        tz_free(z);
        return NULL;
    }
    const char *dir = getenv("TZDIR");
    char *path = xasprintf("%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    size_t n = 0;
    char *data = read_file(path, &n);
    if (!data) {
        set_err(err, errlen, "the time zone \"%s\" is not in the tz database (%s not found)", name, path);
        free(path);
        tz_free(z);
        return NULL;
    }
    int r = parse_tzif((const uint8_t *)data, n, z);
    free(data);
    if (r < 0) {
        set_err(err, errlen, "the time zone file %s for \"%s\" is not a valid TZif file", path, name);
        free(path);
        tz_free(z);
        return NULL;
    }
    free(path);
    return z;
}

void tz_free(tz_zone *z)
{
    if (!z) return;
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z);
}

int32_t tz_offset(const tz_zone *z, int64_t t, int *isdst)
{
    int dummy;
    if (!isdst) isdst = &dummy;
    if (z->ntrans == 0 || t < z->trans[0]) {
        if (z->ntrans == 0 && z->footer.present) return posix_offset(&z->footer, t, isdst);
        *isdst = z->types[0].isdst;
        return z->types[0].utoff;
    }
    if (t >= z->trans[z->ntrans - 1] && z->footer.present) return posix_offset(&z->footer, t, isdst);
    size_t lo = 0, hi = z->ntrans;        /* last transition <= t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t) lo = mid; else hi = mid;
    }
    const tz_type *ty = &z->types[z->idx[lo]];
    *isdst = ty->isdst;
    return ty->utoff;
}

void tz_localtime(const tz_zone *z, int64_t t, struct tm *out)
{
    int dst;
    int32_t off = tz_offset(z, t, &dst);
    local_seconds_to_tm(t + off, out);
    out->tm_isdst = dst;
    out->tm_gmtoff = off;
}

int64_t tz_mktime(const tz_zone *z, struct tm *tm)
{
    int64_t local = tm_to_local_seconds(tm);
    int32_t before = tz_offset(z, local - 86400, NULL), after = tz_offset(z, local + 86400, NULL);
    int64_t best = INT64_MAX;
    int32_t cand[2] = {before, after};
    for (int i = 0; i < 2; i++) {
        int64_t t = local - cand[i];
        if (tz_offset(z, t, NULL) == cand[i] && t < best) best = t;
    }
    if (best == INT64_MAX) best = local - before;
    tz_localtime(z, best, tm);
    return best;
}
