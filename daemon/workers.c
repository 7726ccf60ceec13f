/* See workers.h. */
#include "workers.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

/* Zeroing and preparing use a core only when it is idle: at normal priority
 * they competed with the provers on a 2-core machine. For good: a thread
 * without CAP_SYS_NICE cannot come back from SCHED_IDLE. */
static void lower_this_thread(void)
{
    struct sched_param none = {0};
    if (sched_setscheduler(0, SCHED_IDLE, &none) != 0) /* 0: this thread */
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
}

static void *worker_main(void *arg)
{
    struct workers *w = arg;
    lower_this_thread();
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->queue_head && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        struct work *job = w->queue_head;
        if (!job) { /* stopping, nothing left */
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        w->queue_head = job->next;
        if (!w->queue_head)
            w->queue_tail = NULL;
        pthread_mutex_unlock(&w->lock);

        job->run(job);

        job->next = atomic_load_explicit(&w->finished, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&w->finished, &job->next, job,
                                                      memory_order_release,
                                                      memory_order_relaxed))
            ;
        uint64_t one = 1;
        /* EAGAIN only at a counter near 2^64: the loop is due to wake anyway. */
        while (write(w->efd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

static void on_closed(uv_handle_t *h)
{
    struct workers *w = h->data;
    close(w->efd);
    w->efd = -1;
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static void finish_stop(struct workers *w)
{
    if (w->closed)
        return;
    w->closed = 1;
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    w->nthreads = 0;
    uv_close((uv_handle_t *)&w->poll, on_closed);
}

static void on_results(uv_poll_t *h, int status, int events)
{
    struct workers *w = h->data;
    uint64_t n;
    (void)status;
    (void)events;
    /* Reset the counter before taking the list: a result pushed after the
     * take writes again, so none is left without a wake-up. */
    if (read(w->efd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR)
        log_warn("worker results: read: %s", strerror(errno));
    struct work *got = atomic_exchange_explicit(&w->finished, NULL, memory_order_acquire);
    struct work *fifo = NULL;
    while (got) { /* pushed newest first: reverse */
        struct work *next = got->next;
        got->next = fifo;
        fifo = got;
        got = next;
    }
    while (fifo) {
        struct work *next = fifo->next;
        w->inflight--;
        fifo->done(fifo);
        fifo = next;
    }
    if (w->stopping && w->inflight == 0)
        finish_stop(w);
}

int workers_start(struct workers *w, uv_loop_t *loop, int n)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    if (n < 1)
        n = 1;
    if (n > WORKERS_MAX)
        n = WORKERS_MAX;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0)
        return -errno;
    int rc = uv_poll_init(loop, &w->poll, w->efd);
    if (rc != 0) {
        close(w->efd);
        return rc;
    }
    w->poll.data = w;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    for (int i = 0; i < n; i++) {
        rc = pthread_create(&w->threads[i], NULL, worker_main, w);
        if (rc != 0) {
            w->nthreads = i;
            workers_stop(w);
            return -rc;
        }
        w->nthreads = i + 1;
    }
    rc = uv_poll_start(&w->poll, UV_READABLE, on_results);
    if (rc != 0) {
        workers_stop(w);
        return rc;
    }
    return 0;
}

void workers_submit(struct workers *w, struct work *job)
{
    job->next = NULL;
    w->inflight++;
    pthread_mutex_lock(&w->lock);
    if (w->queue_tail)
        w->queue_tail->next = job;
    else
        w->queue_head = job;
    w->queue_tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void workers_stop(struct workers *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (w->inflight == 0)
        finish_stop(w);
}
