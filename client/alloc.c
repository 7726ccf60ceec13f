/* The public allocation functions. Small requests (under 64 KiB) go unchanged
 * to the allocator behind ours (the C library's, unless another is preloaded
 * after us: next_alloc.c); large ones are served from a cache, then the
 * daemon, then private memory, and only past the window (sizes over 16 GiB,
 * huge alignments, no window at all) from the allocator behind again. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "next_alloc.h"
#include "os.h"
#include "zkn_proto.h"

#define SMALL_LIMIT ((size_t)ZKN_MIN_CLASS_SIZE) /* below this: the allocator behind ours */
/* A LEND batch never asks for more than this many bytes beyond the block
 * wanted now, so extras cannot crowd the cache. */
#define BATCH_BYTES ((uint64_t)64 << 20)

/* After the daemon had no zeroed region for a calloc, the class's callocs
 * zero for themselves this long before asking again. */
#define SWAP_QUIET_NS 4000000ull
/* Bytes a second the daemon zeroes what a trade gave it, on one idle-priority
 * thread beside the caller. In a calloc loop with no pause the daemon has to
 * zero what the caller would have, and each trade adds a round trip and new
 * mappings: measured 1.6x slower trading each time, while with 10 ms of
 * computing between rounds trading was 0.8x. Allowing the next trade only
 * once the returned bytes could be zeroed at a pessimistic 8 GB/s keeps the
 * second and mostly avoids the first. */
#define TRADE_ZERO_RATE 8000000000ull
static _Atomic uint64_t swap_quiet[ZKN_CLASS_COUNT];

/* Daemon lends and misses per class so far: they size the next LEND batch. */
static _Atomic uint32_t class_lends[ZKN_CLASS_COUNT];
static _Atomic uint32_t class_misses[ZKN_CLASS_COUNT];

static void *libc_large(size_t size, size_t align, int zero)
{
    atomic_fetch_add_explicit(&zkn__ctr.libc_fallbacks, 1, memory_order_relaxed);
    if (align > 16) {
        void *p = zkn__next_memalign(align, size);
        if (p && zero)
            memset(p, 0, size);
        return p;
    }
    return zero ? zkn__next_calloc(1, size) : zkn__next_malloc(size);
}

/* How many regions a LEND takes: doubling with successful lends, within a
 * share of the cache. */
static int batch_for(int c)
{
    uint32_t k = atomic_load_explicit(&class_lends[c], memory_order_relaxed);
    uint64_t size = zkn__win.cls[c].size;
    uint64_t budget = zkn__cache_cap / 4 < BATCH_BYTES ? zkn__cache_cap / 4 : BATCH_BYTES;
    uint64_t n = (uint64_t)1 << (k < 4 ? k : 4);
    if (n > 1 && (n - 1) * size > budget)
        n = 1 + budget / size;
    return (int)(n > ZKN_MAX_REGIONS_PER_REPLY ? ZKN_MAX_REGIONS_PER_REPLY : n);
}

static int daemon_preferred(int c)
{
    /* A warm 4 KiB-page region still faults in every 4 KiB page table entry
     * when first touched here, which measured no faster than a fresh local
     * THP region of 2 MiB and up; huge-page backings win clearly. */
    if (zkn__daemon_connected() && zkn__daemon_backing() == ZKN_BACKING_MEMFD_4K &&
        zkn__thp_anon && zkn__win.cls[c].size >= ZKN_HUGE_PAGE_SIZE)
        return 0;
    return 1;
}

/* Maps what the daemon lent: regions of class c, or huge pages for runs of
 * k slots each (region.c). The first slot goes to the caller (state
 * SLOT_BUSY), the rest into the cache. Under zkn__fork_lock (read). */
static uint32_t map_lent(int c, uint32_t k, const struct zkn__lent *got, int n, uint32_t gen)
{
    uint32_t first = UINT32_MAX;
    int unmapped = 0;
    /* Asked before the backing was known, or of a daemon since replaced:
     * huge pages that cannot be split (4 KiB files, hugetlbfs) go back. */
    int runs_ok = !k || (zkn__daemon_backing() && zkn__daemon_run_blocks(c) == k);
    for (int i = 0; i < n; i++) {
        uint32_t idx = UINT32_MAX;
        if (runs_ok)
            idx = zkn__region_map_fd(c, k, got[i].fd, got[i].id, got[i].clean, gen);
        else
            close(got[i].fd);
        if (idx == UINT32_MAX) {
            zkn__queue_push(ZKN__OWED_RETURN, got[i].id, gen); /* never mapped: straight back */
            unmapped = 1;
            continue;
        }
        for (uint32_t j = idx; j < idx + (k ? k : 1); j++) {
            if (first == UINT32_MAX) {
                first = j;
                continue;
            }
            atomic_store(&zkn__win.cls[c].slots[j].state, SLOT_CACHED);
            zkn__cache_put(c, j);
        }
    }
    if (unmapped)
        zkn__daemon_flush_returns(0);
    return first;
}

