/* deadline.c - request deadlines for the Python runtime.
 *
 * Each worker thread has a slot saying whether it runs a request, since when,
 * and until when (X-Cyclozzo-Deadline). Two watchdog threads scan the slots
 * every 50 ms:
 *
 *   the signaller takes the GIL and raises DeadlineExceededError
 *     asynchronously in a request's thread once its deadline has passed
 *     (PyThreadState_SetAsyncExc: the exception appears at the next bytecode
 *     the thread runs, as on App Engine);
 *   the reaper never touches Python (so a thread stuck in C holding the GIL
 *     cannot stop it) and, when a request is still running grace seconds
 *     after its deadline, logs it and exits the process with
 *     PYRT_EXIT_DEADLINE; the instance manager starts a new instance.
 *
 * A slot's sequence number ties the exception to one request: the signaller
 * re-checks it under the slot lock while holding the GIL, and a worker ends
 * its request holding the GIL too, so an exception can never be raised into
 * the next request of the same thread. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "runtime/pyrt.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

typedef struct {
    pthread_mutex_t mu;
    int active;
    int signaled;
    uint64_t seq;
    unsigned long tid;          /* Python thread id of the worker */
    int64_t start_us, deadline_us;
    char rid[64];
    char path[160];
} slot_t;

static struct {
    slot_t *slots;
    int n;
    int64_t grace_us;
    PyObject *exc;              /* class to raise */
    const char *app_id;
} dl;

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *signaller(void *arg)
{
    (void)arg;
    for (;;) {
        tick();
        int64_t now = now_us();
        for (int i = 0; i < dl.n; i++) {
            slot_t *s = &dl.slots[i];
            pthread_mutex_lock(&s->mu);
            int due = s->active && !s->signaled && now >= s->deadline_us;
            uint64_t seq = s->seq;
            pthread_mutex_unlock(&s->mu);
            if (!due) continue;

            PyGILState_STATE g = PyGILState_Ensure();
            pthread_mutex_lock(&s->mu);
            if (s->active && s->seq == seq && !s->signaled) {
                int n = PyThreadState_SetAsyncExc(s->tid, dl.exc);
                s->signaled = 1;
                log_warn("pyrt", "app=%s rid=%s msg=\"deadline exceeded, raising DeadlineExceededError\" path=%s secs=%.1f found=%d",
                         log_q(dl.app_id), log_q(s->rid), log_q(s->path),
                         (double)(now - s->start_us) / 1e6, n);
            }
            pthread_mutex_unlock(&s->mu);
            PyGILState_Release(g);
        }
    }
    return NULL;
}

static void *reaper(void *arg)
{
    (void)arg;
    for (;;) {
        tick();
        int64_t now = now_us();
        for (int i = 0; i < dl.n; i++) {
            slot_t *s = &dl.slots[i];
            pthread_mutex_lock(&s->mu);
            int stuck = s->active && now >= s->deadline_us + dl.grace_us;
            pthread_mutex_unlock(&s->mu);
            if (stuck) {
                log_error("pyrt", "app=%s rid=%s msg=\"request still running after its deadline and grace period; exiting so the instance is replaced\" path=%s secs=%.1f",
                          log_q(dl.app_id), log_q(s->rid), log_q(s->path),
                          (double)(now - s->start_us) / 1e6);
                _exit(PYRT_EXIT_DEADLINE);
            }
        }
    }
    return NULL;
}

int deadline_start(int nslots, double grace_s, void *exc_class, const char *app_id,
                   char *err, size_t errlen)
{
    dl.slots = xcalloc((size_t)nslots, sizeof *dl.slots);
    dl.n = nslots;
    dl.grace_us = (int64_t)(grace_s * 1e6);
    dl.exc = exc_class;
    dl.app_id = app_id;
    for (int i = 0; i < nslots; i++) pthread_mutex_init(&dl.slots[i].mu, NULL);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    int rc = pthread_create(&t, &at, signaller, NULL);
    if (rc == 0) rc = pthread_create(&t, &at, reaper, NULL);
    pthread_attr_destroy(&at);
    if (rc) { set_err(err, errlen, "cannot start the deadline watchdog threads: %s", strerror(rc)); return -1; }
    return 0;
}

void deadline_begin(int slot, unsigned long py_thread_id, double seconds,
                    const char *rid, const char *path)
{
    slot_t *s = &dl.slots[slot];
    int64_t now = now_us();
    pthread_mutex_lock(&s->mu);
    s->seq++;
    s->active = 1;
    s->signaled = 0;
    s->tid = py_thread_id;
    s->start_us = now;
    s->deadline_us = now + (int64_t)(seconds * 1e6);
    snprintf(s->rid, sizeof s->rid, "%s", rid);
    snprintf(s->path, sizeof s->path, "%s", path);
    pthread_mutex_unlock(&s->mu);
}

int deadline_end(int slot)
{
    slot_t *s = &dl.slots[slot];
    pthread_mutex_lock(&s->mu);
    int was = s->signaled;
    s->active = 0;
    s->signaled = 0;
    pthread_mutex_unlock(&s->mu);
    return was;
}
