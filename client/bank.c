/* The bank: warm pages left over when a cached block gave part of itself to
 * a request of another size. Each remnant stays where its block was, as the
 * first `len` bytes of that block's slot (whole huge pages: see assemble.c),
 * and later requests take pages off its end with one mremap each (page
 * tables move; nothing is copied, zeroed or faulted in). A remnant that is
 * used up frees its slot.
 *
 * Remnants count against the cache's cap like cached blocks, and go first
 * when the cap needs room (they are what the program asked for least). One
 * mutex covers the table and the moves out of it: moves are a miss's work,
 * and holding it keeps a remnant from being freed under a move. */
#include <string.h>

#include "internal.h"

#define BANK_SLOTS 64

struct remnant {
    int c;          /* class of the slot it sits in; -1: entry unused */
    uint32_t idx;   /* slot (state SLOT_BUSY, owned by the bank) */
    uint64_t len;   /* bytes still mapped, from the slot's start */
    int clean;      /* all zero */
};

static pthread_mutex_t bank_lock = PTHREAD_MUTEX_INITIALIZER;
static struct remnant bank[BANK_SLOTS];
static int bank_used; /* entries [0, bank_used) are live, unordered */
static _Atomic uint64_t bank_bytes;

uint64_t zkn__bank_bytes(void)
{
    return atomic_load_explicit(&bank_bytes, memory_order_relaxed);
}

/* Frees entry i (its slot back to the window). Under bank_lock. */
static void drop_locked(int i)
{
    struct remnant r = bank[i];
    bank[i] = bank[--bank_used];
    atomic_fetch_sub_explicit(&bank_bytes, r.len, memory_order_relaxed);
    zkn__cache_unreserve(r.len);
    zkn__slot_release_empty(r.c, r.idx);
}

int zkn__bank_put(int c, uint32_t idx, uint64_t len, int clean)
{
    if (len < ZKN_MIN_CLASS_SIZE || !zkn__cache_reserve(len))
        return -1;
    pthread_mutex_lock(&bank_lock);
    if (bank_used == BANK_SLOTS) {
        pthread_mutex_unlock(&bank_lock);
        zkn__cache_unreserve(len);
        return -1;
    }
    bank[bank_used++] = (struct remnant){.c = c, .idx = idx, .len = len, .clean = clean};
    atomic_fetch_add_explicit(&bank_bytes, len, memory_order_relaxed);
    pthread_mutex_unlock(&bank_lock);
    return 0;
}

/* The entry to take up to want bytes from: the smallest that covers it all,
 * else the biggest. -1 when none. Under bank_lock. */
static int pick_locked(uint64_t want)
{
    int fit = -1, big = -1;
    for (int i = 0; i < bank_used; i++) {
        uint64_t len = bank[i].len;
        if (len >= want && (fit < 0 || len < bank[fit].len))
            fit = i;
        if (big < 0 || len > bank[big].len)
            big = i;
    }
    return fit >= 0 ? fit : big;
}

uint64_t zkn__bank_take(char *dst, uint64_t want, int *clean)
{
    if (!zkn__bank_bytes())
        return 0;
    pthread_mutex_lock(&bank_lock);
    int i = pick_locked(want);
    if (i < 0) {
        pthread_mutex_unlock(&bank_lock);
        return 0;
    }
    struct remnant *r = &bank[i];
    uint64_t take = r->len < want ? r->len : want;
    char *src = (char *)zkn__slot_addr(r->c, r->idx) + (r->len - take);
    if (zkn__region_move_pages(src, dst, take) != 0) {
        pthread_mutex_unlock(&bank_lock);
        return 0;
    }
    *clean = r->clean;
    r->len -= take;
    atomic_fetch_sub_explicit(&bank_bytes, take, memory_order_relaxed);
    zkn__cache_unreserve(take);
    /* The moved-out range stays mapped, empty (no memory, the same mapping
     * as the rest): the slot goes back whole once the remnant is used up. */
    if (r->len == 0)
        drop_locked(i);
    pthread_mutex_unlock(&bank_lock);
    atomic_fetch_add_explicit(&zkn__ctr.bytes_moved, take, memory_order_relaxed);
    return take;
}

uint64_t zkn__bank_evict_one(void)
{
    uint64_t freed = 0;
    pthread_mutex_lock(&bank_lock);
    if (bank_used) {
        freed = bank[bank_used - 1].len;
        drop_locked(bank_used - 1);
    }
    pthread_mutex_unlock(&bank_lock);
    return freed;
}

void zkn__bank_drain(void)
{
    pthread_mutex_lock(&bank_lock);
    while (bank_used)
        drop_locked(bank_used - 1);
    pthread_mutex_unlock(&bank_lock);
}

void zkn__bank_child_reset(void)
{
    /* Single-threaded fork child: the lock may have been held by a thread
     * that is not here; the remnants are private memory, still ours. */
    pthread_mutex_init(&bank_lock, NULL);
}
