/* libzknalloc internals shared between the client's files.
 *
 * Map of the library:
 *   libc_alloc.h   how glibc's own allocator is reached (drop-in or not)
 *   init.c         lazy one-time setup: config, window, thread key
 *   window.c       the reserved address window, its slots and slot states
 *   region.c       what backs a slot: private anonymous or a daemon memfd
 *   cache.c        per-thread and shared caches of free regions, the cap
 *   daemon_link.c  the one connection to zknallocd: HELLO, LEND, RETURN
 *   daemon_trust.c whom the client trusts: socket directory, peer, fds
 *   alloc.c        zkn_malloc & co.: the large path end to end
 *   dropin.c       malloc & co. exported as the process's allocator
 *   fork.c         fork semantics: live shared regions become copy-on-write
 *   stats.c        counters, zkn_stats, the exit report, the one log line
 *
 * Nothing here may call malloc: these files run inside it. */
#ifndef ZKN_CLIENT_INTERNAL_H
#define ZKN_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sizeclass.h"
#include "zknalloc.h"

/* ---- slots -------------------------------------------------------------- */

enum zkn_slot_state {
    SLOT_FREE = 0,   /* nothing mapped: PROT_NONE reservation */
    SLOT_LIVE = 1,   /* handed out to the program */
    SLOT_CACHED = 2, /* mapped, free, held by a cache */
    SLOT_BUSY = 3,   /* being set up or torn down, or abandoned after a failed unmap */
};

#define SLOT_F_DAEMON 1u /* MAP_SHARED memfd from the daemon (id valid) */
#define SLOT_F_CLEAN 2u  /* known to be all zero (never handed out since mapped) */

struct zkn_slot {
    _Atomic uint8_t state;
    uint8_t flags;   /* SLOT_F_*; written only by whoever owns the slot's state */
    uint16_t unused;
    uint32_t next;   /* free-slot or shared-cache list link: index + 1, 0 ends */
    uint32_t gen;    /* daemon instance the region came from */
    int32_t fd;      /* daemon region's memfd, kept for fork (valid with SLOT_F_DAEMON) */
    uint64_t id;     /* daemon region id */
};

struct zkn_class_win {
    uintptr_t base;        /* first slot */
    uint64_t size;         /* bytes mapped per region (the class size) */
    unsigned shift;        /* log2 of the slot stride, a power of two >= size */
    uint32_t nslots;       /* 0: the class is not served from the window */
    struct zkn_slot *slots;
    /* Below: under zkn_glock. */
    uint32_t hwm;          /* slots [0, hwm) have been used at least once */
    uint32_t free_head;    /* released slots, linked through next */
    uint32_t shared_head;  /* shared-cache regions, linked through next */
    uint32_t shared_count;
    uint32_t lends;        /* daemon misses so far: sizes the next LEND batch */
};

struct zkn_window {
    _Atomic uintptr_t base;
    _Atomic uintptr_t len; /* 0 until reserved: every pointer is then glibc's */
    unsigned sub_shift;    /* log2 of each class's sub-window */
    struct zkn_class_win cls[ZKN_CLASS_COUNT];
};

extern struct zkn_window zkn_win;
/* Guards slot free lists, shared caches and the thread-cache registry.
 * Lock order: zkn_fork_lock, then the daemon link lock, then zkn_glock, then
 * the link's id-queue lock. */
extern pthread_mutex_t zkn_glock;

/* Class of a pointer inside the window, or -1 for a pointer that is not ours. */
static inline int zkn_ptr_class(const void *p)
{
    uintptr_t off = (uintptr_t)p - atomic_load_explicit(&zkn_win.base, memory_order_relaxed);
    if (off >= atomic_load_explicit(&zkn_win.len, memory_order_acquire))
        return -1;
    return (int)(off >> zkn_win.sub_shift);
}

static inline void *zkn_slot_addr(int c, uint32_t idx)
{
    return (void *)(zkn_win.cls[c].base + ((uintptr_t)idx << zkn_win.cls[c].shift));
}

/* Slot index of p in class c; sets *exact when p is a slot's first byte.
 * Returns UINT32_MAX past the class's slots. */
