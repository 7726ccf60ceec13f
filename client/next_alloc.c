/* The allocator behind ours. It is whichever malloc follows this library in
 * the process's symbol lookup order: glibc's by default, or tcmalloc,
 * jemalloc or mimalloc when one is preloaded after libzknalloc
 * (LD_PRELOAD="libzknalloc.so libtcmalloc_minimal.so.4"). Its six functions
 * are taken from one object or not at all: a block must be freed, resized
 * and measured by the allocator that made it. (Reaching glibc through its
 * __libc_malloc names is not enough: tcmalloc and mimalloc define those too,
 * while their malloc_usable_size is not glibc's.)
 *
 * It is looked up by the first request that needs it, or at load time,
 * whichever comes first. dlsym may allocate while it looks, which comes back
 * here: requests made while the lookup runs are served from a static buffer
 * that is never reused (free of those blocks does nothing), so nothing made
 * by one allocator can reach another. */
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>

#include "next_alloc.h"

#ifndef ZKN_NO_DROPIN

struct family {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
    void *(*memalign)(size_t, size_t);
    size_t (*usable_size)(void *);
    int (*mallopt)(int, int); /* the next one in lookup order, any object; may be NULL */
    int is_glibc;             /* the six are glibc's own (see glibc_trim.c) */
    const char *name;
};

static struct family found;
static _Atomic(const struct family *) chosen;
/* The file whose malloc the process uses when it is not this library's
 * (another allocator came first): then only zkn_* calls reach the cache.
 * The stats report believes it only when the drop-in was never reached. */
static const char *shadowed_by;
static atomic_flag lookup_started = ATOMIC_FLAG_INIT;

/* What the lookup itself allocates (a few small blocks) and what other
 * threads ask for in those microseconds. Each block is preceded by its size. */
#define BOOT_BYTES ((size_t)64 << 10)
#define BOOT_HEADER 16
static alignas(64) unsigned char boot_buf[BOOT_BYTES];
static _Atomic size_t boot_used;

static int in_boot(const void *p)
{
    return (const unsigned char *)p >= boot_buf && (const unsigned char *)p < boot_buf + BOOT_BYTES;
}

static void *boot_alloc(size_t size, size_t align)
{
    if (align < BOOT_HEADER)
        align = BOOT_HEADER;
    size_t off = atomic_load_explicit(&boot_used, memory_order_relaxed);
    for (;;) {
        size_t start = (off + BOOT_HEADER + align - 1) & ~(align - 1);
        if (start > BOOT_BYTES || size > BOOT_BYTES - start) {
            errno = ENOMEM;
            return NULL;
        }
        if (atomic_compare_exchange_weak_explicit(&boot_used, &off, start + size,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            memcpy(boot_buf + start - sizeof(size_t), &size, sizeof size);
            return boot_buf + start; /* never handed out before: still zero */
        }
    }
}

static size_t boot_size(const void *p)
{
    size_t size;
    memcpy(&size, (const unsigned char *)p - sizeof(size_t), sizeof size);
    return size;
}

static const char *const family_names[] = {
    "malloc", "calloc", "realloc", "free", "memalign", "malloc_usable_size",
};

/* All six from one object, and not our own (which RTLD_NEXT never returns,
 * but a handle's lookup might). */
static int load_family(void *handle)
{
    void *sym[6];
    void *base = NULL;
    for (size_t i = 0; i < 6; i++) {
        Dl_info info;
        sym[i] = dlsym(handle, family_names[i]);
        if (!sym[i] || !dladdr(sym[i], &info))
            return -1;
        if (i == 0) {
            base = info.dli_fbase;
            found.name = info.dli_fname;
        } else if (info.dli_fbase != base) {
            return -1;
        }
    }
    /* Converting dlsym's void * to a function pointer is what POSIX
     * requires dlsym's results to allow. */
    if (sym[0] == (void *)malloc)
        return -1;
    found.malloc = (void *(*)(size_t))sym[0];
    found.calloc = (void *(*)(size_t, size_t))sym[1];
    found.realloc = (void *(*)(void *, size_t))sym[2];
    found.free = (void (*)(void *))sym[3];
    found.memalign = (void *(*)(size_t, size_t))sym[4];
    found.usable_size = (size_t (*)(void *))sym[5];
    void *opt = dlsym(handle, "mallopt");
    found.mallopt = (int (*)(int, int))opt;
    /* A symbol only glibc defines, in the same object as the six. */
    void *ver = dlsym(handle, "gnu_get_libc_version");
    Dl_info vi;
    found.is_glibc = ver && dladdr(ver, &vi) && vi.dli_fbase == base;
    return 0;
}

/* glibc's exported internal names, and its chunk header for the size (as its
 * musable() reads it: size word before the block, bit 1 = mmapped chunk).
 * The last resort, should both lookups fail: with glibc's loader they do not
 * (libc.so.6 is always loaded; a -static program cannot link the library). */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t align, size_t size);

