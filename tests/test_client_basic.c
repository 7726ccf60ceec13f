/* libzknalloc without a daemon: the zkn_* API end to end on private memory.
 * Every test points ZK_NALLOC_SOCKET at a path where nothing listens, so the
 * library must serve everything itself. Each test runs in its own process
 * (check's fork mode), so each starts with a fresh library. */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "zknalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static void fill(void *p, size_t n, uint64_t seed)
{
    uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++)
        w[i] = seed ^ (i * 0x9e3779b97f4a7c15ull);
    for (size_t i = n / 8 * 8; i < n; i++)
        ((unsigned char *)p)[i] = (unsigned char)(seed + i);
}

static int check_fill(const void *p, size_t n, uint64_t seed)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++)
        if (w[i] != (seed ^ (i * 0x9e3779b97f4a7c15ull)))
            return 0;
    for (size_t i = n / 8 * 8; i < n; i++)
        if (((const unsigned char *)p)[i] != (unsigned char)(seed + i))
            return 0;
    return 1;
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return 0;
    return 1;
}

static struct zkn_stats stats(void)
{
    struct zkn_stats s;
    ck_assert_int_eq(zkn_stats(&s), 0);
    return s;
}

/* A block is ours when its usable size is exactly its class's size. */
static int is_ours(void *p, size_t asked)
{
    return zkn_usable_size(p) == zkn_class_size(zkn_size_class(asked)) &&
           zkn_size_class(asked) >= 0;
}

static void no_daemon(void)
{
    setenv("ZK_NALLOC_SOCKET", "/nonexistent-zknalloc-test/zkn.sock", 1);
}

START_TEST(small_requests_go_to_libc)
{
    struct zkn_stats before = stats();
    void *p = zkn_malloc(1000);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(zkn_usable_size(p), 1000);
    ck_assert_uint_lt(zkn_usable_size(p), 64 * KiB);
    fill(p, 1000, 7);
    ck_assert(check_fill(p, 1000, 7));
    void *q = zkn_malloc(64 * KiB - 1);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_lt(zkn_usable_size(q), 64 * KiB + 64);
    zkn_free(p);
    zkn_free(q);
    struct zkn_stats after = stats();
    ck_assert_uint_eq(after.hits + after.misses, before.hits + before.misses);
    zkn_free(NULL); /* ignored */
}
END_TEST

START_TEST(contents_survive)
{
    static const size_t sizes[] = {64 * KiB, 100 * KiB, 1 * MiB, 3 * MiB + 5, 17 * MiB, 64 * MiB + 1};
    enum { N = sizeof sizes / sizeof sizes[0] };
    void *p[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = zkn_malloc(sizes[i]);
            ck_assert_ptr_nonnull(p[i]);
            ck_assert(is_ours(p[i], sizes[i]));
            fill(p[i], sizes[i], (uint64_t)(round * 100 + i));
        }
        for (int i = 0; i < N; i++)
            ck_assert_msg(check_fill(p[i], sizes[i], (uint64_t)(round * 100 + i)),
                          "block %d of round %d corrupted", i, round);
        for (int i = 0; i < N; i++)
            zkn_free(p[i]);
    }
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.misses, N);       /* first round mapped them */
    ck_assert_uint_eq(s.hits, 2 * N);     /* later rounds reused them */
    ck_assert_uint_eq(s.fallbacks, N);    /* no daemon answered */
    ck_assert_uint_eq(s.bytes_live, 0);
    ck_assert_uint_eq(s.bytes_leased, 0);
    ck_assert_uint_eq(s.daemon_connected, 0);
}
END_TEST

START_TEST(usable_size_is_the_class)
{
    for (size_t size = 64 * KiB; size < 300 * MiB; size = size * 5 / 3) {
        void *p = zkn_malloc(size);
        ck_assert_ptr_nonnull(p);
        size_t u = zkn_usable_size(p);
        ck_assert_uint_ge(u, size);
        ck_assert_uint_eq(u, zkn_class_size(zkn_size_class(size)));
        ((char *)p)[u - 1] = 1; /* all of it is usable */
        zkn_free(p);
    }
    ck_assert_uint_eq(zkn_usable_size(NULL), 0);
}
END_TEST

