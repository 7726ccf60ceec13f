/* See pressure.h. */
#include "pressure.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void on_pressure(uv_poll_t *w, int status, int events)
{
    struct pressure *pr = w->data;
    (void)events;
    if (status < 0)
        return;
    if (pr->simulated) {
        char buf[64];
        ssize_t n = read(pr->fd, buf, sizeof buf);
        if (n <= 0)
            return; /* writer gone or spurious */
    }
    pr->events++;
    uint64_t freed = pool_trim(pr->pool, pr->cfg->low_watermark);
    pool_count_pressure(pr->pool, freed);
    log_info("memory pressure: pool trimmed by %llu bytes to %llu", (unsigned long long)freed,
             (unsigned long long)pr->pool->idle_bytes);
}

void pressure_start(struct pressure *pr, uv_loop_t *loop, struct pool *pool,
                    const struct config *cfg)
{
    const char *sim = config_env("ZK_NALLOC_PSI_SOURCE", "ZKN_PSI_SOURCE", NULL);
    int events = UV_PRIORITIZED;
    memset(pr, 0, sizeof *pr);
    pr->fd = -1;
    pr->pool = pool;
    pr->cfg = cfg;
    if (!cfg->psi)
        return;
    if (sim && *sim) {
        /* O_RDWR keeps the FIFO open with no writer, so no endless EOF. */
        pr->fd = open(sim, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        pr->simulated = 1;
        events = UV_READABLE;
    } else {
        pr->fd = open("/proc/pressure/memory", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (pr->fd >= 0 && write(pr->fd, PSI_TRIGGER, strlen(PSI_TRIGGER) + 1) < 0) {
            log_info("memory pressure trigger unavailable (%s): no pressure trimming",
                     strerror(errno));
            close(pr->fd);
            pr->fd = -1;
        }
    }
    if (pr->fd < 0) {
        log_debug("no memory pressure source: %s", strerror(errno));
        return;
    }
    if (uv_poll_init(loop, &pr->watch, pr->fd) != 0) {
        close(pr->fd);
        pr->fd = -1;
        return;
    }
    pr->watch.data = pr;
    pr->open = 1;
    uv_poll_start(&pr->watch, events, on_pressure);
    pool_set_pressure_source(pool, pr->simulated ? "simulated" : "psi");
}

static void on_closed(uv_handle_t *h)
{
    struct pressure *pr = h->data;
    close(pr->fd);
    pr->fd = -1;
}

void pressure_stop(struct pressure *pr)
{
    if (pr->open) {
        pr->open = 0;
        uv_close((uv_handle_t *)&pr->watch, on_closed);
    }
}
