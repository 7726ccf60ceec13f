/* libzknalloc internals shared between the client's files. Internal names
 * that cross files start with zkn___; the public API (zknalloc.h) is zkn_.
 *
 * The layers, each using only those below it (no import loops):
 *   os.c/.h, out.c/.h    kernel constants, syscalls, clock, reservations;
 *                        output without stdio
 *   next_alloc.c/.h      the allocator behind ours (glibc's, or one preloaded
 *                        after us): small requests and bookkeeping
 *   counters.c           the counters zkn_stats() reports, the cache's budget
 *   daemon_trust.c       whom the client trusts: socket directory, peer, fds
 *   daemon_queue.c       ids owed to the daemon (RETURN, FORGET)
 *   daemon_core.c        the link's state, framing, replies, bounded waits
 *   daemon_session.c     connecting and HELLO
 *   daemon_link.c        requests: LEND, RETURN, FORGET (transport only)
 *   window.c             the reserved address window, its slots and states
 *   region.c             what backs a slot: private memory or a daemon memfd
 *   bank.c               remnants of split blocks, pages for any size
 *   cache.c              per-thread and shared caches of free regions, the cap
 *   assemble.c           blocks built from other classes' cached pages
 *   init.c               lazy one-time setup: config, window, thread key
 *   fork.c               fork semantics: live shared regions become private
 *   alloc.c              zkn_malloc & co.: the large path end to end
 *   stats.c, arena.c, secret.c, dropin.c   the public API on top
 *
 * Nothing here may call malloc: these files run inside it. */
#ifndef ZKN_CLIENT_INTERNAL_H
#define ZKN_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "out.h"
#include "sizeclass.h"
#include "zknalloc.h"

/* ---- slots -------------------------------------------------------------- */

enum zkn__slot_state {
    SLOT_FREE = 0,   /* nothing mapped: PROT_NONE reservation */
    SLOT_LIVE = 1,   /* handed out to the program */
    SLOT_CACHED = 2, /* mapped, free, held by a cache */
    SLOT_BUSY = 3,   /* being set up or torn down, or abandoned after a failed unmap */
};

#define SLOT_F_DAEMON 1u /* MAP_SHARED memfd from the daemon (id valid) */
#define SLOT_F_CLEAN 2u  /* known to be all zero (never handed out since mapped) */
#define SLOT_F_FORKED 4u /* a daemon region made private at a fork: the memfd's
                            pages stay beside our copies while it is mapped */
#define SLOT_F_PART 8u   /* one of the k slots a daemon run covers (region.c):
                            set from mapping until the whole run is released */

struct zkn__slot {
    _Atomic uint8_t state;
    uint8_t flags;   /* SLOT_F_*; written only by whoever owns the slot's state */
    /* On a run's first slot: 1 while the run's slots are still the one huge
     * page new_local_run mapped (region.c); any unmap in the run clears it. */
    _Atomic uint8_t run;
    /* On a daemon run's first slot (region.c): how many of its slots are not
     * yet released, and RUN_FORGOTTEN once the daemon was told to forget it. */
    _Atomic uint8_t parts;
    uint32_t next;   /* free-slot or shared-cache list link: index + 1, 0 ends */
    uint32_t gen;    /* daemon instance the region came from */
    /* The daemon region's memfd, kept for fork (valid with SLOT_F_DAEMON);
     * a run keeps it on its first slot only. */
    int32_t fd;
    uint64_t id;     /* daemon region id */
};

struct zkn__class_win {
    uintptr_t base;        /* first slot */
    uint64_t size;         /* bytes mapped per region (the class size) */
    unsigned shift;        /* log2 of the slot stride, a power of two >= size */
    uint32_t nslots;       /* 0: the class is not served from the window */
    struct zkn__slot *slots;
    /* Below: under zkn__glock. */
    uint32_t hwm;          /* slots [0, hwm) have been used at least once */
    uint32_t free_head;    /* released slots, linked through next */
    uint32_t free_runs;    /* released runs (first slots, k-aligned), linked through next */
    uint32_t shared_head[2]; /* shared-cache regions, [1] clean, [0] dirty; linked through next */
    uint32_t shared_count[2];
    uint32_t lends;        /* daemon misses so far: sizes the next LEND batch */
};