START_TEST(freed_block_is_reused_by_the_same_thread)
{
    void *p = zkn_malloc(8 * MiB);
    zkn_free(p);
    struct zkn_stats before = stats();
    void *q = zkn_malloc(8 * MiB - 100); /* same class */
    ck_assert_ptr_eq(p, q);
    ck_assert_uint_eq(stats().hits, before.hits + 1);
    ck_assert_uint_eq(stats().bytes_cached, before.bytes_cached - 8 * MiB);
    zkn_free(q);
}
END_TEST

static void calloc_after_dirty(size_t size)
{
    unsigned char *p = zkn_malloc(size);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xab, size);
    zkn_free(p);
    unsigned char *q = zkn_calloc(size / 8, 8);
    ck_assert_ptr_eq(p, q); /* the dirty region came back... */
    ck_assert_msg(all_zero(q, zkn_usable_size(q)), "calloc of %zu bytes not zero", size);
    zkn_free(q);
}

START_TEST(calloc_is_zero_after_dirty_reuse)
{
    calloc_after_dirty(128 * KiB);
    calloc_after_dirty(8 * MiB);
    calloc_after_dirty(64 * MiB);
    unsigned char *f = zkn_calloc(1, 5 * MiB); /* fresh */
    ck_assert(all_zero(f, 5 * MiB));
    zkn_free(f);
    void *s = zkn_calloc(10, 10); /* small: libc */
    ck_assert(all_zero(s, 100));
    zkn_free(s);
}
END_TEST

START_TEST(calloc_overflow_is_enomem)
{
    /* volatile: the header's alloc_size lets the compiler refuse these. */
    volatile size_t half = SIZE_MAX / 2, near_max = SIZE_MAX - 4096;
    errno = 0;
    ck_assert_ptr_null(zkn_calloc(half, 3));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(zkn_malloc(near_max));
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

START_TEST(realloc_across_boundaries)
{
    /* small (libc) -> large (ours) */
    char *p = zkn_malloc(1000);
    fill(p, 1000, 1);
    p = zkn_realloc(p, 1 * MiB);
    ck_assert(is_ours(p, 1 * MiB));
    ck_assert(check_fill(p, 1000, 1));
    fill(p, 1 * MiB, 2);
    /* class to class, growing (copy below 2 MiB) */
    p = zkn_realloc(p, 3 * MiB);
    ck_assert(is_ours(p, 3 * MiB));
    ck_assert(check_fill(p, 1 * MiB, 2));
    fill(p, 3 * MiB, 3);
    /* growing a private region >= 2 MiB: pages move, contents stay */
    p = zkn_realloc(p, 40 * MiB);
    ck_assert(is_ours(p, 40 * MiB));
    ck_assert(check_fill(p, 3 * MiB, 3));
    ck_assert(all_zero(p + 3 * MiB, 1 * MiB)); /* the new tail reads as fresh memory */
    fill(p, 40 * MiB, 4);
    /* shrink by less than half: stays in place */
    char *q = zkn_realloc(p, 30 * MiB);
    ck_assert_ptr_eq(q, p);
    ck_assert(check_fill(q, 30 * MiB, 4));
    /* shrink a lot: moves to a smaller class */
    p = zkn_realloc(q, 1 * MiB);
    ck_assert_uint_eq(zkn_usable_size(p), 1 * MiB);
    ck_assert(check_fill(p, 1 * MiB, 4));
    /* large -> small (libc) */
    p = zkn_realloc(p, 100);
    ck_assert_uint_lt(zkn_usable_size(p), 64 * KiB);
    ck_assert(check_fill(p, 96, 4));
    /* realloc(NULL, n) and realloc(p, 0) */
    zkn_free(p);
    p = zkn_realloc(NULL, 2 * MiB);
    ck_assert(is_ours(p, 2 * MiB));
    ck_assert_ptr_null(zkn_realloc(p, 0));
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.bytes_live, 0);
}
END_TEST

