/* test_sched.c - queue.yaml and cron.yaml parsing, App Engine's cron
 * schedules and their next run times, retry backoff, the task store over a
 * real LMDB kv engine, and the scheduler's internal token. */
#include "test.h"
#include "tmpdir.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "kv/kv.h"
#include "sched/cron.h"
#include "sched/queueyaml.h"
#include "sched/scheduler.h"
#include "sched/taskstore.h"

static tq_config *qparse(const char *s, char *err, size_t n) { return queueyaml_parse(s, strlen(s), "queue.yaml", err, n); }

TEST(queue_yaml_good)
{
    char err[400] = "";
    tq_config *c = qparse("queue:\n"
                          "- name: fast\n  rate: 10/m\n  bucket_size: 20\n  max_concurrent_requests: 3\n"
                          "  target: v2\n  retry_parameters:\n    task_retry_limit: 7\n    task_age_limit: 2d\n"
                          "    min_backoff_seconds: 10\n    max_backoff_seconds: 200\n    max_doublings: 2\n"
                          "- name: pq\n  mode: pull\n  retry_parameters:\n    task_retry_limit: 4\n", err, sizeof err);
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK_INT(c->n, 3);
    const tq_queue *f = tq_find(c, "fast");
    CHECK(f && f->rate_per_s > 0.1666 && f->rate_per_s < 0.1667);
    CHECK_INT(f->bucket_size, 20);
    CHECK_INT(f->max_concurrent, 3);
    CHECK_STR(f->target, "v2");
    CHECK_INT(f->retry.retry_limit, 7);
    CHECK_INT(f->retry.age_limit_s, 2 * 86400);
    CHECK_INT(f->retry.max_doublings, 2);
    const tq_queue *p = tq_find(c, "pq");
    CHECK(p && p->pull && p->retry.retry_limit == 4);
    const tq_queue *d = tq_find(c, "default");
    CHECK(d && !d->pull && d->rate_per_s == 5 && d->bucket_size == 5);
    tq_config_free(c);

    c = qparse("", err, sizeof err);
    CHECK(c && c->n == 1 && tq_find(c, "default"));
    tq_config_free(c);
    c = qparse("queue:\n- name: default\n  rate: 1/h\n", err, sizeof err);
    CHECK(c && c->n == 1 && tq_find(c, "default")->rate_per_s < 0.001);
    tq_config_free(c);
}

