/* Caches of free regions: a small per-thread cache per class, lock-free for
 * its owner, and a shared cache per class under zkn__glock, so a region freed
 * on one thread serves another. A process-wide cap bounds both together;
 * over it the least recently used class gives up a region, and when none can,
 * the region just freed is released (daemon regions go back to the daemon).
 *
 * Clean regions (all zero: never handed out since they were mapped) are kept
 * apart from dirty ones, so calloc can take a clean one and skip zeroing,
 * and malloc takes dirty ones first, leaving the clean ones for calloc.
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

/* A thread-cache entry: (slot index + 1) << 2, | 1 when the region is clean,
 * | 2 when it is the daemon's; 0 when empty. Other threads read the kind
 * from here, never from a slot they do not own. */
#define ENT(idx, clean, daemon) \
    ((((uint32_t)(idx) + 1) << 2) | (uint32_t)((clean) != 0) | ((uint32_t)((daemon) != 0) << 1))
#define ENT_IDX(v) (((v) >> 2) - 1)
#define ENT_CLEAN(v) ((v)&1u)
#define ENT_DAEMON(v) (((v) >> 1) & 1u)

struct zkn__tcache {
    _Atomic uint32_t ent[ZKN_CLASS_COUNT][TC_PER_CLASS];
    _Atomic uint64_t bytes;
    struct zkn__tcache *next, *prev; /* registry, under zkn__glock */
};

static void thread_exit(void *arg);

static pthread_key_t thread_key; /* hands a thread's cache back when it exits */

int zkn__cache_init(uint64_t cap)
{
    zkn__cache_cap = cap;
    return pthread_key_create(&thread_key, thread_exit) == 0 ? 0 : -1;
}
/* Per class, on its own cache line so classes do not contend. */
static struct {
    _Atomic uint64_t cached;   /* regions cached anywhere */
    _Atomic uint64_t clean;    /* of which clean */
    _Atomic uint64_t priv;     /* of which private (not the daemon's) */
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

static int slot_clean(int c, uint32_t idx)
{
    return (zkn__win.cls[c].slots[idx].flags & SLOT_F_CLEAN) != 0;
}

/* Daemon regions, and every slot of a daemon run even once made private:
 * their pages never move to another slot (a run is released slot by slot). */
static int slot_daemon(int c, uint32_t idx)
{
    return (zkn__win.cls[c].slots[idx].flags & (SLOT_F_DAEMON | SLOT_F_PART)) != 0;
}

static void shared_push_locked(int c, uint32_t idx)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    int k = slot_clean(c, idx);
    w->slots[idx].next = w->shared_head[k];
    w->shared_head[k] = idx + 1;
    w->shared_count[k]++;
}

/* Which entries a taker wants: those whose bits, masked, equal want. */
struct kind {
    uint32_t mask, want;
};
#define KIND_CLEAN(k) ((struct kind){1u, (uint32_t)(k)})
#define KIND_PRIVATE ((struct kind){2u, 0u})
/* The one entry of slot idx, whatever its clean and daemon bits. */
#define KIND_SLOT(idx) ((struct kind){~3u, ENT(idx, 0, 0)})

static int kind_ok(uint32_t v, struct kind k)
{
    return (v & k.mask) == k.want;
}

/* Unlinks the first region of kind kd from class c's shared lists (the
 * clean or the dirty one, as kd says). Under zkn__glock. */
static uint32_t shared_pop_locked(int c, struct kind kd)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    for (int k = 0; k <= 1; k++) {
        if ((kd.mask & 1u) && (uint32_t)k != (kd.want & 1u))
            continue;
        for (uint32_t *link = &w->shared_head[k]; *link; link = &w->slots[*link - 1].next) {
            uint32_t idx = *link - 1;
            if (!kind_ok(ENT(idx, k, slot_daemon(c, idx)), kd))
                continue;
            *link = w->slots[idx].next;
            w->slots[idx].next = 0;
            w->shared_count[k]--;
            return idx;
        }
    }
    return UINT32_MAX;
}

/* Takes an entry of class c of kind k from one thread cache; 0 when there
 * is none. Any thread may call it: whoever exchanges a non-zero value out
 * owns the region. */
