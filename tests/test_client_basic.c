/* libzknalloc without a daemon: the zkn_* API's contracts on private memory
 * (classes, calloc, realloc, alignment, what free refuses); threads and fork
 * are in test_client_threads.c, the cache and window in test_client_cache.c.
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

#include "client_helpers.h"
#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "zknalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* A block is ours when its usable size is exactly its class's size. */
static int is_ours(void *p, size_t asked)
{
    return zkn_usable_size(p) == zkn_class_size(zkn_size_class(asked)) &&
           zkn_size_class(asked) >= 0;
}

START_TEST(small_requests_go_to_libc)
{
    struct zkn_stats before = zkn_test_lib_stats();
    void *p = zkn_malloc(1000);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(zkn_usable_size(p), 1000);
    ck_assert_uint_lt(zkn_usable_size(p), 64 * KiB);
    zkn_test_fill(p, 1000, 7);
    ck_assert(zkn_test_check_fill(p, 1000, 7));
    void *q = zkn_malloc(64 * KiB - 1);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_lt(zkn_usable_size(q), 64 * KiB + 64);
    zkn_free(p);
    zkn_free(q);
    struct zkn_stats after = zkn_test_lib_stats();
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
            zkn_test_fill(p[i], sizes[i], (uint64_t)(round * 100 + i));
        }
        for (int i = 0; i < N; i++)
            ck_assert_msg(zkn_test_check_fill(p[i], sizes[i], (uint64_t)(round * 100 + i)),
                          "block %d of round %d corrupted", i, round);
        for (int i = 0; i < N; i++)
            zkn_free(p[i]);
    }
    struct zkn_stats s = zkn_test_lib_stats();
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
    struct zkn_stats before = zkn_test_lib_stats();
    void *q = zkn_malloc(8 * MiB - 100); /* same class */
    ck_assert_ptr_eq(p, q);
    ck_assert_uint_eq(zkn_test_lib_stats().hits, before.hits + 1);
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, before.bytes_cached - 8 * MiB);
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
    ck_assert_msg(zkn_test_all_byte(q, zkn_usable_size(q), 0), "calloc of %zu bytes not zero",
                  size);
    zkn_free(q);
}

START_TEST(calloc_is_zero_after_dirty_reuse)
{
    calloc_after_dirty(128 * KiB);
    calloc_after_dirty(8 * MiB);
    calloc_after_dirty(64 * MiB);
    unsigned char *f = zkn_calloc(1, 5 * MiB); /* fresh */
    ck_assert(zkn_test_all_byte(f, 5 * MiB, 0));
    zkn_free(f);
    void *s = zkn_calloc(10, 10); /* small: libc */
    ck_assert(zkn_test_all_byte(s, 100, 0));
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
    zkn_test_fill(p, 1000, 1);
    p = zkn_realloc(p, 1 * MiB);
    ck_assert(is_ours(p, 1 * MiB));
    ck_assert(zkn_test_check_fill(p, 1000, 1));
    zkn_test_fill(p, 1 * MiB, 2);
    /* class to class, growing (copy below 2 MiB) */
    p = zkn_realloc(p, 3 * MiB);
    ck_assert(is_ours(p, 3 * MiB));
    ck_assert(zkn_test_check_fill(p, 1 * MiB, 2));
    zkn_test_fill(p, 3 * MiB, 3);
    /* growing a private region >= 2 MiB: pages move, contents stay */
    p = zkn_realloc(p, 40 * MiB);
    ck_assert(is_ours(p, 40 * MiB));
    ck_assert(zkn_test_check_fill(p, 3 * MiB, 3));
    ck_assert(zkn_test_all_byte(p + 3 * MiB, 1 * MiB, 0)); /* the new tail reads as fresh memory */
    zkn_test_fill(p, 40 * MiB, 4);
    /* shrink by less than half: stays in place */
    char *q = zkn_realloc(p, 30 * MiB);
    ck_assert_ptr_eq(q, p);
    ck_assert(zkn_test_check_fill(q, 30 * MiB, 4));
    /* shrink a lot: moves to a smaller class */
    p = zkn_realloc(q, 1 * MiB);
    ck_assert_uint_eq(zkn_usable_size(p), 1 * MiB);
    ck_assert(zkn_test_check_fill(p, 1 * MiB, 4));
    /* large -> small (libc) */
    p = zkn_realloc(p, 100);
    ck_assert_uint_lt(zkn_usable_size(p), 64 * KiB);
    ck_assert(zkn_test_check_fill(p, 96, 4));
    /* realloc(NULL, n) and realloc(p, 0) */
    zkn_free(p);
    p = zkn_realloc(NULL, 2 * MiB);
    ck_assert(is_ours(p, 2 * MiB));
    ck_assert_ptr_null(zkn_realloc(p, 0));
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_live, 0);
}
END_TEST

START_TEST(realloc_grow_many_times)
{
    /* A growing vector: every step keeps every byte written so far. */
    size_t n = 70 * KiB;
    char *p = zkn_malloc(n);
    zkn_test_fill(p, n, 9);
    while (n < 200 * MiB) {
        size_t m = n * 2 + 12345;
        p = zkn_realloc(p, m);
        ck_assert_ptr_nonnull(p);
        ck_assert(zkn_test_check_fill(p, n, 9));
        zkn_test_fill(p, m, 9);
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
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_live, 0);
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
    ck_assert_uint_eq(zkn_test_lib_stats().libc_fallbacks, 1);
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
    ck_assert_uint_eq(zkn_test_lib_stats().libc_fallbacks, 1);
    zkn_free(p);
#endif
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

static Suite *suite(void)
{
    Suite *s = suite_create("client_basic");
    TCase *t = zkn_test_tcase(s, "no_daemon", 60);
    tcase_add_checked_fixture(t, zkn_test_no_daemon, NULL);
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
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
