/* Counters, zkn_stats(), the ZK_NALLOC_SHOW_STATS report at exit and the
 * library's single log line. Output is write(2) only: stdio may allocate. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct zkn_counters zkn_ctr;
static _Atomic int logged;

void zkn_write_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return; /* nowhere to report a failing stderr */
        s += w;
        n -= (size_t)w;
    }
}

char *zkn_fmt_u64(char *buf, uint64_t v)
{
    char *p = buf + 20;
    *p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    return p;
}

char *zkn_fmt_hex(char *buf, uint64_t v)
{
    char *p = buf + 18;
    *p = '\0';
    do
        *--p = "0123456789abcdef"[v & 15];
    while (v >>= 4);
    *--p = 'x';
    *--p = '0';
    return p;
}

void zkn_log_once(const char *msg)
{
    if (!atomic_exchange(&logged, 1))
        zkn_write_str(2, msg);
}

int zkn_stats(struct zkn_stats *out)
{
    zkn_init(); /* the cap in force is known once configured */
    memset(out, 0, sizeof *out);
    out->hits = atomic_load(&zkn_ctr.hits);
    out->misses = atomic_load(&zkn_ctr.misses);
    out->bytes_cached = atomic_load(&zkn_bytes_cached);
    out->bytes_leased = atomic_load(&zkn_ctr.bytes_leased);
    out->bytes_live = atomic_load(&zkn_ctr.bytes_live);
    zkn_daemon_poll(); /* a daemon that went away is noticed here, not later */
    out->daemon_connected = (uint64_t)zkn_daemon_connected();
    out->fallbacks = atomic_load(&zkn_ctr.fallbacks);
    out->reconnects = atomic_load(&zkn_ctr.reconnects);
    out->daemon_lends = atomic_load(&zkn_ctr.lends);
    out->daemon_returns = atomic_load(&zkn_ctr.returns);
    out->libc_fallbacks = atomic_load(&zkn_ctr.libc_fallbacks);
    out->cache_cap = zkn_cache_cap;
    return 0;
}

static void line(const char *name, uint64_t v)
{
    char buf[24];
    zkn_write_str(2, "zknalloc:   ");
    zkn_write_str(2, name);
    zkn_write_str(2, " ");
    zkn_write_str(2, zkn_fmt_u64(buf, v));
    zkn_write_str(2, "\n");
}

__attribute__((destructor)) static void show_stats_at_exit(void)
{
    const char *env = getenv("ZK_NALLOC_SHOW_STATS");
    if (!env || strcmp(env, "1") != 0)
        return;
    struct zkn_stats s;
    zkn_stats(&s);
    uint64_t large = s.hits + s.misses;
    zkn_write_str(2, "zknalloc: stats\n");
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
}