static uint32_t tc_take(struct zkn__tcache *tc, int c, struct kind k)
{
    for (int i = 0; i < TC_PER_CLASS; i++) {
        uint32_t v = atomic_load_explicit(&tc->ent[c][i], memory_order_relaxed);
        if (!v || !kind_ok(v, k))
            continue;
        v = atomic_exchange(&tc->ent[c][i], 0);
        if (!v)
            continue;
        atomic_fetch_sub_explicit(&tc->bytes, zkn__win.cls[c].size, memory_order_relaxed);
        if (!kind_ok(v, k)) {
            /* Another thread's owner replaced the entry between the load and
             * the exchange (its own entries change only to 0 under it), so
             * the caller holds zkn__glock: park the region in the shared list. */
            shared_push_locked(c, ENT_IDX(v));
            continue;
        }
        return v;
    }
    return 0;
}

/* Takes one region of class c and kind k from any thread cache. Under zkn__glock. */
static uint32_t steal_locked(int c, struct kind k)
{
    for (struct zkn__tcache *tc = registry; tc; tc = tc->next) {
        uint32_t v = tc_take(tc, c, k);
        if (v)
            return ENT_IDX(v);
    }
    return UINT32_MAX;
}

/* The region has left the cache (to the program or to be released). */
static void uncount(int c, uint32_t idx)
{
    zkn__cache_unreserve(zkn__win.cls[c].size);
    atomic_fetch_sub_explicit(&cls_stat[c].cached, 1, memory_order_relaxed);
    if (slot_clean(c, idx))
        atomic_fetch_sub_explicit(&cls_stat[c].clean, 1, memory_order_relaxed);
    if (!slot_daemon(c, idx))
        atomic_fetch_sub_explicit(&cls_stat[c].priv, 1, memory_order_relaxed);
}

uint64_t zkn__cache_count(int c, int clean)
{
    uint64_t all = atomic_load_explicit(&cls_stat[c].cached, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&cls_stat[c].clean, memory_order_relaxed);
    if (!clean)
        n = all > n ? all - n : 0;
    return n;
}

void zkn__cache_thread_shared_only(void)
{
    tls_dead = 1;
}

/* A region of class c of kind kd from this thread's cache, the shared lists
 * or another thread's cache (regions are fungible, whoever freed them), or
 * UINT32_MAX. */
static uint32_t take(int c, struct kind kd)
{
    struct zkn__tcache *tc = my_tcache();
    uint32_t v = tc ? tc_take(tc, c, kd) : 0;
    if (v)
        return ENT_IDX(v);
    pthread_mutex_lock(&zkn__glock);
    uint32_t idx = shared_pop_locked(c, kd);
    if (idx == UINT32_MAX)
        idx = steal_locked(c, kd);
    pthread_mutex_unlock(&zkn__glock);
    return idx;
}

static uint32_t take_kind(int c, int k)
{
    return zkn__cache_count(c, k) ? take(c, KIND_CLEAN(k)) : UINT32_MAX;
}

uint32_t zkn__cache_take_private(int c)
{
    if (!atomic_load_explicit(&cls_stat[c].priv, memory_order_relaxed))
        return UINT32_MAX;
    uint32_t idx = take(c, KIND_PRIVATE);
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    uncount(c, idx);
    atomic_store_explicit(&zkn__win.cls[c].slots[idx].state, SLOT_BUSY, memory_order_relaxed);
    return idx;
}

/* Takes slot idx of class c out of whichever cache holds it: a shared list
 * or any thread's cache. 1 when taken (the caller owns it), 0 when it was
 * not found or its owner took it first. Under zkn__glock. */
static int extract_locked(int c, uint32_t idx)
{
    return shared_pop_locked(c, KIND_SLOT(idx)) != UINT32_MAX ||
           steal_locked(c, KIND_SLOT(idx)) != UINT32_MAX;
}

