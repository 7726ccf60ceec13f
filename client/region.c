/* What backs a slot: a private anonymous mapping of our own, or a daemon's
 * memfd mapped MAP_SHARED. Every function here owns the slot it is given
 * (no other thread can reach it), so slot fields are written without atomics
 * except the state word that free() checks. */
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"
#include "zkn_proto.h"

/* Zeroing a dirty region: memset, always. Measured on the 2-core test VM
 * (anon THP madvise), zero then write every 4 KiB page, best of 5:
 *   1 MiB:   memset 0.025 ms, MADV_DONTNEED + refault 0.68 ms
 *   8 MiB:   memset 0.17 ms,  DONTNEED 0.32 ms
 *   128 MiB: memset 3.5 ms,   DONTNEED 12.7 ms
 * and with only every 64th of the region touched afterwards DONTNEED still
 * lost (128 MiB: 4.0 vs 13.0 ms): THP refaults zero whole 2 MiB pages, so
 * sparse use saves nothing until whole huge pages stay untouched. On a
 * shared daemon region DONTNEED would not even zero (the memfd keeps its
 * data). */

/* Warm daemon regions are mapped with MAP_POPULATE. Measured (huge-page
 * backed regions, map + write every 4 KiB page, best of 5): 1 MiB 0.17 ms
 * populated vs 0.55 ms faulted; 8 MiB 0.058 vs 0.056 ms; 128 MiB 0.68 vs
 * 0.69 ms; with sparse use 128 MiB 0.16 vs 0.26 ms. Never slower, much faster
 * for regions below a huge page (4 KiB ptes). */
int zkn__populate_daemon = 1;
int zkn__thp_anon; /* set once by zkn__init() */

static void advise_huge(void *p, uint64_t size)
{
    /* Advice only: where THP is off this fails harmlessly. */
    if (zkn__thp_anon && size >= ZKN_HUGE_PAGE_SIZE)
        (void)madvise(p, size, MADV_HUGEPAGE);
    /* Neighbouring small slots merge into one mapping; under THP "always" a
     * fault in one would then take a fresh 2 MiB page for a 64 KiB block. */
    else if (zkn__thp_anon == 2 && size < ZKN_HUGE_PAGE_SIZE)
        (void)madvise(p, size, MADV_NOHUGEPAGE);
}

/* Puts the PROT_NONE reservation back over a slot. */
static int unmap_slot(void *p, uint64_t size)
{
    return zkn__map_none_at(p, size);
}

int zkn__region_map_fresh(void *p, uint64_t len)
{
    if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
        MAP_FAILED)
        return -1;
    advise_huge(p, len);
    atomic_fetch_add_explicit(&zkn__ctr.bytes_fresh, len, memory_order_relaxed);
    return 0;
}

void zkn__region_set_private(int c, uint32_t idx, int clean)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    s->flags = clean ? SLOT_F_CLEAN : 0;
    s->id = 0;
    s->gen = 0;
}

/* Smallest class whose fresh regions come a huge page at a time. */
#define RUN_MIN_SIZE ((uint64_t)256 << 10)

/* Blocks of class c that tile a huge page (a power of two from
 * RUN_MIN_SIZE), else 0. */
static uint32_t part_blocks(int c)
{
    uint64_t size = zkn__win.cls[c].size;
    if (size < RUN_MIN_SIZE || size >= ZKN_HUGE_PAGE_SIZE || (size & (size - 1)))
        return 0;
    return (uint32_t)(ZKN_HUGE_PAGE_SIZE / size);
}

uint32_t zkn__run_blocks(int c)
{
    return zkn__thp_anon ? part_blocks(c) : 0;
}

/* Slot idx of class c is unmapped or loses its pages: its run, if any, is no
 * longer one huge page that could move whole. */
static void break_run(int c, uint32_t idx)
{
    uint32_t k = zkn__run_blocks(c);
    if (k)
        atomic_store_explicit(&zkn__win.cls[c].slots[idx - idx % k].run, 0, memory_order_relaxed);
}

void zkn__run_release(int c, uint32_t first, uint32_t k)
{
    void *p = zkn__slot_addr(c, first);
    uint64_t len = (uint64_t)k * zkn__win.cls[c].size;
    int saved = errno;
    break_run(c, first);
    if (unmap_slot(p, len) == 0)
        zkn__slot_put_run(c, first, k);
    else /* out of mappings: the pages go back at least; the slots stay BUSY, abandoned */
        (void)madvise(p, len, MADV_DONTNEED);
    errno = saved;
}