struct zkn__window {
    _Atomic uintptr_t base;
    _Atomic uintptr_t len; /* 0 until reserved: every pointer is then glibc's */
    unsigned sub_shift;    /* log2 of each class's sub-window */
    struct zkn__class_win cls[ZKN_CLASS_COUNT];
};

extern struct zkn__window zkn__win;
/* Guards slot free lists, shared caches and the thread-cache registry.
 * Lock order: zkn__fork_lock, then the daemon link lock, then zkn__glock, then
 * the link's id-queue lock. */
extern pthread_mutex_t zkn__glock;

/* Class of a pointer inside the window, or -1 for a pointer that is not ours. */
static inline int zkn__ptr_class(const void *p)
{
    uintptr_t off = (uintptr_t)p - atomic_load_explicit(&zkn__win.base, memory_order_relaxed);
    if (off >= atomic_load_explicit(&zkn__win.len, memory_order_acquire))
        return -1;
    return (int)(off >> zkn__win.sub_shift);
}

static inline void *zkn__slot_addr(int c, uint32_t idx)
{
    return (void *)(zkn__win.cls[c].base + ((uintptr_t)idx << zkn__win.cls[c].shift));
}

/* Slot index of p in class c; sets *exact when p is a slot's first byte.
 * Returns UINT32_MAX past the class's slots. */
static inline uint32_t zkn__slot_of(int c, const void *p, int *exact)
{
    const struct zkn__class_win *w = &zkn__win.cls[c];
    uintptr_t off = (uintptr_t)p - w->base;
    uint64_t idx = off >> w->shift;
    if (idx >= w->nslots) {
        *exact = 0;
        return UINT32_MAX;
    }
    *exact = (off & (((uintptr_t)1 << w->shift) - 1)) == 0;
    return (uint32_t)idx;
}

/* window.c */
int zkn__window_reserve(void);
/* A never-used or released slot of class c (state SLOT_BUSY), or UINT32_MAX. */
uint32_t zkn__slot_take(int c);
/* k slots in a row for a run (SLOT_BUSY): a released run, else never-used
 * ones, the first k-aligned. The first, or UINT32_MAX. */
uint32_t zkn__slot_take_run(int c, uint32_t k);
/* Back to the free list; the slot must already be PROT_NONE again. */
void zkn__slot_put(int c, uint32_t idx);
/* The smallest class that holds size bytes at the given alignment, or -1. */
int zkn__class_for(size_t size, size_t align);
_Noreturn void zkn__die_bad_pointer(const char *fn, const void *p, const char *why);

/* region.c */
/* Maps a fresh private anonymous region into a new slot. UINT32_MAX on
 * failure. *extra: how many slots after it were mapped too (clean, state
 * SLOT_BUSY), for the caller to cache (see region.c). */
uint32_t zkn__region_new_local(int c, uint32_t *extra);
/* Slots per daemon run in class c: a daemon region of one huge page mapped
 * over k neighbouring slots; 0 when this class (or the daemon's backing,
 * once known) takes regions of its own size. */
uint32_t zkn__daemon_run_blocks(int c);
/* Maps a daemon memfd, keeping fd: with k 0 a region of class c into a new
 * slot, else a region of one huge page over a run of k new slots (all
 * SLOT_BUSY). The first slot, or UINT32_MAX on failure (fd closed; the
 * caller returns the id). */
uint32_t zkn__region_map_fd(int c, uint32_t k, int fd, uint64_t id, int clean, uint32_t gen);
/* fork child: closes the files of daemon runs (nothing here needs them once
 * live parts were rescued, and the parent keeps writing other parts). */
void zkn__region_child_close_runs(void);
/* Unmaps a region (slot back to PROT_NONE), frees the slot and, for a region
 * of the live daemon, queues its RETURN. A run's slot stays held until the
 * run's last is released, which returns the whole run. */