START_TEST(realloc_grow_many_times)
{
    /* A growing vector: every step keeps every byte written so far. */
    size_t n = 70 * KiB;
    char *p = zkn_malloc(n);
    fill(p, n, 9);
    while (n < 200 * MiB) {
        size_t m = n * 2 + 12345;
        p = zkn_realloc(p, m);
        ck_assert_ptr_nonnull(p);
        ck_assert(check_fill(p, n, 9));
        fill(p, m, 9);
        n = m;
    }
    zkn_free(p);
}
END_TEST

START_TEST(alignment_contracts)
{
    static const size_t sizes[] = {1, 100, 70 * KiB, 3 * MiB};
    for (unsigned k = 0; k <= 30; k++) {
        size_t align = (size_t)1 << k;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = zkn_aligned_alloc(align, sizes[i]);
            ck_assert_msg(p != NULL, "aligned_alloc(%zu, %zu) failed", align, sizes[i]);
            ck_assert_msg(((uintptr_t)p & (align - 1)) == 0, "%p not aligned to %zu", (void *)p,
                          align);
            ck_assert_uint_ge(zkn_usable_size(p), sizes[i]);
            p[0] = 1;
            p[sizes[i] - 1] = 2;
            zkn_free(p);
        }
    }
    errno = 0;
    ck_assert_ptr_null(zkn_aligned_alloc(3, 100 * KiB));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(zkn_aligned_alloc(0, 100 * KiB));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(standard_alignment_functions)
{
    /* Whoever owns malloc in this build (us, or the sanitizer), the
     * contracts hold. */
    void *p = NULL;
#if !defined(__SANITIZE_ADDRESS__) /* ASan reports a bad alignment as a bug instead */
    ck_assert_int_eq(posix_memalign(&p, 3, 1000), EINVAL);
#endif
    ck_assert_int_eq(posix_memalign(&p, 1 << 21, 5 * MiB), 0);
    ck_assert_uint_eq((uintptr_t)p & ((1 << 21) - 1), 0);
    memset(p, 1, 5 * MiB);
    free(p);
    ck_assert_int_eq(posix_memalign(&p, 64, 100 * KiB), 0);
    ck_assert_uint_eq((uintptr_t)p & 63, 0);
    free(p);
    p = aligned_alloc(1 << 16, 1 << 20);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p & 0xffff, 0);
    free(p);
    p = memalign(1 << 12, 200 * KiB);
    ck_assert_uint_eq((uintptr_t)p & 0xfff, 0);
    free(p);
    p = valloc(300 * KiB);
    ck_assert_uint_eq((uintptr_t)p & 0xfff, 0);
    free(p);
    p = pvalloc(100 * KiB + 1);
    ck_assert_uint_eq((uintptr_t)p & 0xfff, 0);
    ck_assert_uint_ge(malloc_usable_size(p), 100 * KiB + 4096);
    free(p);
}
END_TEST

START_TEST(double_free_aborts)
{
    void *p = zkn_malloc(1 * MiB);
    zkn_free(p);
    zkn_free(p);
}
END_TEST

START_TEST(interior_free_aborts)
{
    char *p = zkn_malloc(1 * MiB);
    zkn_free(p + 4096);
}
END_TEST

START_TEST(free_sized_of_another_class_aborts)
{
    void *p = zkn_malloc(1 * MiB);
    zkn_free_sized(p, 10 * MiB);
}
END_TEST

START_TEST(free_sized_matching)
{
    void *p = zkn_malloc(1 * MiB);
    zkn_free_sized(p, 1 * MiB);
    void *q = zkn_malloc(100);
    zkn_free_sized(q, 100);
    ck_assert_uint_eq(stats().bytes_live, 0);
}
END_TEST

struct handoff {
    void *blocks[16];
    size_t size;
};

