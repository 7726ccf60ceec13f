/* Counters, zkn_stats() and the ZK_NALLOC_SHOW_STATS report at exit. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"


int zkn_stats(struct zkn_stats *out)
{
    zkn__init(); /* the cap in force is known once configured */
    memset(out, 0, sizeof *out);
    out->hits = atomic_load(&zkn__ctr.hits);
    out->misses = atomic_load(&zkn__ctr.misses);
    out->bytes_cached = atomic_load(&zkn__bytes_cached);
    out->bytes_leased = atomic_load(&zkn__ctr.bytes_leased);
    out->bytes_live = atomic_load(&zkn__ctr.bytes_live);
    zkn__daemon_poll(); /* a daemon that went away is noticed here, not later */
    out->daemon_connected = (uint64_t)zkn__daemon_connected();
    out->fallbacks = atomic_load(&zkn__ctr.fallbacks);
    out->reconnects = atomic_load(&zkn__ctr.reconnects);
    out->daemon_lends = atomic_load(&zkn__ctr.lends);
    out->daemon_returns = atomic_load(&zkn__ctr.returns);
    out->libc_fallbacks = atomic_load(&zkn__ctr.libc_fallbacks);
    out->cache_cap = zkn__cache_cap;
    return 0;
}

static void line(const char *name, uint64_t v)
{
    char buf[24];
    zkn__write_str(2, "zknalloc:   ");
    zkn__write_str(2, name);
    zkn__write_str(2, " ");
    zkn__write_str(2, zkn__fmt_u64(buf, v));
    zkn__write_str(2, "\n");
}

__attribute__((destructor)) static void show_stats_at_exit(void)
{
    const char *env = getenv("ZK_NALLOC_SHOW_STATS");
    if (!env || strcmp(env, "1") != 0)
        return;
    struct zkn_stats s;
    zkn_stats(&s);
    uint64_t large = s.hits + s.misses;
    zkn__write_str(2, "zknalloc: stats\n");
    line("hits            ", s.hits);
    line("misses          ", s.misses);
    line("hit_rate_pct    ", large ? s.hits * 100 / large : 0);
    line("bytes_cached    ", s.bytes_cached);
    line("bytes_leased    ", s.bytes_leased);
    line("bytes_live      ", s.bytes_live);
    line("daemon_connected", s.daemon_connected);
    line("fallbacks       ", s.fallbacks);
    line("reconnects      ", s.reconnects);
    line("daemon_lends    ", s.daemon_lends);
    line("daemon_returns  ", s.daemon_returns);
    line("libc_fallbacks  ", s.libc_fallbacks);
    line("cache_cap       ", s.cache_cap);
    line("bytes_fresh     ", atomic_load(&zkn__ctr.bytes_fresh));
    line("bytes_moved     ", atomic_load(&zkn__ctr.bytes_moved));
    line("bytes_zeroed    ", atomic_load(&zkn__ctr.bytes_zeroed));
    line("zeroed_swaps    ", atomic_load(&zkn__ctr.zeroed_swaps));
}
