/* fuzz_cron.c - libFuzzer target over the cron schedule parser (and
 * cron_next for what parses), queue.yaml and cron.yaml. The first byte picks
 * the parser; the rest is its input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched/cron.h"
#include "sched/queueyaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char err[512];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        char s[300];
        if (n >= sizeof s) n = sizeof s - 1;
        memcpy(s, text, n);
        s[n] = 0;
        cron_schedule c;
        if (cron_parse(s, &c, err, sizeof err) == 0) cron_next(&c, "", 1704067200);
        break;
    }
    case 1: tq_config_free(queueyaml_parse(text, n, "queue.yaml", err, sizeof err)); break;
    default: cron_config_free(cronyaml_parse(text, n, "cron.yaml", err, sizeof err)); break;
    }
    return 0;
}
