/* The size-class table shared by daemon and client.
 *
 * Below 2 MiB: four classes per power of two from 64 KiB (64, 80, 96, 112,
 * 128 KiB, ...), so rounding wastes at most 25%. From 2 MiB on every class is
 * a multiple of 2 MiB, so a transparent huge page can back all of it: 2, 4,
 * 6 MiB, then four per power of two from 8 MiB (8, 10, 12, 14, 16, 20 MiB, ...)
 * up to 16 GiB. Between 2 and 8 MiB rounding may waste up to 2 MiB; from
 * 8 MiB on, at most 25%. */
#ifndef ZKN_SIZECLASS_H
#define ZKN_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#define ZKN_MIN_CLASS_SIZE ((uint64_t)64 << 10)
#define ZKN_MAX_CLASS_SIZE ((uint64_t)16 << 30)
#define ZKN_HUGE_PAGE_SIZE ((uint64_t)2 << 20)
#define ZKN_CLASS_COUNT 68

/* The class serving `size` bytes: 0 for anything up to 64 KiB, -1 past the
 * largest class. O(1), no tables. */
int zkn_size_class(uint64_t size);

/* Bytes in class `cls`, or 0 when cls is out of range. */
uint64_t zkn_class_size(int cls);

/* Parses "128M", "64K", "1G", "4096" into bytes. Returns 0 on success, -1 on
 * a malformed or overflowing value. */
int zkn_parse_size(const char *text, uint64_t *out);

#endif
