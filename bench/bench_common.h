/* Shared helpers for the zk-nalloc benchmark programs.
 *
 * Every benchmark allocates with plain malloc/calloc/free so that any
 * allocator can be swapped in with LD_PRELOAD. The harness's own bookkeeping
 * (sample arrays, floor buffers) uses mmap directly, never the allocator under
 * test. Results are printed as one JSON object per line on stdout; the driver
 * (bench/run.py) turns them into tables. */
#ifndef ZKN_BENCH_COMMON_H
#define ZKN_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MIB ((size_t)1 << 20)

/* Keeps the compiler from eliding a buffer's writes or its malloc/free pair. */
static inline void bench_escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

/* Checks that malloc resolves to the allocator named by $ZKB_EXPECT
 * (glibc, jemalloc, mimalloc, tcmalloc, zknalloc) and that its library is
 * mapped. Exits with status 3 and a message when it is not, so a run whose
 * LD_PRELOAD silently failed never reaches a table. Returns the path of the
 * object that provides malloc (static storage). */
const char *bench_check_preload(void);

/* Processes started together (bench/run.py's scale runs) wait here until the
 * driver closes the pipe named by $ZKB_GATE_FD, so that their timed work
 * begins at the same moment rather than one process start apart. Returns at
 * once when the variable is not set. */
void bench_wait_gate(void);

/* Anonymous memory straight from the kernel, for the harness itself; aborts
 * on failure. huge: ask for transparent huge pages. populate: fault every page
 * in (write) before returning. */
void *bench_map(size_t len, int huge, int populate);
void bench_unmap(void *p, size_t len);

/* Sample series kept in harness memory. */
struct bench_series {
    double *v;
    size_t n, cap;
};
void bench_series_init(struct bench_series *s, size_t cap);
void bench_series_add(struct bench_series *s, double x);
void bench_series_free(struct bench_series *s);

/* Process memory facts from /proc/self/smaps_rollup, in KiB (0 if absent). */
struct bench_mem {
    long rss_kb, anon_huge_kb, shmem_pmd_kb, file_pmd_kb;
};
void bench_read_mem(struct bench_mem *m);
/* Peak resident set (getrusage ru_maxrss), KiB. */
long bench_maxrss_kb(void);

/* Appends "name":[values] to a bench_emit extra string, formatted as
 * bench_emit formats its series; -1 when it does not fit in cap. */
int bench_extra_series(char *extra, size_t cap, const char *name, const struct bench_series *s);

/* Writes one result line:
 * {"bench":..,"case":..,"unit":..,"malloc_from":..,"samples":[..],"floor":[..],<extra>}
 * floor may be NULL; extra is a preformatted JSON fragment ("\"k\":1,...") or NULL. */
void bench_emit(const char *bench, const char *casename, const char *unit,
                const struct bench_series *samples, const struct bench_series *floor,
                const char *extra);

/* Integer from argv with a default; exits on junk. */
long bench_arg(int argc, char **argv, int i, long dflt);
/* A non-negative integer from text; exits naming `what` on junk. */
long bench_arg_text(const char *text, const char *what);

/* xorshift64* */
static inline uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
