/* A region: one sealed shared-memory file of one size class, mapped in the
 * daemon too (for warming and zeroing), owned by the pool or lent to a client. */
#ifndef ZKND_REGION_H
#define ZKND_REGION_H

#include <stdint.h>
#include <sys/types.h>

#include "backing.h"
#include "list.h"

#define REGION_UNOWNED ((uid_t)-1) /* never lent: any uid may get it */

enum region_state {
    REGION_CLEAN,   /* pooled, all zero */
    REGION_DIRTY,   /* pooled, waiting to be zeroed */
    REGION_BUSY,    /* being zeroed or created on a worker thread */
    REGION_LENT,
};

struct proc;

struct region {
    uint64_t id;
    uint64_t size;
    int fd;
    int size_class;
    void *map;
    uid_t uid;              /* partition: the uid it was first lent to */
    enum region_state state;
    struct proc *holder;    /* while lent */
    int lent_clean;         /* was all zero when lent (REGIONS flag CLEAN) */
    uint64_t idle_since_ms; /* when it entered the pool */
    LIST_LINK(struct region) link; /* in a pool list or the holder's lease list */
    struct region *id_next;     /* id table chain */
};

struct region_list {
    struct region *head, *tail;
    uint64_t count, bytes;
};

void rlist_push(struct region_list *l, struct region *r);   /* at the head */
void rlist_remove(struct region_list *l, struct region *r);
struct region *rlist_pop(struct region_list *l);            /* from the head */
struct region *rlist_pop_tail(struct region_list *l);

/* Creates the file and the daemon's mapping (2 MiB aligned so huge pages
 * can map it). Nothing is resident yet. NULL with errno on failure. */
struct region *region_create(const struct backing *b, int size_class, uint64_t id);
/* The same around an existing file of exactly the class's size (a region
 * handed back by the service manager's fd store); takes the fd. */
struct region *region_from_fd(int fd, int size_class, uint64_t id);
void region_destroy(struct region *r);

/* id -> region, for RETURN. */
struct region_table {
    struct region **buckets;
    uint64_t mask, count;
};
int rtable_init(struct region_table *t);
void rtable_free(struct region_table *t);
int rtable_insert(struct region_table *t, struct region *r); /* -1: out of memory */
struct region *rtable_find(const struct region_table *t, uint64_t id);
void rtable_remove(struct region_table *t, struct region *r);

#endif
