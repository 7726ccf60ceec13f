/* Background zeroing. A calloc of a big block that finds only dirty blocks
 * cached zeroes one on the caller's time, at DRAM write speed (an MSM round's
 * 16 x 6 MiB: 2-3.5 ms on one core here). One thread of the process zeroes
 * cached dirty blocks of the classes calloc uses, while a core is idle, and
 * caches them clean for the next calloc: between rounds, or beside a caller
 * zeroing another block (two cores wrote 96 MiB of zeroes in 1.5 ms where
 * one took 1.9-3.5 ms).
 *
 * It zeroes only a block it took out of the cache, so no byte the program
 * can reach changes. It zeroes at most one block per calloc of the class, so
 * it never writes more zeroes than callocs at their defaults would, and a
 * program that stops calling calloc stops it. The thread starts with the
 * first calloc that finds a dirty block cached: a program that never callocs
 * 2 MiB pays nothing. ZK_NALLOC_ZERO_THREAD=0 turns it off.
 *
 * It holds one block at a time, and gives it back (dirty, unless finished)
 * at the next 2 MiB step when a caller finds its class's cache empty
 * (zkn__zeroer_claim), when the cache is drained, or when a thread is
 * waiting for a core. It runs at normal priority so that this happens within
 * one step: a thread at idle priority could sit on a block for as long as
 * the machine is busy. No lock is held while it writes; the block is
 * SLOT_BUSY and named in `zeroing`, so a fork child can cache it as dirty. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "internal.h"
#include "os.h"

/* Classes from here up: below, zeroing a block costs about what waking the
 * thread does. */
#define ZERO_MIN_SIZE ZKN_HUGE_PAGE_SIZE
/* Bytes zeroed between two looks at whether to stop (~40 us here). */
#define STEP ZKN_HUGE_PAGE_SIZE
#define BUSY_LOOK (8 * STEP)
/* Blocks owed per class at most: bounds the zeroing nobody asks for after a
 * program stops calling calloc. */
#define OWED_MAX 64u
/* How long a caller or a drain waits for the thread to give its block back:
 * one step takes ~40 us; this only bounds a thread stopped by a debugger. */
#define GIVE_BACK_WAIT_NS 20000000ull
/* After no core was idle: look again after this, doubling up to the most. */
#define BUSY_RETRY_MIN_NS 5000000ull
#define BUSY_RETRY_MAX_NS 160000000ull

enum { Z_OFF = -1, Z_NONE = 0, Z_STARTING, Z_SLEEPING, Z_RUNNING };

static _Atomic int zstate;
static _Atomic uint32_t kicks;                 /* bumped whenever there may be work */
static _Atomic uint32_t owed[ZKN_CLASS_COUNT]; /* callocs not yet matched by a zeroed block */
static _Atomic int claims;                     /* callers waiting for its block */
static _Atomic int pauses;                     /* drains in progress */
static pthread_mutex_t zmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t zcv; /* on CLOCK_MONOTONIC: init_cv() */
/* Set by zero_one when it left work because no core was idle: look again
 * after a while rather than at the next kick only. The thread's own. */
static int saw_busy;
/* The block being zeroed, as (c << 32 | idx) + 1; TAKING while it picks one;
 * 0 when none. */
static _Atomic uint64_t zeroing;
#define TAKING UINT64_MAX
static unsigned long ncpus = 1;

/* 1 when no runnable thread is waiting for a core: /proc/loadavg's
 * running count (this thread included) is at most the CPU count. Unknown
 * counts as idle: a caller or a drain can still take the block back. */
static int core_idle(void)
{
    char buf[128];
    /* Opened each time: a kept fd could be closed, and its number reused, by
     * a program that closes the fds it does not know of. */
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return 1;
    buf[n] = 0;
    const char *p = buf;
    for (int spaces = 0; *p && spaces < 3; p++) /* "0.40 1.10 1.34 2/345 12345" */
        spaces += *p == ' ';
    unsigned long running = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        running = running * 10 + (unsigned long)(*p - '0');
    return *p != '/' || running <= ncpus;
}

static int should_stop(void)
{
    return atomic_load(&claims) || atomic_load(&pauses);
}

static int work_in(int c)
{
    return atomic_load_explicit(&owed[c], memory_order_relaxed) && zkn__cache_count(c, 0) &&
           !should_stop();
}

/* Takes a dirty cached block of class c, zeroes it and caches it clean.
 * 1 when it did; 0 when there was none or it stopped early (the block then
 * goes back dirty). */