uint32_t zkn__cache_take_run(int c, uint32_t k, int *clean)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    if (atomic_load_explicit(&cls_stat[c].priv, memory_order_relaxed) < k)
        return UINT32_MAX;
    pthread_mutex_lock(&zkn__glock);
    for (uint32_t r = 0; r + k <= w->hwm; r += k) {
        if (!atomic_load_explicit(&w->slots[r].run, memory_order_relaxed))
            continue;
        uint32_t i = 0;
        while (i < k && atomic_load_explicit(&w->slots[r + i].state, memory_order_acquire) ==
                            SLOT_CACHED)
            i++;
        if (i < k)
            continue;
        for (i = 0; i < k && extract_locked(c, r + i); i++)
            ;
        if (i < k) { /* one was just taken: put the others back */
            while (i--)
                shared_push_locked(c, r + i);
            continue;
        }
        pthread_mutex_unlock(&zkn__glock);
        *clean = 1;
        for (i = 0; i < k; i++) {
            *clean &= slot_clean(c, r + i);
            uncount(c, r + i);
            atomic_store_explicit(&w->slots[r + i].state, SLOT_BUSY, memory_order_relaxed);
        }
        return r;
    }
    pthread_mutex_unlock(&zkn__glock);
    return UINT32_MAX;
}

uint64_t zkn__cache_private_count(int c)
{
    return atomic_load_explicit(&cls_stat[c].priv, memory_order_relaxed);
}

uint32_t zkn__cache_get(int c, enum zkn__take take, uint8_t *flags)
{
    uint32_t idx;
    if (take == ZKN__TAKE_DIRTY_FIRST || take == ZKN__TAKE_CLEAN_FIRST) {
        int first = take == ZKN__TAKE_CLEAN_FIRST;
        idx = take_kind(c, first);
        if (idx == UINT32_MAX)
            idx = take_kind(c, !first);
    } else {
        idx = take_kind(c, take == ZKN__TAKE_CLEAN_ONLY);
    }
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    uncount(c, idx);
    touch_class(c);
    *flags = s->flags;
    atomic_store_explicit(&s->state, SLOT_LIVE, memory_order_release);
    return idx;
}

/* Releases regions of other classes, least recently used first, until size
 * bytes fit under the cap. 1 when they do. */
static int make_room(int c, uint64_t size)
{
    /* The bank's remnants first: pages kept in case, not blocks freed. */
    while (!zkn__cache_reserve(size))
        if (!zkn__bank_evict_one())
            break;
    for (int round = 0; round < 4 * ZKN_CLASS_COUNT; round++) {
        if (zkn__cache_reserve(size))
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
        /* Dirty ones first: a clean one may still spare a calloc its zeroing. */
        uint32_t idx = take(victim, KIND_CLEAN(0));
        if (idx == UINT32_MAX)
            idx = take(victim, KIND_CLEAN(1));
        if (idx == UINT32_MAX) {
            touch_class(victim); /* raced with its owner; look elsewhere next */
            continue;
        }
        uncount(victim, idx);
        zkn__region_release(victim, idx);
    }
    return zkn__cache_reserve(size);
}

void zkn__cache_put(int c, uint32_t idx)
{
    uint64_t size = zkn__win.cls[c].size;
    /* Kept, it would pin the file's pages beside our copies (see fork.c). */
    if (zkn__win.cls[c].slots[idx].flags & SLOT_F_FORKED) {
        zkn__region_release(c, idx);
        return;
    }
    if (!zkn__cache_reserve(size) && !make_room(c, size)) {
        zkn__region_release(c, idx);
        zkn__daemon_flush_returns(0);
        return;
    }
    int clean = slot_clean(c, idx), daemon = slot_daemon(c, idx);
    atomic_fetch_add_explicit(&cls_stat[c].cached, 1, memory_order_relaxed);
    if (clean)
        atomic_fetch_add_explicit(&cls_stat[c].clean, 1, memory_order_relaxed);
    if (!daemon)
        atomic_fetch_add_explicit(&cls_stat[c].priv, 1, memory_order_relaxed);
    touch_class(c);
    struct zkn__tcache *tc = my_tcache();
    if (tc && atomic_load_explicit(&tc->bytes, memory_order_relaxed) + size <= per_thread_limit()) {
        for (int i = 0; i < TC_PER_CLASS; i++) {
            if (atomic_load_explicit(&tc->ent[c][i], memory_order_relaxed))
                continue;
            atomic_fetch_add_explicit(&tc->bytes, size, memory_order_relaxed);
            /* Only the owner stores non-zero, so the empty entry is still ours. */
            atomic_store_explicit(&tc->ent[c][i], ENT(idx, clean, daemon), memory_order_release);
            return;
        }
    }
    pthread_mutex_lock(&zkn__glock);
    shared_push_locked(c, idx);
    pthread_mutex_unlock(&zkn__glock);
}