static void *producer(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 16; i++) {
        h->blocks[i] = zkn_malloc(h->size);
        fill(h->blocks[i], h->size, (uint64_t)i + 1000);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 16; i++) {
        h->blocks[i] = zkn_malloc(h->size);
        fill(h->blocks[i], h->size, (uint64_t)i + 2000);
    }
    for (int i = 0; i < 16; i++) {
        if (!check_fill(h->blocks[i], h->size, (uint64_t)i + 2000))
            return (void *)1;
        zkn_free(h->blocks[i]);
    }
    return NULL;
}

START_TEST(cross_thread_free_and_reuse)
{
    struct handoff h = {.size = 2 * MiB};
    pthread_t t;
    pthread_create(&t, NULL, producer, &h);
    pthread_join(t, NULL);
    for (int i = 0; i < 16; i++) {
        ck_assert(check_fill(h.blocks[i], h.size, (uint64_t)i + 1000));
        zkn_free(h.blocks[i]); /* freed here, allocated there */
    }
    struct zkn_stats before = stats();
    void *r;
    pthread_create(&t, NULL, consumer, &h);
    pthread_join(t, &r);
    ck_assert_ptr_null(r);
    /* The second thread was served from what this one freed. */
    ck_assert_uint_eq(stats().hits, before.hits + 16);
    ck_assert_uint_eq(stats().misses, before.misses);
}
END_TEST

static void *alloc_free_exit(void *arg)
{
    void *p = zkn_malloc(8 * MiB);
    fill(p, 8 * MiB, 5);
    zkn_free(p); /* cached in this thread's cache, then the thread ends */
    *(void **)arg = p;
    return NULL;
}

START_TEST(thread_exit_hands_back_its_cache)
{
    void *freed;
    pthread_t t;
    pthread_create(&t, NULL, alloc_free_exit, &freed);
    pthread_join(t, NULL);
    struct zkn_stats before = stats();
    ck_assert_uint_eq(before.bytes_cached, 8 * MiB);
    void *p = zkn_malloc(8 * MiB);
    ck_assert_ptr_eq(p, freed);
    ck_assert_uint_eq(stats().hits, before.hits + 1);
    zkn_free(p);
}
END_TEST

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *live[6] = {0};
    size_t sz[6] = {0};
    uint64_t tag[6] = {0};
    for (int it = 0; it < 300; it++) {
        int k = (int)(rand_r(&seed) % 6);
        if (live[k]) {
            if (!check_fill(live[k], sz[k], tag[k]))
                return (void *)1;
            zkn_free(live[k]);
        }
        unsigned r = rand_r(&seed);
        sz[k] = (r & 1) ? 100 + r % 60000 : 64 * KiB + r % (6 * MiB);
        live[k] = (r & 2) ? zkn_calloc(1, sz[k]) : zkn_malloc(sz[k]);
        if (!live[k])
            return (void *)2;
        if ((r & 2) && !all_zero(live[k], sz[k]))
            return (void *)3;
        tag[k] = (uint64_t)(uintptr_t)live[k] ^ r;
        fill(live[k], sz[k], tag[k]);
    }
    for (int k = 0; k < 6; k++)
        if (live[k]) {
            if (!check_fill(live[k], sz[k], tag[k]))
                return (void *)1;
            zkn_free(live[k]);
        }
    return NULL;
}

START_TEST(many_threads_verify_contents)
{
    enum { T = 8 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i * 7919 + 1));
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_msg(r == NULL, "thread %d: error %d", i, (int)(uintptr_t)r);
    }
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.bytes_live, 0);
    ck_assert_uint_le(s.bytes_cached, s.cache_cap);
    ck_assert_uint_gt(s.hits, 0);
}
END_TEST

START_TEST(cache_cap_is_enforced)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "16M", 1);
    void *p[10];
    for (int i = 0; i < 10; i++)
        p[i] = zkn_malloc(4 * MiB);
    for (int i = 0; i < 10; i++)
        zkn_free(p[i]);
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.cache_cap, 16 * MiB);
    ck_assert_uint_eq(s.bytes_cached, 16 * MiB);
    /* A new class evicts the old one rather than going uncached. */
    void *q = zkn_malloc(12 * MiB);
    zkn_free(q);
    s = stats();
    ck_assert_uint_le(s.bytes_cached, 16 * MiB);
    void *r = zkn_malloc(12 * MiB);
    ck_assert_ptr_eq(r, q);
    zkn_free(r);
}
END_TEST

