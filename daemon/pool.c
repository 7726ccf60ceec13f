/* See pool.h. */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "zkn_proto.h"

enum job_kind { JOB_ZERO, JOB_CREATE_POOL };

struct job {
    struct work work; /* first: a job is its work item */
    struct pool *pool;
    enum job_kind kind;
    struct region *r;
    int size_class;
    uid_t uid;
    uint64_t id;
    int err;
};

uint64_t pool_now_ms(const struct pool *p) { return uv_now(p->loop); }

int pool_init(struct pool *p, uv_loop_t *loop, const struct config *cfg,
              const struct backing *b)
{
    uint32_t seed = 0;
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->cfg = cfg;
    p->backing = b;
    /* Ids start at a random 32-bit epoch so a client holding ids from an
     * earlier daemon instance cannot name a region of this one. */
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    p->next_id = ((uint64_t)(seed | 1u) << 32) + 1;
    if (rtable_init(&p->ids) < 0)
        return -1;
    /* Zeroing jobs plus room for preparing ones beside them. */
    int rc = workers_start(&p->workers, loop, (int)cfg->zero_workers + 2);
    if (rc < 0) {
        log_error("cannot start background workers: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

struct partition *pool_partition(struct pool *p, uid_t uid, int create)
{
    struct partition *part;
    for (part = p->parts; part; part = part->next)
        if (part->uid == uid)
            return part;
    if (!create || !(part = calloc(1, sizeof *part)))
        return NULL;
    part->uid = uid;
    part->next = p->parts;
    p->parts = part;
    return part;
}

static void destroy_region(struct pool *p, struct region *r)
{
    rtable_remove(&p->ids, r);
    p->destroyed++;
    region_destroy(r);
}

static struct region *take_from(struct pool *p, struct partition *part, int cls, int want_zero)
{
    struct region *r = NULL;
    if (!part)
        return NULL;
    if (!want_zero)
        r = rlist_pop(&part->dirty[cls]);
    if (r) {
        r->lent_clean = 0;
    } else if ((r = rlist_pop(&part->clean[cls]))) {
        r->lent_clean = 1;
    }
    if (r)
        p->idle_bytes -= r->size;
    return r;
}

/* Counts a lease in and out of the pool's and its uid's totals. */
static void count_lent(struct pool *p, const struct region *r, int lent)
{
    struct partition *part = pool_partition(p, r->uid, lent);
    uint32_t *mine = part ? &part->lent[r->size_class] : NULL;
    if (lent) {
        p->lent_bytes += r->size;
        p->cls[r->size_class].lent++;
        if (mine)
            ++*mine;
    } else {
        p->lent_bytes -= r->size;
        p->cls[r->size_class].lent--;
        if (mine && *mine)
            --*mine; /* not counted if its partition could not be made */
    }
}

static void mark_lent(struct pool *p, struct region *r, uid_t uid)
{
    if (r->state != REGION_CLEAN && r->state != REGION_DIRTY)
        r->lent_clean = 1; /* just created: a new file reads as zeroes */
    r->uid = uid;
    r->state = REGION_LENT;
    count_lent(p, r, 1);
}

struct region *pool_take(struct pool *p, uid_t uid, int size_class, int want_zero)
{
    struct region *r = take_from(p, pool_partition(p, uid, 0), size_class, want_zero);
    if (!r)
        r = take_from(p, pool_partition(p, REGION_UNOWNED, 0), size_class, want_zero);
    if (r) {
        mark_lent(p, r, uid);
        p->cls[size_class].hits++;
    }
    return r;
}

/* ---- worker jobs ---- */

static void job_work(struct work *w)
{
    struct job *j = (struct job *)w;
    struct pool *p = j->pool;
    if (j->kind == JOB_ZERO) {
        j->err = backing_zero(p->backing, j->r->fd, j->r->map, j->r->size);
        return;
    }
    j->r = region_create(p->backing, j->size_class, j->id);
    if (!j->r) {
        j->err = -errno;
        return;
    }
    j->err = backing_warm(p->backing, j->r->fd, j->r->map, j->r->size);
    if (j->err) {
        region_destroy(j->r);
        j->r = NULL;
    }
}

static void schedule_zeroing(struct pool *p);

static void pool_as_clean(struct pool *p, struct region *r)
{
    struct partition *part = p->shutting_down ? NULL : pool_partition(p, r->uid, 1);
    if (!part) {
        destroy_region(p, r);
        return;
    }
    r->state = REGION_CLEAN;
    r->idle_since_ms = pool_now_ms(p);
    rlist_push(&part->clean[r->size_class], r);
    p->idle_bytes += r->size;
}

static void job_done(struct work *w)
{
    struct job *j = (struct job *)w;
    struct pool *p = j->pool;
    switch (j->kind) {
    case JOB_ZERO:
        rlist_remove(&p->zeroing, j->r);
        p->zero_inflight--;
        p->busy_bytes -= j->r->size;
        p->idle_bytes -= j->r->size;
        if (j->err) {
            log_warn("zeroing region %llu failed (%s): destroyed",
                     (unsigned long long)j->r->id, strerror(-j->err));
            destroy_region(p, j->r);
        } else {
            p->zeroed++;
            pool_as_clean(p, j->r);
        }
        schedule_zeroing(p);
        break;
    case JOB_CREATE_POOL:
        p->preparing_bytes -= zkn_class_size(j->size_class);
        /* Partitions are freed at shutdown: touch them only while running. */
        if (!p->shutting_down) {
            struct partition *part = pool_partition(p, j->uid, 0);
            if (part && part->preparing[j->size_class])
                part->preparing[j->size_class]--;
        }
        if (j->err) {
            log_warn("preparing a %llu-byte region failed: %s",
                     (unsigned long long)zkn_class_size(j->size_class), strerror(-j->err));
            break;
        }
        p->created++;
        p->cls[j->size_class].prepared++;
        if (rtable_insert(&p->ids, j->r) < 0) {
            region_destroy(j->r);
            break;
        }
        if (p->idle_bytes + j->r->size > p->cfg->pool_bytes) {
            destroy_region(p, j->r);
            break;
        }
        j->r->uid = j->uid;
        pool_as_clean(p, j->r);
        break;
    }
    free(j);
}

static void submit(struct pool *p, struct job *j)
{
    j->pool = p;
    j->work.run = job_work;
    j->work.done = job_done;
    workers_submit(&p->workers, &j->work);
}

static struct region *oldest_dirty(struct pool *p)
{
    struct region *best = NULL;
    for (struct partition *part = p->parts; part; part = part->next)
        for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
            struct region *r = part->dirty[c].tail;
            if (r && (!best || r->idle_since_ms < best->idle_since_ms))
                best = r;
        }
    return best;
}

static void schedule_zeroing(struct pool *p)
{
    while (!p->shutting_down && p->zero_inflight < p->cfg->zero_workers) {
        struct region *r = oldest_dirty(p);
        if (!r)
            return;
        struct job *j = calloc(1, sizeof *j);
        if (!j)
            return; /* stays dirty; retried on the next give-back */
        rlist_remove(&pool_partition(p, r->uid, 0)->dirty[r->size_class], r);
        r->state = REGION_BUSY;
        j->kind = JOB_ZERO;
        j->r = r;
        submit(p, j);
        p->zero_inflight++;
        p->busy_bytes += r->size;
        rlist_push(&p->zeroing, r);
    }
}

int pool_class_inline(const struct pool *p, int size_class)
{
    return zkn_class_size(size_class) < ZKN_HUGE_PAGE_SIZE ||
           p->backing->kind == ZKN_BACKING_MEMFD_4K;
}

int pool_create_inline(struct pool *p, uid_t uid, int size_class, struct region **out)
{
    *out = NULL;
    p->cls[size_class].misses++;
    struct region *r = region_create(p->backing, size_class, p->next_id++);
    if (!r)
        return -errno;
    p->created++;
    if (rtable_insert(&p->ids, r) < 0) {
        region_destroy(r);
        return -ENOMEM;
    }
    mark_lent(p, r, uid);
    *out = r;
    return 0;
}

int pool_prepare_one(struct pool *p, uid_t uid, int size_class)
{
    uint64_t size = zkn_class_size(size_class);
    struct partition *part = pool_partition(p, uid, 1);
    if (!part)
        return -ENOMEM;
    if (p->idle_bytes + p->preparing_bytes + size > p->cfg->pool_bytes)
        return -ENOSPC;
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->kind = JOB_CREATE_POOL;
    j->size_class = size_class;
    j->uid = uid;
    j->id = p->next_id++;
    submit(p, j);
    part->preparing[size_class]++;
    p->preparing_bytes += size;
    return 0;
}

void pool_give_back(struct pool *p, struct region *r)
{
    count_lent(p, r, 0);
    r->holder = NULL;
    struct partition *part = p->shutting_down ? NULL : pool_partition(p, r->uid, 1);
    if (!part || p->idle_bytes + r->size > p->cfg->pool_bytes) {
        destroy_region(p, r);
        return;
    }
    r->state = REGION_DIRTY;
    r->idle_since_ms = pool_now_ms(p);
    rlist_push(&part->dirty[r->size_class], r);
    p->idle_bytes += r->size;
    schedule_zeroing(p);
}

void pool_forget(struct pool *p, struct region *r)
{
    count_lent(p, r, 0);
    r->holder = NULL;
    p->forgotten++;
    destroy_region(p, r);
}

int pool_adopt(struct pool *p, struct region *r, uid_t uid, int clean)
{
    struct partition *part = pool_partition(p, uid, 1);
    r->id = p->next_id++;
    r->uid = uid;
    if (!part || p->idle_bytes + r->size > p->cfg->pool_bytes || rtable_insert(&p->ids, r) < 0) {
        region_destroy(r);
        return -1;
    }
    p->restored++;
    r->idle_since_ms = pool_now_ms(p);
    r->state = clean ? REGION_CLEAN : REGION_DIRTY;
    rlist_push(clean ? &part->clean[r->size_class] : &part->dirty[r->size_class], r);
    p->idle_bytes += r->size;
    if (!clean)
        schedule_zeroing(p);
    return 0;
}

void pool_for_each_idle(struct pool *p, void (*fn)(void *ctx, struct region *r, int clean),
                        void *ctx)
{
    for (struct partition *part = p->parts; part; part = part->next)
        for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
            for (struct region *r = part->clean[c].head; r; r = r->link.next)
                fn(ctx, r, 1);
            for (struct region *r = part->dirty[c].head; r; r = r->link.next)
                fn(ctx, r, 0);
        }
    for (struct region *r = p->zeroing.head; r; r = r->link.next)
        fn(ctx, r, 0);
}

/* Destroys idle regions, oldest first across all lists, while drop() says
 * so. Returns bytes freed. */
static uint64_t shrink(struct pool *p, int (*drop)(struct pool *, struct region *, uint64_t),
                       uint64_t arg)
{
    uint64_t freed = 0;
    for (;;) {
        struct region *victim = NULL;
        struct region_list *from = NULL;
        for (struct partition *part = p->parts; part; part = part->next)
            for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
                struct region_list *lists[2] = {&part->dirty[c], &part->clean[c]};
                for (int k = 0; k < 2; k++) {
                    struct region *r = lists[k]->tail;
                    if (r && (!victim || r->idle_since_ms < victim->idle_since_ms)) {
                        victim = r;
                        from = lists[k];
                    }
                }
            }
        if (!victim || !drop(p, victim, arg))
            return freed;
        rlist_remove(from, victim);
        p->idle_bytes -= victim->size;
        freed += victim->size;
        destroy_region(p, victim);
    }
}

