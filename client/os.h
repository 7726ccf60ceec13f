/* The client's OS layer: every kernel constant it relies on (with its value
 * for older headers), the page size, address-space reservations and the raw
 * system calls the C library does not wrap, or that a sanitizer replaces.
 * Nothing here allocates. */
#ifndef ZKN_CLIENT_OS_H
#define ZKN_CLIENT_OS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14 /* Linux 2.6.38 */
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18 /* Linux 4.14 */
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* Linux 5.7 */
#endif

size_t zkn__page_size(void);
/* Monotonic nanoseconds from the vDSO (never a syscall), ms resolution. */
uint64_t zkn__now_ns(void);
/* 1 when anonymous memory can get transparent huge pages (madvise/always). */
int zkn__probe_thp_anon(void);
/* An inaccessible reservation of len bytes (no memory) aligned to align (a
 * power of two), or NULL. */
void *zkn__reserve_aligned(size_t len, size_t align);
/* Puts an inaccessible reservation back over [p, p + len). 0 or -1. */
int zkn__map_none_at(void *p, size_t len);
/* mlock(2) by its system call: sanitizer runtimes replace the libc function
 * with one that does nothing and reports success. */
int zkn__sys_mlock(void *p, size_t n);
/* memfd_secret(2) (Linux 5.14); -1 with ENOSYS where the headers lack it. */
int zkn__sys_memfd_secret(unsigned int flags);

#endif
