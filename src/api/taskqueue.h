/* taskqueue.h - the taskqueue service's hooks for the daemon.
 *
 * taskqueue_register() (api.h) registers the API methods; the daemon then
 * hands over the app's queue.yaml with taskqueue_configure() and gives the
 * scheduler (src/sched/scheduler.h) the store and a wake-up callback. */
#ifndef CZ_API_TASKQUEUE_H
#define CZ_API_TASKQUEUE_H

#include "api/api.h"
#include "sched/queueyaml.h"
#include "sched/taskstore.h"

typedef struct tq_service tq_service;

/* The service registered on srv, or NULL (no datastore engine). */
tq_service *taskqueue_service(api_server *srv);
/* Replace the queue definitions (takes ownership of cfg). */
void taskqueue_configure(tq_service *s, tq_config *cfg);
/* A copy of the current definitions (free with tq_config_free). */
tq_config *taskqueue_config_copy(tq_service *s);
tq_store *taskqueue_store(tq_service *s);
/* fn(arg) is called after tasks are added or a queue is resumed. */
void taskqueue_set_wake(tq_service *s, void (*fn)(void *), void *arg);

/* fn(arg, q) is called when UpdateQueue changes queue q's definition. */
void taskqueue_set_update(tq_service *s, void (*fn)(void *, const tq_queue *), void *arg);

#endif