static int over_target(struct pool *p, struct region *r, uint64_t target)
{
    (void)r;
    return p->idle_bytes > target;
}

static int stale(struct pool *p, struct region *r, uint64_t max_idle_ms)
{
    return pool_now_ms(p) - r->idle_since_ms > max_idle_ms;
}

uint64_t pool_trim(struct pool *p, uint64_t target)
{
    uint64_t freed = shrink(p, over_target, target);
    p->trimmed_bytes += freed;
    return freed;
}

uint64_t pool_decay(struct pool *p, uint64_t max_idle_ms)
{
    uint64_t now = pool_now_ms(p);
    /* Halve targets nobody asked for in a period; the clock restarts so the
     * next halving takes another period. */
    for (struct partition *part = p->parts; part; part = part->next)
        for (int c = 0; c < ZKN_CLASS_COUNT; c++)
            if (part->target[c] && now - part->demand_ms[c] > max_idle_ms) {
                part->target[c] /= 2;
                part->demand_ms[c] = now;
            }
    uint64_t freed = shrink(p, stale, max_idle_ms);
    p->decayed += freed;
    return freed;
}

static uint64_t sum_lists(const struct pool *p, int clean, int cls, int count)
{
    uint64_t total = 0;
    for (struct partition *part = p->parts; part; part = part->next)
        for (int c = cls < 0 ? 0 : cls; c < (cls < 0 ? ZKN_CLASS_COUNT : cls + 1); c++) {
            const struct region_list *l = clean ? &part->clean[c] : &part->dirty[c];
            total += count ? l->count : l->bytes;
        }
    return total;
}

