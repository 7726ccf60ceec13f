/* Background zeroing. A calloc of a big block that finds only dirty blocks
 * cached zeroes one on the caller's time, at DRAM write speed (an MSM round's
 * 16 x 6 MiB: 2-3.5 ms on one core here). One thread of the process zeroes
 * cached dirty blocks of the classes calloc uses, a little below the
 * program's priority, and caches them clean for the next calloc: between
 * rounds, or beside a caller zeroing another block (two cores wrote 96 MiB of
 * zeroes in 1.5 ms where one took 1.9-3.5 ms).
 *
 * It zeroes only a block it took out of the cache, so no byte the program
 * can reach changes. It zeroes at most one block per calloc of the class, so
 * it never writes more zeroes than callocs at their defaults would (on a
 * busy machine it moves that work rather than adding to it), and a program
 * that stops calling calloc stops it. A malloc that finds only clean blocks
 * in a class (it would have taken a dirty one) cancels what the class is
 * owed: where malloc and calloc share a class, zeroing ahead mostly feeds
 * malloc. The thread starts once a calloc of 2 MiB or more has a cached
 * dirty block to be zeroed (at that calloc or a later free): a program that
 * never makes one pays nothing.
 * ZK_NALLOC_ZERO_THREAD=0 turns it off.
 *
 * It holds one block at a time, and gives it back (dirty, unless finished)
 * at the next 2 MiB step (40-70 us) when a caller finds that block's class
 * empty (zkn__zeroer_claim) or when the cache is drained. No lock is held
 * while it writes; the block is SLOT_BUSY and named in `zeroing`, so a fork
 * child can cache it as dirty. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "env.h"
#include "internal.h"
#include "os.h"

/* Classes from here up: below, zeroing a block costs about what waking the
 * thread does. */
#define ZERO_MIN_SIZE ZKN_HUGE_PAGE_SIZE
/* Bytes zeroed between two looks at whether to stop (40-70 us here). */
#define STEP ZKN_HUGE_PAGE_SIZE
/* Blocks owed per class at most: bounds the zeroing nobody asks for after a
 * program stops calling calloc. */
#define OWED_MAX 64u
/* How long a caller or a drain waits for the thread to give its block back:
 * one step takes 40-70 us; this only bounds a thread stopped by a debugger. */
#define GIVE_BACK_WAIT_NS 20000000ull
/* The thread's nice value: below the program's threads (0), which get
 * about 3x its share of a core they contend for, yet high enough that it
 * gives a block back within a few ms on a busy machine (at idle priority it
 * could wait for as long as the machine stays busy). */
#define ZEROER_NICE 5

enum { Z_OFF = -1, Z_NONE = 0, Z_STARTING, Z_SLEEPING, Z_RUNNING };

static _Atomic int zstate;
static _Atomic uint32_t kicks;                 /* bumped whenever there may be work */
static _Atomic uint32_t owed[ZKN_CLASS_COUNT]; /* callocs not yet matched by a zeroed block */
static _Atomic int claims[ZKN_CLASS_COUNT];    /* callers waiting for a block of the class */
static _Atomic int pauses;                     /* drains in progress */
static pthread_mutex_t zmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t zcv = PTHREAD_COND_INITIALIZER;
/* The block being zeroed, as (c << 32 | idx) + 1; TAKING while it picks one;
 * 0 when none. */
static _Atomic uint64_t zeroing;
#define TAKING UINT64_MAX

static uint64_t zeroing_of(int c, uint32_t idx)
{
    return ((uint64_t)c << 32 | idx) + 1;
}

static int zeroing_class(uint64_t z)
{
    return (int)((z - 1) >> 32);
}

/* A caller waits for class c, or a drain for any block. */
static int should_stop(int c)
{
    return atomic_load(&claims[c]) || atomic_load(&pauses);
}