/* What to tell the daemon to keep ready of class lc: this process's misses
 * in it and, for the huge-page class, in the classes whose runs it backs
 * (each of those misses took at least one huge page). */
static uint32_t demand_for(int lc)
{
    uint32_t demand = atomic_load_explicit(&class_misses[lc], memory_order_relaxed);
    if (zkn__win.cls[lc].size != ZKN_HUGE_PAGE_SIZE)
        return demand;
    for (int r = 0; r < lc; r++)
        if (zkn__daemon_run_blocks(r))
            demand += atomic_load_explicit(&class_misses[r], memory_order_relaxed);
    return demand;
}

/* Regions from the daemon (when it is the better source for this class):
 * the first in a slot for the caller (state SLOT_BUSY), the rest cached.
 * *n gets how many came. Called under zkn__fork_lock (read), which it lets
 * go of while the daemon answers. */
static uint32_t from_daemon(int c, int zero, int count, int *n)
{
    struct zkn__lent got[ZKN_MAX_REGIONS_PER_REPLY];
    uint32_t gen = 0;
    /* Classes that tile a huge page ask for huge pages (runs: region.c). */
    uint32_t k = zkn__daemon_run_blocks(c);
    int lc = k ? zkn_size_class(ZKN_HUGE_PAGE_SIZE) : c;
    if (k)
        count = (count + (int)k - 1) / (int)k;
    pthread_rwlock_unlock(&zkn__fork_lock);
    /* The demand is what this process has missed in the class so far: the
     * daemon keeps that many ready, so a short-lived process that bursts
     * 16 misses teaches it 16, whatever it can take at once. */
    uint32_t demand = demand_for(lc);
    if (demand < (uint32_t)count)
        demand = (uint32_t)count;
    *n = zkn__daemon_lend(lc, count, demand, zero, got, &gen);
    pthread_rwlock_rdlock(&zkn__fork_lock);
    if (*n <= 0)
        return UINT32_MAX;
    atomic_fetch_add_explicit(&class_lends[c], 1, memory_order_relaxed);
    return map_lent(c, k, got, *n, gen);
}

/* A region for a miss: daemon first (when it is the better source for this
 * class), else private memory. State SLOT_BUSY; *clean when all zero. Called
 * under zkn__fork_lock (read), which it lets go of while the daemon answers. */
static uint32_t miss(int c, int zero, int *clean)
{
    if (daemon_preferred(c)) {
        int n;
        atomic_fetch_add_explicit(&class_misses[c], 1, memory_order_relaxed);
        uint32_t idx = from_daemon(c, zero, batch_for(c), &n);
        if (idx != UINT32_MAX) {
            *clean = (zkn__win.cls[c].slots[idx].flags & SLOT_F_CLEAN) != 0;
            return idx;
        }
        atomic_fetch_add_explicit(&zkn__ctr.fallbacks, 1, memory_order_relaxed);
    }
    int whole;
    uint32_t idx = zkn__assemble(c, zero, 0, &whole);
    if (idx != UINT32_MAX) {
        *clean = zero;
        return idx;
    }
    *clean = 1;
    uint32_t extra;
    idx = zkn__region_new_local(c, &extra);
    for (uint32_t i = 1; i <= extra; i++) { /* its neighbours on the same huge page */
        atomic_store(&zkn__win.cls[c].slots[idx + i].state, SLOT_CACHED);
        zkn__cache_put(c, idx + i);
    }
    return idx;
}

/* calloc with only dirty regions cached: zeroing one costs the caller about
 * 0.1 ms per MiB (DRAM write speed), a LEND of regions the daemon zeroed in
 * the background ~25 us whatever the size. So from a huge page up, trade:
 * take zeroed regions and give the daemon as many dirty ones to zero, which
 * keeps the cache's size. UINT32_MAX when the daemon has none ready.
 * Off unless ZK_NALLOC_CALLOC_TRADE=1: in a loop that only callocs, the
 * daemon cannot zero faster than the caller and trading costs more than it
 * saves (see TRADE_ZERO_RATE). */
