/* SecretBuf: a buffer for private inputs that never comes from the daemon and
 * is never shared with another process.
 *
 * Layout of one buffer (one reservation, three mappings):
 *
 *   [guard page, PROT_NONE][data pages ... data ........][guard page, PROT_NONE]
 *                                           ^data      ^data + round_up(len, 64)
 *
 * The data is placed at the end of its pages, 64-byte aligned, so an overrun
 * faults at most 63 bytes past len (at once when len is a multiple of 64); an
 * underrun faults at once when len is a multiple of the page size. The slack
 * in front of the data is zero and is wiped with the rest.
 *
 * Backing, tried in this order:
 *  - memfd_secret(2): the pages are removed from the kernel's direct map, so
 *    neither the kernel's linear mapping nor /proc/PID/mem, process_vm_readv
 *    or ptrace can read them. The kernel marks the mapping locked and
 *    excluded from core dumps itself and charges it to RLIMIT_MEMLOCK.
 *    It is MAP_SHARED of a file nobody else holds (the fd is closed once
 *    mapped), so it is private in fact; but shared mappings cannot be
 *    MADV_WIPEONFORK, so it is MADV_DONTFORK instead (a child never gets
 *    the pages) and a pthread_atfork child handler maps fresh zero pages in
 *    their place, so a fork child sees the same thing as with the other
 *    backing: a zeroed buffer at the same address.
 *  - private anonymous memory with MADV_WIPEONFORK, MADV_DONTDUMP and
 *    mlock(2); when mlock is refused the buffer is not returned.
 *
 * Memory locks are not inherited across fork, so the atfork child handler
 * also locks each buffer's (zeroed) copy again; where the child may not lock
 * it, the copy is made PROT_NONE rather than left unlocked.
 *
 * The bookkeeping struct is in the allocator behind ours (next_alloc.c; the
 * process's malloc may be this library): it holds no secret, and it must survive fork
 * for the child handler to find the buffers (the data pages of a
 * memfd_secret buffer do not). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "env.h"
#include "next_alloc.h"
#include "os.h"
#include "zknalloc.h"


#define SECRET_ALIGN 64

struct zkn_secret {
    unsigned char *map;    /* whole reservation, guards included */
    size_t map_len;
    unsigned char *region; /* the data pages */
    size_t region_len;
    unsigned char *data;   /* what the caller gets, at the end of region */
    size_t len;
    enum zkn_secret_backing backing;
    int usable;            /* 0 in a fork child whose copy could not be locked */
    struct zkn_secret *prev, *next;
};

/* Live buffers, for the fork child handler. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct zkn_secret *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_error;

/* Set once memfd_secret is known to be missing or disabled on this kernel. */
static atomic_int memfd_secret_unsupported;


static void atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
}

/* Runs in the child of fork() (only syscalls here: the child of a threaded
 * process may only use async-signal-safe functions). */
