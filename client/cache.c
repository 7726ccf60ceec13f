/* Caches of free regions: a small per-thread cache per class, lock-free for
 * its owner, and a shared cache per class under zkn__glock, so a region freed
 * on one thread serves another. A process-wide cap bounds both together;
 * over it the least recently used class gives up a region, and when none can,
 * the region just freed is released (daemon regions go back to the daemon).
 *
 * Thread-cache entries are atomic words: the owner pushes into an empty entry
 * and pops with an exchange; any other thread may only take entries (with an
 * exchange, under zkn__glock), so whoever reads a non-zero value owns that
 * region. That lets the cap, zkn_release_cache() and thread exit reach every
 * cached region without making the owner's hit take a lock. */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "os.h"

#define TC_PER_CLASS 4

struct zkn__tcache {
    _Atomic uint32_t ent[ZKN_CLASS_COUNT][TC_PER_CLASS]; /* slot index + 1; 0 empty */
    _Atomic uint64_t bytes;
    struct zkn__tcache *next, *prev; /* registry, under zkn__glock */
};

static void thread_exit(void *arg);

uint64_t zkn__cache_cap;
static pthread_key_t thread_key; /* hands a thread's cache back when it exits */

int zkn__cache_init(uint64_t cap)
{
    zkn__cache_cap = cap;
    return pthread_key_create(&thread_key, thread_exit) == 0 ? 0 : -1;
}
_Atomic uint64_t zkn__bytes_cached;

/* Per class, on its own cache line so classes do not contend. */
static struct {
    _Atomic uint64_t cached;   /* regions cached anywhere */
    _Atomic uint32_t shared;   /* of which in the shared list */
    _Atomic uint64_t last_use; /* coarse time of the last get or put */
} __attribute__((aligned(64))) cls_stat[ZKN_CLASS_COUNT];

static struct zkn__tcache *registry;  /* live thread caches */
static struct zkn__tcache *spare;     /* structs of exited threads, linked by next */
static struct zkn__tcache *chunk_cur; /* carving a fresh mmap'd chunk */
static size_t chunk_left;

/* initial-exec: no __tls_get_addr on the path, which could call malloc. */
static __thread struct zkn__tcache *tls_tc __attribute__((tls_model("initial-exec")));
static __thread int tls_dead __attribute__((tls_model("initial-exec")));

static uint64_t per_thread_limit(void)
{
    return zkn__cache_cap / 4;
}

static void touch_class(int c)
{
    uint64_t now = zkn__now_ns();
    /* Write only when stale, so threads hitting one class share the line read-only. */
    if (now - atomic_load_explicit(&cls_stat[c].last_use, memory_order_relaxed) > 4000000)
        atomic_store_explicit(&cls_stat[c].last_use, now, memory_order_relaxed);
}

static struct zkn__tcache *tc_alloc_locked(void)
{
    struct zkn__tcache *tc = spare;
    if (tc) {
        spare = tc->next;
    } else {
        if (chunk_left == 0) {
            size_t len = 64 << 10;
            void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return NULL;
            chunk_cur = p;
            chunk_left = len / sizeof *tc;
        }
        tc = chunk_cur++;
        chunk_left--;
    }
    memset(tc, 0, sizeof *tc);
    tc->next = registry;
    if (registry)
        registry->prev = tc;
    registry = tc;
    return tc;
}

static void tc_unlink_locked(struct zkn__tcache *tc)
{
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        registry = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    tc->prev = NULL;
    tc->next = spare;
    spare = tc;
}

static struct zkn__tcache *my_tcache(void)
{
    struct zkn__tcache *tc = tls_tc;
    if (tc || tls_dead)
        return tc;
    pthread_mutex_lock(&zkn__glock);
    tc = tc_alloc_locked();
    pthread_mutex_unlock(&zkn__glock);
    if (!tc)
        return NULL;
    /* The key's destructor hands the cache back at thread exit. */
    if (pthread_setspecific(thread_key, tc) != 0) {
        pthread_mutex_lock(&zkn__glock);
        tc_unlink_locked(tc);
        pthread_mutex_unlock(&zkn__glock);
        tls_dead = 1;
        return NULL;
    }
    tls_tc = tc;
    return tc;
}

static void shared_push_locked(int c, uint32_t idx)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    w->slots[idx].next = w->shared_head;
    w->shared_head = idx + 1;
    w->shared_count++;
    atomic_store_explicit(&cls_stat[c].shared, w->shared_count, memory_order_relaxed);
}

static uint32_t shared_pop_locked(int c)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    if (!w->shared_head)
        return UINT32_MAX;
    uint32_t idx = w->shared_head - 1;
    w->shared_head = w->slots[idx].next;
    w->slots[idx].next = 0;
    w->shared_count--;
    atomic_store_explicit(&cls_stat[c].shared, w->shared_count, memory_order_relaxed);
    return idx;
}

