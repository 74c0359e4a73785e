/* fuzz_tzfile - libFuzzer target for the TZif reader (sched/tzfile.h).
 *
 * Parses the input as a TZif file; when it is accepted, converts a spread of
 * instants (before, inside and after any transition table, so the footer's
 * POSIX rule runs too) to local time and back, which must never crash,
 * overflow or loop. Seeds: a few real zones from /usr/share/zoneinfo. */
#include <stdint.h>
#include <stdlib.h>

#include "sched/tzfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[300];
    tz_zone *z = tz_parse(data, size, "fuzz", err, sizeof err);
    if (!z) {
        if (!err[0]) abort();
        return 0;
    }
    static const int64_t ts[] = {-5000000000LL, -2208988800LL, 0, 1700000000, 1710054000, 2000000000,
                                 4102444800LL, 9000000000LL};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        struct tm tm;
        tz_localtime(z, ts[i], &tm);
        tm.tm_mday += 3;
        tm.tm_hour = 2;
        tm.tm_min = 30;
        (void)tz_mktime(z, &tm);
    }
    tz_free(z);
    return 0;
}
