/* Counters, zkn_stats(), the ZK_NALLOC_SHOW_STATS report at exit and the
 * same report on a signal (ZK_NALLOC_STATS_SIGNAL). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"
#include "internal.h"
#include "next_alloc.h"


/* The counters as they are: atomic loads only, so a signal handler may call it. */
static void snapshot(struct zkn_stats *out)
{
    memset(out, 0, sizeof *out);
    out->hits = atomic_load(&zkn__ctr.hits);
    out->misses = atomic_load(&zkn__ctr.misses);
    out->bytes_cached = atomic_load(&zkn__bytes_cached);
    out->bytes_leased = atomic_load(&zkn__ctr.bytes_leased);
    out->bytes_live = atomic_load(&zkn__ctr.bytes_live);
    out->daemon_connected = (uint64_t)zkn__daemon_connected();
    out->fallbacks = atomic_load(&zkn__ctr.fallbacks);
    out->reconnects = atomic_load(&zkn__ctr.reconnects);
    out->daemon_lends = atomic_load(&zkn__ctr.lends);
    out->daemon_returns = atomic_load(&zkn__ctr.returns);
    out->libc_fallbacks = atomic_load(&zkn__ctr.libc_fallbacks);
    out->cache_cap = zkn__cache_cap;
}

int zkn_stats(struct zkn_stats *out)
{
    zkn__init();        /* the cap in force is known once configured */
    zkn__daemon_poll(); /* a daemon that went away is noticed here, not later */
    snapshot(out);
    return 0;
}

/* The report: one line per counter, built in a buffer and written at once
 * (no stdio, no malloc: it also runs in a signal handler). */
struct report {
    char buf[2048]; /* two file paths among the counters */
    size_t len;
};

static void put(struct report *r, const char *s)
{
    size_t n = strlen(s);
    if (n > sizeof r->buf - r->len)
        n = sizeof r->buf - r->len;
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

/* The widest counter name, bytes_zeroed_idle: the values line up after it. */
#define NAME_WIDTH 17

/* A report line's start: the name, padded so that what follows lines up. */
static void label(struct report *r, const char *name)
{
    put(r, "zknalloc:   ");
    put(r, name);
    for (size_t n = strlen(name); n <= NAME_WIDTH; n++)
        put(r, " ");
}

static void line(struct report *r, const char *name, uint64_t v)
{
    char num[24];
    label(r, name);
    put(r, zkn__fmt_u64(num, v));
    put(r, "\n");
}

static void report(const char *title, const struct zkn_stats *s)
{
    struct report r = {.len = 0};
    uint64_t large = s->hits + s->misses;
    put(&r, title);
    line(&r, "hits", s->hits);
    line(&r, "misses", s->misses);
    line(&r, "hit_rate_pct", large ? s->hits * 100 / large : 0);
    line(&r, "bytes_cached", s->bytes_cached);
    line(&r, "bytes_leased", s->bytes_leased);
    line(&r, "bytes_live", s->bytes_live);
    line(&r, "daemon_connected", s->daemon_connected);
    line(&r, "fallbacks", s->fallbacks);
    line(&r, "reconnects", s->reconnects);
    line(&r, "daemon_lends", s->daemon_lends);
    line(&r, "daemon_returns", s->daemon_returns);
    line(&r, "libc_fallbacks", s->libc_fallbacks);
    line(&r, "cache_cap", s->cache_cap);
    line(&r, "bytes_fresh", atomic_load(&zkn__ctr.bytes_fresh));
    line(&r, "bytes_moved", atomic_load(&zkn__ctr.bytes_moved));
    line(&r, "bytes_zeroed", atomic_load(&zkn__ctr.bytes_zeroed));
    line(&r, "zeroed_swaps", atomic_load(&zkn__ctr.zeroed_swaps));
    line(&r, "bytes_zeroed_idle", atomic_load(&zkn__ctr.bytes_zeroed_idle));
    line(&r, "zeroer_gave_back", atomic_load(&zkn__ctr.zeroer_gave_back));
    label(&r, "small_allocator");
    put(&r, zkn__next_name());
    put(&r, "\n");
    const char *shadow = zkn__malloc_shadowed_by();
    if (shadow && !zkn__dropin_reached()) {
        label(&r, "process_malloc");
        put(&r, shadow);
        put(&r, ": malloc is not this library's, so only zkn_* calls use its cache "
                "(put libzknalloc.so first in LD_PRELOAD)\n");
    }
    for (size_t off = 0; off < r.len;) {
        ssize_t w = write(2, r.buf + off, r.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

__attribute__((destructor)) static void show_stats_at_exit(void)
{
    if (!zkn__env_flag("ZK_NALLOC_SHOW_STATS"))
        return;
    struct zkn_stats s;
    zkn_stats(&s);
    report("zknalloc: stats\n", &s);
}

/* ZK_NALLOC_STATS_SIGNAL: the report on demand, for a long-lived process.
 * The handler only snapshots (zkn_stats() itself may take the daemon link's
 * lock, which a signal must not). */
static void on_stats_signal(int sig)
{
    (void)sig;
    int saved = errno;
    struct zkn_stats s;
    snapshot(&s);
    report("zknalloc: stats (signal)\n", &s);
    errno = saved;
}

/* USR1, USR2 (with or without SIG) or a real-time signal's number; 0 else.
 * Only these: any other signal already means something to programs. */
static int stats_signal(const char *v)
{
    if (!strncmp(v, "SIG", 3))
        v += 3;
    if (!strcmp(v, "USR1"))
        return SIGUSR1;
    if (!strcmp(v, "USR2"))
        return SIGUSR2;
    char *end;
    long n = strtol(v, &end, 10);
    return *v && !*end && n >= SIGRTMIN && n <= SIGRTMAX ? (int)n : 0;
}

/* At load (a GCC/Clang attribute: C has no load-time hook), so that the
 * signal never meets its default action, ending the process, because no
 * large request has come yet. Only getenv and sigaction run here. */
__attribute__((constructor)) static void install_stats_signal(void)
{
    const char *env = zkn__env("ZK_NALLOC_STATS_SIGNAL");
    if (!env)
        return;
    int sig = stats_signal(env);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stats_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (!sig || sigaction(sig, &sa, NULL) != 0)
        zkn__env_reject("ZK_NALLOC_STATS_SIGNAL", env,
                        "USR1, USR2 or a real-time signal's number");
}