int zkn__calloc_trade;

static uint32_t zeroed_swap(int c)
{
    uint64_t now = zkn__now_ns();
    if (!zkn__calloc_trade || zkn__win.cls[c].size < ZKN_HUGE_PAGE_SIZE || !zkn__daemon_connected() ||
        !daemon_preferred(c) || now < atomic_load_explicit(&swap_quiet[c], memory_order_relaxed))
        return UINT32_MAX;
    /* As many as are cached dirty (they go back), as a miss batch would. */
    int count = batch_for(c), held = (int)zkn__cache_count(c, 0);
    int n;
    uint32_t idx = from_daemon(c, 1, held < count ? (held > 0 ? held : 1) : count, &n);
    if (idx == UINT32_MAX) {
        /* None zeroed yet: the daemon zeroes at idle priority, so asking
         * again at once would mostly add a round trip to each calloc. */
        atomic_store_explicit(&swap_quiet[c], now + SWAP_QUIET_NS, memory_order_relaxed);
        return idx;
    }
    if (!(zkn__win.cls[c].slots[idx].flags & SLOT_F_CLEAN))
        return idx;
    uint8_t flags;
    int returned = 0;
    for (; returned < n; returned++) {
        uint32_t dirty = zkn__cache_get(c, ZKN__TAKE_DIRTY_ONLY, &flags);
        if (dirty == UINT32_MAX)
            break;
        zkn__region_release(c, dirty);
    }
    zkn__daemon_flush_returns(0);
    /* No trade again before the daemon could have zeroed these at TRADE_ZERO_RATE
     * (see there). */
    uint64_t busy_ns = (uint64_t)returned * zkn__win.cls[c].size * 1000000000ull / TRADE_ZERO_RATE;
    atomic_store_explicit(&swap_quiet[c], now + busy_ns, memory_order_relaxed);
    return idx;
}

/* A block's worth of cached memory, or UINT32_MAX: the class's own regions
 * (clean ones first for calloc), regions the daemon zeroed in exchange for
 * dirty ones, a region of a slightly bigger class, or one built from other
 * classes' cached pages. *c may become that bigger class. State SLOT_BUSY or
 * LIVE; *clean when all zero; *lent when the daemon's trade served it.
 * Under zkn__fork_lock (read). */
static uint32_t from_cache(int *c, int zero, int *clean, int *lent)
{
    uint8_t flags;
    uint32_t idx = zkn__cache_get(*c, zero ? ZKN__TAKE_CLEAN_ONLY : ZKN__TAKE_DIRTY_FIRST, &flags);
    if (idx == UINT32_MAX && zero) {
        if ((idx = zeroed_swap(*c)) != UINT32_MAX) {
            atomic_fetch_add_explicit(&zkn__ctr.zeroed_swaps, 1, memory_order_relaxed);
            *lent = 1; /* a daemon lend, not a cache hit */
            *clean = (zkn__win.cls[*c].slots[idx].flags & SLOT_F_CLEAN) != 0;
            return idx;
        }
        idx = zkn__cache_get(*c, ZKN__TAKE_DIRTY_ONLY, &flags);
    }
    /* A bigger cached block, used in place: no syscall, and its pages are
     * resident already. Below a huge page up to twice the size (a small
     * block's pages cannot be moved cheaply, see assemble.c); above, a
     * quarter more (the rounding the classes already allow), since big
     * blocks can be built from other classes' pages instead. */
    uint64_t size = zkn__win.cls[*c].size;
    uint64_t limit = size < ZKN_HUGE_PAGE_SIZE ? 2 * size : size + size / 4;
    for (int d = *c + 1; idx == UINT32_MAX && d < ZKN_CLASS_COUNT && zkn__win.cls[d].size <= limit;
         d++) {
        if (!zkn__win.cls[d].nslots)
            break;
        idx = zkn__cache_get(d, zero ? ZKN__TAKE_CLEAN_FIRST : ZKN__TAKE_DIRTY_FIRST, &flags);
        if (idx != UINT32_MAX)
            *c = d;
    }
    if (idx != UINT32_MAX) {
        *clean = (flags & SLOT_F_CLEAN) != 0;
        return idx;
    }
    int whole;
    idx = zkn__assemble(*c, zero, 1, &whole);
    *clean = zero;
    return idx;
}