void zkn__region_release(int c, uint32_t idx);
/* Makes a dirty region all zero (memset: measured cheapest, see region.c). */
void zkn__region_zero(int c, uint32_t idx);
/* MADV_FREE for a private cached region (contents become undefined). */
void zkn__region_soften(int c, uint32_t idx);
/* fork prepare: re-maps a live daemon region in place as a private mapping
 * of its file (copy-on-write); it is no longer a daemon region. 0 when the
 * daemon must now be told to FORGET its id, 1 when it already was (another
 * part of the same run), -1 on failure. */
int zkn__region_make_private(int c, uint32_t idx);
/* fork child: a live daemon region absent here (DONTFORK) gets a private copy
 * read from its fd (copy) or an inaccessible reservation. */
void zkn__region_child_rescue(int c, uint32_t idx, int copy);
/* Moves private pages from src to dst (page tables only: nothing is copied
 * or zeroed); src stays mapped, empty. 0, or -1 with the pages left at src. */
int zkn__region_move_pages(void *src, void *dst, uint64_t len);
/* Maps fresh private memory over [p, p + len) inside a slot being built. */
int zkn__region_map_fresh(void *p, uint64_t len);
/* Marks a slot just filled with private memory: no daemon id, clean when
 * it is all zero. */
void zkn__region_set_private(int c, uint32_t idx, int clean);
/* Gives back a slot taken for building a region that was not finished:
 * whatever was mapped there goes. */
void zkn__slot_release_empty(int c, uint32_t idx);
/* Blocks per run (one huge page) in class c, or 0 when the class has no runs. */
uint32_t zkn__run_blocks(int c);
/* Unmaps a run whose slots [first, first + k) its caller owns (emptied by a
 * move) and keeps the slots together for the next run. */
void zkn__run_release(int c, uint32_t first, uint32_t k);
/* The k slots of a released run back to the window, as a run. */
void zkn__slot_put_run(int c, uint32_t first, uint32_t k);

/* counters.c: the cache's byte budget, shared by cache.c and bank.c. */
extern uint64_t zkn__cache_cap;
/* ZK_NALLOC_CALLOC_TRADE=1: calloc trades dirty blocks for daemon-zeroed ones (alloc.c). */
extern int zkn__calloc_trade;
extern _Atomic uint64_t zkn__bytes_cached;
/* Takes size bytes of the budget; 1 when they fit under the cap. */
int zkn__cache_reserve(uint64_t size);
void zkn__cache_unreserve(uint64_t size);

/* bank.c: remnants of blocks that gave part of themselves to a request. */
/* Keeps the first len bytes of slot (c, idx) (state SLOT_BUSY) for later
 * requests; 0, or -1 when over the cap or full (the caller frees it). */
int zkn__bank_put(int c, uint32_t idx, uint64_t len, int clean);
/* Moves up to want bytes off one remnant's end to dst. Returns how many
 * moved, 0 when none; *clean when they are all zero. */
uint64_t zkn__bank_take(char *dst, uint64_t want, int *clean);
/* Frees one remnant; the bytes it held, 0 when the bank is empty. */
uint64_t zkn__bank_evict_one(void);
void zkn__bank_drain(void);
uint64_t zkn__bank_bytes(void);
void zkn__bank_child_reset(void);

/* cache.c */
struct zkn__tcache;
enum zkn__take {
    ZKN__TAKE_DIRTY_FIRST, /* malloc: leaves clean regions for calloc */
    ZKN__TAKE_CLEAN_ONLY,  /* calloc, first choice */
    ZKN__TAKE_DIRTY_ONLY,  /* calloc once no clean one can be had */
    ZKN__TAKE_CLEAN_FIRST, /* calloc from a bigger class: spares it the zeroing */
};
/* A cached region of class c made LIVE, or UINT32_MAX. *flags gets its flags. */
uint32_t zkn__cache_get(int c, enum zkn__take take, uint8_t *flags);
/* Regions of class c cached, clean (1) or dirty (0); a hint, racy. */
uint64_t zkn__cache_count(int c, int clean);
/* The calling thread caches only in the shared lists (the zeroer's blocks
 * must serve every thread). */
