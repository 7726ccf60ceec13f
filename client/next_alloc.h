/* The allocator behind ours: it serves what libzknalloc does not (requests
 * under 64 KiB, the bookkeeping of arenas and secrets, and large requests past
 * the window). See next_alloc.c for how it is found.
 *
 * Without the drop-in (ZKN_NO_DROPIN, used under ASan) the plain names are
 * whoever owns malloc, and must be used so that allocator sees every small
 * block. */
#ifndef ZKN_NEXT_ALLOC_H
#define ZKN_NEXT_ALLOC_H

#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>

#ifdef ZKN_NO_DROPIN
#define zkn__next_malloc malloc
#define zkn__next_calloc calloc
#define zkn__next_realloc realloc
#define zkn__next_free free
#define zkn__next_memalign memalign
#define zkn__next_usable_size malloc_usable_size
#else
void *zkn__next_malloc(size_t size);
void *zkn__next_calloc(size_t n, size_t size);
void *zkn__next_realloc(void *ptr, size_t size);
void zkn__next_free(void *ptr);
void *zkn__next_memalign(size_t align, size_t size);
size_t zkn__next_usable_size(void *ptr);
#endif

/* mallopt as the process would reach it without this library: the next
 * object's in lookup order (0, failure, when none defines it). */
int zkn__next_mallopt(int param, int value);
/* Whether the allocator behind ours is glibc's own malloc. */
int zkn__next_is_glibc(void);

/* The file of the allocator found (for the stats report); "" before one is. */
const char *zkn__next_name(void);
/* The file that holds the process's malloc when that is not this library,
 * or NULL. Taken from malloc's address, which a program built without PIE
 * may make its own even when the library serves it: only
 * zkn__dropin_reached() (dropin.c) tells for sure. */
const char *zkn__malloc_shadowed_by(void);
/* Whether the process's malloc or calloc has reached the drop-in. */
int zkn__dropin_reached(void);

#endif