void zkn__slot_release_empty(int c, uint32_t idx)
{
    break_run(c, idx);
    /* Else the slot stays BUSY, abandoned: nothing ever maps there again. */
    if (unmap_slot(zkn__slot_addr(c, idx), zkn__win.cls[c].size) == 0)
        zkn__slot_put(c, idx);
}

/* A fresh 4 KiB page costs ~1.2 us to fault here (ms per MiB where the host
 * must back it too), a fresh 2 MiB page ~85-130 us. So a miss in a class of
 * 256 KiB to 1 MiB whose slots tile huge pages (a power of two) maps the
 * whole huge page its slot sits in: the block and its 1-7 neighbours, which
 * the caller caches as clean blocks. Never for smaller classes, where a
 * 64 KiB request would pull in 2 MiB. */
static uint32_t new_local_run(int c, uint32_t *extra)
{
    uint32_t k = zkn__run_blocks(c);
    if (!k)
        return UINT32_MAX;
    uint32_t idx = zkn__slot_take_run(c, k);
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    if (zkn__region_map_fresh(zkn__slot_addr(c, idx), ZKN_HUGE_PAGE_SIZE) != 0) {
        for (uint32_t i = 0; i < k; i++)
            zkn__slot_release_empty(c, idx + i);
        return UINT32_MAX;
    }
    for (uint32_t i = 0; i < k; i++)
        zkn__region_set_private(c, idx + i, 1);
    atomic_store_explicit(&zkn__win.cls[c].slots[idx].run, 1, memory_order_relaxed);
    *extra = k - 1;
    return idx;
}

uint32_t zkn__region_new_local(int c, uint32_t *extra)
{
    *extra = 0;
    uint32_t run = new_local_run(c, extra);
    if (run != UINT32_MAX)
        return run;
    uint32_t idx = zkn__slot_take(c);
    if (idx == UINT32_MAX)
        return UINT32_MAX;
    if (zkn__region_map_fresh(zkn__slot_addr(c, idx), zkn__win.cls[c].size) != 0) {
        /* A failed MAP_FIXED may have dropped the reservation; restore it or
         * leave the slot abandoned (BUSY) so nothing ever maps there again. */
        zkn__slot_release_empty(c, idx);
        return UINT32_MAX;
    }
    zkn__region_set_private(c, idx, 1);
    return idx;
}

/* Daemon regions keep their fd (fork needs it to re-map them privately).
 * Those fds live high, away from the numbers a program that uses select()
 * counts on, and at most a quarter of RLIMIT_NOFILE is spent on them: past
 * that a miss uses private memory instead. */
static _Atomic uint64_t fds_held;

static int keep_fd(int fd)
{
    struct rlimit rl;
    uint64_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 1024;
    if (limit > INT32_MAX)
        limit = INT32_MAX;
    if (atomic_fetch_add(&fds_held, 1) >= limit / 4) {
        atomic_fetch_sub(&fds_held, 1);
        close(fd);
        return -1;
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, (int)(limit / 2));
    if (high >= 0) {
        close(fd);
        return high;
    }
    return fd;
}

static void drop_fd(struct zkn__slot *s)
{
    close(s->fd);
    s->fd = -1;
    atomic_fetch_sub(&fds_held, 1);
}

/* Daemon runs. A daemon file under a huge page cannot hold one, so the
 * daemon's regions of 256 KiB to 1 MiB are 4 KiB-paged while the same blocks
 * made here are carved from huge pages (new_local_run). So those classes
 * borrow the daemon's regions of one huge page and map each over k
 * neighbouring slots, the parts of one run: one PMD instead of 512 page-table
 * entries, one fd and one lease instead of k. Measured with a daemon:
 * memset of 64 x 512 KiB blocks 1.08-1.12x private huge pages' time with
 * per-block lends, 0.98-1.00x with runs; a snarkjs groth16 2^16 proof 0.976x
 * the wall of per-block lends (paired median of 20 interleaved proofs, 17
 * faster). Parts are handed out, cached and freed one by one; the lease goes
 * back whole, when the last part is released. Only backings whose 2 MiB
 * regions are huge pages qualify: hugetlbfs mappings cannot be unmapped a
 * part at a time. */
#define RUN_FORGOTTEN 0x80u
#define RUN_PARTS_MASK 0x7fu

uint32_t zkn__daemon_run_blocks(int c)
{
    /* Before the first HELLO the backing is unknown (0): ask for huge pages
     * anyway, since the first miss is often the one that connects. */
    uint32_t b = zkn__daemon_backing();
    if (b && b != ZKN_BACKING_MEMFD_THP && b != ZKN_BACKING_TMPFS_HUGE &&
        b != ZKN_BACKING_MEMFD_COLLAPSE)
        return 0;
    return part_blocks(c);
}

