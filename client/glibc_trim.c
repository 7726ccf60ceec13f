/* What glibc would have learnt from the big frees this library takes from it.
 *
 * glibc adapts to a program that frees big blocks: each free of a block it
 * had mmapped (over its mmap threshold, at most 32 MiB) raises the mmap
 * threshold to that size and the trim threshold to twice it, so such a
 * program soon stops handing the top of its heaps back to the kernel only to
 * fault it in again. Under this library those frees never reach glibc, which
 * then trims at its 128 KiB default for good. In a snarkjs groth16 proof
 * (node, glibc behind the library, no daemon) that cost about 0.45 s of sys
 * time: 1.03 s against 0.56 s with the threshold glibc reaches on its own.
 * So each big free here tells glibc what its own free would have, by the same
 * rule, and nothing else.
 *
 * Only where glibc serves the small requests, and not once the program or
 * its user sets one of those thresholds (mallopt, GLIBC_TUNABLES or the
 * MALLOC_*_ variables): glibc itself stops adapting then. */
#include <malloc.h>
#include <pthread.h>
#include <string.h>

#include "env.h"
#include "internal.h"
#include "next_alloc.h"

/* glibc's bounds for the rule (malloc.c: DEFAULT_MMAP_THRESHOLD, and
 * DEFAULT_MMAP_THRESHOLD_MAX on 64-bit). */
#define GLIBC_MMAP_THRESHOLD ((uint64_t)128 << 10)
#define GLIBC_MMAP_THRESHOLD_MAX ((uint64_t)32 << 20)
#define OFF UINT64_MAX

/* glibc's mmap threshold as the rule has set it; OFF when the rule does not
 * apply. Read without the lock on every big free. */
static _Atomic uint64_t threshold = GLIBC_MMAP_THRESHOLD;
static int checked; /* under mu */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Settings through which the user fixes the thresholds (each turns glibc's
 * own adapting off). The MALLOC_*_ names are glibc's aliases for them. */
static int user_set_in_env(void)
{
    static const char *const tunables[] = {"glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
                                           "glibc.malloc.top_pad", "glibc.malloc.mmap_max"};
    static const char *const aliases[] = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                          "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"};
    const char *t = zkn__env("GLIBC_TUNABLES");
    for (size_t i = 0; i < sizeof tunables / sizeof *tunables; i++)
        if ((t && strstr(t, tunables[i])) || zkn__env(aliases[i]))
            return 1;
    return 0;
}

void zkn__glibc_saw_free(uint64_t size)
{
    if (size <= atomic_load_explicit(&threshold, memory_order_relaxed) || size > GLIBC_MMAP_THRESHOLD_MAX)
        return;
    pthread_mutex_lock(&mu);
    if (!checked) {
        checked = 1;
        if (!zkn__next_is_glibc() || user_set_in_env())
            atomic_store_explicit(&threshold, OFF, memory_order_relaxed);
    }
    /* Under the lock, so that two frees raise it in order. */
    if (size > atomic_load_explicit(&threshold, memory_order_relaxed)) {
        atomic_store_explicit(&threshold, size, memory_order_relaxed);
        (void)zkn__next_mallopt(M_MMAP_THRESHOLD, (int)size);
        (void)zkn__next_mallopt(M_TRIM_THRESHOLD, (int)(2 * size));
    }
    pthread_mutex_unlock(&mu);
}

void zkn__glibc_user_set(int param)
{
    if (param == M_MMAP_THRESHOLD || param == M_TRIM_THRESHOLD || param == M_TOP_PAD || param == M_MMAP_MAX) {
        pthread_mutex_lock(&mu);
        checked = 1;
        atomic_store_explicit(&threshold, OFF, memory_order_relaxed);
        pthread_mutex_unlock(&mu);
    }
}

void zkn__glibc_trim_child_reset(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    mu = fresh; /* perhaps held by a parent's thread that is not here */
}
