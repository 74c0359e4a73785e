/* Unit tests for the protobuf wire codec (src/proto/pb.c). */
#include "proto/pb.h"
#include "test.h"

TEST(roundtrip)
{
    buf b = BUF_INIT;
    pb_put_uint(&b, 1, 300);
    pb_put_int(&b, 2, -5);
    pb_put_str(&b, 3, "hello");
    pb_put_double(&b, 4, 2.5);
    size_t m = pb_begin(&b, 5);
    for (int i = 0; i < 100; i++) pb_put_str(&b, 1, "x");   /* > 127 bytes body */
    pb_end(&b, m);
    pb_group_begin(&b, 6);
    pb_put_uint(&b, 7, 9);
    pb_group_end(&b, 6);
    pb_put_bool(&b, 8, 1);

    pb_reader r, sub;
    pb_reader_init(&r, b.data, b.len);
    uint32_t f; int wt, seen = 0;
    while (pb_next(&r, &f, &wt) > 0) {
        uint64_t u; int64_t i; double d; const uint8_t *p; size_t n; int v;
        switch (f) {
        case 1: CHECK(pb_varint(&r, wt, &u) == 0); CHECK_INT(u, 300); seen |= 1; break;
        case 2: CHECK(pb_int64(&r, wt, &i) == 0); CHECK_INT(i, -5); seen |= 2; break;
        case 3: CHECK(pb_bytes(&r, wt, &p, &n) == 0); CHECK(n == 5 && !memcmp(p, "hello", 5)); seen |= 4; break;
        case 4: CHECK(pb_double(&r, wt, &d) == 0); CHECK(d == 2.5); seen |= 8; break;
        case 5: {
            CHECK(pb_sub(&r, wt, &sub) == 0);
            int cnt = 0; uint32_t f2; int w2;
            while (pb_next(&sub, &f2, &w2) > 0) { CHECK(pb_skip(&sub, w2, f2) == 0); cnt++; }
            CHECK_INT(cnt, 100); CHECK(!sub.err); seen |= 16; break;
        }
        case 6: {
            CHECK(pb_group(&r, wt, 6, &sub) == 0);
            uint32_t f2; int w2;
            CHECK(pb_next(&sub, &f2, &w2) == 1); CHECK_INT(f2, 7);
            CHECK(pb_varint(&sub, w2, &u) == 0); CHECK_INT(u, 9);
            CHECK(pb_next(&sub, &f2, &w2) == 0); seen |= 32; break;
        }
        case 8: CHECK(pb_bool(&r, wt, &v) == 0); CHECK(v == 1); seen |= 64; break;
        default: CHECK(0);
        }
    }
    CHECK(!r.err);
    CHECK_INT(seen, 127);
    buf_free(&b);
}

TEST(malformed)
{
    static const uint8_t trunc_varint[] = {0x08, 0xff};
    static const uint8_t long_len[] = {0x1a, 0x05, 'a'};
    static const uint8_t bad_wt[] = {0x0e, 0x00};
    static const uint8_t open_group[] = {0x33, 0x38, 0x01};
    static const uint8_t wrong_end[] = {0x33, 0x44};
    const uint8_t *cases[] = {trunc_varint, long_len, bad_wt, open_group, wrong_end};
    size_t lens[] = {2, 3, 2, 3, 2};
    for (int c = 0; c < 5; c++) {
        pb_reader r;
        pb_reader_init(&r, cases[c], lens[c]);
        uint32_t f; int wt; int k;
        while ((k = pb_next(&r, &f, &wt)) > 0)
            if (pb_skip(&r, wt, f) < 0) break;
        CHECK(r.err);
    }
}

int main(void)
{
    RUN(roundtrip);
    RUN(malformed);
    return test_report();
}