static inline uint32_t zkn_slot_of(int c, const void *p, int *exact)
{
    const struct zkn_class_win *w = &zkn_win.cls[c];
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
int zkn_window_reserve(void);
/* A never-used or released slot of class c (state SLOT_BUSY), or UINT32_MAX. */
uint32_t zkn_slot_take(int c);
/* Back to the free list; the slot must already be PROT_NONE again. */
void zkn_slot_put(int c, uint32_t idx);
void zkn_slot_put_locked(int c, uint32_t idx);
/* The smallest class that holds size bytes at the given alignment, or -1. */
int zkn_class_for(size_t size, size_t align);
_Noreturn void zkn_die_bad_pointer(const char *fn, const void *p, const char *why);

/* region.c */
/* Maps a fresh private anonymous region into a new slot. UINT32_MAX on failure. */
uint32_t zkn_region_new_local(int c);
/* Maps a daemon memfd into a new slot, keeping fd. UINT32_MAX on failure
 * (fd closed; the caller returns the id). */
uint32_t zkn_region_map_fd(int c, int fd, uint64_t id, int clean, uint32_t gen);
/* Unmaps a region (slot back to PROT_NONE), frees the slot and, for a region
 * of the live daemon, queues its RETURN. */
void zkn_region_release(int c, uint32_t idx);
/* Makes a dirty region all zero (memset: measured cheapest, see region.c). */
void zkn_region_zero(int c, uint32_t idx);
/* MADV_FREE for a private cached region (contents become undefined). */
void zkn_region_soften(int c, uint32_t idx);
/* fork prepare: re-maps a live daemon region in place as a private mapping
 * of its file (copy-on-write); it is no longer a daemon region. 0 or -1. */
int zkn_region_make_private(int c, uint32_t idx);
/* fork child: a live daemon region absent here (DONTFORK) gets a private copy
 * read from its fd (copy) or an inaccessible reservation. */
void zkn_region_child_rescue(int c, uint32_t idx, int copy);
/* Grows a private region into a bigger class by moving its pages (no copy).
 * Returns the new slot or UINT32_MAX when it cannot (the caller copies). */
uint32_t zkn_region_move_grow(int c_old, uint32_t idx_old, int c_new);

/* cache.c */
struct zkn_tcache;
/* A cached region of class c made LIVE, or UINT32_MAX. *flags gets its flags. */
uint32_t zkn_cache_get(int c, uint8_t *flags);
/* A region just freed (state CACHED): keep it or release it, under the cap. */
void zkn_cache_put(int c, uint32_t idx);
/* soften: MADV_FREE private regions, give daemon ones back; else release all. */
void zkn_cache_drain(int soften);
void zkn_cache_thread_exit(void *tc);
/* fork child: drop other threads' caches and every cached shared region. */
void zkn_cache_child_reset(void);
extern uint64_t zkn_cache_cap;
extern _Atomic uint64_t zkn_bytes_cached;

/* daemon_link.c: transport only; the caller maps what it gets. */
struct zkn_lent {
    int fd;
    int clean;
    uint64_t id;
};
/* Asks for up to count regions of class c; waits a few ms at most and holds
 * no lock others need meanwhile. Returns how many (fds are the caller's),
 * with *gen the daemon instance; 0 when no daemon serves now. */
int zkn_daemon_lend(int c, int count, int zeroed, struct zkn_lent *out, uint32_t *gen);
/* Whether a miss of class c should ask the daemon at all (backing choice). */
int zkn_daemon_preferred(int c);
/* True when id/gen belongs to the daemon instance we would RETURN to. */
int zkn_daemon_gen_current(uint32_t gen);
void zkn_daemon_queue_return(uint64_t id, uint32_t gen);
/* Sends queued RETURNs if the link is free (never waits for the daemon). */
void zkn_daemon_flush_returns(int wait_for_lock);
int zkn_daemon_connected(void);
/* Reads whatever the daemon sent (a late reply, EOF), never waiting. */
void zkn_daemon_poll(void);
uint32_t zkn_daemon_backing(void);
/* fork: lock the link; queue a FORGET; send queued FORGETs (link locked);
 * lock the id queues; undo both locks; reset in the child. */
void zkn_daemon_lock(void);
void zkn_daemon_forget(uint64_t id, uint32_t gen);
void zkn_daemon_send_forgets_locked(void);
void zkn_daemon_lock_queue(void);
void zkn_daemon_unlock_all(void);
void zkn_daemon_atfork_child(void);
extern int zkn_populate_daemon; /* map warm daemon regions with MAP_POPULATE */

/* daemon_trust.c: 0 when trusted, -1 when not (see the file). */
int zkn_trust_socket_dir(const char *sock_path, uid_t *dir_owner);
int zkn_trust_peer(int sock, uid_t dir_owner);
int zkn_trust_region_fd(int fd, uint64_t size, uint32_t backing);

/* fork.c */
/* Held for reading by every path that maps, hands out, frees or unmaps a
 * region; for writing by fork's prepare handler. */
extern pthread_rwlock_t zkn_fork_lock;
/* A page reading 1 in the process that made it and 0 in any child. */
extern _Atomic int *zkn_fork_token;
void zkn_fork_child_fixup(void);
/* In a child that ran no fork handler, the first large call resets the
 * library's view of the parent's daemon regions. */
static inline void zkn_fork_check(void)
{
    _Atomic int *t = zkn_fork_token;
    if (t && !atomic_load_explicit(t, memory_order_relaxed))
        zkn_fork_child_fixup();
}

/* init.c */
/* Once per process; returns 1 when the window is usable. Thread-safe. */
int zkn_init(void);
extern int zkn_thp_anon; /* anonymous THP is available (madvise or always) */
extern pthread_key_t zkn_tkey;
uint64_t zkn_now_ns(void);

/* stats.c: counters not owned by a thread cache. */
struct zkn_counters {
    _Atomic uint64_t hits, misses, fallbacks, reconnects, lends, returns, libc_fallbacks;
    _Atomic uint64_t bytes_leased, bytes_live;
    _Atomic uint64_t daemon_mapped; /* daemon-backed slots mapped (live or cached) */
};
extern struct zkn_counters zkn_ctr;
/* Writes one line to stderr, once per process, whatever the caller. */
void zkn_log_once(const char *msg);
/* write(2) helpers, no stdio. */
void zkn_write_str(int fd, const char *s);
char *zkn_fmt_u64(char *buf, uint64_t v); /* buf >= 21 bytes; returns start */
char *zkn_fmt_hex(char *buf, uint64_t v); /* buf >= 19 bytes */

#endif
