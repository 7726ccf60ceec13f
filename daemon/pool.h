/* The pool: idle regions per uid partition and size class, clean or dirty,
 * background zeroing and warming on libuv's thread pool, the pool cap, trim
 * and idle decay. Runs on the event loop thread; workers touch only the one
 * region they were given. */
#ifndef ZKND_POOL_H
#define ZKND_POOL_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "backing.h"
#include "config.h"
#include "region.h"
#include "sizeclass.h"

struct partition {
    uid_t uid;
    struct region_list clean[ZKN_CLASS_COUNT];
    struct region_list dirty[ZKN_CLASS_COUNT];
    struct partition *next;
};

struct class_counters {
    uint64_t hits, misses, lent;
};

/* Why the pool refused or the protocol failed: indexed by ZKN_E_* code. */
#define POOL_REFUSAL_SLOTS 16

struct pool {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct backing *backing;
    struct partition *parts;
    struct region_table ids;
    uint64_t next_id;
    uint64_t idle_bytes;   /* clean + dirty + being zeroed */
    uint64_t lent_bytes;
    uint64_t busy_bytes;   /* being zeroed */
    struct region_list zeroing; /* regions a worker is zeroing right now */
    uint32_t zero_inflight;
    uint32_t jobs_inflight; /* every worker job, for shutdown */
    uint64_t created, destroyed, zeroed, lends, returns, reclaimed, trimmed_bytes, decayed;
    uint64_t restored, saved;
    uint64_t forgotten;    /* lent regions let go of without reuse (pool_forget) */
    uint64_t refusals[POOL_REFUSAL_SLOTS];
    const char *pressure_source; /* "psi", "simulated" or NULL (off) */
    uint64_t pressure_events, pressure_trimmed_bytes;
    struct class_counters cls[ZKN_CLASS_COUNT];
    int shutting_down;
};

/* Called on the loop thread when an asynchronous creation ends: r is lent
 * (state LENT, uid set) or NULL with err (-errno). */
typedef void (*pool_created_fn)(void *ctx, struct region *r, int err);

int pool_init(struct pool *p, uv_loop_t *loop, const struct config *cfg,
              const struct backing *b);

/* A pooled region of the class for uid, or NULL. want_zero: clean ones only;
 * otherwise a dirty one first (clean ones are kept for zeroed requests). */
struct region *pool_take(struct pool *p, uid_t uid, int size_class, int want_zero);

/* A new region, lent to uid. Classes of 2 MiB and more are created and warmed
 * (huge pages) on a worker and reported through done; returns 1 then. Smaller
 * ones are created at once: returns 0 with *out set. -errno on failure. */
int pool_create_for_lend(struct pool *p, uid_t uid, int size_class, pool_created_fn done,
                         void *ctx, struct region **out);

/* A lent region comes back (RETURN or a dead client): pooled dirty and zeroed
 * in the background, or destroyed past the pool cap. */
void pool_give_back(struct pool *p, struct region *r);

/* A lent region that another process may still map (a holder's fork child,
 * a holder whose liveness cannot be known): the daemon lets go of it without
 * zeroing, pooling or lending it again; the memory lives on in whatever still
 * maps it and the kernel frees it with the last mapping. */
void pool_forget(struct pool *p, struct region *r);

/* Starts creating count warm, clean regions of the class for any uid. */
void pool_prewarm(struct pool *p, int size_class, uint32_t count);

/* Pools a region restored from an earlier daemon instance under a new id:
 * clean ones as clean, others dirty (zeroed in the background). Past the pool
 * cap it is destroyed. Returns 0 when pooled. */
int pool_adopt(struct pool *p, struct region *r, uid_t uid, int clean);

/* Calls fn for every idle region (clean, dirty, or being zeroed: those
 * count as dirty), e.g. to save them. */
void pool_for_each_idle(struct pool *p, void (*fn)(void *ctx, struct region *r, int clean),
                        void *ctx);

/* Destroys idle regions until the pool holds at most target bytes (regions
 * being zeroed are left alone). Returns the bytes freed. */
uint64_t pool_trim(struct pool *p, uint64_t target);

/* Destroys regions idle longer than max_idle_ms. Returns bytes freed. */
uint64_t pool_decay(struct pool *p, uint64_t max_idle_ms);

uint64_t pool_clean_bytes(const struct pool *p);
uint64_t pool_dirty_bytes(const struct pool *p);
/* Per class: pooled clean and dirty counts, summed over partitions. */
void pool_class_counts(const struct pool *p, int size_class, uint64_t *clean, uint64_t *dirty);

/* Destroys every idle region; later give-backs destroy too. */
void pool_shutdown(struct pool *p);

uint64_t pool_now_ms(const struct pool *p);

#endif
