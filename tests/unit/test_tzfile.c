/* test_tzfile.c - the TZif reader (sched/tzfile.h) against known offsets and
 * against the C library: a forked child sets TZ to the zone and reports
 * what localtime_r and mktime give for a sweep of instants (1900 to 2100,
 * so both the transition table and the footer's POSIX rule are covered),
 * and every answer must match ours. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sched/cron.h"
#include "sched/tzfile.h"

static const char *zones[] = {"America/New_York", "Asia/Kolkata", "Europe/London", "UTC", "Australia/Lord_Howe",
                              "America/Sao_Paulo", "Pacific/Chatham", "Europe/Berlin", NULL};

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static int32_t off_at(const char *zone, int64_t t)
{
    char err[300];
    tz_zone *z = tz_load(zone, err, sizeof err);
    if (!z) { printf("  load %s: %s\n", zone, err); return 99999; }
    int32_t o = tz_offset(z, t, NULL);
    tz_free(z);
    return o;
}

TEST(known_offsets)
{
    /* New York: DST from 2024-03-10 02:00 EST (07:00Z) to 2024-11-03 02:00 EDT (06:00Z). */
    CHECK_INT(off_at("America/New_York", utc(2024, 3, 10, 6, 59, 59)), -5 * 3600);
    CHECK_INT(off_at("America/New_York", utc(2024, 3, 10, 7, 0, 0)), -4 * 3600);
    CHECK_INT(off_at("America/New_York", utc(2024, 11, 3, 5, 59, 59)), -4 * 3600);
    CHECK_INT(off_at("America/New_York", utc(2024, 11, 3, 6, 0, 0)), -5 * 3600);
    /* far past the table: the footer rule (second Sunday of March 2090 is the 12th) */
    CHECK_INT(off_at("America/New_York", utc(2090, 3, 12, 6, 59, 59)), -5 * 3600);
    CHECK_INT(off_at("America/New_York", utc(2090, 3, 12, 7, 0, 0)), -4 * 3600);
    CHECK_INT(off_at("Asia/Kolkata", utc(2024, 6, 1, 0, 0, 0)), 5 * 3600 + 1800);
    CHECK_INT(off_at("Asia/Kolkata", utc(2099, 1, 1, 0, 0, 0)), 5 * 3600 + 1800);
    /* London: BST from 2024-03-31 01:00Z to 2024-10-27 01:00Z */
    CHECK_INT(off_at("Europe/London", utc(2024, 3, 31, 0, 59, 59)), 0);
    CHECK_INT(off_at("Europe/London", utc(2024, 3, 31, 1, 0, 0)), 3600);
    CHECK_INT(off_at("Europe/London", utc(2024, 10, 27, 0, 59, 59)), 3600);
    CHECK_INT(off_at("Europe/London", utc(2024, 10, 27, 1, 0, 0)), 0);
    CHECK_INT(off_at("UTC", utc(2024, 7, 1, 0, 0, 0)), 0);
    CHECK_INT(off_at("", utc(2024, 7, 1, 0, 0, 0)), 0);
    /* Lord Howe: +10:30, half an hour more from the first Sunday of October
     * 02:00 (2024-10-06, 15:30Z the day before) to the first Sunday of April
     * 02:00 daylight time (2024-04-07, 15:00Z the day before). */
    CHECK_INT(off_at("Australia/Lord_Howe", utc(2024, 10, 5, 15, 29, 59)), 10 * 3600 + 1800);
    CHECK_INT(off_at("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30, 0)), 11 * 3600);
    CHECK_INT(off_at("Australia/Lord_Howe", utc(2024, 4, 6, 14, 59, 59)), 11 * 3600);
    CHECK_INT(off_at("Australia/Lord_Howe", utc(2024, 4, 6, 15, 0, 0)), 10 * 3600 + 1800);
    CHECK_INT(off_at("Australia/Lord_Howe", utc(2095, 1, 1, 0, 0, 0)), 11 * 3600);
}

TEST(mktime_gaps_and_repeats)
{
    char err[300];
    tz_zone *z = tz_load("America/New_York", err, sizeof err);
    CHECK(z != NULL);
    if (!z) return;
    /* 02:30 does not exist on 2024-03-10: read with EST, it is 03:30 EDT. */
    struct tm tm = {.tm_year = 124, .tm_mon = 2, .tm_mday = 10, .tm_hour = 2, .tm_min = 30};
    CHECK_INT(tz_mktime(z, &tm), utc(2024, 3, 10, 7, 30, 0));
    CHECK_INT(tm.tm_hour, 3);
    CHECK_INT(tm.tm_isdst, 1);
    /* 01:30 happens twice on 2024-11-03: the first (EDT) is taken. */
    struct tm rep = {.tm_year = 124, .tm_mon = 10, .tm_mday = 3, .tm_hour = 1, .tm_min = 30};
    CHECK_INT(tz_mktime(z, &rep), utc(2024, 11, 3, 5, 30, 0));
    /* out-of-range fields are normalised: day 0 of March = Feb 29 (leap year), weekday Thursday */
    struct tm norm = {.tm_year = 124, .tm_mon = 2, .tm_mday = 0, .tm_hour = 12};
    tz_mktime(z, &norm);
    CHECK_INT(norm.tm_mon, 1);
    CHECK_INT(norm.tm_mday, 29);
    CHECK_INT(norm.tm_wday, 4);
    CHECK_INT(norm.tm_yday, 59);
    tz_free(z);
}

TEST(unknown_zones)
{
    char err[300] = "";
    CHECK(tz_load("Mars/Olympus_Mons", err, sizeof err) == NULL);
    CHECK(strstr(err, "Mars/Olympus_Mons") != NULL);
    CHECK(tz_load("../../etc/passwd", err, sizeof err) == NULL);
    CHECK(strstr(err, "../../etc/passwd") != NULL);
    CHECK(tz_load("zone.tab", err, sizeof err) == NULL);          /* a file, but not TZif */
    CHECK(!cron_tz_valid("Nowhere/Atlantis") && cron_tz_valid("Asia/Kolkata") && cron_tz_valid("UTC"));
}

/* Instants of the sweep: every 7 hours 13 minutes from 1900 to 2100, plus
 * each second around the hour marks of a few known change days. */
static size_t sweep(int64_t **out)
{
    size_t n = 0, cap = 300000;
    int64_t *t = malloc(cap * sizeof *t);
    for (int64_t x = utc(1900, 1, 1, 0, 0, 0); x < utc(2100, 1, 1, 0, 0, 0) && n < cap; x += 7 * 3600 + 13 * 60)
        t[n++] = x;
    static const int days[][3] = {{2024, 3, 10}, {2024, 11, 3}, {2024, 3, 31}, {2024, 10, 27}, {2024, 10, 5},
                                  {2024, 4, 6}, {2077, 3, 14}, {2077, 11, 7}, {2088, 10, 2}, {2088, 4, 3}};
    for (size_t d = 0; d < sizeof days / sizeof *days; d++)
        for (int h = 0; h < 24; h++)
            for (int s = -1; s <= 1; s++)
                if (n < cap) t[n++] = utc(days[d][0], days[d][1], days[d][2], h, 0, 0) + s + (h % 2) * 1800;
    *out = t;
    return n;
}

typedef struct { int32_t off; int32_t isdst; int64_t back; } libc_row;

/* Runs in the child: TZ=zone, localtime_r of each instant, and mktime of its
 * local time (tm_isdst = -1) for times that are not ambiguous. */
static void child(const char *zone, const int64_t *t, size_t n, int fd)
{
    setenv("TZ", zone, 1);
    tzset();
    for (size_t i = 0; i < n; i++) {
        time_t x = (time_t)t[i];
        struct tm tm;
        libc_row r = {0, 0, 0};
        if (localtime_r(&x, &tm)) {
            r.off = (int32_t)tm.tm_gmtoff;
            r.isdst = tm.tm_isdst > 0;
            tm.tm_isdst = -1;
            r.back = (int64_t)mktime(&tm);
        }
        if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(2);
    }
    _exit(0);
}

TEST(matches_glibc)
{
    int64_t *t;
    size_t n = sweep(&t);
    libc_row *rows = malloc(n * sizeof *rows);
    for (int zi = 0; zones[zi]; zi++) {
        const char *zone = zones[zi];
        int fds[2];
        if (pipe(fds) < 0) { CHECK(0); continue; }
        pid_t pid = fork();
        if (pid == 0) { close(fds[0]); child(zone, t, n, fds[1]); }
        close(fds[1]);
        size_t got = 0;
        while (got < n * sizeof *rows) {
            ssize_t r = read(fds[0], (char *)rows + got, n * sizeof *rows - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        close(fds[0]);
        int st;
        waitpid(pid, &st, 0);
        CHECK(got == n * sizeof *rows && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char err[300];
        tz_zone *z = tz_load(zone, err, sizeof err);     /* after the fork: the child holds nothing of ours */
        CHECK(z != NULL);
        if (!z) { printf("  %s\n", err); continue; }
        int bad_off = 0, bad_back = 0, checked_back = 0;
        for (size_t i = 0; i < got / sizeof *rows; i++) {
            int dst;
            int32_t o = tz_offset(z, t[i], &dst);
            if (o != rows[i].off || dst != rows[i].isdst) {
                if (bad_off++ < 3) printf("  %s at %lld: offset %d dst %d, libc %d dst %d\n", zone, (long long)t[i], o, dst,
                                         rows[i].off, rows[i].isdst);
            }
            /* local time -> instant, where the wall time is not repeated
             * (the C library's choice there depends on its history) */
            struct tm tm;
            tz_localtime(z, t[i], &tm);
            int64_t local = t[i] + o;
            int32_t o_before = tz_offset(z, local - o - 86400, NULL), o_after = tz_offset(z, local - o + 86400, NULL);
            if (o_before != o_after) continue;
            checked_back++;
            int64_t back = tz_mktime(z, &tm);
            if (back != t[i] || back != rows[i].back) {
                if (bad_back++ < 3) printf("  %s mktime of %lld: %lld, libc %lld\n", zone, (long long)t[i], (long long)back,
                                          (long long)rows[i].back);
            }
        }
        CHECK_INT(bad_off, 0);
        CHECK_INT(bad_back, 0);
        CHECK(checked_back > 10000);
        tz_free(z);
    }
    free(rows);
    free(t);
}

/* cron_next in a zone: every day 09:00 in New York across the spring change. */
TEST(cron_next_in_zone)
{
    cron_schedule s;
    char err[300];
    CHECK(cron_parse("every day 09:00", &s, err, sizeof err) == 0);
    int64_t a = cron_next(&s, "America/New_York", utc(2024, 3, 9, 15, 0, 0));
    CHECK_INT(a, utc(2024, 3, 10, 13, 0, 0));                  /* 09:00 EDT */
    CHECK_INT(cron_next(&s, "America/New_York", a), utc(2024, 3, 11, 13, 0, 0));
    CHECK_INT(cron_next(&s, "Asia/Kolkata", utc(2024, 3, 9, 0, 0, 0)), utc(2024, 3, 9, 3, 30, 0));
    CHECK_INT(cron_next(&s, "Australia/Lord_Howe", utc(2024, 10, 6, 0, 0, 0)), utc(2024, 10, 6, 22, 0, 0));
    CHECK_INT(cron_next(&s, "Nowhere/Atlantis", 0), -1);
}

int main(void)
{
    RUN(known_offsets);
    RUN(mktime_gaps_and_repeats);
    RUN(unknown_zones);
    RUN(matches_glibc);
    RUN(cron_next_in_zone);
    return test_report();
}
