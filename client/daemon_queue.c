/* Ids the client owes the daemon: RETURN (regions it unmapped) and RETURN
 * FORGET (regions a fork child may still map), each queue of one daemon
 * generation. Pushed by whoever unmaps or forks, sent by the link in batches
 * without waiting. A full RETURN queue drops ids (the daemon reclaims them
 * when we exit); a full FORGET queue says so once, since those leases would
 * then come back for reuse at our exit. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"

#define QUEUE_MAX 4096

struct idqueue {
    uint64_t ids[QUEUE_MAX];
    _Atomic uint32_t n;
    uint32_t gen;
};

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static struct idqueue queues[2]; /* indexed by enum zkn__owed */

void zkn__queue_push(enum zkn__owed kind, uint64_t id, uint32_t gen)
{
    struct idqueue *q = &queues[kind];
    pthread_mutex_lock(&qlock);
    uint32_t n = atomic_load(&q->n);
    if (n && q->gen != gen)
        n = 0; /* ids of an instance that is gone: nobody to send them to */
    q->gen = gen;
    if (n < QUEUE_MAX)
        q->ids[n++] = id;
    else if (kind == ZKN__OWED_FORGET)
        zkn__log_once("zknalloc: too many regions to forget after fork; some may be reused "
                      "by the daemon once this process exits\n");
    atomic_store(&q->n, n);
    pthread_mutex_unlock(&qlock);
}

uint32_t zkn__queue_take(enum zkn__owed kind, uint32_t gen, uint64_t *out, uint32_t max)
{
    struct idqueue *q = &queues[kind];
    pthread_mutex_lock(&qlock);
    uint32_t n = atomic_load(&q->n), take = 0;
    if (q->gen != gen) {
        atomic_store(&q->n, 0); /* another instance's ids */
    } else {
        take = n > max ? max : n;
        for (uint32_t i = 0; i < take; i++)
            out[i] = q->ids[n - take + i];
        atomic_store(&q->n, n - take);
    }
    pthread_mutex_unlock(&qlock);
    return take;
}

int zkn__queue_pending(enum zkn__owed kind)
{
    return atomic_load_explicit(&queues[kind].n, memory_order_relaxed) != 0;
}

void zkn__queue_lock(void)
{
    pthread_mutex_lock(&qlock);
}

void zkn__queue_unlock(void)
{
    pthread_mutex_unlock(&qlock);
}

void zkn__queue_child_reset(void)
{
    pthread_mutex_init(&qlock, NULL);
    atomic_store(&queues[ZKN__OWED_RETURN].n, 0);
    atomic_store(&queues[ZKN__OWED_FORGET].n, 0);
}