/* Takes one region of class c from any thread cache. Under zkn__glock. */
static uint32_t steal_locked(int c)
{
    for (struct zkn__tcache *tc = registry; tc; tc = tc->next)
        for (int i = 0; i < TC_PER_CLASS; i++) {
            if (!atomic_load_explicit(&tc->ent[c][i], memory_order_relaxed))
                continue;
            uint32_t v = atomic_exchange(&tc->ent[c][i], 0);
            if (v) {
                atomic_fetch_sub(&tc->bytes, zkn__win.cls[c].size);
                return v - 1;
            }
        }
    return UINT32_MAX;
}

/* The region has left the cache (to the program or to be released). */
static void uncount(int c)
{
    atomic_fetch_sub_explicit(&zkn__bytes_cached, zkn__win.cls[c].size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&cls_stat[c].cached, 1, memory_order_relaxed);
}

uint32_t zkn__cache_get(int c, uint8_t *flags)
{
    uint32_t idx = UINT32_MAX;
    if (atomic_load_explicit(&cls_stat[c].cached, memory_order_relaxed) == 0)
        return UINT32_MAX;
    struct zkn__tcache *tc = my_tcache();
    if (tc) {
        for (int i = 0; i < TC_PER_CLASS; i++) {
            if (!atomic_load_explicit(&tc->ent[c][i], memory_order_relaxed))
                continue;
            uint32_t v = atomic_exchange(&tc->ent[c][i], 0);
            if (v) {
                idx = v - 1;
                atomic_fetch_sub_explicit(&tc->bytes, zkn__win.cls[c].size, memory_order_relaxed);
                break;
            }
        }
    }
    if (idx == UINT32_MAX) {
        /* Shared list first; then another thread's cache, which beats any
         * miss (regions are fungible, whoever freed them). */
        pthread_mutex_lock(&zkn__glock);
        idx = shared_pop_locked(c);
        if (idx == UINT32_MAX)
            idx = steal_locked(c);
        pthread_mutex_unlock(&zkn__glock);
    }
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    uncount(c);
    touch_class(c);
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    *flags = s->flags;
    atomic_store_explicit(&s->state, SLOT_LIVE, memory_order_release);
    return idx;
}

/* Reserves size bytes under the cap; 1 on success. */
static int reserve(uint64_t size)
{
    uint64_t cur = atomic_load_explicit(&zkn__bytes_cached, memory_order_relaxed);
    while (cur + size <= zkn__cache_cap)
        if (atomic_compare_exchange_weak(&zkn__bytes_cached, &cur, cur + size))
            return 1;
    return 0;
}

/* Releases regions of other classes, least recently used first, until size
 * bytes fit under the cap. 1 when they do. */
static int make_room(int c, uint64_t size)
{
    for (int round = 0; round < 4 * ZKN_CLASS_COUNT; round++) {
        if (reserve(size))
            return 1;
        int victim = -1;
        uint64_t oldest = UINT64_MAX;
        for (int v = 0; v < ZKN_CLASS_COUNT; v++) {
            if (v == c || !atomic_load_explicit(&cls_stat[v].cached, memory_order_relaxed))
                continue;
            uint64_t t = atomic_load_explicit(&cls_stat[v].last_use, memory_order_relaxed);
            if (t < oldest) {
                oldest = t;
                victim = v;
            }
        }
        if (victim < 0)
            return 0;
        pthread_mutex_lock(&zkn__glock);
        uint32_t idx = shared_pop_locked(victim);
        if (idx == UINT32_MAX)
            idx = steal_locked(victim);
        pthread_mutex_unlock(&zkn__glock);
        if (idx == UINT32_MAX) {
            touch_class(victim); /* raced with its owner; look elsewhere next */
            continue;
        }
        uncount(victim);
        zkn__region_release(victim, idx);
    }
    return reserve(size);
}

void zkn__cache_put(int c, uint32_t idx)
{
    uint64_t size = zkn__win.cls[c].size;
    /* Kept, it would pin the file's pages beside our copies (see fork.c). */
    if (zkn__win.cls[c].slots[idx].flags & SLOT_F_FORKED) {
        zkn__region_release(c, idx);
        return;
    }
    if (!reserve(size) && !make_room(c, size)) {
        zkn__region_release(c, idx);
        zkn__daemon_flush_returns(0);
        return;
    }
    atomic_fetch_add_explicit(&cls_stat[c].cached, 1, memory_order_relaxed);
    touch_class(c);
    struct zkn__tcache *tc = my_tcache();
    if (tc && atomic_load_explicit(&tc->bytes, memory_order_relaxed) + size <= per_thread_limit()) {
        for (int i = 0; i < TC_PER_CLASS; i++) {
            if (atomic_load_explicit(&tc->ent[c][i], memory_order_relaxed))
                continue;
            atomic_fetch_add_explicit(&tc->bytes, size, memory_order_relaxed);
            /* Only the owner stores non-zero, so the empty entry is still ours. */
            atomic_store_explicit(&tc->ent[c][i], idx + 1, memory_order_release);
            return;
        }
    }
    pthread_mutex_lock(&zkn__glock);
    shared_push_locked(c, idx);
    pthread_mutex_unlock(&zkn__glock);
}

