/* fuzz_query.c - libFuzzer target for the query decoders: arbitrary bytes
 * as a datastore_v3 Query message, and as a CompiledCursor; also the
 * cursor encoder round trip for what decodes. The first byte picks the
 * decoder so one corpus covers both. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datastore/query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char err[300];
    if (data[0] & 1) {
        dsq_query q;
        if (dsq_query_decode(data + 1, size - 1, &q, err, sizeof err) == 0) {
            (void)dsq_fingerprint(&q);
            dsq_query_free(&q);
        }
    } else {
        dsq_cursor c;
        if (dsq_cursor_decode(data + 1, size - 1, &c, err, sizeof err) == 0) {
            buf out = BUF_INIT;
            dsq_cursor_encode(&c, &out);
            dsq_cursor d;
            if (dsq_cursor_decode((uint8_t *)out.data, out.len, &d, err, sizeof err) != 0) abort();
            if (d.fingerprint != c.fingerprint || d.n_orders != c.n_orders || d.key.n != c.key.n) abort();
            dsq_cursor_free(&d);
            buf_free(&out);
            dsq_cursor_free(&c);
        }
    }
    return 0;
}