static void *large_alloc_inner(size_t size, size_t align, int zero)
{
    int c;
    /* Past 128 TiB no Linux user address space (4-level paging) can hold
     * it: fail here rather than have the C library (or a sanitizer) try. */
    if (size > ((size_t)1 << 47))
        return NULL;
    if (!zkn__init() || (c = zkn__class_for(size, align)) < 0)
        return libc_large(size, align, zero);
    zkn__fork_check();
    int clean;
    pthread_rwlock_rdlock(&zkn__fork_lock);
    int lent = 0;
    uint32_t idx = from_cache(&c, zero, &clean, &lent);
    if (idx == UINT32_MAX) {
        /* The zeroer may hold the one cached block this class has. */
        pthread_rwlock_unlock(&zkn__fork_lock);
        int claimed = zkn__zeroer_claim(c);
        pthread_rwlock_rdlock(&zkn__fork_lock);
        if (claimed) {
            int asked = c; /* from_cache may move c to a bigger class */
            idx = from_cache(&c, zero, &clean, &lent);
            zkn__zeroer_unclaim(asked);
        }
    }
    if (idx != UINT32_MAX) {
        atomic_fetch_add_explicit(lent ? &zkn__ctr.misses : &zkn__ctr.hits, 1, memory_order_relaxed);
        if (!zero && clean)
            zkn__zeroer_overdone(c); /* a malloc had no dirty block left: stop zeroing */
    } else {
        atomic_fetch_add_explicit(&zkn__ctr.misses, 1, memory_order_relaxed);
        idx = miss(c, zero, &clean);
        if (idx == UINT32_MAX) {
            pthread_rwlock_unlock(&zkn__fork_lock);
            return libc_large(size, align, zero); /* class full or out of mappings */
        }
    }
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    s->flags &= (uint8_t)~SLOT_F_CLEAN; /* the program may write from now on */
    atomic_store_explicit(&s->state, SLOT_LIVE, memory_order_release);
    pthread_rwlock_unlock(&zkn__fork_lock);
    /* Zeroed after the lock: a fork meanwhile snapshots a live block. */
    if (zero)
        zkn__zeroer_calloc(c); /* first, so it zeroes the next one meanwhile */
    if (zero && !clean)
        zkn__region_zero(c, idx);
    atomic_fetch_add_explicit(&zkn__ctr.bytes_live, zkn__win.cls[c].size, memory_order_relaxed);
    return zkn__slot_addr(c, idx);
}

/* Large requests leave errno alone on success, whatever the syscalls on the
 * way did (a failed connect to an absent daemon, say), and set ENOMEM on
 * failure. */
static void *large_alloc(size_t size, size_t align, int zero)
{
    int saved = errno;
    void *p = large_alloc_inner(size, align, zero);
    errno = p ? saved : ENOMEM;
    return p;
}

/* Checks that p starts a live block of class c; returns its slot. */
static uint32_t live_slot(int c, const void *p, const char *fn)
{
    int exact;
    uint32_t idx = zkn__slot_of(c, p, &exact);
    if (idx == UINT32_MAX || !exact)
        zkn__die_bad_pointer(fn, p, "invalid pointer (not the start of a block)");
    if (atomic_load_explicit(&zkn__win.cls[c].slots[idx].state, memory_order_acquire) != SLOT_LIVE)
        zkn__die_bad_pointer(fn, p, "double free or pointer to a block that is not live");
    return idx;
}

static void large_free(int c, const void *p, const char *fn)
{
    int exact;
    uint32_t idx = zkn__slot_of(c, p, &exact);
    if (idx == UINT32_MAX || !exact)
        zkn__die_bad_pointer(fn, p, "invalid pointer (not the start of a block)");
    zkn__fork_check();
    uint8_t expect = SLOT_LIVE;
    int saved = errno;
    pthread_rwlock_rdlock(&zkn__fork_lock);
    /* The exchange makes two racing frees of one block fail loudly too. */
    if (!atomic_compare_exchange_strong(&zkn__win.cls[c].slots[idx].state, &expect, SLOT_CACHED))
        zkn__die_bad_pointer(fn, p, "double free or pointer to a block that is not live");
    atomic_fetch_sub_explicit(&zkn__ctr.bytes_live, zkn__win.cls[c].size, memory_order_relaxed);
    zkn__cache_put(c, idx);
    pthread_rwlock_unlock(&zkn__fork_lock);
    zkn__zeroer_freed(c);
    zkn__glibc_saw_free(zkn__win.cls[c].size);
    errno = saved;
}