START_TEST(default_cap_is_ram_over_8_up_to_1g)
{
    struct sysinfo si;
    ck_assert_int_eq(sysinfo(&si), 0);
    uint64_t ram = (uint64_t)si.totalram * si.mem_unit;
    uint64_t want = ram / 8 < (1ull << 30) ? ram / 8 : (1ull << 30);
    ck_assert_uint_eq(stats().cache_cap, want);
}
END_TEST

START_TEST(release_and_soften)
{
    static const size_t sizes[] = {1 * MiB, 2 * MiB, 4 * MiB, 6 * MiB}; /* exact classes */
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = zkn_malloc(sizes[i]);
        memset(p[i], 0x5a, sizes[i]);
    }
    for (int i = 0; i < 4; i++)
        zkn_free(p[i]);
    ck_assert_uint_eq(stats().bytes_cached, 13 * MiB);
    zkn_soften_cache(); /* private regions stay cached, reclaimable */
    ck_assert_uint_eq(stats().bytes_cached, 13 * MiB);
    unsigned char *c = zkn_calloc(1, 4 * MiB);
    ck_assert_ptr_eq(c, p[2]);
    ck_assert(all_zero(c, 4 * MiB));
    fill(c, 4 * MiB, 3);
    ck_assert(check_fill(c, 4 * MiB, 3));
    zkn_free(c);
    zkn_release_cache();
    ck_assert_uint_eq(stats().bytes_cached, 0);
    struct zkn_stats before = stats();
    void *q = zkn_malloc(1 * MiB);
    ck_assert_uint_eq(stats().misses, before.misses + 1);
    zkn_free(q);
}
END_TEST

START_TEST(fork_writes_stay_apart)
{
    size_t n = 4 * MiB;
    unsigned char *p = zkn_malloc(n);
    memset(p, 'A', n);
    int to_child[2], to_parent[2];
    ck_assert_int_eq(pipe(to_child), 0);
    ck_assert_int_eq(pipe(to_parent), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    char b;
    if (pid == 0) {
        int ok = read(to_child[0], &b, 1) == 1;
        for (size_t i = 0; ok && i < n; i++)
            ok = p[i] == 'A';
        memset(p, 'C', n);
        void *q = zkn_malloc(n); /* the child allocates on its own too */
        memset(q, 'D', n);
        zkn_free(q);
        ok = ok && write(to_parent[1], "x", 1) == 1;
        _exit(ok ? 0 : 1);
    }
    memset(p, 'P', n);
    ck_assert_int_eq(write(to_child[1], "x", 1), 1);
    ck_assert_int_eq(read(to_parent[0], &b, 1), 1);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(p[i], 'P');
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zkn_free(p);
    for (int i = 0; i < 2; i++) {
        close(to_child[i]);
        close(to_parent[i]);
    }
}
END_TEST

START_TEST(no_window_goes_to_libc)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("no_window_goes_to_libc: skipped (ASan cannot run under a small RLIMIT_AS)\n");
    ck_assert(1);
#else
    /* Like ulimit -v: the window cannot be reserved, the program still runs. */
    struct rlimit rl = {.rlim_cur = 8ull << 30, .rlim_max = 8ull << 30};
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
    char *p = zkn_malloc(1 * MiB);
    ck_assert_ptr_nonnull(p);
    fill(p, 1 * MiB, 11);
    p = zkn_realloc(p, 3 * MiB);
    ck_assert(check_fill(p, 1 * MiB, 11));
    ck_assert_uint_ge(zkn_usable_size(p), 3 * MiB);
    unsigned char *c = zkn_calloc(1, 2 * MiB);
    ck_assert(all_zero(c, 2 * MiB));
    void *a = zkn_aligned_alloc(1 << 20, 2 * MiB);
    ck_assert_uint_eq((uintptr_t)a & ((1 << 20) - 1), 0);
    zkn_free(a);
    zkn_free(c);
    zkn_free(p);
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.libc_fallbacks, 4); /* malloc, realloc, calloc, aligned */
    ck_assert_uint_eq(s.hits + s.misses, 0);
