/* The C library's own allocator, reached from inside ours: see libc_alloc.h.
 * Only malloc_usable_size needs code; the rest are glibc's __libc_ names. */
#include <dlfcn.h>
#include <stddef.h>

#include "libc_alloc.h"

#ifndef ZKN_NO_DROPIN

/* glibc's own malloc_usable_size. glibc exports no __libc_ alias for it, so
 * it is looked up once in libc.so.6 itself (never through the global scope,
 * which would find ours). Done at load time, before any thread can race. */
static size_t (*libc_usable)(void *);

__attribute__((constructor)) static void resolve_libc_usable(void)
{
    void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (h) {
        libc_usable = (size_t (*)(void *))dlsym(h, "malloc_usable_size");
        dlclose(h);
    }
}

size_t zkn__libc_usable_size(void *ptr)
{
    if (libc_usable)
        return libc_usable(ptr);
    /* Static link without dlopen: glibc's chunk header, as its musable()
     * reads it (size word before the block; bit 1 = mmapped chunk). */
    size_t head = ((size_t *)ptr)[-1];
    size_t chunk = head & ~(size_t)7;
    return (head & 2) ? chunk - 2 * sizeof(size_t) : chunk - sizeof(size_t);
}

#endif