void *zkn_malloc(size_t size)
{
    if (size < SMALL_LIMIT)
        return zkn__next_malloc(size);
    return large_alloc(size, 0, 0);
}

void *zkn_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (total < SMALL_LIMIT)
        return zkn__next_calloc(n, size);
    return large_alloc(total, 0, 1);
}

void *zkn_aligned_alloc(size_t alignment, size_t size)
{
    if (alignment == 0 || (alignment & (alignment - 1))) {
        errno = EINVAL;
        return NULL;
    }
    if (size < SMALL_LIMIT)
        return zkn__next_memalign(alignment, size);
    return large_alloc(size, alignment, 0);
}

void zkn_free(void *ptr)
{
    if (!ptr)
        return;
    int c = zkn__ptr_class(ptr);
    if (c < 0)
        zkn__next_free(ptr);
    else
        large_free(c, ptr, "free");
}

void zkn_free_sized(void *ptr, size_t size)
{
    if (!ptr)
        return;
    int c = zkn__ptr_class(ptr);
    if (c < 0) {
        zkn__next_free(ptr);
        return;
    }
    /* Our blocks are at least 64 KiB and at most their class; a realloc that
     * shrank in place or an aligned request may sit in a bigger class. */
    if (size < SMALL_LIMIT || size > zkn__win.cls[c].size)
        zkn__die_bad_pointer("free_sized", ptr, "size does not match the block");
    large_free(c, ptr, "free_sized");
}

size_t zkn_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    int c = zkn__ptr_class(ptr);
    if (c < 0)
        return zkn__next_usable_size((void *)ptr);
    live_slot(c, ptr, "malloc_usable_size");
    return (size_t)zkn__win.cls[c].size;
}

void *zkn_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return zkn_malloc(size);
    int c = zkn__ptr_class(ptr);
    if (c < 0) {
        /* The next allocator's block: stays there unless it grows into our classes. */
        if (size < SMALL_LIMIT)
            return zkn__next_realloc(ptr, size);
        if (!zkn__init() || zkn__class_for(size, 0) < 0) {
            atomic_fetch_add_explicit(&zkn__ctr.libc_fallbacks, 1, memory_order_relaxed);
            return zkn__next_realloc(ptr, size);
        }
        void *n = zkn_malloc(size);
        if (!n)
            return NULL;
        size_t old = zkn__next_usable_size(ptr);
        memcpy(n, ptr, old < size ? old : size);
        zkn__next_free(ptr);
        return n;
    }
    uint32_t idx = live_slot(c, ptr, "realloc");
    uint64_t old = zkn__win.cls[c].size;
    if (size == 0) { /* glibc's behaviour: free, return NULL */
        large_free(c, ptr, "realloc");
        return NULL;
    }
    int nc = size < SMALL_LIMIT ? -1 : zkn__class_for(size, 0);
    /* Same class, or a shrink that keeps at least half: stay in place. */
    if (nc == c || (nc >= 0 && nc < c && size >= old / 2))
        return ptr;
    if (nc > c) {
        pthread_rwlock_rdlock(&zkn__fork_lock);
        uint32_t nidx = zkn__assemble_grow(c, idx, nc);
        if (nidx != UINT32_MAX) {
            zkn__region_release(c, idx); /* the emptied old slot */
            atomic_store_explicit(&zkn__win.cls[nc].slots[nidx].state, SLOT_LIVE,
                                  memory_order_release);
        }
        pthread_rwlock_unlock(&zkn__fork_lock);
        if (nidx != UINT32_MAX) {
            atomic_fetch_add_explicit(&zkn__ctr.bytes_live, zkn__win.cls[nc].size - old,
                                      memory_order_relaxed);
            return zkn__slot_addr(nc, nidx);
        }
    }
    void *n = zkn_malloc(size);
    if (!n)
        return NULL; /* the old block stays valid, as realloc promises */
    memcpy(n, ptr, old < size ? old : size);
    large_free(c, ptr, "realloc");
    return n;
}

static void drain(int soften)
{
    zkn__fork_check();
    zkn__zeroer_pause(); /* its block too */
    pthread_rwlock_rdlock(&zkn__fork_lock);
    zkn__cache_drain(soften);
    pthread_rwlock_unlock(&zkn__fork_lock);
    zkn__zeroer_resume();
    zkn__daemon_flush_returns(1);
}

void zkn_soften_cache(void)
{
    drain(1);
}

void zkn_release_cache(void)
{
    drain(0);
}
