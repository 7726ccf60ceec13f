/* libzknalloc: an allocator for zero-knowledge provers.
 *
 * Requests under 64 KiB go to the C library's allocator unchanged. Larger ones
 * are rounded to a size class (see proto/sizeclass.h) and served from a
 * per-thread cache of resident regions, then from the zknallocd daemon's warm
 * pool, then from private anonymous memory when no daemon answers. Freed large
 * blocks stay cached, up to ZK_NALLOC_CACHE_BYTES, and beyond that go back to
 * the daemon rather than to the kernel.
 *
 * Linked into a program, or preloaded (LD_PRELOAD=libzknalloc.so), the library
 * also replaces malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, free_sized and
 * free_aligned_sized.
 *
 * Environment:
 *   ZK_NALLOC_CACHE_BYTES  process-wide cache cap in bytes (K/M/G suffixes
 *                          accepted); default min(RAM/8, 1 GiB).
 *   ZK_NALLOC_SOCKET       daemon socket path (see proto/sockpath.h).
 *   ZK_NALLOC_SHOW_STATS=1 print zkn_stats() to stderr at exit.
 *   ZK_NALLOC_DAEMON_UID   a numeric uid trusted to serve the library, besides
 *                          root and the process's own.
 *   ZK_NALLOC_DAEMON_WAIT_MS  the most one request waits for the daemon
 *                          (1-1000 ms, default 10), then private memory.
 *
 * Every function is thread-safe. */
#ifndef ZKNALLOC_H
#define ZKNALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZKN_API __attribute__((visibility("default")))

/* Tell GCC and Clang what these functions are, so that they can check object
 * sizes (-Warray-bounds, _FORTIFY_SOURCE), assume a fresh block aliases
 * nothing, and warn when a block that must be freed is dropped. Other
 * compilers see plain declarations. `malloc` is not claimed for realloc,
 * whose result may be the old block. */
#if defined(__GNUC__) || defined(__clang__)
#define ZKN_NEW_BLOCK(...) __attribute__((malloc, warn_unused_result, alloc_size(__VA_ARGS__)))
#define ZKN_RESIZED(n) __attribute__((warn_unused_result, alloc_size(n)))
#define ZKN_NEW_HANDLE __attribute__((malloc, warn_unused_result))
#define ZKN_MUST_USE __attribute__((warn_unused_result))
#else
#define ZKN_NEW_BLOCK(...)
#define ZKN_RESIZED(n)
#define ZKN_NEW_HANDLE
#define ZKN_MUST_USE
#endif

/* ---- allocation ------------------------------------------------------- */

/* Like malloc: NULL with errno ENOMEM on failure. */
ZKN_API ZKN_NEW_BLOCK(1) void *zkn_malloc(size_t size);
/* Like calloc: memory is zero; overflow of n*size returns NULL/ENOMEM. */
ZKN_API ZKN_NEW_BLOCK(1, 2) void *zkn_calloc(size_t n, size_t size);
/* Like realloc: contents up to the smaller size survive. */
ZKN_API ZKN_RESIZED(2) void *zkn_realloc(void *ptr, size_t size);
/* Like free; NULL is ignored. Aborts with a message on a pointer inside the
 * library's window that is not a live block (double or interior free). */
ZKN_API void zkn_free(void *ptr);
/* free with the size given at allocation (a hint that saves nothing today but
 * is checked: a size of a different class aborts). */
ZKN_API void zkn_free_sized(void *ptr, size_t size);
/* Like aligned_alloc, but any power-of-two alignment and any size. */
ZKN_API ZKN_NEW_BLOCK(2) void *zkn_aligned_alloc(size_t alignment, size_t size);
/* Usable bytes at ptr (at least what was asked). */
ZKN_API size_t zkn_usable_size(const void *ptr);

/* ---- statistics ------------------------------------------------------- */

struct zkn_stats {
    uint64_t hits;            /* large requests served from a thread or shared cache */
    uint64_t misses;          /* large requests that needed a daemon lend or a new map */
    uint64_t bytes_cached;    /* bytes of free regions kept, all threads */
    uint64_t bytes_leased;    /* bytes currently held from the daemon, live or cached */
    uint64_t bytes_live;      /* bytes of large blocks in use */
    uint64_t daemon_connected;/* 1 when a daemon session is up */
    uint64_t fallbacks;       /* large requests served locally because no daemon answered */
    uint64_t reconnects;      /* successful daemon (re)connections after the first */
    uint64_t daemon_lends;    /* LEND round trips */
    uint64_t daemon_returns;  /* regions handed back to the daemon */
    uint64_t libc_fallbacks;  /* large requests given to libc (no address window) */
    uint64_t cache_cap;       /* ZK_NALLOC_CACHE_BYTES in force */
};

/* Fills *out. Returns 0. */
ZKN_API int zkn_stats(struct zkn_stats *out);

