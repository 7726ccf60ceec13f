/* What backs the regions: the daemon picks the best kind of shared memory the
 * machine allows, since huge pages are what make lending pay (mapping a warm
 * 128 MiB region costs ~0.7 ms with 2 MiB pages, ~57 ms with 4 KiB ones). */
#ifndef ZKND_BACKING_H
#define ZKND_BACKING_H

#include <stdint.h>

#include "config.h"

struct backing {
    uint32_t kind;      /* enum zkn_backing */
    int sealed;         /* regions carry F_SEAL_SHRINK|GROW|SEAL */
    int dirfd;          /* directory for O_TMPFILE files (tmpfs-huge), else -1 */
    char detail[256];   /* why this kind, for logs and stats */
    char thp_anon[24];  /* /sys/kernel/mm/transparent_hugepage/enabled */
    char thp_shmem[24]; /* .../shmem_enabled */
};

/* Chooses the backing. Explicit operator choices (--hugetlb, --backing-dir)
 * that cannot work are errors (-1, reported); automatic ones fall back to the
 * next best and never fail. Must run before any thread starts (it may
 * unshare the mount namespace). */
int backing_init(struct backing *b, const struct config *cfg);
void backing_close(struct backing *b);

/* A new region file of `size` bytes, sized and (where possible) sealed.
 * Returns the fd (close-on-exec) or -errno. */
int backing_new_file(const struct backing *b, uint64_t size, const char *name);

/* Makes a mapped region resident: huge pages where the kind allows, errors
 * as -errno (ENOMEM), never SIGBUS. */
int backing_warm(const struct backing *b, int fd, void *map, uint64_t size);

/* Zeroes a region: memset on sealed ones; pwrite on unsealed files, which a
 * client could truncate under a mapping (a write then fails instead of the
 * daemon dying of SIGBUS). Returns 0 or -errno. */
int backing_zero(const struct backing *b, int fd, void *map, uint64_t size);

/* Bytes of this process's shared mappings mapped with PMDs (huge pages). */
uint64_t backing_huge_mapped_bytes(void);

#endif
