/* Building a block from cached pages of other classes. A process's requests
 * wander through the classes (buffers grow by realloc, phases change sizes),
 * so an exact-class cache ends up holding memory nobody asks for while new
 * requests fault in fresh pages: on these VMs a fresh 2 MiB page must also be
 * backed by the host, by far the dearest way to get memory. Instead, from a
 * huge page up, a miss takes cached private regions of other classes and
 * moves their pages into the new block (mremap moves page-table entries:
 * nothing is copied or zeroed), and faults in only what they do not cover.
 *
 * Daemon regions are never moved: they are shared files the daemon owns.
 * Below a huge page classes keep to themselves (4 KiB pages: moving them
 * costs about what faulting them does). */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* The first class of whole huge pages. */
static int first_huge_class(void)
{
    return zkn_size_class(ZKN_HUGE_PAGE_SIZE);
}

/* A bigger donor is split only when what must be re-filed is at most this
 * many times what is taken: moving is cheap per byte, not free. */
#define SPLIT_RATIO 4

/* Files [p, p + len) of a split donor (pages of its own, moved here) as
 * cached regions of the largest classes that fit, each moved into its own
 * slot. What cannot be filed is unmapped with the donor. */
static void refile(char *p, uint64_t len, int clean)
{
    for (int e = zkn_size_class(len); len >= ZKN_HUGE_PAGE_SIZE && e >= first_huge_class(); e--) {
        uint64_t es = zkn__win.cls[e].size;
        while (len >= es) {
            uint32_t idx = zkn__slot_take(e);
            if (idx == UINT32_MAX)
                break;
            if (zkn__region_move_pages(p, zkn__slot_addr(e, idx), es) != 0) {
                zkn__slot_release_empty(e, idx);
                return;
            }
            struct zkn__slot *s = &zkn__win.cls[e].slots[idx];
            s->flags = clean ? SLOT_F_CLEAN : 0;
            s->id = 0;
            s->gen = 0;
            atomic_store_explicit(&s->state, SLOT_CACHED, memory_order_relaxed);
            zkn__cache_put(e, idx);
            p += es;
            len -= es;
        }
    }
}

/* Moves len bytes of donor (d, didx) into dst; the donor's rest is re-filed,
 * the emptied donor slot released. 0, or -1 when nothing moved. */
static int take_from(int d, uint32_t didx, char *dst, uint64_t len, int zero)
{
    char *src = zkn__slot_addr(d, didx);
    uint64_t dsize = zkn__win.cls[d].size;
    int clean = (zkn__win.cls[d].slots[didx].flags & SLOT_F_CLEAN) != 0;
    int rc = zkn__region_move_pages(src, dst, len);
    if (rc == 0 && len < dsize)
        refile(src + len, dsize - len, clean);
    zkn__region_release(d, didx); /* private: unmapped, slot freed, nothing owed */
    if (rc != 0)
        return rc;
    atomic_fetch_add_explicit(&zkn__ctr.bytes_moved, len, memory_order_relaxed);
    if (zero && !clean) {
        memset(dst, 0, len); /* the caller's time, but no fault: see region.c */
        atomic_fetch_add_explicit(&zkn__ctr.bytes_zeroed, len, memory_order_relaxed);
    }
    return 0;
}

/* Bytes of cached private regions (classes other than c) smaller than
 * want, and in *bigger the smallest bigger class worth splitting (or -1). */
static uint64_t donors_for(int c, uint64_t want, int *bigger)
{
    uint64_t have = 0;
    *bigger = -1;
    for (int d = first_huge_class(); d < ZKN_CLASS_COUNT; d++) {
        uint64_t n = zkn__cache_private_count(d);
        if (!n || d == c)
            continue;
        if (zkn__win.cls[d].size < want)
            have += n * zkn__win.cls[d].size;
        else if (*bigger < 0 && zkn__win.cls[d].size - want <= SPLIT_RATIO * want)
            *bigger = d;
    }
    return have;
}

/* Fills [dst, dst + len) with cached pages of other classes than c, then
 * fresh memory. Returns the bytes that came from the cache, or -1 when even
 * fresh memory could not be mapped. */
static int64_t fill(int c, char *dst, uint64_t len, int zero)
{
    uint64_t filled = 0;
    int bigger;
    uint64_t have = donors_for(c, len, &bigger);
    if (bigger >= 0) {
        uint32_t didx = zkn__cache_take_private(bigger);
        if (didx != UINT32_MAX && take_from(bigger, didx, dst, len, zero) == 0)
            filled = len;
    }
    /* Biggest donors first: fewer moves. */
    for (int d = zkn_size_class(len); have && d >= first_huge_class() && filled < len; d--) {
        uint64_t ds = zkn__win.cls[d].size;
        while (d != c && len - filled >= ds) {
            uint32_t didx = zkn__cache_take_private(d);
            if (didx == UINT32_MAX)
                break;
            if (take_from(d, didx, dst + filled, ds, zero) != 0)
                break;
            filled += ds;
        }
    }
    if (filled < len && zkn__region_map_fresh(dst + filled, len - filled) != 0)
        return -1;
    return (int64_t)filled;
}

uint32_t zkn__assemble(int c, int zero, int only_whole, int *whole)
{
    uint64_t size = zkn__win.cls[c].size;
    *whole = 0;
    if (size < ZKN_HUGE_PAGE_SIZE)
        return UINT32_MAX;
    int bigger;
    uint64_t have = donors_for(c, size, &bigger);
    if (bigger < 0 && (!have || (only_whole && have < size)))
        return UINT32_MAX;
    uint32_t idx = zkn__slot_take(c);
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    int64_t got = fill(c, zkn__slot_addr(c, idx), size, zero);
    if (got < 0) {
        zkn__slot_release_empty(c, idx);
        return UINT32_MAX;
    }
    *whole = (uint64_t)got == size;
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    s->flags = zero ? SLOT_F_CLEAN : 0; /* donated pages were zeroed when asked */
    s->id = 0;
    s->gen = 0;
    return idx;
}

uint32_t zkn__assemble_grow(int c_old, uint32_t idx_old, int c_new)
{
    struct zkn__slot *s = &zkn__win.cls[c_old].slots[idx_old];
    uint64_t old_size = zkn__win.cls[c_old].size, new_size = zkn__win.cls[c_new].size;
    /* Only private regions can move (a shared memfd cannot grow), and only
     * where page moving beats copying. */
    if ((s->flags & SLOT_F_DAEMON) || old_size < ZKN_HUGE_PAGE_SIZE || new_size <= old_size)
        return UINT32_MAX;
    uint32_t idx = zkn__slot_take(c_new);
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    char *np = zkn__slot_addr(c_new, idx);
    int saved = errno;
    if (fill(c_new, np + old_size, new_size - old_size, 0) < 0 ||
        zkn__region_move_pages(zkn__slot_addr(c_old, idx_old), np, old_size) != 0) {
        zkn__slot_release_empty(c_new, idx);
        errno = saved;
        return UINT32_MAX;
    }
    struct zkn__slot *ns = &zkn__win.cls[c_new].slots[idx];
    ns->flags = 0;
    ns->id = 0;
    ns->gen = 0;
    errno = saved;
    return idx;
}