void zkn__cache_thread_shared_only(void);
/* A cached private region of class c (state SLOT_BUSY, out of the cache and
 * its cap), for its pages to be moved elsewhere; UINT32_MAX when none. */
uint32_t zkn__cache_take_private(int c);
/* The first slot of a run of class c (k blocks, one huge page; region.c)
 * whose blocks are all cached and private, taken out of the caches (state
 * SLOT_BUSY), or UINT32_MAX. *clean when all k are clean. */
uint32_t zkn__cache_take_run(int c, uint32_t k, int *clean);
/* Private regions of class c cached; a hint, racy. */
uint64_t zkn__cache_private_count(int c);
/* A region just freed (state CACHED): keep it or release it, under the cap. */
void zkn__cache_put(int c, uint32_t idx);
/* soften: MADV_FREE private regions, give daemon ones back; else release all. */
void zkn__cache_drain(int soften);
/* Sets the cap and the thread-exit hook; -1 when no thread key is left. */
int zkn__cache_init(uint64_t cap);
/* fork child: drop other threads' caches and every cached shared region. */
void zkn__cache_child_reset(void);

/* assemble.c */
/* A new region of class c (>= 2 MiB; state SLOT_BUSY) made of huge pages
 * moved from the bank and from cached private regions of other classes, the
 * rest fresh; all zero when zero is set. *whole when no page was fresh. UINT32_MAX when
 * there is nothing to move (or, with only_whole, not enough for all of it). */
uint32_t zkn__assemble(int c, int zero, int only_whole, int *whole);
/* realloc: a private region grown into class c_new by moving its pages (no
 * copy), the rest as above. The new slot (SLOT_BUSY), or UINT32_MAX when it
 * cannot (the caller copies); the old slot is left mapped, empty. */
uint32_t zkn__assemble_grow(int c_old, uint32_t idx_old, int c_new);

/* daemon_link.c: transport only; the caller maps what it gets. */
struct zkn__lent {
    int fd;
    int clean;
    uint64_t id;
};
/* Asks for up to count regions of class c, telling the daemon to keep demand
 * ready; waits a few ms at most and holds no lock others need meanwhile.
 * Returns how many (fds are the caller's), with *gen the daemon instance; 0
 * when no daemon serves now. */
int zkn__daemon_lend(int c, int count, uint32_t demand, int zeroed, struct zkn__lent *out,
                     uint32_t *gen);
/* True when id/gen belongs to the daemon instance we would RETURN to. */
int zkn__daemon_gen_current(uint32_t gen);

/* Sends queued RETURNs if the link is free (never waits for the daemon). */
void zkn__daemon_flush_returns(int wait_for_lock);
int zkn__daemon_connected(void);
/* The link was opened by another process: we are a child that ran no handler. */
int zkn__daemon_pid_changed(void);
/* Reads whatever the daemon sent (a late reply, EOF), never waiting. */
void zkn__daemon_poll(void);
uint32_t zkn__daemon_backing(void);
/* fork: lock the link; send queued FORGETs (link locked); unlock; reset in
 * the child (the id queues too). */
void zkn__daemon_lock(void);
void zkn__daemon_send_forgets_locked(void);
void zkn__daemon_unlock(void);
void zkn__daemon_atfork_child(void);

/* daemon_queue.c: ids owed to the daemon, per generation. */
enum zkn__owed { ZKN__OWED_RETURN = 0, ZKN__OWED_FORGET = 1 };
void zkn__queue_push(enum zkn__owed kind, uint64_t id, uint32_t gen);
/* Up to max ids of generation gen into out (other generations' are dropped). */
uint32_t zkn__queue_take(enum zkn__owed kind, uint32_t gen, uint64_t *out, uint32_t max);
int zkn__queue_pending(enum zkn__owed kind);
void zkn__queue_lock(void);
void zkn__queue_unlock(void);
void zkn__queue_child_reset(void);
extern int zkn__populate_daemon; /* map warm daemon regions with MAP_POPULATE */