static int work_in(int c)
{
    return atomic_load_explicit(&owed[c], memory_order_relaxed) && zkn__cache_count(c, 0) &&
           !should_stop(c);
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
    uint32_t idx = should_stop(c) ? UINT32_MAX : zkn__cache_get(c, ZKN__TAKE_DIRTY_ONLY, &flags);
    if (idx == UINT32_MAX) {
        atomic_store(&zeroing, 0);
        pthread_rwlock_unlock(&zkn__fork_lock);
        return 0;
    }
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    atomic_store_explicit(&s->state, SLOT_BUSY, memory_order_relaxed);
    atomic_store(&zeroing, zeroing_of(c, idx));
    pthread_rwlock_unlock(&zkn__fork_lock);

    unsigned char *p = zkn__slot_addr(c, idx);
    uint64_t size = zkn__win.cls[c].size, off = 0;
    while (off < size && !should_stop(c)) {
        uint64_t len = size - off < STEP ? size - off : STEP;
        memset(p + off, 0, len);
        off += len;
    }
    int done = off == size;

    pthread_rwlock_rdlock(&zkn__fork_lock);
    if (done)
        s->flags |= SLOT_F_CLEAN;
    atomic_store_explicit(&s->state, SLOT_CACHED, memory_order_relaxed);
    zkn__cache_put(c, idx);
    atomic_store(&zeroing, 0); /* after the put: a waiter that sees 0 finds it cached */
    pthread_rwlock_unlock(&zkn__fork_lock);
    if (!done) {
        atomic_fetch_add_explicit(&zkn__ctr.zeroer_gave_back, 1, memory_order_relaxed);
        return 0;
    }
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
    /* Refused (a seccomp filter, say): it runs at the program's priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), ZEROER_NICE);
    uint32_t seen = 0;
    for (;;) {
        int did = 0;
        for (int c = 0; c < ZKN_CLASS_COUNT; c++)
            while (work_in(c) && zero_one(c))
                did = 1;
        if (did)
            continue;
        /* Sleep until a kick. SLEEPING is published before kicks is read
         * again, and a kicker bumps kicks before it reads the state: one of
         * the two sees the other (both seq_cst). */
        pthread_mutex_lock(&zmu);
        atomic_store(&zstate, Z_SLEEPING);
        while (atomic_load(&kicks) == seen)
            pthread_cond_wait(&zcv, &zmu);
        seen = atomic_load(&kicks);
        atomic_store(&zstate, Z_RUNNING);
        pthread_mutex_unlock(&zmu);
    }
    return NULL;
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

void zkn__zeroer_overdone(int c)
{
    if (atomic_load_explicit(&owed[c], memory_order_relaxed))
        atomic_store_explicit(&owed[c], 0, memory_order_relaxed);
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
        if (!z || (c >= 0 && z != TAKING && zeroing_class(z) != c) ||
            zkn__now_ns() - t0 > GIVE_BACK_WAIT_NS)
            return;
        sched_yield();
    }
}

int zkn__zeroer_claim(int c)
{
    if (atomic_load_explicit(&zstate, memory_order_relaxed) <= Z_NONE)
        return 0;
    /* Published before the look at zeroing: see zero_one. The thread stops
     * only for its own class's claims, so a miss elsewhere wastes none of
     * its work. */
    atomic_fetch_add(&claims[c], 1);
    wait_given_back(c);
    return 1;
}

void zkn__zeroer_unclaim(int c)
{
    atomic_fetch_sub(&claims[c], 1);
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
        int c = zeroing_class(z);
        uint32_t idx = (uint32_t)(z - 1);
        atomic_store_explicit(&zkn__win.cls[c].slots[idx].state, SLOT_CACHED, memory_order_relaxed);
        zkn__cache_put(c, idx);
    }
    atomic_store(&zeroing, 0);
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    zmu = m;
    zcv = cv;
    atomic_store(&kicks, 0);
    atomic_store(&pauses, 0);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        atomic_store(&owed[c], 0);
        atomic_store(&claims[c], 0);
    }
    if (atomic_load(&zstate) != Z_OFF)
        atomic_store(&zstate, Z_NONE);
}
