/* One-time setup, done by the first large request rather than at load time:
 * a program that never allocates 64 KiB pays nothing, and nothing here runs
 * before the C library is ready. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int zkn_thp_anon;
pthread_key_t zkn_tkey;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic int window_ok;

uint64_t zkn_now_ns(void)
{
    struct timespec ts;
    /* COARSE is served from the vDSO page whatever the clocksource: never a
     * syscall on the allocation path; millisecond resolution is plenty. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "always [madvise] never": THP for anonymous memory unless "[never]". */
static int read_thp_anon(void)
{
    char buf[128];
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, "[never]") == NULL;
}

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
    const char *env = getenv("ZK_NALLOC_CACHE_BYTES");
    uint64_t cap;
    if (!env || !*env || zkn_parse_size(env, &cap) != 0)
        cap = default_cap();
    zkn_cache_cap = cap;
    zkn_thp_anon = read_thp_anon();
    if (pthread_key_create(&zkn_tkey, zkn_cache_thread_exit) != 0)
        return; /* without thread-exit hand-back, do not cache per thread: no window */
    if (zkn_window_reserve() == 0)
        atomic_store(&window_ok, 1);
}

int zkn_init(void)
{
    pthread_once(&once, init_once);
    return atomic_load_explicit(&window_ok, memory_order_acquire);
}
