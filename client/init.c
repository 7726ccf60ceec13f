/* One-time setup, done by the first large request rather than at load time:
 * a program that never allocates 64 KiB pays nothing, and nothing here runs
 * before the C library is ready. */
#include <fcntl.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "internal.h"
#include "os.h"


static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic int window_ok;

static uint64_t default_cap(void)
{
    struct sysinfo si;
    uint64_t gib = (uint64_t)1 << 30;
    if (sysinfo(&si) != 0)
        return gib;
    uint64_t ram = (uint64_t)si.totalram * (si.mem_unit ? si.mem_unit : 1);
    return ram / 8 < gib ? ram / 8 : gib;
}

static void init_once(void)
{
    const char *env = zkn__env("ZK_NALLOC_CACHE_BYTES");
    uint64_t cap;
    if (!env || zkn_parse_size(env, &cap) != 0) {
        if (env)
            zkn__env_reject("ZK_NALLOC_CACHE_BYTES", env, "a size in bytes, K, M or G (512M)");
        cap = default_cap();
    }
    zkn__thp_anon = zkn__probe_thp_anon();
    zkn__calloc_trade = zkn__env_flag("ZK_NALLOC_CALLOC_TRADE");
    if (zkn__cache_init(cap) != 0)
        return; /* without thread-exit hand-back, do not cache per thread: no window */
    if (zkn__window_reserve() == 0)
        atomic_store(&window_ok, 1);
}

int zkn__init(void)
{
    pthread_once(&once, init_once);
    return atomic_load_explicit(&window_ok, memory_order_acquire);
}
