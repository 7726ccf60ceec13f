/* How the library reaches the C library's allocator for small requests.
 *
 * As the process's malloc (the drop-in build) the plain names are our own
 * functions, so glibc is reached through the internal names it exports for
 * exactly this purpose (__libc_malloc & co., no dlsym needed). Without the
 * drop-in (ZKN_NO_DROPIN, used under ASan) the plain names are whoever owns
 * malloc, and must be used so that allocator sees every small block. */
#ifndef ZKN_LIBC_ALLOC_H
#define ZKN_LIBC_ALLOC_H

#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>

#ifdef ZKN_NO_DROPIN
#define zkn__libc_malloc malloc
#define zkn__libc_calloc calloc
#define zkn__libc_realloc realloc
#define zkn__libc_free free
#define zkn__libc_memalign memalign
#define zkn__libc_usable_size malloc_usable_size
#else
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t align, size_t size);
#define zkn__libc_malloc __libc_malloc
#define zkn__libc_calloc __libc_calloc
#define zkn__libc_realloc __libc_realloc
#define zkn__libc_free __libc_free
#define zkn__libc_memalign __libc_memalign
/* glibc exports no internal name for malloc_usable_size: see dropin.c. */
size_t zkn__libc_usable_size(void *ptr);
#endif

#endif
