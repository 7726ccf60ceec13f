/* The pool's learned targets: a LEND that finds no region of its class
 * ready raises its uid's target for the class, and regions are prepared in
 * the background up to it, within the pool cap (pool_prepare_one). */
#include "prepare.h"

#include <errno.h>
#include <string.h>

#include "log.h"
#include "zkn_proto.h"

/* Most regions of one class a learned target keeps ready for one uid. */
#define POOL_TARGET_MAX 64u

/* Regions of the class that uid's LENDs can be served from now or soon: its
 * partition's, and the never-lent ones (prewarmed) that any uid may take.
 * Without the latter, a daemon prewarmed for many processes made regions
 * beside a pool still full of ready ones, and destroyed them again at the
 * pool cap once the lent ones came back. (They count for every uid: with
 * several, one may find the class short until its next LEND tops it up.) */
static uint64_t ready_or_coming(struct pool *p, const struct partition *part, int cls)
{
    uint64_t n = part->clean[cls].count + part->dirty[cls].count + part->preparing[cls];
    for (const struct region *r = p->zeroing.head; r; r = r->link.next)
        n += r->uid == part->uid && r->size_class == cls;
    const struct partition *unowned =
        part->uid == REGION_UNOWNED ? NULL : pool_partition(p, REGION_UNOWNED, 0);
    if (unowned)
        n += unowned->clean[cls].count + unowned->preparing[cls];
    return n;
}

/* held: count the regions of the class uid holds as its own. After a LEND
 * served from the pool, the target is the client's demand, which counts the
 * blocks it holds; counting only the ready ones made the daemon create as
 * many regions again as a process held, and destroy them at the pool cap when
 * the leases came back. After a miss the class is short now: ready only. */
static void top_up(struct pool *p, struct partition *part, int cls, int held)
{
    if (p->shutting_down)
        return;
    uint64_t have = ready_or_coming(p, part, cls) + (held ? part->lent[cls] : 0);
    for (; have < part->target[cls]; have++)
        if (pool_prepare_one(p, part->uid, cls) < 0)
            return; /* the pool cap or memory: the next miss tries again */
}

/* Raises uid's target for the class to want, as far as the pool cap lets. */
static struct partition *raise_target(struct pool *p, uid_t uid, int cls, uint64_t want)
{
    struct partition *part = pool_partition(p, uid, 1);
    uint64_t fit = p->cfg->pool_bytes / zkn_class_size(cls);
    if (!part)
        return NULL;
    if (want > fit)
        want = fit;
    if (want > POOL_TARGET_MAX)
        want = POOL_TARGET_MAX;
    if (want > part->target[cls])
        part->target[cls] = (uint32_t)want;
    part->demand_ms[cls] = pool_now_ms(p);
    return part;
}

void pool_note_not_warm(struct pool *p, uid_t uid, int size_class, uint32_t count)
{
    pool_count_not_warm(p, size_class);
    struct partition *part = pool_partition(p, uid, 1);
    if (!part)
        return;
    /* One more per miss, or the whole batch asked for at once. A miss while
     * regions are being prepared for the class is most likely the same need
     * asked again: it does not raise the target. (Regions being zeroed do not
     * count: missing while they are means the target is too low.) */
    uint64_t want = part->target[size_class] + (part->preparing[size_class] ? 0u : 1u);
    if (want < count)
        want = count;
    if ((part = raise_target(p, uid, size_class, want)))
        top_up(p, part, size_class, 0);
}

void pool_note_served(struct pool *p, uid_t uid, int size_class, uint32_t count, uint32_t got)
{
    pool_count_served_warm(p, size_class);
    if (pool_class_inline(p, size_class))
        return; /* made inline when missing: nothing to keep ready */
    struct partition *part = raise_target(p, uid, size_class, got < count ? count : 0);
    if (part)
        top_up(p, part, size_class, 1);
}

uint64_t pool_class_target(const struct pool *p, int size_class)
{
    uint64_t t = 0;
    for (const struct partition *part = p->parts; part; part = part->next)
        t += part->target[size_class];
    return t;
}

void pool_prewarm(struct pool *p, int size_class, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        int rc = pool_prepare_one(p, REGION_UNOWNED, size_class);
        if (rc == -ENOSPC) {
            log_warn("prewarm: %u of %u regions of %llu bytes fit under the pool cap "
                     "(--pool-bytes %llu)",
                     i, count, (unsigned long long)zkn_class_size(size_class),
                     (unsigned long long)p->cfg->pool_bytes);
            return;
        }
        if (rc < 0) {
            log_warn("prewarm: %s", strerror(-rc));
            return;
        }
    }
}
