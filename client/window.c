/* The address window: one PROT_NONE reservation with a sub-window per size
 * class, each cut into fixed slots whose stride is a power of two. A pointer's
 * class and slot are then two shifts, with no header and no table lookup, and
 * every slot is naturally aligned to its stride (>= 2 MiB from the 2 MiB
 * classes on, which transparent huge pages need).
 *
 * The per-slot state array is itself a MAP_NORESERVE mapping, touched only as
 * far as slots are used. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

struct zkn__window zkn__win;
pthread_mutex_t zkn__glock = PTHREAD_MUTEX_INITIALIZER;

/* Past this many slots a class's sub-window is not fully used (blocks past
 * it go to libc): 131072 live blocks of one class (8 GiB of the smallest) is
 * far beyond a prover's needs, and it keeps the state array at 59 MiB of
 * address space (touched only as slots are used; it is charged as commit
 * only under vm.overcommit_memory=2). */
#define MAX_SLOTS_PER_CLASS (1u << 17)

static unsigned ceil_log2(uint64_t v)
{
    return v <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(v - 1);
}

static int try_reserve(unsigned sub_shift)
{
    uint64_t sub = (uint64_t)1 << sub_shift;
    size_t win_len = (size_t)sub * ZKN_CLASS_COUNT;
    size_t nslots_total = 0;
    uint32_t nslots[ZKN_CLASS_COUNT];

    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        unsigned shift = ceil_log2(zkn_class_size(c));
        uint64_t n = shift > sub_shift ? 0 : sub >> shift;
        nslots[c] = (uint32_t)(n > MAX_SLOTS_PER_CLASS ? MAX_SLOTS_PER_CLASS : n);
        nslots_total += nslots[c];
    }
    size_t state_len = nslots_total * sizeof(struct zkn__slot);
    state_len = (state_len + 4095) & ~(size_t)4095;
    /* Aligning the window to a sub-window makes every slot aligned to its stride. */
    char *win = zkn__reserve_aligned(win_len, (size_t)sub);
    if (!win)
        return -1;
    void *state = mmap(NULL, state_len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (state == MAP_FAILED) {
        (void)munmap(win, win_len);
        return -1;
    }
    struct zkn__slot *s = state;
    zkn__win.sub_shift = sub_shift;
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        struct zkn__class_win *w = &zkn__win.cls[c];
        w->base = (uintptr_t)win + (uintptr_t)c * sub;
        w->size = zkn_class_size(c);
        w->shift = ceil_log2(w->size);
        w->nslots = nslots[c];
        w->slots = s;
        s += nslots[c];
    }
    atomic_store_explicit(&zkn__win.base, (uintptr_t)win, memory_order_relaxed);
    atomic_store_explicit(&zkn__win.len, win_len, memory_order_release);
    return 0;
}

int zkn__window_reserve(void)
{
    /* 128 GiB per class (8.5 TiB of address space, no memory) first; smaller
     * windows where the address space is limited (ulimit -v, sanitizers):
     * classes whose stride no longer fits go to libc. Under an RLIMIT_AS
     * the window takes at most a quarter of it, since the reservation counts
     * against the limit and the program needs the rest. */
    static const unsigned shifts[] = {37, 34, 31, 28, 26};
    uint64_t budget = UINT64_MAX;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        budget = (uint64_t)rl.rlim_cur / 4;
    for (size_t i = 0; i < sizeof shifts / sizeof shifts[0]; i++) {
        uint64_t need = ((uint64_t)ZKN_CLASS_COUNT + 1) << shifts[i]; /* + alignment slack */
        if (need <= budget && try_reserve(shifts[i]) == 0)
            return 0;
    }
    return -1;
}

int zkn__class_for(size_t size, size_t align)
{
    int c = zkn_size_class(size);
    if (c < 0)
        return -1;
    uint64_t natural = zkn_class_size(c);
    for (; c < ZKN_CLASS_COUNT; c++) {
        const struct zkn__class_win *w = &zkn__win.cls[c];
        if (!w->nslots)
            return -1; /* larger classes have larger strides: none fits either */
        /* Moving up for alignment is worth at most doubling the block; past
         * that, glibc's memalign wastes less. */
        if (w->size > 2 * natural)
            return -1;
        if (((uint64_t)1 << w->shift) >= align)
            return c;
    }
    return -1;
}

/* k slots in a row, SLOT_BUSY: the head of list (released slots or runs,
 * linked through next), else never-used ones, the first k-aligned. The
 * first, or UINT32_MAX. */
static uint32_t take_slots(int c, uint32_t *list, uint32_t k)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    uint32_t idx = UINT32_MAX;
    pthread_mutex_lock(&zkn__glock);
    if (*list) {
        idx = *list - 1;
        *list = w->slots[idx].next;
    } else {
        /* A run starts k-aligned: never-used slots skipped to get there
         * become released single slots, so single takes do not block runs. */
        uint32_t pad = (k - w->hwm % k) % k;
        if (w->nslots - w->hwm >= pad + k) {
            for (; pad; pad--, w->hwm++) {
                w->slots[w->hwm].next = w->free_head;
                w->free_head = w->hwm + 1;
            }
            idx = w->hwm;
            w->hwm += k;
        }
    }
    for (uint32_t i = idx; idx != UINT32_MAX && i < idx + k; i++) {
        w->slots[i].next = 0;
        atomic_store_explicit(&w->slots[i].state, SLOT_BUSY, memory_order_relaxed);
    }
    pthread_mutex_unlock(&zkn__glock);
    return idx;
}

/* Slots [first, first + k) back, SLOT_FREE, linked onto list as one entry. */
static void put_slots(int c, uint32_t *list, uint32_t first, uint32_t k)
{
    struct zkn__class_win *w = &zkn__win.cls[c];
    pthread_mutex_lock(&zkn__glock);
    for (uint32_t i = first; i < first + k; i++) {
        w->slots[i].flags = 0;
        w->slots[i].id = 0;
        atomic_store_explicit(&w->slots[i].state, SLOT_FREE, memory_order_release);
    }
    w->slots[first].next = *list;
    *list = first + 1;
    pthread_mutex_unlock(&zkn__glock);
}

uint32_t zkn__slot_take(int c)
{
    return take_slots(c, &zkn__win.cls[c].free_head, 1);
}

/* A released run first: single released slots are scattered over the
 * window (single blocks reuse those). */
uint32_t zkn__slot_take_run(int c, uint32_t k)
{
    return take_slots(c, &zkn__win.cls[c].free_runs, k);
}

void zkn__slot_put(int c, uint32_t idx)
{
    put_slots(c, &zkn__win.cls[c].free_head, idx, 1);
}

void zkn__slot_put_run(int c, uint32_t first, uint32_t k)
{
    put_slots(c, &zkn__win.cls[c].free_runs, first, k);
}

_Noreturn void zkn__die_bad_pointer(const char *fn, const void *p, const char *why)
{
    char hex[20];
    zkn__write_str(2, "zknalloc: ");
    zkn__write_str(2, fn);
    zkn__write_str(2, "(): ");
    zkn__write_str(2, why);
    zkn__write_str(2, " (pointer ");
    zkn__write_str(2, zkn__fmt_hex(hex, (uint64_t)(uintptr_t)p));
    zkn__write_str(2, ")\n");
    abort();
}
