/* A stand-in for tcmalloc or jemalloc, preloaded after libzknalloc
 * (LD_PRELOAD="libzknalloc.so libzkn-fake-next.so"): a complete malloc family
 * whose blocks glibc's functions cannot handle, so a block passed to the
 * wrong allocator shows. Each block carries a magic word and its exact size;
 * free of a block it did not make aborts with a message. Bump allocation
 * over one mapping, nothing reused: the test programs are short. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define POOL_BYTES ((size_t)256 << 20)
#define MAGIC 0x7a6b6e66616b6521ull
#define HEADER 32 /* magic, size, offset back to the bump start, padding */

unsigned long zkn_fake_next_calls(void);
int zkn_fake_next_owns(void *p);

static unsigned char *pool;
static _Atomic size_t used;
static _Atomic unsigned long calls;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void map_pool(void)
{
    void *p = mmap(NULL, POOL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pool = p == MAP_FAILED ? NULL : p;
}

static void die(const char *what)
{
    static const char prefix[] = "fake next allocator: ";
    ssize_t w = write(2, prefix, sizeof prefix - 1);
    w = write(2, what, strlen(what));
    (void)w;
    abort();
}

static void *bump(size_t size, size_t align)
{
    atomic_fetch_add(&calls, 1);
    pthread_once(&pool_once, map_pool);
    if (!pool || size > POOL_BYTES)
        goto none;
    if (align < 16)
        align = 16;
    size_t off = atomic_load(&used);
    for (;;) {
        size_t start = (off + HEADER + align - 1) & ~(align - 1);
        if (start + size > POOL_BYTES)
            goto none;
        if (atomic_compare_exchange_weak(&used, &off, start + size)) {
            uint64_t *h = (uint64_t *)(pool + start - HEADER);
            h[0] = MAGIC;
            h[1] = size;
            return pool + start;
        }
    }
none:
    errno = ENOMEM;
    return NULL;
}

/* The block's header, or abort: this pointer is not ours. */
static uint64_t *header(void *p, const char *fn)
{
    unsigned char *b = p;
    if (!pool || b < pool + HEADER || b >= pool + POOL_BYTES ||
        ((uint64_t *)(b - HEADER))[0] != MAGIC) {
        die(fn);
    }
    return (uint64_t *)(b - HEADER);
}

EXPORT unsigned long zkn_fake_next_calls(void)
{
    return atomic_load(&calls);
}

EXPORT int zkn_fake_next_owns(void *p)
{
    unsigned char *b = p;
    return pool && b >= pool + HEADER && b < pool + POOL_BYTES &&
           ((uint64_t *)(b - HEADER))[0] == MAGIC;
}

EXPORT void *malloc(size_t size)
{
    return bump(size, 16);
}

EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return bump(total, 16); /* the mapping is fresh and never reused: zero */
}

EXPORT void *memalign(size_t align, size_t size)
{
    return bump(size, align);
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    return bump(size, align);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    void *p = bump(size, align);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

EXPORT void free(void *p)
{
    if (p) {
        atomic_fetch_add(&calls, 1);
        header(p, "free of a block it did not make\n");
    }
}

EXPORT size_t malloc_usable_size(void *p)
{
    return p ? header(p, "malloc_usable_size of a block it did not make\n")[1] : 0;
}

EXPORT void *realloc(void *p, size_t size)
{
    if (!p)
        return malloc(size);
    size_t old = header(p, "realloc of a block it did not make\n")[1];
    void *n = bump(size, 16);
    if (n)
        memcpy(n, p, old < size ? old : size);
    return n;
}
