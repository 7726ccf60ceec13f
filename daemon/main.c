/* zknallocd: lends warm shared-memory regions to zk-nalloc clients. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "backing.h"
#include "config.h"
#include "fdstore.h"
#include "listen.h"
#include "log.h"
#include "pool.h"
#include "prepare.h"
#include "pressure.h"
#include "sdnotify.h"
#include "server.h"
#include "zkn_proto.h"

/* Decay is checked every 10 s, or twice per decay period when that is shorter. */
#define DECAY_TICK_MAX_MS 10000
#define STATUS_TICK_MS 5000
/* A configuration that cannot work: the unit's RestartPreventExitStatus=
 * stops systemd from restarting into the same error until it gives up. */
#define EXIT_CONFIG 2

struct daemon {
    struct config cfg;
    struct backing backing;
    struct pool pool;
    struct server server;
    struct pressure pressure;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t decay;
    uv_timer_t status;
    int stopping;
};

/* Every pooled region holds an fd: allow as many as the hard limit does. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
}

static void on_decay(uv_timer_t *t)
{
    struct daemon *d = t->data;
    uint64_t freed = pool_decay(&d->pool, d->cfg.idle_decay_s * 1000);
    if (freed)
        log_info("idle decay: %llu bytes unused for %llus released",
                 (unsigned long long)freed, (unsigned long long)d->cfg.idle_decay_s);
}

/* One line for `systemctl status`: what the pool holds right now. */
static void send_status(struct daemon *d, const char *prefix)
{
    const struct pool *p = &d->pool;
    uint32_t clients = procs_live(&d->server.procs);
    zkn_sd_notifyf("%sSTATUS=pool %llu MiB idle (%llu MiB clean), %llu MiB lent to %u clients, "
                   "backing %s",
                   prefix, (unsigned long long)(p->idle_bytes >> 20),
                   (unsigned long long)(pool_clean_bytes(p) >> 20),
                   (unsigned long long)(p->lent_bytes >> 20), clients,
                   zkn_backing_name(d->backing.kind));
}

static void on_status(uv_timer_t *t) { send_status(t->data, ""); }

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void shutdown_daemon(struct daemon *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    log_info("%s: shutting down", why);
    zkn_sd_notify("STOPPING=1");
    server_stop(&d->server);
    /* Leases died with their clients' connections above; what is idle now
     * can outlive us in the service manager's fd store. */
    fdstore_save(&d->pool);
    pool_shutdown(&d->pool);
    pressure_stop(&d->pressure);
    close_handle((uv_handle_t *)&d->sigterm);
    close_handle((uv_handle_t *)&d->sigint);
    close_handle((uv_handle_t *)&d->decay);
    close_handle((uv_handle_t *)&d->status);
}

/* --prewarm N means N pooled regions of the class, restored ones included,
 * not N more on every restart. */
static void prewarm_shortfall(struct daemon *d)
{
    uint64_t want[ZKN_CLASS_COUNT] = {0};
    for (int i = 0; i < d->cfg.nprewarm; i++)
        want[d->cfg.prewarm[i].size_class] += d->cfg.prewarm[i].count;
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint64_t clean, dirty;
        if (!want[c])
            continue;
        pool_class_counts(&d->pool, c, &clean, &dirty);
        if (clean + dirty < want[c])
            pool_prewarm(&d->pool, c, (uint32_t)(want[c] - clean - dirty));
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    shutdown_daemon(s->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

int main(int argc, char **argv)
{
    static struct daemon d;
    int rc = config_load(&d.cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : EXIT_CONFIG;
    log_set_level((enum log_level)d.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    /* Before any thread exists: the backing may unshare the mount namespace. */
    if (backing_init(&d.backing, &d.cfg) < 0)
        return EXIT_CONFIG; /* an explicit --hugetlb/--backing-dir that cannot work */
    if (uv_loop_init(&d.loop) != 0 || pool_init(&d.pool, &d.loop, &d.cfg, &d.backing) < 0) {
        log_error("cannot initialise the event loop");
        return 1;
    }
    d.server.loop = &d.loop;
    d.server.cfg = &d.cfg;
    d.server.pool = &d.pool;
    d.server.backing = &d.backing;
    int inherited_listener;
    fdstore_restore(&d.pool, &inherited_listener);
    if (server_listen(&d.server, inherited_listener) < 0 || server_start(&d.server) < 0)
        return 1;

    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_timer_init(&d.loop, &d.decay);
    d.decay.data = &d;
    if (d.cfg.idle_decay_s > 0) {
        uint64_t tick = d.cfg.idle_decay_s * 500;
        if (tick > DECAY_TICK_MAX_MS)
            tick = DECAY_TICK_MAX_MS;
        uv_timer_start(&d.decay, on_decay, tick, tick);
    }
    pressure_start(&d.pressure, &d.loop, &d.pool, &d.cfg);

    prewarm_shortfall(&d);

    log_info("zknallocd %s (protocol %u) pid %d listening on %s", ZKN_VERSION, ZKN_PROTO_VERSION,
             (int)getpid(), d.cfg.socket_path);
    log_info("backing: %s: %s", zkn_backing_name(d.backing.kind), d.backing.detail);
    log_info("caps: pool %llu bytes, per client %llu bytes / %u regions, %u connections",
             (unsigned long long)d.cfg.pool_bytes, (unsigned long long)d.cfg.client_cap_bytes,
             d.cfg.client_max_leases, d.cfg.max_clients);

    uv_timer_init(&d.loop, &d.status);
    d.status.data = &d;
    uv_timer_start(&d.status, on_status, STATUS_TICK_MS, STATUS_TICK_MS);
    send_status(&d, "READY=1\n");

    uv_run(&d.loop, UV_RUN_DEFAULT);
    /* Workers that were still running finished above; drain close callbacks. */
    uv_run(&d.loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&d.loop) != 0)
        log_debug("event loop closed with handles still open");
    pool_free(&d.pool);
    backing_close(&d.backing);
    log_info("stopped");
    return 0;
}