#endif
}
END_TEST

START_TEST(show_stats_at_exit)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 2);
        setenv("ZK_NALLOC_SHOW_STATS", "1", 1);
        void *p = zkn_malloc(1 * MiB);
        zkn_free(p);
        p = zkn_malloc(1 * MiB);
        zkn_free(p);
        exit(0); /* the library's destructor prints */
    }
    close(pfd[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(pfd[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    ck_assert_ptr_nonnull(strstr(buf, "zknalloc: stats"));
    ck_assert_ptr_nonnull(strstr(buf, "hits             1\n"));
    ck_assert_ptr_nonnull(strstr(buf, "misses           1\n"));
}
END_TEST

START_TEST(no_fd_leaks)
{
    int before = zkn_test_count_fds();
    for (int i = 0; i < 50; i++) {
        void *p = zkn_malloc((size_t)(i % 7 + 1) * 300 * KiB);
        zkn_free(p);
    }
    zkn_release_cache();
    ck_assert_int_eq(zkn_test_count_fds(), before);
}
END_TEST

START_TEST(aligned_blocks_stay_ours_when_cheap)
{
    /* Slots are aligned to their power-of-two stride: alignments up to the
     * stride cost nothing, and a bump of at most one doubling is ours too. */
    void *a = zkn_aligned_alloc(1 << 20, 600 * KiB); /* 640 KiB class, 1 MiB stride */
    ck_assert_uint_eq((uintptr_t)a & ((1 << 20) - 1), 0);
    ck_assert_uint_eq(zkn_usable_size(a), 640 * KiB);
    void *b = zkn_aligned_alloc(2 << 20, 1 * MiB); /* up to 1.25 MiB: stride 2 MiB */
    ck_assert_uint_eq((uintptr_t)b & ((2 << 20) - 1), 0);
    ck_assert_uint_eq(zkn_usable_size(b), 1280 * KiB);
    void *c = zkn_aligned_alloc(64 << 20, 1 * MiB); /* 64x: glibc's memalign instead */
    ck_assert_uint_eq((uintptr_t)c & ((64 << 20) - 1), 0);
    ck_assert_uint_ge(zkn_usable_size(c), 1 * MiB);
    ck_assert_uint_eq(stats().libc_fallbacks, 1);
    zkn_free(a);
    zkn_free(b);
    zkn_free(c);
}
END_TEST

START_TEST(past_the_largest_class_goes_to_libc)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("past_the_largest_class_goes_to_libc: skipped (ASan would shadow 17 GiB)\n");
    ck_assert(1);
#else
    size_t n = ((size_t)17 << 30);
    char *p = zkn_malloc(n); /* virtual only: a few pages are touched */
    ck_assert_ptr_nonnull(p);
    p[0] = 1;
    p[n - 1] = 2;
    ck_assert_uint_ge(zkn_usable_size(p), n);
    ck_assert_uint_eq(stats().libc_fallbacks, 1);
    zkn_free(p);
#endif
}
END_TEST

static volatile int stop_churn;

static void *churn_until_stopped(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!stop_churn) {
        unsigned r = rand_r(&seed);
        size_t n = 64 * KiB + r % (3 * MiB);
        int zero = r & 1;
        unsigned char *p = zero ? zkn_calloc(1, n) : zkn_malloc(n);
        if (!p || (zero && !all_zero(p, n)))
            return (void *)1;
        fill(p, n, r);
        if (!check_fill(p, n, r))
            return (void *)2;
        zkn_free(p);
    }
    return NULL;
}

START_TEST(release_and_soften_while_threads_allocate)
{
    enum { T = 4 };
    pthread_t t[T];
    stop_churn = 0;
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn_until_stopped, (void *)(uintptr_t)(i + 17));
    for (int k = 0; k < 200; k++) {
        if (k & 1)
            zkn_release_cache(); /* takes regions out of the other threads' caches */
        else
            zkn_soften_cache();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    stop_churn = 1;
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_msg(r == NULL, "thread %d: error %d", i, (int)(uintptr_t)r);
    }
    zkn_release_cache();
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.bytes_live, 0);
}
END_TEST

