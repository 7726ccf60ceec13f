/* The library's counters (internal.h), read by zkn_stats(), and the cache's
 * byte budget. A file of their own so that every layer can count without
 * depending on the public API. */
#include "internal.h"

struct zkn__counters zkn__ctr;

uint64_t zkn__cache_cap;
_Atomic uint64_t zkn__bytes_cached;

int zkn__cache_reserve(uint64_t size)
{
    uint64_t cur = atomic_load_explicit(&zkn__bytes_cached, memory_order_relaxed);
    while (cur + size <= zkn__cache_cap)
        if (atomic_compare_exchange_weak(&zkn__bytes_cached, &cur, cur + size))
            return 1;
    return 0;
}

void zkn__cache_unreserve(uint64_t size)
{
    atomic_fetch_sub_explicit(&zkn__bytes_cached, size, memory_order_relaxed);
}