static int zero_one(int c)
{
    uint8_t flags;
    pthread_rwlock_rdlock(&zkn__fork_lock);
    /* Published before the checks, and the waiters publish theirs before
     * they look at it (all seq_cst): one of the two sees the other. */
    atomic_store(&zeroing, TAKING);
    uint32_t idx = UINT32_MAX;
    if (should_stop())
        ;
    else if (!core_idle())
        saw_busy = 1;
    else
        idx = zkn__cache_get(c, ZKN__TAKE_DIRTY_ONLY, &flags);
    if (idx == UINT32_MAX) {
        atomic_store(&zeroing, 0);
        pthread_rwlock_unlock(&zkn__fork_lock);
        return 0;
    }
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    atomic_store_explicit(&s->state, SLOT_BUSY, memory_order_relaxed);
    atomic_store(&zeroing, ((uint64_t)c << 32 | idx) + 1);
    pthread_rwlock_unlock(&zkn__fork_lock);

    unsigned char *p = zkn__slot_addr(c, idx);
    uint64_t size = zkn__win.cls[c].size, off = 0;
    /* Busy cores are looked at every BUSY_LOOK bytes (a read of
     * /proc/loadavg costs a few us): a block of up to that size is
     * finished once begun unless a caller or a drain wants it. */
    while (off < size && !should_stop() && (off % BUSY_LOOK || core_idle())) {
        uint64_t len = size - off < STEP ? size - off : STEP;
        memset(p + off, 0, len);
        off += len;
    }
    int done = off == size;
    if (!done && !should_stop())
        saw_busy = 1;

    pthread_rwlock_rdlock(&zkn__fork_lock);
    if (done)
        s->flags |= SLOT_F_CLEAN;
    atomic_store_explicit(&s->state, SLOT_CACHED, memory_order_relaxed);
    zkn__cache_put(c, idx);
    atomic_store(&zeroing, 0); /* after the put: a waiter that sees 0 finds it cached */
    pthread_rwlock_unlock(&zkn__fork_lock);
    if (!done)
        return 0;
    atomic_fetch_add_explicit(&zkn__ctr.bytes_zeroed_idle, size, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&owed[c], memory_order_relaxed);
    while (n && !atomic_compare_exchange_weak(&owed[c], &n, n - 1))
        ;
    return 1;
}

static void *zeroer_main(void *arg)
{
    (void)arg;
    zkn__cache_thread_shared_only(); /* its clean blocks must serve every thread */
    uint32_t seen = 0;
    uint64_t retry_ns = BUSY_RETRY_MIN_NS;
    for (;;) {
        int did = 0;
        saw_busy = 0;
        for (int c = 0; c < ZKN_CLASS_COUNT; c++)
            while (work_in(c) && zero_one(c))
                did = 1;
        if (did) {
            retry_ns = BUSY_RETRY_MIN_NS;
            continue;
        }
        /* Sleep until a kick (or, when cores were busy, a while). SLEEPING
         * is published before kicks is read again, and a kicker bumps kicks
         * before it reads the state: one of the two sees the other (both
         * seq_cst). */
        pthread_mutex_lock(&zmu);
        atomic_store(&zstate, Z_SLEEPING);
        struct timespec until;
        if (saw_busy && clock_gettime(CLOCK_MONOTONIC, &until) == 0) {
            uint64_t ns = (uint64_t)until.tv_nsec + retry_ns;
            until.tv_sec += (time_t)(ns / 1000000000u);
            until.tv_nsec = (long)(ns % 1000000000u);
            retry_ns = retry_ns * 2 < BUSY_RETRY_MAX_NS ? retry_ns * 2 : BUSY_RETRY_MAX_NS;
            while (atomic_load(&kicks) == seen && pthread_cond_timedwait(&zcv, &zmu, &until) == 0)
                ;
        } else {
            while (atomic_load(&kicks) == seen)
                pthread_cond_wait(&zcv, &zmu);
        }
        seen = atomic_load(&kicks);
        atomic_store(&zstate, Z_RUNNING);
        pthread_mutex_unlock(&zmu);
    }
    return NULL;
}

/* The condition variable times out on CLOCK_MONOTONIC (a wall-clock jump
 * must not stretch a retry). Falls back to the default clock. */
