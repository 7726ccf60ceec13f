/* Background work (zeroing, preparing regions) on threads of the lowest
 * priority, whose results reach the event loop without anything the loop
 * could wait on.
 *
 * Why not libuv's thread pool: a worker there reports back with
 * uv_async_send(), and libuv 1.44's loop spins (pause, then sched_yield)
 * while a sender is half-way through it. A SCHED_IDLE worker preempted in
 * that window by the loop itself kept the loop spinning for milliseconds:
 * perf put 53% of the daemon's time in that spin during a calloc-heavy
 * client, and LEND answers took up to 6 ms instead of ~30 us. Here a worker
 * pushes its finished job onto a lock-free list and then writes an eventfd;
 * preempted anywhere, it only delays its own result. */
#ifndef ZKND_WORKERS_H
#define ZKND_WORKERS_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#define WORKERS_MAX 16

struct work {
    struct work *next;
    void (*run)(struct work *);  /* on a worker thread */
    void (*done)(struct work *); /* on the loop thread, after run */
};

struct workers {
    uv_loop_t *loop;
    uv_poll_t poll;
    int efd;
    pthread_mutex_t lock; /* guards queue and stopping; held only to push or pop */
    pthread_cond_t cond;
    struct work *queue_head, *queue_tail;
    struct work *_Atomic finished; /* pushed by workers, taken whole by the loop */
    pthread_t threads[WORKERS_MAX];
    int nthreads;
    int stopping;
    uint32_t inflight; /* submitted, done() not yet called; loop thread only */
    int closed;
};

/* Starts n threads (1..WORKERS_MAX) and watches for their results on loop.
 * 0, or -errno with nothing left running. */
int workers_start(struct workers *w, uv_loop_t *loop, int n);

/* Queues job; its done() runs on the loop thread once run() has returned. */
void workers_submit(struct workers *w, struct work *job);

/* Runs the jobs already queued, calls their done(), then ends the threads
 * and lets go of the loop handle. The loop must keep running until then. */
void workers_stop(struct workers *w);

#endif