/* Moves one thread cache's entries to the shared lists (all of them, or
 * with daemon_only those of daemon regions). Under zkn__glock, or in a
 * single-threaded fork child. */
static void tc_to_shared_locked(struct zkn__tcache *tc, int daemon_only)
{
    for (int c = 0; c < ZKN_CLASS_COUNT; c++)
        for (int i = 0; i < TC_PER_CLASS; i++) {
            uint32_t v = atomic_load(&tc->ent[c][i]);
            if (!v || (daemon_only && !ENT_DAEMON(v)))
                continue;
            if ((v = atomic_exchange(&tc->ent[c][i], 0)) != 0) {
                atomic_fetch_sub(&tc->bytes, zkn__win.cls[c].size);
                shared_push_locked(c, ENT_IDX(v));
            }
        }
}

/* Empties both shared lists of class c into one private list (linked by
 * next, index + 1, 0 ends), returned. Under zkn__glock. */
static uint32_t shared_take_all_locked(int c)
{
    uint32_t head = 0, idx;
    for (int k = 0; k <= 1; k++)
        while ((idx = shared_pop_locked(c, KIND_CLEAN(k))) != UINT32_MAX) {
            zkn__win.cls[c].slots[idx].next = head;
            head = idx + 1;
        }
    return head;
}

/* Pops the first region of a private list. */
static uint32_t list_pop(int c, uint32_t *head)
{
    uint32_t idx = *head - 1;
    *head = zkn__win.cls[c].slots[idx].next;
    zkn__win.cls[c].slots[idx].next = 0;
    return idx;
}

void zkn__cache_drain(int soften)
{
    uint32_t heads[ZKN_CLASS_COUNT] = {0};
    if (!atomic_load_explicit(&zkn__win.len, memory_order_acquire))
        return;
    zkn__bank_drain();
    pthread_mutex_lock(&zkn__glock);
    for (struct zkn__tcache *tc = registry; tc; tc = tc->next)
        tc_to_shared_locked(tc, 0);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint32_t all = shared_take_all_locked(c);
        while (all) {
            uint32_t idx = list_pop(c, &all);
            if (soften && !(zkn__win.cls[c].slots[idx].flags & SLOT_F_DAEMON)) {
                if (slot_clean(c, idx)) /* softened pages are no longer known zero */
                    atomic_fetch_sub_explicit(&cls_stat[c].clean, 1, memory_order_relaxed);
                zkn__region_soften(c, idx);
                shared_push_locked(c, idx);
            } else {
                zkn__win.cls[c].slots[idx].next = heads[c]; /* ours now */
                heads[c] = idx + 1;
            }
        }
    }
    pthread_mutex_unlock(&zkn__glock);
    for (int c = 0; c < ZKN_CLASS_COUNT; c++)
        while (heads[c]) {
            uint32_t idx = list_pop(c, &heads[c]);
            uncount(c, idx);
            zkn__region_release(c, idx);
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
    tc_to_shared_locked(tc, 0);
    tc_unlink_locked(tc);
    pthread_mutex_unlock(&zkn__glock);
}

void zkn__cache_child_reset(void)
{
    /* Single-threaded child: no locks needed, none taken (they were reset).
     * Other threads' caches go to the shared lists; so do daemon regions from
     * this thread's. */
    struct zkn__tcache *mine = tls_tc;
    for (struct zkn__tcache *tc = registry, *next; tc; tc = next) {
        next = tc->next;
        tc_to_shared_locked(tc, tc == mine);
        if (tc != mine)
            tc_unlink_locked(tc);
    }
    /* Shared regions cached by the parent are the parent's lease: unmap them
     * here (without RETURN) before anything can write to them. */
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint32_t all = shared_take_all_locked(c), drop = 0;
        while (all) {
            uint32_t idx = list_pop(c, &all);
            if (zkn__win.cls[c].slots[idx].flags & SLOT_F_DAEMON) {
                zkn__win.cls[c].slots[idx].next = drop;
                drop = idx + 1;
            } else {
                shared_push_locked(c, idx);
            }
        }
        while (drop) {
            uint32_t idx = list_pop(c, &drop);
            uncount(c, idx);
            zkn__region_release(c, idx); /* the link is reset: no RETURN queued */
        }
    }
}
