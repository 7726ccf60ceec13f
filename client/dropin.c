/* The library as the process's allocator: malloc & co. exported with default
 * visibility, so a program linked with -lzknalloc, or run with
 * LD_PRELOAD=libzknalloc.so, uses them. Under ZKN_NO_DROPIN (sanitizer
 * builds, where ASan owns malloc) only the zkn_* API exists. */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "internal.h"
#include "next_alloc.h"
#include "os.h"

#ifndef ZKN_NO_DROPIN

#define EXPORT __attribute__((visibility("default")))

/* C23 names glibc 2.36 does not declare yet. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Whether the process's malloc or calloc ever reached these: the stats
 * report's hint when another allocator came first (next_alloc.c). */
static _Atomic int reached;

int zkn__dropin_reached(void)
{
    return atomic_load_explicit(&reached, memory_order_relaxed);
}

static inline void note_reached(void)
{
    if (!atomic_load_explicit(&reached, memory_order_relaxed))
        atomic_store_explicit(&reached, 1, memory_order_relaxed);
}

EXPORT void *malloc(size_t size)
{
    note_reached();
    return zkn_malloc(size);
}

EXPORT void free(void *ptr)
{
    zkn_free(ptr);
}

EXPORT void *calloc(size_t n, size_t size)
{
    note_reached();
    return zkn_calloc(n, size);
}

EXPORT void *realloc(void *ptr, size_t size)
{
    return zkn_realloc(ptr, size);
}

EXPORT void *reallocarray(void *ptr, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return zkn_realloc(ptr, total);
}

/* glibc's memalign rounds an alignment that is not a power of two up to one
 * and refuses only the impossible; aligned_alloc behaves the same in 2.36. */
static void *memalign_like(size_t align, size_t size)
{
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (align < sizeof(void *))
        align = sizeof(void *);
    if (align & (align - 1)) {
        size_t a = 1;
        while (a < align)
            a <<= 1;
        align = a;
    }
    return zkn_aligned_alloc(align, size);
}

EXPORT int posix_memalign(void **memptr, size_t alignment, size_t size)
{
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)))
        return EINVAL;
    int saved = errno;
    void *p = zkn_aligned_alloc(alignment, size);
    errno = saved; /* posix_memalign reports through its result only */
    if (!p)
        return ENOMEM;
    *memptr = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    return memalign_like(alignment, size);
}

EXPORT void *memalign(size_t alignment, size_t size)
{
    return memalign_like(alignment, size);
}


EXPORT void *valloc(size_t size)
{
    return memalign_like(zkn__page_size(), size);
}

EXPORT void *pvalloc(size_t size)
{
    size_t ps = zkn__page_size();
    if (size > SIZE_MAX - ps) {
        errno = ENOMEM;
        return NULL;
    }
    size = size ? (size + ps - 1) & ~(ps - 1) : ps;
    return memalign_like(ps, size);
}

EXPORT size_t malloc_usable_size(void *ptr)
{
    return zkn_usable_size(ptr);
}

/* Passed on as is; the library only notes that the program now sets glibc's
 * thresholds itself (glibc_trim.c). */
EXPORT int mallopt(int param, int value)
{
    zkn__glibc_user_set(param);
    return zkn__next_mallopt(param, value);
}

EXPORT void free_sized(void *ptr, size_t size)
{
    zkn_free_sized(ptr, size);
}

EXPORT void free_aligned_sized(void *ptr, size_t alignment, size_t size)
{
    (void)alignment; /* the block's class already encodes the alignment it got */
    zkn_free_sized(ptr, size);
}

#else

int zkn__dropin_reached(void)
{
    return 1; /* no drop-in: the sanitizer owns malloc by design */
}

#endif