TEST(queue_yaml_bad)
{
    static const struct { const char *text, *want; } cases[] = {
        {"queue:\n- name: a\n  rate: 5/x\n", "queue.yaml:3: rate must look like"},
        {"queue:\n- name: a\n", "queue.yaml:2: push queue a needs a rate"},
        {"queue:\n- name: a b\n  rate: 1/s\n", "queue.yaml:2: queue name \"a b\" is invalid"},
        {"queue:\n- name: a\n  rate: 1/s\n- name: a\n  rate: 2/s\n", "queue.yaml:4: queue a is defined twice"},
        {"queue:\n- name: p\n  mode: pull\n  rate: 1/s\n", "queue.yaml:4: pull queue p cannot have rate"},
        {"queue:\n- name: a\n  rate: 1/s\n  bucket_size: 0\n", "queue.yaml:4: bucket_size must be"},
        {"queue:\n- name: a\n  rate: 1/s\n  retry_parameters:\n    task_age_limit: 3w\n", "queue.yaml:5: task_age_limit"},
        {"queue:\n- name: a\n  rate: 1/s\n  retry_parameters:\n    min_backoff_seconds: 9\n    max_backoff_seconds: 1\n",
         "queue.yaml:5: max_backoff_seconds is smaller"},
        {"queue:\n- name: a\n  rate: 1/s\n  colour: red\n", "queue.yaml:4: unknown queue key \"colour\""},
        {"queues:\n- name: a\n", "queue.yaml:1: unknown top-level key"},
        {"queue:\n- name: a\n  rate: [1\n", "queue.yaml:"},
        {"queue:\n- &x name: a\n  rate: 1/s\n", "queue.yaml:2: anchors and aliases"},
        {"queue:\n- name: p\n  mode: pull\n  retry_parameters:\n    min_backoff_seconds: 1\n", "queue.yaml:5: a pull queue takes only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[400] = "";
        tq_config *c = qparse(cases[i].text, err, sizeof err);
        CHECK(c == NULL);
        if (strncmp(err, cases[i].want, strlen(cases[i].want))) {
            printf("  case %zu: got \"%s\", expected \"%s...\"\n", i, err, cases[i].want);
            test_failed_now = 1;
        }
        tq_config_free(c);
    }
}

TEST(rates_and_backoff)
{
    double r;
    CHECK(tq_parse_rate("5/s", &r) == 0 && r == 5);
    CHECK(tq_parse_rate("120/m", &r) == 0 && r == 2);
    CHECK(tq_parse_rate("36/h", &r) == 0 && r == 0.01);
    CHECK(tq_parse_rate("5", &r) < 0);
    CHECK(tq_parse_rate("-1/s", &r) < 0);
    /* App Engine's documented example: min 10 s, max 300 s, max_doublings 3:
     * 10, 20, 40, 80, 160, 240, 300, 300. */
    tq_retry p = {.retry_limit = -1, .age_limit_s = -1, .min_backoff_s = 10, .max_backoff_s = 300, .max_doublings = 3};
    static const double want[] = {10, 20, 40, 80, 160, 240, 300, 300};
    for (int i = 0; i < 8; i++) CHECK(tq_backoff_s(&p, i + 1) == want[i]);
    tq_retry d;
    tq_retry_default(&d);
    CHECK(tq_backoff_s(&d, 1) == 0.1);
    CHECK(tq_backoff_s(&d, 100) == 3600);
    /* limits: both given = both must be exceeded */
    p.retry_limit = 3;
    CHECK(!tq_retry_exhausted(&p, 3, 0));
    CHECK(tq_retry_exhausted(&p, 4, 0));
    p.age_limit_s = 60;
    CHECK(!tq_retry_exhausted(&p, 10, 1000000));
    CHECK(tq_retry_exhausted(&p, 10, 61000000));
    CHECK(!tq_retry_exhausted(&p, 2, 61000000));
    CHECK(!tq_retry_exhausted(&d, 1000, INT64_C(1) << 50));
}

static int64_t next_of(const char *sched, const char *tz, int64_t after)
{
    cron_schedule s;
    char err[400];
    if (cron_parse(sched, &s, err, sizeof err) < 0) { printf("  parse %s: %s\n", sched, err); return -2; }
    return cron_next(&s, tz, after);
}

TEST(cron_next_documented_examples)
{
    const int64_t jan1 = 1704067200;           /* Mon 2024-01-01 00:00 UTC */
    CHECK_INT(next_of("every day 09:00", "", jan1), 1704099600);
    CHECK_INT(next_of("every monday 09:00", "", 1704103200), 1704704400);
    CHECK_INT(next_of("every mon,wed,fri 09:00", "", 1704103200), 1704272400);
    CHECK_INT(next_of("1st,3rd monday of month 09:00", "", 1704103200), 1705309200);
    CHECK_INT(next_of("1st of month 00:00", "", jan1), 1706745600);
    CHECK_INT(next_of("every 2 hours synchronized", "", 1704070801), 1704074400);
    CHECK_INT(next_of("every 5 minutes from 10:00 to 14:00", "", 1704117630), 1704189600);
    CHECK_INT(next_of("every 5 minutes from 10:00 to 14:00", "", 1704103320), 1704103500);
    CHECK_INT(next_of("every 12 hours", "", jan1), jan1 + 43200);
    CHECK_INT(next_of("every 5 minutes", "", jan1), jan1 + 300);
    CHECK_INT(next_of("2nd,third mon,wed,thu of march 17:00", "", jan1), 1710176400);
    CHECK_INT(next_of("1 of jan,april,july,oct 00:00", "", jan1), 1711929600);
    CHECK_INT(next_of("every day 00:00", "America/New_York", jan1), 1704085200);
    CHECK_INT(next_of("every day 09:00", "America/New_York", 1719792000), 1719838800);   /* EDT */
    CHECK_INT(next_of("31 of february 00:00", "", jan1), -1);
    CHECK_INT(next_of("every day 09:00", "Nowhere/Atlantis", jan1), -1);
    CHECK(cron_tz_valid("Europe/Berlin") && !cron_tz_valid("../etc/passwd") && !cron_tz_valid("Nowhere/Atlantis"));
}

TEST(cron_bad_schedules)
{
    static const char *bad[] = {"every", "every funday 09:00", "every day 25:00", "every day 9", "every 7 minutes synchronized",
                                "6th monday of month 09:00", "every 5 fortnights", "1st monday of smarch 10:00",
                                "every 5 minutes from 10:00", "32 of month 00:00", "every day 09:00 extra", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cron_schedule s;
        char err[400] = "";
        if (cron_parse(bad[i], &s, err, sizeof err) == 0) { printf("  accepted \"%s\"\n", bad[i]); test_failed_now = 1; }
        else CHECK(err[0] != 0);
    }
}

TEST(cron_yaml)
{
    const char *good = "cron:\n- description: daily summary\n  url: /tasks/summary\n  schedule: every 24 hours\n"
                       "- url: /t\n  schedule: every monday 09:00\n  timezone: Europe/Berlin\n  target: v2\n"
                       "  retry_parameters:\n    job_retry_limit_is_not_a_key: 1\n";
    char err[400] = "";
    cron_config *c = cronyaml_parse(good, strlen(good), "cron.yaml", err, sizeof err);
    CHECK(c == NULL);
    CHECK(!strncmp(err, "cron.yaml:10: unknown retry_parameters key", 42));
    const char *ok = "cron:\n- description: daily summary\n  url: /tasks/summary\n  schedule: every 24 hours\n"
                     "- url: /t\n  schedule: every monday 09:00\n  timezone: Europe/Berlin\n  target: v2\n"
                     "  retry_parameters:\n    task_retry_limit: 2\n";
    c = cronyaml_parse(ok, strlen(ok), "cron.yaml", err, sizeof err);
    CHECK(c && c->n == 2);
    if (c) {
        CHECK_STR(c->jobs[0].description, "daily summary");
        CHECK_INT(c->jobs[0].sched.interval_s, 86400);
        CHECK_STR(c->jobs[1].timezone, "Europe/Berlin");
        CHECK(c->jobs[1].has_retry && c->jobs[1].retry.retry_limit == 2);
    }
    cron_config_free(c);
    const char *badsched = "cron:\n- url: /x\n  schedule: every blue moon\n";
    c = cronyaml_parse(badsched, strlen(badsched), "cron.yaml", err, sizeof err);
    CHECK(c == NULL && !strncmp(err, "cron.yaml:3: the schedule", 25));
    const char *badtz = "cron:\n- url: /x\n  schedule: every 1 hours\n  timezone: Mars/Olympus\n";
    c = cronyaml_parse(badtz, strlen(badtz), "cron.yaml", err, sizeof err);
    CHECK(c == NULL && !strncmp(err, "cron.yaml:4: timezone", 21));
    const char *nourl = "cron:\n- schedule: every 1 hours\n";
    c = cronyaml_parse(nourl, strlen(nourl), "cron.yaml", err, sizeof err);
    CHECK(c == NULL && !strncmp(err, "cron.yaml:2: a cron job has no url", 34));
}

static tq_task mk(const char *name, int64_t eta)
{
    tq_task t;
    memset(&t, 0, sizeof t);
    t.name = strdup(name);
    t.url = strdup("/w");
    t.method = TQ_POST;
    t.eta_us = eta;
    t.body = (uint8_t *)strdup("payload");
    t.body_len = 7;
    return t;
}

TEST(task_store)
{
    char dir[256], err[400] = "";
    CHECK(test_mkdtemp(dir, sizeof dir) != NULL);
    char spec[300];
    snprintf(spec, sizeof spec, "lmdb:%s?nosync=1", dir);
    kv_engine *kv = kv_open(spec, err, sizeof err);
    CHECK(kv != NULL);
    if (!kv) return;
    tq_store *s = tq_store_new(kv);
    tq_task a = mk("a", 1000), b = mk("b", 500), c = mk("c", 5000);
    CHECK_INT(tq_store_add(s, "dev~x", "q", &a, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "q", &b, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "q", &c, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "q", &a, err, sizeof err), TQE_TASK_ALREADY_EXISTS);
    CHECK_INT(tq_store_add(s, "dev~y", "q", &a, err, sizeof err), TQE_OK);    /* other app: separate */
    int64_t n, oldest;
    CHECK_INT(tq_store_stats(s, "dev~x", "q", &n, &oldest, err, sizeof err), TQE_OK);
    CHECK_INT(n, 3);
    CHECK_INT(oldest, 500);

    /* lease the due ones (ETA <= 2000) in ETA order */
    tq_task *got;
    size_t ng;
    CHECK_INT(tq_store_lease(s, "dev~x", "q", 2000, 100000, 10, 0, NULL, 0, &got, &ng, err, sizeof err), TQE_OK);
    CHECK_INT(ng, 2);
    if (ng == 2) {
        CHECK_STR(got[0].name, "b");
        CHECK_STR(got[1].name, "a");
        CHECK_INT(got[0].eta_us, 102000);
        CHECK_INT(got[0].orig_eta_us, 500);
        CHECK_INT(got[0].body_len, 7);
        CHECK(!memcmp(got[0].body, "payload", 7));
        /* leased: not due again */
        tq_task *again;
        size_t na;
        CHECK_INT(tq_store_lease(s, "dev~x", "q", 3000, 100000, 10, 0, NULL, 0, &again, &na, err, sizeof err), TQE_OK);
        CHECK_INT(na, 0);
        free(again);
        /* a failed delivery: reschedule b */
        int64_t leased = got[0].eta_us;
        got[0].retry_count = 1;
        got[0].eta_us = 2500;
        CHECK_INT(tq_store_reschedule(s, "dev~x", "q", &got[0], leased, err, sizeof err), TQE_OK);
        CHECK_INT(tq_store_lease(s, "dev~x", "q", 3000, 100000, 10, 0, NULL, 0, &again, &na, err, sizeof err), TQE_OK);
        CHECK(na == 1 && again[0].retry_count == 1);
        for (size_t i = 0; i < na; i++) tq_task_free(&again[i]);
        free(again);
    }
    for (size_t i = 0; i < ng; i++) tq_task_free(&got[i]);
    free(got);

    /* delete: tombstone rejects the name afterwards */
    CHECK_INT(tq_store_delete(s, "dev~x", "q", "a", err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_delete(s, "dev~x", "q", "a", err, sizeof err), TQE_TOMBSTONED_TASK);
    CHECK_INT(tq_store_delete(s, "dev~x", "q", "zz", err, sizeof err), TQE_UNKNOWN_TASK);
    CHECK_INT(tq_store_add(s, "dev~x", "q", &a, err, sizeof err), TQE_TOMBSTONED_TASK);

    /* pause flag */
    CHECK(!tq_store_paused(s, "dev~x", "q"));
    CHECK_INT(tq_store_set_paused(s, "dev~x", "q", 1, err, sizeof err), TQE_OK);
    CHECK(tq_store_paused(s, "dev~x", "q"));
    CHECK_INT(tq_store_set_paused(s, "dev~x", "q", 0, err, sizeof err), TQE_OK);
    CHECK(!tq_store_paused(s, "dev~x", "q"));

    /* pull: tags and lease modification */
    tq_task p1 = mk("p1", 100), p2 = mk("p2", 200), p3 = mk("p3", 300);
    p1.pull = p2.pull = p3.pull = 1;
    p1.tag = strdup("red");
    p2.tag = strdup("blue");
    p3.tag = strdup("red");
    CHECK_INT(tq_store_add(s, "dev~x", "pull", &p1, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "pull", &p2, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "pull", &p3, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_lease(s, "dev~x", "pull", 1000, 5000, 10, 1, NULL, 1, &got, &ng, err, sizeof err), TQE_OK);
    CHECK(ng == 2 && !strcmp(got[0].name, "p1") && !strcmp(got[1].name, "p3") && got[0].retry_count == 1);
    int64_t ne = 0;
    if (ng == 2) {
        CHECK_INT(tq_store_modify_lease(s, "dev~x", "pull", "p1", got[0].eta_us, 1500, 9000, &ne, err, sizeof err), TQE_OK);
        CHECK_INT(ne, 10500);
        CHECK_INT(tq_store_modify_lease(s, "dev~x", "pull", "p1", got[0].eta_us, 1500, 9000, &ne, err, sizeof err),
                  TQE_TASK_LEASE_EXPIRED);
    }
    for (size_t i = 0; i < ng; i++) tq_task_free(&got[i]);
    free(got);
    CHECK_INT(tq_store_purge(s, "dev~x", "pull", err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_stats(s, "dev~x", "pull", &n, &oldest, err, sizeof err), TQE_OK);
    CHECK_INT(n, 0);
    CHECK_INT(tq_store_stats(s, "dev~x", "q", &n, &oldest, err, sizeof err), TQE_OK);
    CHECK_INT(n, 2);

    /* delete_many: one transaction, names already gone skipped, names tombstoned */
    tq_task m1 = mk("m1", 100), m2 = mk("m2", 100);
    CHECK_INT(tq_store_add(s, "dev~x", "m", &m1, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "m", &m2, err, sizeof err), TQE_OK);
    const char *names[] = {"m1", "nosuch", "m2"};
    CHECK_INT(tq_store_delete_many(s, "dev~x", "m", names, 3, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_stats(s, "dev~x", "m", &n, &oldest, err, sizeof err), TQE_OK);
    CHECK_INT(n, 0);
    CHECK_INT(tq_store_add(s, "dev~x", "m", &m1, err, sizeof err), TQE_TOMBSTONED_TASK);
    /* a tombstone older than TQ_TOMBSTONE_DAYS no longer blocks its name */
    kv_txn *kt;
    CHECK_INT(kv_begin(kv, 1, &kt, err, sizeof err), KV_OK);
    uint8_t when[8];
    uint64_t old = (uint64_t)(wall_us() - (TQ_TOMBSTONE_DAYS + 1) * 86400LL * 1000000);
    for (int i = 0; i < 8; i++) when[i] = (uint8_t)(old >> (56 - 8 * i));
    CHECK_INT(kv_put(kt, "Q/dev~x/m/x/m2", 14, when, 8, err, sizeof err), KV_OK);
    CHECK_INT(kv_commit(kt, err, sizeof err), KV_OK);
    CHECK_INT(tq_store_add(s, "dev~x", "m", &m2, err, sizeof err), TQE_OK);
    /* add_many: one transaction, a code per task */
    tq_task n1 = mk("n1", 100), n2 = mk("n2", 100);
    const char *qs[] = {"n", "n", "n"};
    const tq_task *ts[] = {&n1, &m1, &n2};
    int r0 = -1, r1 = -1, r2 = -1;
    int *const rcs[] = {&r0, &r1, &r2};
    CHECK_INT(tq_store_add(s, "dev~x", "n", &m1, err, sizeof err), TQE_OK);
    CHECK_INT(tq_store_add_many(s, "dev~x", qs, ts, 3, rcs, err, sizeof err), TQE_OK);
    CHECK(r0 == TQE_OK && r1 == TQE_TASK_ALREADY_EXISTS && r2 == TQE_OK);
    CHECK_INT(tq_store_stats(s, "dev~x", "n", &n, &oldest, err, sizeof err), TQE_OK);
    CHECK_INT(n, 3);
    tq_task_free(&n1); tq_task_free(&n2);
    tq_task_free(&m1); tq_task_free(&m2);

    tq_task_free(&a); tq_task_free(&b); tq_task_free(&c);
    tq_task_free(&p1); tq_task_free(&p2); tq_task_free(&p3);
    tq_store_free(s);
    kv_close(kv);
    test_rmtree(dir);
}

TEST(internal_token)
{
    uint8_t k1[SCHED_KEY_LEN], k2[SCHED_KEY_LEN];
    memset(k1, 1, sizeof k1);
    memset(k2, 2, sizeof k2);
    char tok[128];
    sched_internal_token(k1, 1700000000, tok, sizeof tok);
    CHECK(sched_internal_verify(k1, tok, strlen(tok), 1700000000));
    CHECK(sched_internal_verify(k1, tok, strlen(tok), 1700000200));
    CHECK(!sched_internal_verify(k1, tok, strlen(tok), 1700000400));    /* stale */
    CHECK(!sched_internal_verify(k2, tok, strlen(tok), 1700000000));    /* other key */
    tok[20] ^= 1;
    CHECK(!sched_internal_verify(k1, tok, strlen(tok), 1700000000));
    CHECK(!sched_internal_verify(k1, "", 0, 1700000000));
    CHECK(!sched_internal_verify(k1, "1700000000.", 11, 1700000000));
}

int main(void)
{
    RUN(queue_yaml_good);
    RUN(queue_yaml_bad);
    RUN(rates_and_backoff);
    RUN(cron_next_documented_examples);
    RUN(cron_bad_schedules);
    RUN(cron_yaml);
    RUN(task_store);
    RUN(internal_token);
    return test_report();
}
