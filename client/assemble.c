/* Building a block from pages the process already has. A program's requests
 * wander through the classes (buffers grow by realloc, phases change sizes),
 * so a cache of whole blocks per class ends up holding memory nobody asks
 * for while new requests fault in fresh pages: on these VMs a fresh page
 * must also be backed by the host, the dearest way to get memory. Instead,
 * from 2 MiB up, a miss moves whole huge pages into the new block (mremap
 * moves page-table entries: nothing is copied, zeroed or faulted in) from
 * the bank's remnants and from cached private blocks of other classes; a
 * donor bigger than needed gives its end and leaves the rest in the bank.
 * Only what they cannot cover is fresh memory.
 *
 * Only whole huge pages move. Measured here (a paravirtualized guest), a
 * moved 4 KiB page costs ~4 us at its first touch afterwards (the host
 * rebuilds its mapping), against ~10 us for a fresh one and ~0.01 us for
 * one reused in place: moving small blocks' pages made a snarkjs proof
 * spend more time in memcpy than it saved in faults. A moved 2 MiB page
 * costs ~10-30 us against ~85-130 us fresh.
 *
 * Daemon regions are never moved: they are shared files the daemon owns. */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Moves per block at most: each costs ~10-30 us, a fresh huge page ~130 us
 * to a few ms. */
#define MAX_PIECES 16

#define HUGE ZKN_HUGE_PAGE_SIZE

/* Takes up to want bytes off the end of cached private block (d, didx) to
 * dst; the rest of it goes to the bank (or is freed). Returns the bytes
 * moved (0 when the move failed); *clean for all-zero pages. */
static uint64_t take_block(int d, uint32_t didx, char *dst, uint64_t want, int *clean)
{
    uint64_t dsize = zkn__win.cls[d].size;
    uint64_t take = want < dsize ? want : dsize;
    char *src = zkn__slot_addr(d, didx);
    *clean = (zkn__win.cls[d].slots[didx].flags & SLOT_F_CLEAN) != 0;
    if (zkn__region_move_pages(src + (dsize - take), dst, take) != 0) {
        zkn__region_release(d, didx);
        return 0;
    }
    if (take == dsize || zkn__bank_put(d, didx, dsize - take, *clean) != 0)
        zkn__region_release(d, didx); /* private: unmapped, slot freed, nothing owed */
    atomic_fetch_add_explicit(&zkn__ctr.bytes_moved, take, memory_order_relaxed);
    return take;
}

/* Moves one huge page of small cached blocks (a run: region.c) to dst and
 * frees their slots. Returns the bytes moved (0 when no class had a whole
 * run cached, or the move failed); *clean for all-zero pages. */
static uint64_t take_run(char *dst, int *clean)
{
    for (int d = 0; d < zkn_size_class(HUGE); d++) {
        uint32_t k = zkn__run_blocks(d);
        uint32_t first = k ? zkn__cache_take_run(d, k, clean) : UINT32_MAX;
        if (first == UINT32_MAX)
            continue;
        int moved = zkn__region_move_pages(zkn__slot_addr(d, first), dst, HUGE) == 0;
        zkn__run_release(d, first, k); /* emptied (or, failing, given up): ready for a new run */
        if (!moved)
            return 0;
        atomic_fetch_add_explicit(&zkn__ctr.bytes_moved, HUGE, memory_order_relaxed);
        return HUGE;
    }
    return 0;
}

/* Huge pages that whole cached runs of small blocks could give: at most. */
static uint64_t run_bytes(void)
{
    uint64_t have = 0;
    for (int d = 0; d < zkn_size_class(HUGE); d++) {
        uint32_t k = zkn__run_blocks(d);
        if (k)
            have += zkn__cache_private_count(d) / k * HUGE;
    }
    return have;
}

/* The cached private block to take want bytes from (not of class c): the
 * smallest at least as big, else the biggest smaller one. -1 when none. */
static int pick_block(int c, uint64_t want)
{
    int smaller = -1;
    for (int d = zkn_size_class(HUGE); d < ZKN_CLASS_COUNT; d++) {
        if (d == c || !zkn__cache_private_count(d))
            continue;
        if (zkn__win.cls[d].size >= want)
            return d;
        smaller = d;
    }
    return smaller;
}

/* Bytes the bank and other classes' cached private blocks could give. */
static uint64_t movable(int c)
{
    uint64_t have = zkn__bank_bytes();
    for (int d = zkn_size_class(HUGE); d < ZKN_CLASS_COUNT; d++)
        if (d != c)
            have += zkn__cache_private_count(d) * zkn__win.cls[d].size;
    return have;
}

/* Fills [dst, dst + len) (whole huge pages, huge-page aligned) with moved
 * pages, then fresh memory; dirty moved pages are zeroed when zero is set.
 * Returns the bytes that were moved, or -1 when even fresh memory could not
 * be mapped. */
static int64_t fill(int c, char *dst, uint64_t len, int zero)
{
    uint64_t filled = 0;
    for (int pieces = 0; filled < len && pieces < MAX_PIECES; pieces++) {
        uint64_t want = len - filled;
        int clean = 0;
        uint64_t got = zkn__bank_take(dst + filled, want, &clean);
        if (!got) {
            int d = pick_block(c, want);
            uint32_t didx = d < 0 ? UINT32_MAX : zkn__cache_take_private(d);
            got = didx != UINT32_MAX ? take_block(d, didx, dst + filled, want, &clean)
                                     : take_run(dst + filled, &clean);
            if (!got)
                break;
        }
        if (zero && !clean) {
            memset(dst + filled, 0, got); /* no fault: see region.c */
            atomic_fetch_add_explicit(&zkn__ctr.bytes_zeroed, got, memory_order_relaxed);
        }
        filled += got;
    }
    if (filled < len && zkn__region_map_fresh(dst + filled, len - filled) != 0)
        return -1;
    return (int64_t)filled;
}

uint32_t zkn__assemble(int c, int zero, int only_whole, int *whole)
{
    uint64_t size = zkn__win.cls[c].size;
    *whole = 0;
    if (size < HUGE)
        return UINT32_MAX;
    /* Runs count only toward a miss: whether they are whole is known only
     * when taking them, and a block they did not cover is not a hit. */
    uint64_t have = movable(c) + (only_whole ? 0 : run_bytes());
    if (!have || (only_whole && have < size))
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
    zkn__region_set_private(c, idx, zero); /* moved pages were zeroed when asked */
    return idx;
}

uint32_t zkn__assemble_grow(int c_old, uint32_t idx_old, int c_new)
{
    struct zkn__slot *s = &zkn__win.cls[c_old].slots[idx_old];
    uint64_t old_size = zkn__win.cls[c_old].size, new_size = zkn__win.cls[c_new].size;
    /* Only private regions can move (a shared memfd cannot grow), and only
     * whole huge pages (see above). */
    if ((s->flags & SLOT_F_DAEMON) || new_size <= old_size || old_size < HUGE)
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
    zkn__region_set_private(c_new, idx, 0);
    errno = saved;
    return idx;
}