uint32_t zkn__region_map_fd(int c, uint32_t k, int fd, uint64_t id, int clean, uint32_t gen)
{
    if (k && k != part_blocks(c)) {
        close(fd);
        return UINT32_MAX;
    }
    if ((fd = keep_fd(fd)) < 0)
        return UINT32_MAX;
    uint32_t nslots = k ? k : 1;
    uint64_t len = k ? ZKN_HUGE_PAGE_SIZE : zkn__win.cls[c].size;
    uint32_t first = k ? zkn__slot_take_run(c, k) : zkn__slot_take(c);
    void *p = first == UINT32_MAX ? NULL : zkn__slot_addr(c, first);
    int flags = MAP_SHARED | MAP_FIXED | (zkn__populate_daemon ? MAP_POPULATE : 0);
    /* DONTFORK: see fork.c. Without it the region is not safe to hold. */
    if (!p || mmap(p, len, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED ||
        madvise(p, len, MADV_DONTFORK) != 0) {
        if (p && unmap_slot(p, len) == 0) {
            if (k)
                zkn__slot_put_run(c, first, k);
            else
                zkn__slot_put(c, first);
        }
        struct zkn__slot tmp = {.fd = fd};
        drop_fd(&tmp);
        return UINT32_MAX;
    }
    for (uint32_t i = 0; i < nslots; i++) {
        struct zkn__slot *s = &zkn__win.cls[c].slots[first + i];
        s->flags = (uint8_t)(SLOT_F_DAEMON | (k ? SLOT_F_PART : 0) | (clean ? SLOT_F_CLEAN : 0));
        s->id = id;
        s->gen = gen;
        s->fd = i ? -1 : fd;
    }
    if (k)
        atomic_store(&zkn__win.cls[c].slots[first].parts, (uint8_t)k);
    atomic_fetch_add_explicit(&zkn__ctr.bytes_leased, len, memory_order_relaxed);
    atomic_fetch_add_explicit(&zkn__ctr.daemon_mapped, nslots, memory_order_relaxed);
    return first;
}

/* The slot that keeps slot idx's daemon file (its run's first, or itself),
 * and where idx's bytes lie in that file. */
static struct zkn__slot *file_slot(int c, uint32_t idx, off_t *offset)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    *offset = 0;
    if (!(s->flags & SLOT_F_PART))
        return s;
    uint32_t first = idx - idx % part_blocks(c);
    *offset = (off_t)((idx - first) * zkn__win.cls[c].size);
    return &zkn__win.cls[c].slots[first];
}

/* Slot idx of a run is unmapped (state SLOT_BUSY): it stays held by the run
 * until the last one, which returns the lease (unless forgotten) and frees
 * all k slots together. */
static void part_released(int c, uint32_t idx)
{
    uint32_t k = part_blocks(c), first = idx - idx % k;
    struct zkn__slot *head = &zkn__win.cls[c].slots[first];
    uint8_t before = atomic_fetch_sub(&head->parts, 1);
    if ((before & RUN_PARTS_MASK) > 1)
        return;
    if (!(before & RUN_FORGOTTEN) && zkn__daemon_gen_current(head->gen))
        zkn__queue_push(ZKN__OWED_RETURN, head->id, head->gen);
    if (head->fd >= 0)
        drop_fd(head);
    atomic_store(&head->parts, 0);
    zkn__slot_put_run(c, first, k);
}

void zkn__region_child_close_runs(void)
{
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint32_t k = part_blocks(c);
        struct zkn__class_win *w = &zkn__win.cls[c];
        for (uint32_t i = 0; k && i + k <= w->hwm; i += k)
            if ((w->slots[i].flags & SLOT_F_PART) && w->slots[i].fd >= 0) /* a live run */
                drop_fd(&w->slots[i]);
    }
}

/* The slot no longer holds a daemon region (its mapping is gone or private).
 * A run's file stays open until its last slot is released. */
static void leave_daemon(int c, struct zkn__slot *s)
{
    if (!(s->flags & SLOT_F_PART))
        drop_fd(s);
    s->flags &= (uint8_t)~SLOT_F_DAEMON;
    atomic_fetch_sub_explicit(&zkn__ctr.bytes_leased, zkn__win.cls[c].size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&zkn__ctr.daemon_mapped, 1, memory_order_relaxed);
}