/* ---- cache controls --------------------------------------------------- */

/* Keeps cached regions but lets the kernel reclaim them under pressure:
 * MADV_FREE on private regions; daemon regions go back to the daemon, whose
 * pool the operator can trim. Safe from any thread at any time. */
ZKN_API void zkn_soften_cache(void);
/* Hands every cached region back: daemon regions to the daemon, private ones
 * to the kernel. Safe from any thread at any time. */
ZKN_API void zkn_release_cache(void);

/* ---- Arena: a phase's scratch memory, freed all at once ---------------- */

typedef struct zkn_arena zkn_arena;

/* An arena of `capacity` bytes backed by one warm region. NULL/ENOMEM when it
 * cannot be had; EINVAL for 0 or sizes near SIZE_MAX. */
ZKN_API ZKN_NEW_HANDLE zkn_arena *zkn_arena_create(size_t capacity);
/* Bump-allocates size bytes aligned to `align` (any power of two; 0 means
 * alignof(max_align_t)). NULL/ENOMEM when the arena is exhausted, EINVAL for
 * a bad alignment. Never overflows. Threads may allocate from one arena at
 * once; reset and destroy must not race with allocation or use. */
ZKN_API ZKN_MUST_USE void *zkn_arena_alloc(zkn_arena *arena, size_t size, size_t align);
/* Frees everything in O(1): every pointer from the arena is invalid after.
 * Sanitizer builds poison the memory so use-after-reset is caught. */
ZKN_API void zkn_arena_reset(zkn_arena *arena);
/* Bytes handed out since the last reset, and the capacity. */
ZKN_API size_t zkn_arena_used(const zkn_arena *arena);
ZKN_API size_t zkn_arena_capacity(const zkn_arena *arena);
ZKN_API void zkn_arena_destroy(zkn_arena *arena);
/* Typed array of n elements of `type`, or NULL/ENOMEM (an n*sizeof that
 * overflows becomes SIZE_MAX, which no arena holds). Evaluates n twice. */
#define ZKN_ARENA_ARRAY(arena, type, n)                                                  \
    ((type *)zkn_arena_alloc((arena),                                                    \
                             (size_t)(n) > SIZE_MAX / sizeof(type)                       \
                                 ? SIZE_MAX                                              \
                                 : (size_t)(n) * sizeof(type),                           \
                             _Alignof(type)))

/* ---- SecretBuf: private inputs ---------------------------------------- */

typedef struct zkn_secret zkn_secret;

enum zkn_secret_backing {
    ZKN_SECRET_MEMFD_SECRET = 1, /* memfd_secret(2): out of the kernel's direct map */
    ZKN_SECRET_MLOCKED = 2,      /* private anonymous memory, mlock'd */
};

/* A buffer of len bytes: private (never from the daemon), guard pages on both
 * sides, locked against swap, excluded from core dumps, wiped on fork in the
 * child, wiped on free. NULL with errno set (EPERM/ENOMEM when RLIMIT_MEMLOCK
 * forbids locking) rather than an unlocked buffer. It cannot protect copies
 * the caller makes (registers, stack, other buffers).
 *
 * Details: the data is zeroed, 64-byte aligned and ends within 63 bytes of
 * the rear guard (at it when len is a multiple of 64), so overruns fault at
 * once; underruns fault at once when len is a multiple of the page size.
 * EINVAL for len 0 or near SIZE_MAX, ENOMEM for more than the machine's RAM.
 * Backing: memfd_secret(2) where the kernel allows it (its pages also leave
 * the kernel's direct map and cannot be read through /proc/PID/mem or
 * ptrace), else private anonymous memory with mlock; zkn_secret_backing_of
 * says which. memfd_secret pages cannot be pinned (O_DIRECT, io_uring
 * fixed buffers, GPU host registration); ZK_NALLOC_SECRET_BACKING=mlock
 * forces the other backing, =memfd_secret refuses to fall back. A fork()
 * child sees zeros at the same address (locked again in the child, or
 * PROT_NONE where it may not lock); a child made by a raw clone sees zeros
 * (mlock) or faults (memfd_secret).
 * Nor does it protect against: threads and vfork children (same address
 * space), root or the kernel, hibernation images (mlock'd backing), or a
 * caller that keeps using the data after zkn_secret_free. */
ZKN_API ZKN_NEW_HANDLE zkn_secret *zkn_secret_new(size_t len);
ZKN_API void *zkn_secret_data(zkn_secret *s);
ZKN_API size_t zkn_secret_len(const zkn_secret *s);
ZKN_API enum zkn_secret_backing zkn_secret_backing_of(const zkn_secret *s);
/* Wipes with explicit_bzero and unmaps. NULL is ignored. */
ZKN_API void zkn_secret_free(zkn_secret *s);

#ifdef __cplusplus
}
#endif
#endif
