/* test.h - a tiny unit-test harness. Each tests/unit/test_*.c is one binary:
 *
 *   TEST(name) { CHECK(x == 1); CHECK_STR(s, "a"); }
 *   int main(void) { RUN(name); return test_report(); }
 *
 * A failed CHECK prints file:line and the expression and marks the test
 * failed; test_report prints "<binary>: N passed, M failed" and returns the
 * exit status. */
#ifndef CZ_TEST_H
#define CZ_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failed_now, test_pass, test_fail;

#define TEST(name) static void test_##name(void)
#define RUN(name) do { test_failed_now = 0; test_##name(); \
    if (test_failed_now) { test_fail++; printf("FAIL %s\n", #name); } else test_pass++; } while (0)
#define CHECK(cond) do { if (!(cond)) { printf("  %s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
    test_failed_now = 1; } } while (0)
#define CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { \
    printf("  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); test_failed_now = 1; } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); if (!_a || !_b || strcmp(_a, _b)) { \
    printf("  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, _a ? _a : "(null)", _b ? _b : "(null)"); \
    test_failed_now = 1; } } while (0)

static inline int test_report(void)
{
    printf("%d passed, %d failed\n", test_pass, test_fail);
    return test_fail ? 1 : 0;
}

#endif