static void init_cv(void)
{
    pthread_condattr_t a;
    int ok = pthread_condattr_init(&a) == 0;
    if (ok && (pthread_condattr_setclock(&a, CLOCK_MONOTONIC) != 0 || pthread_cond_init(&zcv, &a) != 0))
        ok = 0;
    if (ok)
        pthread_condattr_destroy(&a);
    else
        (void)pthread_cond_init(&zcv, NULL);
}

static void start(void)
{
    int expect = Z_NONE;
    if (!atomic_compare_exchange_strong(&zstate, &expect, Z_STARTING))
        return;
    if (!zkn__env_uint("ZK_NALLOC_ZERO_THREAD", 0, 1, 1)) {
        atomic_store(&zstate, Z_OFF);
        return;
    }
    int saved = errno;
    init_cv();
    int n = get_nprocs();
    ncpus = n > 0 ? (unsigned long)n : 1;
    pthread_attr_t attr;
    pthread_t t;
    /* RUNNING before the thread exists: once there, it may go to sleep
     * (SLEEPING) at once, and a later store would hide that from kickers. */
    atomic_store(&zstate, Z_RUNNING);
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) {
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&t, &attr, zeroer_main, NULL) == 0;
        pthread_attr_destroy(&attr);
    }
    errno = saved;
    if (!ok) /* callocs zero for themselves, as before */
        atomic_store(&zstate, Z_OFF);
}

static void kick(void)
{
    atomic_fetch_add(&kicks, 1);
    int st = atomic_load(&zstate);
    if (st == Z_NONE) {
        start();
    } else if (st == Z_SLEEPING) {
        pthread_mutex_lock(&zmu);
        pthread_cond_signal(&zcv);
        pthread_mutex_unlock(&zmu);
    }
}

void zkn__zeroer_calloc(int c)
{
    if (zkn__win.cls[c].size < ZERO_MIN_SIZE || atomic_load_explicit(&zstate, memory_order_relaxed) == Z_OFF)
        return;
    if (atomic_load_explicit(&owed[c], memory_order_relaxed) < OWED_MAX)
        atomic_fetch_add_explicit(&owed[c], 1, memory_order_relaxed);
    if (zkn__cache_count(c, 0))
        kick();
}

void zkn__zeroer_freed(int c)
{
    int st = atomic_load_explicit(&zstate, memory_order_relaxed);
    if (atomic_load_explicit(&owed[c], memory_order_relaxed) && (st == Z_SLEEPING || st == Z_NONE))
        kick();
}

/* Waits until the thread holds no block (c < 0) or none of class c. */
static void wait_given_back(int c)
{
    uint64_t t0 = zkn__now_ns();
    for (;;) {
        uint64_t z = atomic_load(&zeroing);
        if (!z || (c >= 0 && z != TAKING && (int)((z - 1) >> 32) != c) ||
            zkn__now_ns() - t0 > GIVE_BACK_WAIT_NS)
            return;
        sched_yield();
    }
}

int zkn__zeroer_claim(int c)
{
    if (atomic_load_explicit(&zstate, memory_order_relaxed) <= Z_NONE)
        return 0;
    atomic_fetch_add(&claims, 1); /* before the look at zeroing: see zero_one */
    wait_given_back(c);
    return 1;
}

void zkn__zeroer_unclaim(void)
{
    atomic_fetch_sub(&claims, 1);
}

void zkn__zeroer_pause(void)
{
    atomic_fetch_add(&pauses, 1);
    if (atomic_load_explicit(&zstate, memory_order_relaxed) > Z_NONE)
        wait_given_back(-1);
}

void zkn__zeroer_resume(void)
{
    atomic_fetch_sub(&pauses, 1);
}

void zkn__zeroer_child_reset(void)
{
    uint64_t z = atomic_load(&zeroing);
    /* The parent's thread does not exist here: its half-zeroed block is
     * just a dirty one, cached (and dropped there if it is the daemon's). */
    if (z && z != TAKING) {
        int c = (int)((z - 1) >> 32);
        uint32_t idx = (uint32_t)(z - 1);
        atomic_store_explicit(&zkn__win.cls[c].slots[idx].state, SLOT_CACHED, memory_order_relaxed);
        zkn__cache_put(c, idx);
    }
    atomic_store(&zeroing, 0);
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    zmu = m; /* the condition variable is initialised again by start() */
    atomic_store(&kicks, 0);
    atomic_store(&claims, 0);
    atomic_store(&pauses, 0);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++)
        atomic_store(&owed[c], 0);
    if (atomic_load(&zstate) != Z_OFF)
        atomic_store(&zstate, Z_NONE);
}