/* Moves every thread-cache entry to the shared lists. Under zkn__glock. */
static void gather_locked(void)
{
    for (struct zkn__tcache *tc = registry; tc; tc = tc->next)
        for (int c = 0; c < ZKN_CLASS_COUNT; c++)
            for (int i = 0; i < TC_PER_CLASS; i++) {
                uint32_t v = atomic_exchange(&tc->ent[c][i], 0);
                if (v) {
                    atomic_fetch_sub(&tc->bytes, zkn__win.cls[c].size);
                    shared_push_locked(c, v - 1);
                }
            }
}

void zkn__cache_drain(int soften)
{
    uint32_t heads[ZKN_CLASS_COUNT] = {0};
    if (!atomic_load_explicit(&zkn__win.len, memory_order_acquire))
        return;
    pthread_mutex_lock(&zkn__glock);
    gather_locked();
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        struct zkn__class_win *w = &zkn__win.cls[c];
        uint32_t keep = 0, keep_n = 0, idx;
        while ((idx = shared_pop_locked(c)) != UINT32_MAX) {
            if (soften && !(w->slots[idx].flags & SLOT_F_DAEMON)) {
                zkn__region_soften(c, idx);
                w->slots[idx].next = keep;
                keep = idx + 1;
                keep_n++;
            } else {
                w->slots[idx].next = heads[c]; /* a private list: these are ours now */
                heads[c] = idx + 1;
            }
        }
        w->shared_head = keep;
        w->shared_count = keep_n;
        atomic_store_explicit(&cls_stat[c].shared, keep_n, memory_order_relaxed);
    }
    pthread_mutex_unlock(&zkn__glock);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        while (heads[c]) {
            uint32_t idx = heads[c] - 1;
            heads[c] = zkn__win.cls[c].slots[idx].next;
            uncount(c);
            zkn__region_release(c, idx);
        }
    }
}

/* The thread key's destructor: an exiting thread's cache goes to the
 * shared lists. */
static void thread_exit(void *arg)
{
    struct zkn__tcache *tc = arg;
    /* Frees from later destructors of this thread go to the shared cache. */
    tls_tc = NULL;
    tls_dead = 1;
    pthread_mutex_lock(&zkn__glock);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++)
        for (int i = 0; i < TC_PER_CLASS; i++) {
            uint32_t v = atomic_exchange(&tc->ent[c][i], 0);
            if (v)
                shared_push_locked(c, v - 1);
        }
    tc_unlink_locked(tc);
    pthread_mutex_unlock(&zkn__glock);
}

void zkn__cache_child_reset(void)
{
    /* Single-threaded child: no locks needed, none taken (they were reset). */
    struct zkn__tcache *mine = tls_tc;
    for (struct zkn__tcache *tc = registry, *next; tc; tc = next) {
        next = tc->next;
        for (int c = 0; c < ZKN_CLASS_COUNT; c++)
            for (int i = 0; i < TC_PER_CLASS; i++) {
                uint32_t v = atomic_load(&tc->ent[c][i]);
                if (!v)
                    continue;
                struct zkn__slot *s = &zkn__win.cls[c].slots[v - 1];
                if (tc != mine || (s->flags & SLOT_F_DAEMON)) {
                    atomic_store(&tc->ent[c][i], 0);
                    atomic_fetch_sub(&tc->bytes, zkn__win.cls[c].size);
                    shared_push_locked(c, v - 1);
                }
            }
        if (tc != mine)
            tc_unlink_locked(tc);
    }
    /* Shared regions cached by the parent are the parent's lease: unmap them
     * here (without RETURN) before anything can write to them. */
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        struct zkn__class_win *w = &zkn__win.cls[c];
        uint32_t keep = 0, keep_n = 0, drop = 0, idx;
        while ((idx = shared_pop_locked(c)) != UINT32_MAX) {
            if (w->slots[idx].flags & SLOT_F_DAEMON) {
                w->slots[idx].next = drop;
                drop = idx + 1;
            } else {
                w->slots[idx].next = keep;
                keep = idx + 1;
                keep_n++;
            }
        }
        w->shared_head = keep;
        w->shared_count = keep_n;
        atomic_store_explicit(&cls_stat[c].shared, keep_n, memory_order_relaxed);
        while (drop) {
            idx = drop - 1;
            drop = w->slots[idx].next;
            uncount(c);
            zkn__region_release(c, idx); /* the link is reset: no RETURN queued */
        }
    }
}
