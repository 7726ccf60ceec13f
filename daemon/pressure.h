/* Trimming under memory pressure: a PSI trigger on /proc/pressure/memory
 * fires when tasks stall on memory; the daemon then trims its idle pool down
 * to the low watermark. ZK_NALLOC_PSI_SOURCE names a FIFO to use instead, where
 * each byte written is one pressure event (for tests: a real stall cannot be
 * produced on demand). */
#ifndef ZKND_PRESSURE_H
#define ZKND_PRESSURE_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "pool.h"

/* Stall of 150 ms within any 2 s window (2 s: the shortest window an
 * unprivileged trigger may use). */
#define PSI_TRIGGER "some 150000 2000000"

struct pressure {
    int fd;
    int simulated;
    uv_poll_t watch;
    int open;
    struct pool *pool;
    const struct config *cfg;
    uint64_t events;
};

/* Never fails the daemon: without PSI, pressure trimming is simply off. */
void pressure_start(struct pressure *pr, uv_loop_t *loop, struct pool *pool,
                    const struct config *cfg);
void pressure_stop(struct pressure *pr);

#endif
