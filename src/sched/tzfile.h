/* tzfile.h - time zones from the tz database, without touching TZ.
 *
 * tz_load() reads a zone's TZif file (RFC 8536, version 1 to 4) from
 * $TZDIR or /usr/share/zoneinfo: its transition table and local time types,
 * and the POSIX TZ string in its footer for instants past the table. The
 * loaded zone is immutable, so any thread may convert with it while others
 * call localtime(): nothing here reads or writes the process's TZ state. */
#ifndef CZ_TZFILE_H
#define CZ_TZFILE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct tz_zone tz_zone;

/* The zone named name ("America/New_York"); NULL, "" and "UTC" give UTC.
 * NULL + one sentence naming the zone in err when it cannot be loaded. */
tz_zone *tz_load(const char *name, char *err, size_t errlen);
/* The zone described by the TZif bytes data[0,n) (name is used in messages). */
tz_zone *tz_parse(const void *data, size_t n, const char *name, char *err, size_t errlen);
void tz_free(tz_zone *z);

/* Offset from UTC in seconds (east positive) at Unix time t; *isdst if asked. */
int32_t tz_offset(const tz_zone *z, int64_t t, int *isdst);
/* Local civil time of t (tm_gmtoff and tm_isdst filled, tm_zone NULL). */
void tz_localtime(const tz_zone *z, int64_t t, struct tm *out);
/* The instant of local civil time *tm, whose fields may be out of range
 * (they are normalised, as mktime does, and *tm is rewritten with the result).
 * A time repeated by a backward change maps to its first occurrence; a time
 * skipped by a forward change is read with the offset in force before the
 * change (02:30 on a spring-forward night becomes 03:30). tm_isdst is ignored. */
int64_t tz_mktime(const tz_zone *z, struct tm *tm);

#endif
