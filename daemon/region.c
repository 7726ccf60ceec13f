/* Regions, their intrusive lists and the id table. */
#include "region.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sizeclass.h"

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

void rlist_push(struct region_list *l, struct region *r)
{
    list_push_head(l, r, link);
    l->count++;
    l->bytes += r->size;
}

void rlist_remove(struct region_list *l, struct region *r)
{
    list_remove(l, r, link);
    l->count--;
    l->bytes -= r->size;
}

struct region *rlist_pop(struct region_list *l)
{
    struct region *r = l->head;
    if (r)
        rlist_remove(l, r);
    return r;
}

struct region *rlist_pop_tail(struct region_list *l)
{
    struct region *r = l->tail;
    if (r)
        rlist_remove(l, r);
    return r;
}

static void *map_aligned(int fd, uint64_t size)
{
    uint64_t align = size >= ZKN_HUGE_PAGE_SIZE ? ZKN_HUGE_PAGE_SIZE : 4096;
    char *raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *al = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (mmap(al, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int e = errno;
        munmap(raw, size + align);
        errno = e;
        return NULL;
    }
    if (al > raw)
        munmap(raw, (size_t)(al - raw));
    if ((uint64_t)(al - raw) < align)
        munmap(al + size, align - (uint64_t)(al - raw));
    return al;
}

struct region *region_from_fd(int fd, int size_class, uint64_t id)
{
    uint64_t size = zkn_class_size(size_class);
    struct region *r = calloc(1, sizeof *r);
    if (!r || size == 0) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    r->map = map_aligned(fd, size);
    if (!r->map) {
        int e = errno;
        free(r);
        errno = e;
        return NULL;
    }
    /* Advice only: fails harmlessly where THP is off. */
    madvise(r->map, size, MADV_HUGEPAGE);
    r->fd = fd;
    r->id = id;
    r->size = size;
    r->size_class = size_class;
    r->uid = REGION_UNOWNED;
    r->state = REGION_BUSY; /* neither pooled nor lent yet */
    return r;
}

struct region *region_create(const struct backing *b, int size_class, uint64_t id)
{
    uint64_t size = zkn_class_size(size_class);
    char name[48];
    if (size == 0) {
        errno = EINVAL;
        return NULL;
    }
    snprintf(name, sizeof name, "zknalloc-class%d-%lluK", size_class,
             (unsigned long long)(size >> 10));
    int fd = backing_new_file(b, size, name);
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    struct region *r = region_from_fd(fd, size_class, id);
    if (!r) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return r;
}

void region_destroy(struct region *r)
{
    if (!r)
        return;
    if (r->map)
        munmap(r->map, r->size);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

static uint64_t hash_id(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

int rtable_init(struct region_table *t)
{
    t->mask = 1023;
    t->count = 0;
    t->buckets = calloc(t->mask + 1, sizeof *t->buckets);
    return t->buckets ? 0 : -1;
}

void rtable_free(struct region_table *t)
{
    free(t->buckets);
    t->buckets = NULL;
}

static int grow(struct region_table *t)
{
    uint64_t nmask = t->mask * 2 + 1;
    struct region **nb = calloc(nmask + 1, sizeof *nb);
    if (!nb)
        return -1;
    for (uint64_t i = 0; i <= t->mask; i++) {
        struct region *r = t->buckets[i], *next;
        for (; r; r = next) {
            next = r->id_next;
            uint64_t h = hash_id(r->id) & nmask;
            r->id_next = nb[h];
            nb[h] = r;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->mask = nmask;
    return 0;
}

int rtable_insert(struct region_table *t, struct region *r)
{
    if (t->count > t->mask && grow(t) < 0)
        return -1;
    uint64_t h = hash_id(r->id) & t->mask;
    r->id_next = t->buckets[h];
    t->buckets[h] = r;
    t->count++;
    return 0;
}

struct region *rtable_find(const struct region_table *t, uint64_t id)
{
    struct region *r = t->buckets[hash_id(id) & t->mask];
    while (r && r->id != id)
        r = r->id_next;
    return r;
}

void rtable_remove(struct region_table *t, struct region *r)
{
    struct region **p = &t->buckets[hash_id(r->id) & t->mask];
    while (*p && *p != r)
        p = &(*p)->id_next;
    if (*p) {
        *p = r->id_next;
        t->count--;
    }
    r->id_next = NULL;
}