void zkn__region_release(int c, uint32_t idx)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    uint64_t size = zkn__win.cls[c].size;
    void *p = zkn__slot_addr(c, idx);
    int saved = errno; /* free() must not change errno */
    atomic_store_explicit(&s->state, SLOT_BUSY, memory_order_relaxed);
    break_run(c, idx);
    if (unmap_slot(p, size) != 0) {
        /* Out of mappings (vm.max_map_count). A private region can at least
         * give its pages back; the slot is abandoned either way, and a
         * daemon region stays mapped, so its id must not be returned (a
         * run with a part abandoned never completes). */
        if (!(s->flags & SLOT_F_DAEMON))
            (void)madvise(p, size, MADV_DONTNEED);
        errno = saved;
        return;
    }
    if (s->flags & SLOT_F_PART) {
        if (s->flags & SLOT_F_DAEMON)
            leave_daemon(c, s);
        part_released(c, idx);
        errno = saved;
        return;
    }
    if (s->flags & SLOT_F_DAEMON) {
        leave_daemon(c, s);
        /* A region of a daemon that has since gone is just memory of ours. */
        if (zkn__daemon_gen_current(s->gen))
            zkn__queue_push(ZKN__OWED_RETURN, s->id, s->gen);
    }
    zkn__slot_put(c, idx);
    errno = saved;
}

void zkn__region_zero(int c, uint32_t idx)
{
    memset(zkn__slot_addr(c, idx), 0, zkn__win.cls[c].size); /* see the figures above */
    atomic_fetch_add_explicit(&zkn__ctr.bytes_zeroed, zkn__win.cls[c].size, memory_order_relaxed);
}

void zkn__region_soften(int c, uint32_t idx)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    if (s->flags & SLOT_F_DAEMON)
        return;
    break_run(c, idx); /* advice on part of a huge page splits it */
    int saved = errno;
    /* MADV_FREE needs Linux 4.5; DONTNEED is the strict fallback. */
    if (madvise(zkn__slot_addr(c, idx), zkn__win.cls[c].size, MADV_FREE) != 0)
        (void)madvise(zkn__slot_addr(c, idx), zkn__win.cls[c].size, MADV_DONTNEED);
    errno = saved;
    s->flags &= (uint8_t)~SLOT_F_CLEAN; /* freed pages may read old data or zero */
}

int zkn__region_make_private(int c, uint32_t idx)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    off_t offset;
    struct zkn__slot *head = file_slot(c, idx, &offset);
    /* In place, same file: the contents stay, other threads' writes land in
     * the new mapping, and no copy is made until someone writes a page. */
    if (mmap(zkn__slot_addr(c, idx), zkn__win.cls[c].size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_FIXED, head->fd, offset) == MAP_FAILED)
        return -1;
    leave_daemon(c, s);
    s->flags |= SLOT_F_FORKED;
    /* One FORGET per run: the run's other parts, cached, stay shared with
     * no one, and none of it is ever returned. */
    if (s->flags & SLOT_F_PART)
        return (atomic_fetch_or(&head->parts, RUN_FORGOTTEN) & RUN_FORGOTTEN) ? 1 : 0;
    return 0;
}

void zkn__region_child_rescue(int c, uint32_t idx, int copy)
{
    struct zkn__slot *s = &zkn__win.cls[c].slots[idx];
    uint64_t size = zkn__win.cls[c].size;
    char *p = zkn__slot_addr(c, idx);
    off_t base;
    struct zkn__slot *head = file_slot(c, idx, &base);
    int ok = copy && mmap(p, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED;
    for (uint64_t off = 0; ok && off < size;) {
        ssize_t n = pread(head->fd, p + off, size - off, base + (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            ok = 0;
        else
            off += (uint64_t)n;
    }
    if (!ok)
        (void)unmap_slot(p, size); /* an access faults: never the parent's bytes */
    leave_daemon(c, s);
}

int zkn__region_move_pages(void *src, void *dst, uint64_t len)
{
    /* DONTUNMAP leaves the source mapped (empty), so no hole ever opens in
     * the window for another mmap to land in; EINVAL on kernels before 5.7. */
    if (mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, dst) != MAP_FAILED)
        return 0;
    /* A range assembled from several donors is several mappings, and mremap
     * moves one at a time: halve at huge-page boundaries until each fits. */
    if (errno != EFAULT || len <= ZKN_HUGE_PAGE_SIZE)
        return -1;
    uint64_t half = (len / 2 + ZKN_HUGE_PAGE_SIZE - 1) & ~(ZKN_HUGE_PAGE_SIZE - 1);
    if (half >= len)
        return -1;
    if (zkn__region_move_pages(src, dst, half) != 0)
        return -1;
    if (zkn__region_move_pages((char *)src + half, (char *)dst + half, len - half) == 0)
        return 0;
    /* All or nothing: the first half goes back where it was (a move that
     * worked once works backwards; if even that fails, the caller's data
     * is split and it must not trust either range). */
    int saved = errno;
    (void)zkn__region_move_pages(dst, src, half);
    errno = saved;
    return -1;
}
