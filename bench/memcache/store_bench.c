/* store_bench.c - throughput of the memcache store alone (no RPC), to choose
 * the stripe count: N threads run a 90% get / 10% set mix over a key space
 * for a fixed time, once per stripe count, and print operations per second.
 *
 *   make && cc -O2 -std=gnu11 -D_GNU_SOURCE -Isrc -o build/store_bench \
 *       bench/memcache/store_bench.c build/rel/libcyclozzo.a -lpthread
 *   build/store_bench [threads] [seconds]
 */
#include "api/memcache_store.h"
#include "core/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { mc_store *s; int id; volatile int *stop; uint64_t ops; } worker_arg;

static void sink(void *arg, const mc_view *v) { memcpy(arg, v->value, v->value_len < 100 ? v->value_len : 100); }

static void *run(void *p)
{
    worker_arg *w = p;
    char key[32], val[100], out[100];
    memset(val, 'v', sizeof val);
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(w->id + 1);
    while (!*w->stop) {
        for (int i = 0; i < 256; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            int n = snprintf(key, sizeof key, "key:%llu", (unsigned long long)(x % 100000));
            mc_key k = { "dev~bench", 9, "", 0, (const uint8_t *)key, (size_t)n };
            if (x % 10 == 0) mc_set(w->s, &k, val, sizeof val, 0, MC_SET, 0, 0, 0, 1700000000);
            else mc_get(w->s, &k, 0, 1700000000, sink, out);
        }
        w->ops += 256;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    int counts[] = { 1, 4, 16 };
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        mc_store *s = mc_store_new(64u << 20, counts[c]);
        volatile int stop = 0;
        pthread_t th[64];
        worker_arg w[64];
        if (threads > 64) threads = 64;
        int64_t t0 = now_us();
        for (int i = 0; i < threads; i++) {
            w[i] = (worker_arg){ s, i, &stop, 0 };
            pthread_create(&th[i], NULL, run, &w[i]);
        }
        while (now_us() - t0 < (int64_t)(secs * 1e6)) {
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
        stop = 1;
        uint64_t ops = 0;
        for (int i = 0; i < threads; i++) { pthread_join(th[i], NULL); ops += w[i].ops; }
        double el = (double)(now_us() - t0) / 1e6;
        printf("stripes=%-3d threads=%d  %.2f Mops/s\n", counts[c], threads, (double)ops / el / 1e6);
        mc_store_free(s);
    }
    return 0;
}