START_TEST(errno_untouched_on_success)
{
    /* The first large request tries (and fails) to reach a daemon, maps
     * memory, advises it; none of that may show in errno. */
    errno = 4242;
    void *p = zkn_malloc(3 * MiB);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(errno, 4242);
    void *q = zkn_calloc(1, 200 * KiB);
    ck_assert_int_eq(errno, 4242);
    zkn_free(p);
    zkn_free(q);
    zkn_release_cache();
    ck_assert_int_eq(errno, 4242);
}
END_TEST

START_TEST(small_window_under_a_limit)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("small_window_under_a_limit: skipped (ASan cannot run under RLIMIT_AS)\n");
    ck_assert(1);
#else
    /* 32 GiB of address space: the window takes at most a quarter, so it
     * serves the smaller classes and leaves big blocks to libc. */
    struct rlimit rl = {.rlim_cur = 32ull << 30, .rlim_max = 32ull << 30};
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
    void *p = zkn_malloc(3 * MiB);
    ck_assert_uint_eq(zkn_usable_size(p), 4 * MiB); /* a class: ours */
    void *q = zkn_malloc(200 * MiB);
    ck_assert_ptr_nonnull(q);
    memset(q, 1, 200 * MiB);
    struct zkn_stats s = stats();
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.libc_fallbacks, 1);
    /* And the program keeps most of its address space. */
    void *r = zkn_malloc(12ull << 30);
    ck_assert_ptr_nonnull(r);
    zkn_free(r);
    zkn_free(q);
    zkn_free(p);
#endif
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_basic");
    TCase *t = zkn_test_tcase(s, "no_daemon", 60);
    tcase_add_checked_fixture(t, no_daemon, NULL);
    tcase_add_test(t, small_requests_go_to_libc);
    tcase_add_test(t, contents_survive);
    tcase_add_test(t, usable_size_is_the_class);
    tcase_add_test(t, freed_block_is_reused_by_the_same_thread);
    tcase_add_test(t, calloc_is_zero_after_dirty_reuse);
    tcase_add_test(t, calloc_overflow_is_enomem);
    tcase_add_test(t, errno_untouched_on_success);
    tcase_add_test(t, realloc_across_boundaries);
    tcase_add_test(t, realloc_grow_many_times);
    tcase_add_test(t, alignment_contracts);
    tcase_add_test(t, standard_alignment_functions);
    tcase_add_test(t, aligned_blocks_stay_ours_when_cheap);
    tcase_add_test(t, past_the_largest_class_goes_to_libc);
    tcase_add_test_raise_signal(t, double_free_aborts, SIGABRT);
    tcase_add_test_raise_signal(t, interior_free_aborts, SIGABRT);
    tcase_add_test_raise_signal(t, free_sized_of_another_class_aborts, SIGABRT);
    tcase_add_test(t, free_sized_matching);
    tcase_add_test(t, cross_thread_free_and_reuse);
    tcase_add_test(t, thread_exit_hands_back_its_cache);
    tcase_add_test(t, many_threads_verify_contents);
    tcase_add_test(t, cache_cap_is_enforced);
    tcase_add_test(t, default_cap_is_ram_over_8_up_to_1g);
    tcase_add_test(t, release_and_soften);
    tcase_add_test(t, release_and_soften_while_threads_allocate);
    tcase_add_test(t, fork_writes_stay_apart);
    tcase_add_test(t, no_window_goes_to_libc);
    tcase_add_test(t, small_window_under_a_limit);
    tcase_add_test(t, show_stats_at_exit);
    tcase_add_test(t, no_fd_leaks);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