uint64_t pool_clean_bytes(const struct pool *p) { return sum_lists(p, 1, -1, 0); }
uint64_t pool_dirty_bytes(const struct pool *p) { return sum_lists(p, 0, -1, 0); }

void pool_class_counts(const struct pool *p, int size_class, uint64_t *clean, uint64_t *dirty)
{
    *clean = sum_lists(p, 1, size_class, 1);
    *dirty = sum_lists(p, 0, size_class, 1);
}

void pool_shutdown(struct pool *p)
{
    p->shutting_down = 1;
    workers_stop(&p->workers); /* queued jobs still finish, while the loop runs */
    pool_trim(p, 0);
    while (p->parts) {
        struct partition *next = p->parts->next;
        free(p->parts);
        p->parts = next;
    }
}

void pool_count_refusal(struct pool *p, uint32_t code)
{
    if (code < POOL_REFUSAL_SLOTS)
        p->refusals[code]++;
}

void pool_count_lend(struct pool *p) { p->lends++; }

void pool_count_not_warm(struct pool *p, int size_class)
{
    p->cls[size_class].misses++;
    p->cls[size_class].not_warm++;
}

void pool_count_served_warm(struct pool *p, int size_class) { p->cls[size_class].served_warm++; }
void pool_count_return(struct pool *p) { p->returns++; }
void pool_count_reclaimed(struct pool *p) { p->reclaimed++; }
void pool_count_saved(struct pool *p, uint64_t n) { p->saved += n; }

void pool_count_pressure(struct pool *p, uint64_t trimmed_bytes)
{
    p->pressure_events++;
    p->pressure_trimmed_bytes += trimmed_bytes;
}

void pool_set_pressure_source(struct pool *p, const char *source) { p->pressure_source = source; }

void pool_free(struct pool *p) { rtable_free(&p->ids); }
