/* Contention: T threads each loop {allocate 64 MiB, write every byte, free}.
 *
 *   contention THREADS [ITERS_PER_THREAD] [REPS] [WARMUP]
 *
 * Threads live for the whole run; each repetition releases them together and
 * the wall time until the last one is done gives aggregate GB/s (10^9 bytes
 * written per second). The floor is the same loop over a 64 MiB buffer per
 * thread that the harness faulted in once and keeps. */
#include "bench_common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUF ((size_t)64 << 20)

static long iters;
static pthread_barrier_t start_bar, end_bar;
static volatile int mode; /* 0 allocator, 1 floor, 2 quit */

struct worker {
    pthread_t th;
    unsigned char *floor_buf;
    int id;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int round = 0;; round++) {
        pthread_barrier_wait(&start_bar);
        if (mode == 2)
            return NULL;
        for (long i = 0; i < iters; i++) {
            int v = (round + (int)i + w->id) | 1;
            if (mode == 0) {
                unsigned char *p = malloc(BUF);
                if (!p)
                    abort();
                memset(p, v, BUF);
                bench_escape(p);
                free(p);
            } else {
                memset(w->floor_buf, v, BUF);
                bench_escape(w->floor_buf);
            }
        }
        pthread_barrier_wait(&end_bar);
    }
}

static double run_round(int m)
{
    mode = m;
    uint64_t t0 = bench_now_ns();
    pthread_barrier_wait(&start_bar);
    pthread_barrier_wait(&end_bar);
    return (double)(bench_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    bench_check_preload();
    int threads = (int)bench_arg(argc, argv, 1, 1);
    iters = bench_arg(argc, argv, 2, 4);
    long reps = bench_arg(argc, argv, 3, 5);
    long warm = bench_arg(argc, argv, 4, 1);
    if (threads < 1 || threads > 1024 || iters < 1) {
        fprintf(stderr, "usage: contention THREADS [ITERS] [REPS] [WARMUP]\n");
        return 2;
    }
    pthread_barrier_init(&start_bar, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&end_bar, NULL, (unsigned)threads + 1);
    struct worker *w = bench_map(sizeof *w * (size_t)threads, 0, 0);
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].floor_buf = bench_map(BUF, 1, 1);
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    bench_wait_gate();
    double bytes = (double)threads * (double)iters * (double)BUF;
    struct bench_series s, f;
    bench_series_init(&s, (size_t)reps);
    bench_series_init(&f, (size_t)reps);
    for (long r = -warm; r < reps; r++) {
        double ta = run_round(0);
        double tf = run_round(1);
        if (r >= 0) {
            bench_series_add(&s, bytes / ta / 1e9);
            bench_series_add(&f, bytes / tf / 1e9);
        }
    }
    mode = 2;
    pthread_barrier_wait(&start_bar);
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].th, NULL);
    char casename[64], extra[128];
    snprintf(casename, sizeof casename, "contention %d thread%s", threads, threads > 1 ? "s" : "");
    snprintf(extra, sizeof extra, "\"threads\":%d,\"iters\":%ld,\"higher_is_better\":true", threads,
             iters);
    bench_emit("contention", casename, "GB/s", &s, &f, extra);
    return 0;
}
