/* fork(): parent and child must never share heap writes, but daemon regions
 * are MAP_SHARED and a child inherits them as such. In the child handler every
 * live shared region is replaced by a private copy at the same address, and
 * cached shared regions (the parent's lease) are dropped. Until the child has
 * copied, a write by the parent would show in the child, so the parent's
 * handler waits for the child's "done" on a pipe made in prepare; fork()
 * returns in the parent only after that.
 *
 * Only fork() runs these handlers: posix_spawn and vfork stay cheap. A process
 * with no daemon region pays a lock round and nothing else. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static int sync_pipe[2] = {-1, -1};

static void prepare(void)
{
    zkn_daemon_atfork_prepare(); /* every lock, so none is inherited held */
    if (atomic_load(&zkn_ctr.daemon_mapped) && pipe2(sync_pipe, O_CLOEXEC) != 0)
        sync_pipe[0] = sync_pipe[1] = -1; /* no way to wait: the child still copies */
}

static void parent(void)
{
    if (sync_pipe[0] >= 0) {
        char b;
        close(sync_pipe[1]);
        /* A byte when the child is done, or EOF if it died (or fork failed). */
        while (read(sync_pipe[0], &b, 1) < 0 && errno == EINTR)
            ;
        close(sync_pipe[0]);
        sync_pipe[0] = sync_pipe[1] = -1;
    }
    zkn_daemon_atfork_parent();
}

static void child(void)
{
    zkn_daemon_atfork_child(); /* new generation: nothing is returned from here */
    if (atomic_load(&zkn_ctr.daemon_mapped)) {
        for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
            struct zkn_class_win *w = &zkn_win.cls[c];
            for (uint32_t i = 0; i < w->hwm; i++) {
                struct zkn_slot *s = &w->slots[i];
                if (atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_LIVE ||
                    !(s->flags & SLOT_F_DAEMON))
                    continue;
                if (zkn_region_privatize(c, i) != 0)
                    zkn_die_bad_pointer("fork", zkn_slot_addr(c, i),
                                        "cannot make a shared block private in the child");
            }
        }
    }
    if (sync_pipe[1] >= 0) {
        char b = 1;
        while (write(sync_pipe[1], &b, 1) < 0 && errno == EINTR)
            ;
        close(sync_pipe[1]);
    }
    if (sync_pipe[0] >= 0)
        close(sync_pipe[0]);
    sync_pipe[0] = sync_pipe[1] = -1;
    zkn_cache_child_reset();
}

/* Registered at load time rather than at the first large request: child
 * handlers run in registration order, and one registered before ours that
 * allocated a large block would find our locks still held. Failure (ENOMEM)
 * leaves fork unprotected; the library must not fail allocations over it. */
__attribute__((constructor)) static void register_fork_handlers(void)
{
    (void)pthread_atfork(prepare, parent, child);
}
