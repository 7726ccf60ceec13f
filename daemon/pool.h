/* The pool: idle regions per uid partition and size class, clean or dirty,
 * background zeroing and warming on idle-priority workers, the pool cap, trim
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
#include "workers.h"

struct partition {
    uid_t uid;
    struct region_list clean[ZKN_CLASS_COUNT];
    struct region_list dirty[ZKN_CLASS_COUNT];
    /* Learned from this uid's LENDs: regions of a class to keep at hand
     * (prepare.c: held or ready after a warm LEND, ready after a miss). */
    uint32_t target[ZKN_CLASS_COUNT];
    uint32_t preparing[ZKN_CLASS_COUNT]; /* background creations in flight */
    uint32_t lent[ZKN_CLASS_COUNT];      /* regions of the class this uid holds */
    uint64_t demand_ms[ZKN_CLASS_COUNT]; /* last miss or warm lend: the decay clock */
    struct partition *next;
};

/* hits: regions taken from the pool; misses: LENDs that found none ready
 * (created inline or answered not_warm); served_warm: LENDs answered from
 * the pool; prepared: regions made in the background (prewarm, targets). */
struct class_counters {
    uint64_t hits, misses, lent;
    uint64_t served_warm, not_warm, prepared;
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
    uint64_t preparing_bytes; /* being created for the pool: counted against its cap */
    struct region_list zeroing; /* regions a worker is zeroing right now */
    uint32_t zero_inflight;
    uint64_t created, destroyed, zeroed, lends, returns, reclaimed, trimmed_bytes, decayed;
    uint64_t restored, saved;
    uint64_t forgotten;    /* lent regions let go of without reuse (pool_forget) */
    uint64_t refusals[POOL_REFUSAL_SLOTS];
    const char *pressure_source; /* "psi", "simulated" or NULL (off) */
    uint64_t pressure_events, pressure_trimmed_bytes;
    struct class_counters cls[ZKN_CLASS_COUNT];
    int shutting_down;
    struct workers workers;
};

int pool_init(struct pool *p, uv_loop_t *loop, const struct config *cfg,
              const struct backing *b);

/* A pooled region of the class for uid, or NULL. want_zero: clean ones only;
 * otherwise a dirty one first (clean ones are kept for zeroed requests). */
struct region *pool_take(struct pool *p, uid_t uid, int size_class, int want_zero);

/* Whether a region of the class is cheap enough to create inside a LEND:
 * below the huge page size, or any class on 4 KiB memfd backing (nothing to
 * warm). Other classes are only ever lent from the pool. */
int pool_class_inline(const struct pool *p, int size_class);

/* A new region of an inline class, created now and lent to uid. Counts a
 * miss. 0 with *out set, or -errno. */
int pool_create_inline(struct pool *p, uid_t uid, int size_class, struct region **out);

/* A lent region comes back (RETURN or a dead client): pooled dirty and zeroed
 * in the background, or destroyed past the pool cap. */
void pool_give_back(struct pool *p, struct region *r);

/* A lent region that another process may still map (a holder's fork child,
 * a holder whose liveness cannot be known): the daemon lets go of it without
 * zeroing, pooling or lending it again; the memory lives on in whatever still
 * maps it and the kernel frees it with the last mapping. */
void pool_forget(struct pool *p, struct region *r);

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

/* Destroys regions idle longer than max_idle_ms and halves the ready target
 * of every class nobody asked for in that time. Returns bytes freed. */
uint64_t pool_decay(struct pool *p, uint64_t max_idle_ms);

uint64_t pool_clean_bytes(const struct pool *p);
uint64_t pool_dirty_bytes(const struct pool *p);
/* Per class: pooled clean and dirty counts, summed over partitions. */
void pool_class_counts(const struct pool *p, int size_class, uint64_t *clean, uint64_t *dirty);

/* Destroys every idle region; later give-backs destroy too. */
void pool_shutdown(struct pool *p);

uint64_t pool_now_ms(const struct pool *p);

/* Counters the server's parts report: only pool.c writes pool fields. */
void pool_count_refusal(struct pool *p, uint32_t code); /* a ZKN_E_* code */
void pool_count_lend(struct pool *p);                    /* a REGIONS reply */
void pool_count_not_warm(struct pool *p, int size_class); /* a miss answered not_warm */
void pool_count_served_warm(struct pool *p, int size_class);
void pool_count_return(struct pool *p);                  /* a region RETURNed */
void pool_count_reclaimed(struct pool *p);               /* a dead client's lease */
void pool_count_saved(struct pool *p, uint64_t n);       /* handed to the fd store */
void pool_count_pressure(struct pool *p, uint64_t trimmed_bytes);
void pool_set_pressure_source(struct pool *p, const char *source);

/* For prepare.c, the pool's other half: uid's partition (made when create
 * and missing; NULL without memory), and one background creation of a clean
 * region for it: -ENOSPC when it would not fit under the pool cap, else 0 or
 * -errno. */
struct partition *pool_partition(struct pool *p, uid_t uid, int create);
int pool_prepare_one(struct pool *p, uid_t uid, int size_class);

/* Frees what pool_init allocated, after pool_shutdown and the loop's end. */
void pool_free(struct pool *p);

#endif