static size_t glibc_chunk_usable(void *ptr)
{
    size_t head = ((size_t *)ptr)[-1];
    size_t chunk = head & ~(size_t)7;
    return (head & 2) ? chunk - 2 * sizeof(size_t) : chunk - sizeof(size_t);
}

static void resolve(void)
{
    if (load_family(RTLD_NEXT) != 0) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        int ok = libc && load_family(libc) == 0;
        if (libc)
            dlclose(libc);
        if (!ok)
            found = (struct family){.malloc = __libc_malloc,
                                    .calloc = __libc_calloc,
                                    .realloc = __libc_realloc,
                                    .free = __libc_free,
                                    .memalign = __libc_memalign,
                                    .usable_size = glibc_chunk_usable,
                                    .name = "glibc (__libc_ names)"};
    }
    /* Where malloc's address lies, if not here. A program built without PIE
     * that takes malloc's address makes its own PLT entry that address, so
     * the program itself is no answer: then the file is not known. */
    Dl_info mine, theirs, program;
    if (dladdr((void *)zkn__next_name, &mine) && dladdr((void *)malloc, &theirs) &&
        mine.dli_fbase != theirs.dli_fbase) {
        int in_program = dladdr((void *)getauxval(AT_PHDR), &program) &&
                         program.dli_fbase == theirs.dli_fbase;
        shadowed_by = in_program ? "the program's own or one preloaded before libzknalloc.so"
                                 : theirs.dli_fname;
    }
    atomic_store_explicit(&chosen, &found, memory_order_release);
}

/* The family, or NULL while a lookup runs (this thread's own or another's):
 * the caller then uses the static buffer. */
static const struct family *family(void)
{
    const struct family *f = atomic_load_explicit(&chosen, memory_order_acquire);
    if (f)
        return f;
    if (!atomic_flag_test_and_set(&lookup_started))
        resolve();
    return atomic_load_explicit(&chosen, memory_order_acquire);
}

/* For a block that is not the static buffer's: the lookup has begun (the
 * block came from the family), so another thread finishes it soon. */
static const struct family *family_settled(void)
{
    const struct family *f;
    while (!(f = family()))
        sched_yield();
    return f;
}

__attribute__((constructor)) static void resolve_at_load(void)
{
    (void)family();
}

void *zkn__next_malloc(size_t size)
{
    const struct family *f = family();
    return f ? f->malloc(size) : boot_alloc(size, 0);
}

void *zkn__next_calloc(size_t n, size_t size)
{
    const struct family *f = family();
    if (f)
        return f->calloc(n, size);
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return boot_alloc(total, 0);
}

void *zkn__next_memalign(size_t align, size_t size)
{
    const struct family *f = family();
    return f ? f->memalign(align, size) : boot_alloc(size, align);
}

void zkn__next_free(void *ptr)
{
    if (!ptr || in_boot(ptr))
        return;
    family_settled()->free(ptr);
}

size_t zkn__next_usable_size(void *ptr)
{
    if (in_boot(ptr))
        return boot_size(ptr);
    return family_settled()->usable_size(ptr);
}

void *zkn__next_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return zkn__next_malloc(size);
    if (!in_boot(ptr))
        return family_settled()->realloc(ptr, size);
    if (size == 0)
        return NULL; /* glibc frees and returns NULL; a static block needs no freeing */
    void *n = zkn__next_malloc(size);
    if (n) {
        size_t old = boot_size(ptr);
        memcpy(n, ptr, old < size ? old : size);
    }
    return n;
}

/* Never called from within the lookup (it neither frees a big block nor
 * calls mallopt), so waiting for it to finish is safe. */
int zkn__next_mallopt(int param, int value)
{
    const struct family *f = family_settled();
    return f->mallopt ? f->mallopt(param, value) : 0;
}

int zkn__next_is_glibc(void)
{
    return family_settled()->is_glibc;
}

const char *zkn__next_name(void)
{
    const struct family *f = atomic_load_explicit(&chosen, memory_order_acquire);
    return f ? f->name : "";
}

const char *zkn__malloc_shadowed_by(void)
{
    return atomic_load_explicit(&chosen, memory_order_acquire) ? shadowed_by : NULL;
}

#else

int zkn__next_mallopt(int param, int value)
{
    return mallopt(param, value);
}

int zkn__next_is_glibc(void)
{
    return 0; /* the sanitizer's allocator serves small requests */
}

const char *zkn__next_name(void)
{
    return "the process's malloc";
}

const char *zkn__malloc_shadowed_by(void)
{
    return NULL; /* the sanitizer owns malloc by design */
}

#endif