static void atfork_child(void)
{
    for (struct zkn_secret *s = registry; s; s = s->next) {
        if (!s->usable)
            continue;
        if (s->backing == ZKN_SECRET_MEMFD_SECRET) {
            /* The pages were not inherited (MADV_DONTFORK): put zero pages
             * where they were, with the private backing's protections. */
            void *p = mmap(s->region, s->region_len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (p == MAP_FAILED) {
                s->usable = 0; /* a hole: any access faults */
                continue;
            }
            s->backing = ZKN_SECRET_MLOCKED;
            if (madvise(s->region, s->region_len, MADV_WIPEONFORK) != 0 ||
                madvise(s->region, s->region_len, MADV_DONTDUMP) != 0) {
                (void)mprotect(s->region, s->region_len, PROT_NONE);
                s->usable = 0;
                continue;
            }
        }
        if (zkn__sys_mlock(s->region, s->region_len) != 0) {
            /* Better a buffer that faults than one that may reach swap. */
            (void)mprotect(s->region, s->region_len, PROT_NONE);
            s->usable = 0;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

static void register_atfork(void)
{
    atfork_error = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Maps the data pages over the reservation's middle from a memfd_secret
 * file. 0, or -1 with errno (the middle may then be a hole or anything: the
 * caller unmaps the whole reservation). */
static int map_memfd_secret(struct zkn_secret *s)
{
    int fd = zkn__sys_memfd_secret((unsigned int)O_CLOEXEC);
    if (fd < 0) {
        /* ENOSYS: not built in or not enabled (secretmem.enable=0), or
         * refused by a seccomp filter, as is EPERM: no point asking again.
         * (EMFILE and the like are worth another try next time.) */
        if (errno == ENOSYS || errno == EINVAL || errno == EPERM)
            atomic_store(&memfd_secret_unsupported, 1);
        return -1;
    }
    if (ftruncate(fd, (off_t)s->region_len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    void *p = mmap(s->region, s->region_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file; nobody else can reach it now */
    if (p == MAP_FAILED) {
        /* EAGAIN is RLIMIT_MEMLOCK refusing: say it as mlock(2) would. */
        if (e == EAGAIN) {
            struct rlimit rl;
            e = getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur == 0 ? EPERM : ENOMEM;
        }
        errno = e;
        return -1;
    }
    /* Never into a child (see the top of the file); dumps are excluded by
     * the kernel already, asked again so it does not rest on that alone. */
    if (madvise(s->region, s->region_len, MADV_DONTFORK) != 0 ||
        madvise(s->region, s->region_len, MADV_DONTDUMP) != 0)
        return -1;
    /* The pages are allocated at first touch (GUP-based MADV_POPULATE_WRITE
     * is refused for secret memory): touch them now, so the buffer is
     * resident when handed out, as the mlock'd backing is. */
    size_t ps = zkn__page_size();
    for (size_t off = 0; off < s->region_len; off += ps)
        ((volatile unsigned char *)s->region)[off] = 0;
    return 0;
}

/* Private anonymous data pages over the reservation's middle, wiped in fork
 * children, kept out of dumps, locked. 0, or -1 with errno. */
static int map_private_locked(struct zkn_secret *s)
{
    void *p = mmap(s->region, s->region_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    if (madvise(s->region, s->region_len, MADV_WIPEONFORK) != 0 ||
        madvise(s->region, s->region_len, MADV_DONTDUMP) != 0)
        return -1;
    if (zkn__sys_mlock(s->region, s->region_len) != 0) {
        /* EPERM: no RLIMIT_MEMLOCK at all; ENOMEM: over it. EAGAIN means
         * part could not be locked: for the caller, not enough memory. */
        if (errno == EAGAIN)
            errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* A fresh PROT_NONE reservation for s (guards and data), or -1 with errno. */
static int reserve(struct zkn_secret *s)
{
    void *p = mmap(NULL, s->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    s->map = p;
    s->region = s->map + (s->map_len - s->region_len) / 2;
    return 0;
}

static void unreserve(struct zkn_secret *s)
{
    int e = errno;
    if (munmap(s->map, s->map_len) != 0) {
        /* Cannot happen for a range we mapped; keep it inaccessible. */
        (void)mprotect(s->map, s->map_len, PROT_NONE);
    }
    errno = e;
}

enum backing_choice { CHOOSE_AUTO, CHOOSE_MEMFD_SECRET, CHOOSE_MLOCK };

/* ZK_NALLOC_SECRET_BACKING: "mlock" (private anonymous only), "memfd_secret"
 * (that or fail); unset or rejected: memfd_secret when it works, else mlock.
 * Ignored in setuid programs. */
static enum backing_choice backing_choice(void)
{
    const char *v = zkn__env("ZK_NALLOC_SECRET_BACKING");
    if (!v)
        return CHOOSE_AUTO;
    if (strcmp(v, "mlock") == 0)
        return CHOOSE_MLOCK;
    if (strcmp(v, "memfd_secret") == 0)
        return CHOOSE_MEMFD_SECRET;
    zkn__env_reject("ZK_NALLOC_SECRET_BACKING", v, "mlock or memfd_secret");
    return CHOOSE_AUTO;
}

zkn_secret *zkn_secret_new(size_t len)
{
    const size_t ps = zkn__page_size();
    /* Bounded so that rounding and both guards cannot overflow. */
    if (len == 0 || len > (size_t)PTRDIFF_MAX - 3 * ps) {
        errno = EINVAL;
        return NULL;
    }
    /* Locked memory beyond RAM can never be had; refuse before the kernel
     * tries (root may lock without limit, and would meet the OOM killer). */
    long phys = sysconf(_SC_PHYS_PAGES);
    if (phys > 0 && len / ps >= (size_t)phys) {
        errno = ENOMEM;
        return NULL;
    }
    pthread_once(&atfork_once, register_atfork);
    if (atfork_error != 0) {
        /* Without the child handler the fork guarantees do not hold. */
        errno = atfork_error;
        return NULL;
    }
    struct zkn_secret *s = zkn__next_malloc(sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    memset(s, 0, sizeof *s);
    s->len = len;
    s->region_len = (len + ps - 1) / ps * ps;
    s->map_len = s->region_len + 2 * ps;
    s->usable = 1;

    enum backing_choice choice = backing_choice();
    int ok = 0;
    if (choice != CHOOSE_MLOCK &&
        (choice == CHOOSE_MEMFD_SECRET || !atomic_load(&memfd_secret_unsupported))) {
        if (reserve(s) != 0)
            goto fail;
        if (map_memfd_secret(s) == 0) {
            s->backing = ZKN_SECRET_MEMFD_SECRET;
            ok = 1;
        } else {
            unreserve(s); /* a failed MAP_FIXED may leave a hole: start over */
            if (choice == CHOOSE_MEMFD_SECRET)
                goto fail;
        }
    }
    if (!ok) {
        if (reserve(s) != 0)
            goto fail;
        if (map_private_locked(s) != 0) {
            unreserve(s);
            goto fail;
        }
        s->backing = ZKN_SECRET_MLOCKED;
    }
    s->data = s->region + s->region_len - (len + SECRET_ALIGN - 1) / SECRET_ALIGN * SECRET_ALIGN;

    pthread_mutex_lock(&registry_lock);
    s->next = registry;
    if (registry)
        registry->prev = s;
    registry = s;
    pthread_mutex_unlock(&registry_lock);
    return s;

fail: {
    int e = errno;
    zkn__next_free(s);
    errno = e;
    return NULL;
}
}

void *zkn_secret_data(zkn_secret *s)
{
    return s ? s->data : NULL;
}

size_t zkn_secret_len(const zkn_secret *s)
{
    return s ? s->len : 0;
}

enum zkn_secret_backing zkn_secret_backing_of(const zkn_secret *s)
{
    return s ? s->backing : (enum zkn_secret_backing)0;
}

void zkn_secret_free(zkn_secret *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&registry_lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        registry = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&registry_lock);

    /* The whole pages, slack too; explicit_bzero is not optimised away. */
    if (s->usable)
        explicit_bzero(s->region, s->region_len);
    unreserve(s);
    zkn__next_free(s);
}
