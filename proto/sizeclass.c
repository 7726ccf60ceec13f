/* Size classes: see sizeclass.h for the table's shape and waste bounds. */
#include "sizeclass.h"

#include <errno.h>
#include <stdlib.h>

#define SMALL_CLASSES 20 /* 64 KiB .. 1.75 MiB */
#define FIRST_LARGE 23   /* index of 8 MiB */

static unsigned floor_log2(uint64_t v)
{
    return 63u - (unsigned)__builtin_clzll(v); /* gcc/clang builtin: one instruction */
}

int zkn_size_class(uint64_t size)
{
    if (size <= ZKN_MIN_CLASS_SIZE)
        return 0;
    if (size > ZKN_MAX_CLASS_SIZE)
        return -1;
    if (size <= ZKN_HUGE_PAGE_SIZE) {
        if (size > (ZKN_HUGE_PAGE_SIZE / 8) * 7)
            return SMALL_CLASSES; /* (1.75 MiB, 2 MiB] */
        unsigned k = floor_log2(size - 1); /* 2^k < size <= 2^(k+1) */
        uint64_t base = (uint64_t)1 << k, step = base >> 2;
        unsigned j = (unsigned)((size - base + step - 1) / step); /* 1..4 */
        return (int)((k - 16) * 4 + j);
    }
    if (size <= 2 * ZKN_HUGE_PAGE_SIZE)
        return SMALL_CLASSES + 1;
    if (size <= 3 * ZKN_HUGE_PAGE_SIZE)
        return SMALL_CLASSES + 2;
    unsigned k = floor_log2(size - 1);
    if (k == 22)
        return FIRST_LARGE; /* (6 MiB, 8 MiB] */
    uint64_t base = (uint64_t)1 << k, step = base >> 2;
    unsigned j = (unsigned)((size - base + step - 1) / step);
    return (int)(FIRST_LARGE + (k - 23) * 4 + j);
}

uint64_t zkn_class_size(int cls)
{
    if (cls < 0 || cls >= ZKN_CLASS_COUNT)
        return 0;
    if (cls < SMALL_CLASSES) {
        uint64_t base = (uint64_t)1 << (16 + cls / 4);
        return base + (uint64_t)(cls % 4) * (base >> 2);
    }
    if (cls < FIRST_LARGE)
        return (uint64_t)(cls - SMALL_CLASSES + 1) * ZKN_HUGE_PAGE_SIZE;
    int m = cls - FIRST_LARGE;
    uint64_t base = (uint64_t)1 << (23 + m / 4);
    return base + (uint64_t)(m % 4) * (base >> 2);
}

int zkn_parse_size(const char *text, uint64_t *out)
{
    char *end;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'B') /* accept "MiB", "MB" */
        end += (*end == 'i') ? 1 : 0;
    if (*end == 'B')
        end++;
    if (*end != '\0')
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}
