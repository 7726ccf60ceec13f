/* fork() with the kernel's meaning at the kernel's cost. Daemon regions are
 * MAP_SHARED memfds, which a child would share with its parent, so:
 *   - every daemon mapping is MADV_DONTFORK: a child that runs no handler
 *     (_Fork, raw clone) never reaches one; better a fault in that rare child
 *     than two processes writing one block;
 *   - fork's prepare handler re-maps each live daemon region in place as a
 *     MAP_PRIVATE mapping of the same memfd (no copy: microseconds), which
 *     the child inherits. The kernel's copy-on-write then gives parent and
 *     child exact snapshots at the fork, whatever other threads write;
 *   - such a region may be read by the child through the file for as long as
 *     the child lives, so the daemon is told to FORGET it (drop the lease and
 *     its file, never zero or re-lend it) before the fork happens; the kernel
 *     frees the memory with the last mapping. From then on it is private
 *     memory of the parent's, never returned, and unmapped when freed rather
 *     than cached: the file's pages stay allocated beside the parent's
 *     copy-on-write copies for as long as it is mapped (measured: 512 MiB of
 *     shmem beside 512 MiB rewritten after the child exited);
 *   - cached (free) daemon regions stay shared and do not go to the child.
 * zkn__fork_lock keeps the slot states still meanwhile: every path that maps,
 * hands out, frees or unmaps a region holds it for reading, and prepare for
 * writing. No path holds it while waiting for the daemon.
 *
 * A child that ran no handler is noticed by the fork token: a page with
 * MADV_WIPEONFORK reads zero in every child, however it was made; the first
 * large allocation or free there runs the child's fix-up. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

pthread_rwlock_t zkn__fork_lock = PTHREAD_RWLOCK_INITIALIZER;
_Atomic int *zkn__fork_token;

/* Each live daemon region becomes private, and the daemon forgets it. */
static void make_live_regions_forkable(void)
{
    if (!atomic_load(&zkn__ctr.daemon_mapped))
        return;
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        struct zkn__class_win *w = &zkn__win.cls[c];
        for (uint32_t i = 0; i < w->hwm; i++) {
            struct zkn__slot *s = &w->slots[i];
            if (atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_LIVE ||
                !(s->flags & SLOT_F_DAEMON))
                continue;
            uint64_t id = s->id;
            uint32_t gen = s->gen;
            /* On failure it stays shared and DONTFORK: the child's fix-up
             * then maps it privately from the inherited fd. A run is
             * forgotten once, whatever number of its parts are live. */
            if (zkn__region_make_private(c, i) == 0 && zkn__daemon_gen_current(gen))
                zkn__queue_push(ZKN__OWED_FORGET, id, gen);
        }
    }
}

static void prepare(void)
{
    pthread_rwlock_wrlock(&zkn__fork_lock);
    zkn__daemon_lock();
    make_live_regions_forkable();
    zkn__daemon_send_forgets_locked();
    /* Every other lock too, so that none is inherited held. */
    pthread_mutex_lock(&zkn__glock);
    zkn__queue_lock();
}

static void parent(void)
{
    pthread_mutex_unlock(&zkn__glock);
    zkn__queue_unlock();
    zkn__daemon_unlock();
    pthread_rwlock_unlock(&zkn__fork_lock);
}

/* Live daemon regions the prepare handler could not make private (or every
 * one, in a child that ran no handler) are absent here: DONTFORK. A child of
 * fork() copies them from the inherited fd (the rare fallback); a child that
 * ran no handler gets an inaccessible reservation: mapping the file would let
 * it read whatever the daemon lends there once the parent returns it. */
static void rescue_live_shared(int copy)
{
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        struct zkn__class_win *w = &zkn__win.cls[c];
        for (uint32_t i = 0; i < w->hwm; i++) {
            struct zkn__slot *s = &w->slots[i];
            if (atomic_load_explicit(&s->state, memory_order_relaxed) == SLOT_LIVE &&
                (s->flags & SLOT_F_DAEMON))
                zkn__region_child_rescue(c, i, copy);
        }
    }
}

static void child_reset(int handled)
{
    pthread_rwlock_t fresh = PTHREAD_RWLOCK_INITIALIZER;
    zkn__fork_lock = fresh; /* held by the parent's forking thread: not ours */
    pthread_mutex_init(&zkn__glock, NULL);
    zkn__daemon_atfork_child(); /* new generation: nothing is returned from here */
    if (atomic_load(&zkn__ctr.daemon_mapped))
        rescue_live_shared(handled);
    zkn__zeroer_child_reset(); /* its half-zeroed block goes back to the cache */
    zkn__glibc_trim_child_reset();
    zkn__cache_child_reset();
    zkn__region_child_close_runs();
    zkn__bank_child_reset();
    if (zkn__fork_token)
        atomic_store(zkn__fork_token, 1);
}

static void child(void)
{
    child_reset(1);
}

void zkn__fork_child_fixup(void)
{
    child_reset(0);
}

/* Registered at load time rather than at the first large request: child
 * handlers run in registration order, and one registered before ours that
 * allocated a large block would find our locks still held. Failure (ENOMEM)
 * leaves fork relying on the token; the library must not fail over it. */
__attribute__((constructor)) static void register_fork_handlers(void)
{
    size_t page = zkn__page_size();
    void *t = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* WIPEONFORK needs Linux 4.14; without it the daemon link still notices
     * a foreign pid before it speaks. */
    if (t != MAP_FAILED && madvise(t, page, MADV_WIPEONFORK) == 0) {
        zkn__fork_token = t;
        atomic_store(zkn__fork_token, 1);
    } else if (t != MAP_FAILED) {
        (void)munmap(t, page);
    }
    (void)pthread_atfork(prepare, parent, child);
}
