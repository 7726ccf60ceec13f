/* See os.h. */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

size_t zkn__page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

static void *map_none(size_t len)
{
    void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int zkn__map_none_at(void *p, size_t len)
{
    void *r = mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                   -1, 0);
    return r == MAP_FAILED ? -1 : 0;
}

void *zkn__reserve_aligned(size_t len, size_t align)
{
    /* Over-reserve, then trim both ends. */
    if (len > SIZE_MAX - align)
        return NULL;
    char *raw = map_none(len + align);
    if (!raw)
        return NULL;
    uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)raw, tail = align - head;
    /* munmap of our own fresh reservation cannot fail short of a kernel bug;
     * a failure would only leave some PROT_NONE address space behind. */
    if (head)
        (void)munmap(raw, head);
    if (tail)
        (void)munmap((char *)start + len, tail);
    return (void *)start;
}

int zkn__sys_mlock(void *p, size_t n)
{
    return (int)syscall(SYS_mlock, p, n);
}

int zkn__sys_memfd_secret(unsigned int flags)
{
#ifdef SYS_memfd_secret
    return (int)syscall(SYS_memfd_secret, flags);
#else
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

uint64_t zkn__now_ns(void)
{
    struct timespec ts;
    /* COARSE is served from the vDSO page whatever the clocksource: never a
     * syscall on the allocation path; millisecond resolution is plenty. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "always [madvise] never": THP for anonymous memory unless "[never]";
 * 2 when "[always]" (every large enough mapping, advised or not). */
int zkn__probe_thp_anon(void)
{
    char buf[128];
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (strstr(buf, "[always]"))
        return 2;
    return strstr(buf, "[never]") == NULL;
}