/* daemon_trust.c: 0 when trusted, -1 when not (see the file). */
int zkn__trust_socket_dir(const char *sock_path, uid_t *dir_owner);
int zkn__trust_peer(int sock, uid_t dir_owner);
/* A REGIONS reply to a LEND of `asked` regions of class c, with its fds:
 * fills out[] and returns how many; -1 for a malformed reply, -2 for a
 * region that is not what a zknallocd lends. The fds stay the caller's. */
int zkn__trust_regions(const char *frame, size_t len, const int *fds, size_t nfds, int c,
                       int asked, uint32_t backing, struct zkn__lent *out);
/* Who serves sock: its pid and start time (else the socket file's inode). */
void zkn__daemon_instance(int sock, const char *path, uint64_t out[2]);

/* zeroer.c: background zeroing of cached blocks for calloc. */
/* A calloc of class c took a block (called before it zeroes it, if dirty,
 * under no lock): the thread zeroes one more cached block for later. */
void zkn__zeroer_calloc(int c);
/* A malloc of class c found only clean blocks: the thread owes the class
 * nothing until its next calloc. */
void zkn__zeroer_overdone(int c);
/* A block of class c was freed into the cache (under no lock). */
void zkn__zeroer_freed(int c);
/* Class c's cache was empty. When the thread runs, keeps it from taking
 * blocks, waits until it holds none of class c (a step, 40-70 us) and returns
 * 1: look in the cache again, then zkn__zeroer_unclaim(c). Else 0. */
int zkn__zeroer_claim(int c);
void zkn__zeroer_unclaim(int c);
/* Around a drain: the thread gives its block back and takes no other. */
void zkn__zeroer_pause(void);
void zkn__zeroer_resume(void);
/* In a fork child, before the cache's reset: no thread, no work owed. */
void zkn__zeroer_child_reset(void);

/* glibc_trim.c: glibc's trim policy as its own big frees would set it. */
/* A big block of this many bytes was freed (under no lock). */
void zkn__glibc_saw_free(uint64_t size);
/* The program sets a glibc threshold itself (mallopt's param). */
void zkn__glibc_user_set(int param);
void zkn__glibc_trim_child_reset(void);

/* fork.c */
/* Held for reading by every path that maps, hands out, frees or unmaps a
 * region; for writing by fork's prepare handler. */
extern pthread_rwlock_t zkn__fork_lock;
/* A page reading 1 in the process that made it and 0 in any child. */
extern _Atomic int *zkn__fork_token;
void zkn__fork_child_fixup(void);
/* In a child that ran no fork handler, the first large call resets the
 * library's view of the parent's daemon regions. */
static inline void zkn__fork_check(void)
{
    _Atomic int *t = zkn__fork_token;
    if (t ? !atomic_load_explicit(t, memory_order_relaxed) : zkn__daemon_pid_changed())
        zkn__fork_child_fixup();
}

/* init.c */
/* Once per process; returns 1 when the window is usable. Thread-safe. */
int zkn__init(void);
extern int zkn__thp_anon; /* anonymous THP: 0 never, 1 madvise, 2 always */

/* counters.c: counters not owned by a thread cache. */
struct zkn__counters {
    _Atomic uint64_t hits, misses, fallbacks, reconnects, lends, returns, libc_fallbacks;
    _Atomic uint64_t bytes_leased, bytes_live;
    _Atomic uint64_t daemon_mapped; /* daemon-backed slots mapped (live or cached) */
    /* Shown at exit only (ZK_NALLOC_SHOW_STATS), not in struct zkn_stats: */
    _Atomic uint64_t bytes_zeroed;    /* zeroed by calloc on the caller's time */
    _Atomic uint64_t bytes_moved;     /* pages moved from other classes' cached blocks */
    _Atomic uint64_t bytes_fresh;     /* private memory mapped anew */
    _Atomic uint64_t zeroed_swaps;    /* calloc misses served by daemon-zeroed blocks */
    _Atomic uint64_t bytes_zeroed_idle; /* zeroed by the background thread (zeroer.c) */
    _Atomic uint64_t zeroer_gave_back;  /* blocks it gave back half-zeroed */
};
extern struct zkn__counters zkn__ctr;

#endif
