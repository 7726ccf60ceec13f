/* Arena: a bump allocator over one block from the library's own large path,
 * so a phase's scratch memory is one warm region (lent by the daemon when one
 * runs) and is freed all at once.
 *
 * The bookkeeping struct lives outside the block, in the allocator behind
 * ours (next_alloc.c): this file is part of the library that may itself be the
 * process's malloc, and calling malloc here would recurse into it.
 *
 * Allocation is a compare-and-swap on the offset, so several threads may
 * allocate from one arena at once; reset and destroy must not race with
 * allocation or with use of the memory (every pointer is dead after them). */
#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "next_alloc.h"
#include "os.h"
#include "zknalloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define ZKN_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZKN_ARENA_ASAN 1
#endif
#endif

#ifdef ZKN_ARENA_ASAN
#include <pthread.h>
#include <sanitizer/asan_interface.h>
/* Neighbouring allocations can share an 8-byte shadow granule, and
 * unpoisoning is a read-modify-write of it: threads take turns. */
static pthread_mutex_t asan_lock = PTHREAD_MUTEX_INITIALIZER;
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define ARENA_UNPOISON(p, n)                                                                  \
    do {                                                                                      \
        pthread_mutex_lock(&asan_lock);                                                       \
        ASAN_UNPOISON_MEMORY_REGION((p), (n));                                                \
        pthread_mutex_unlock(&asan_lock);                                                     \
    } while (0)
#else
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Blocks this big are asked for on a huge-page boundary, so the region can be
 * backed by 2 MiB pages and the arena's large alignments cost no padding. */
#define ARENA_HUGE_ALIGN ((size_t)2 << 20)

struct zkn_arena {
    unsigned char *base;
    size_t capacity;
    _Atomic size_t used; /* offset of the first free byte, <= capacity */
};


zkn_arena *zkn_arena_create(size_t capacity)
{
    /* No object may exceed PTRDIFF_MAX (pointer differences inside it must
     * fit); refusing here also keeps every later sum below SIZE_MAX. */
    if (capacity == 0 || capacity > (size_t)PTRDIFF_MAX) {
        errno = EINVAL;
        return NULL;
    }
    zkn_arena *a = zkn__next_malloc(sizeof *a);
    if (!a) {
        errno = ENOMEM;
        return NULL;
    }
    size_t align = capacity >= ARENA_HUGE_ALIGN ? ARENA_HUGE_ALIGN : zkn__page_size();
    errno = 0;
    void *block = zkn_aligned_alloc(align, capacity);
    if (!block) {
        int e = errno ? errno : ENOMEM;
        zkn__next_free(a);
        errno = e;
        return NULL;
    }
    a->base = block;
    a->capacity = capacity;
    atomic_init(&a->used, 0);
    ARENA_POISON(a->base, a->capacity);
    return a;
}

void *zkn_arena_alloc(zkn_arena *arena, size_t size, size_t align)
{
    if (!arena) {
        errno = EINVAL;
        return NULL;
    }
    if (align == 0)
        align = alignof(max_align_t);
    if ((align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    const uintptr_t base = (uintptr_t)arena->base;
    const size_t cap = arena->capacity;
    size_t old = atomic_load_explicit(&arena->used, memory_order_relaxed);
    size_t start;
    do {
        /* Padding to the next multiple of align, computed on the address so
         * alignments above the block's own work; pad < align, no overflow. */
        size_t pad = (size_t)(-(base + old)) & (align - 1);
        size_t room = cap - old; /* old <= cap always */
        if (pad > room || size > room - pad) {
            errno = ENOMEM;
            return NULL;
        }
        start = old + pad;
    } while (!atomic_compare_exchange_weak_explicit(&arena->used, &old, start + size,
                                                    memory_order_relaxed, memory_order_relaxed));
    void *p = arena->base + start;
    ARENA_UNPOISON(p, size);
    return p;
}

void zkn_arena_reset(zkn_arena *arena)
{
    if (!arena)
        return;
    atomic_store_explicit(&arena->used, 0, memory_order_relaxed);
    /* O(capacity/8) shadow writes, only in sanitizer builds. */
    ARENA_POISON(arena->base, arena->capacity);
}

size_t zkn_arena_used(const zkn_arena *arena)
{
    return arena ? atomic_load_explicit(&((zkn_arena *)arena)->used, memory_order_relaxed) : 0;
}

size_t zkn_arena_capacity(const zkn_arena *arena)
{
    return arena ? arena->capacity : 0;
}

void zkn_arena_destroy(zkn_arena *arena)
{
    if (!arena)
        return;
    /* The block goes back to an allocator that may reuse or inspect it. */
    ARENA_UNPOISON(arena->base, arena->capacity);
    zkn_free(arena->base);
    zkn__next_free(arena);
}
