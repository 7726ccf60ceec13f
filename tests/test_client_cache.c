/* libzknalloc without a daemon: its cache (the cap, release and soften), the
 * address window under an RLIMIT_AS, the statistics printed at exit, and no
 * fd left behind. ZK_NALLOC_SOCKET points where nothing listens. */
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

START_TEST(cache_cap_is_enforced)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "16M", 1);
    void *p[10];
    for (int i = 0; i < 10; i++)
        p[i] = zkn_malloc(4 * MiB);
    for (int i = 0; i < 10; i++)
        zkn_free(p[i]);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.cache_cap, 16 * MiB);
    ck_assert_uint_eq(s.bytes_cached, 16 * MiB);
    /* A new class evicts the old one rather than going uncached. */
    void *q = zkn_malloc(12 * MiB);
    zkn_free(q);
    s = zkn_test_lib_stats();
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
    ck_assert_uint_eq(zkn_test_lib_stats().cache_cap, want);
}
END_TEST

START_TEST(release_and_soften)
{
    static const size_t sizes[] = {2 * MiB, 4 * MiB, 6 * MiB, 8 * MiB}; /* exact classes */
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = zkn_malloc(sizes[i]);
        memset(p[i], 0x5a, sizes[i]);
    }
    for (int i = 0; i < 4; i++)
        zkn_free(p[i]);
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 20 * MiB);
    zkn_soften_cache(); /* private regions stay cached, reclaimable */
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 20 * MiB);
    unsigned char *c = zkn_calloc(1, 4 * MiB);
    ck_assert_ptr_eq(c, p[1]);
    ck_assert(zkn_test_all_byte(c, 4 * MiB, 0));
    zkn_test_fill(c, 4 * MiB, 3);
    ck_assert(zkn_test_check_fill(c, 4 * MiB, 3));
    zkn_free(c);
    zkn_release_cache();
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 0);
    struct zkn_stats before = zkn_test_lib_stats();
    void *q = zkn_malloc(1 * MiB);
    ck_assert_uint_eq(zkn_test_lib_stats().misses, before.misses + 1);
    zkn_free(q);
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
    zkn_test_fill(p, 1 * MiB, 11);
    p = zkn_realloc(p, 3 * MiB);
    ck_assert(zkn_test_check_fill(p, 1 * MiB, 11));
    ck_assert_uint_ge(zkn_usable_size(p), 3 * MiB);
    unsigned char *c = zkn_calloc(1, 2 * MiB);
    ck_assert(zkn_test_all_byte(c, 2 * MiB, 0));
    void *a = zkn_aligned_alloc(1 << 20, 2 * MiB);
    ck_assert_uint_eq((uintptr_t)a & ((1 << 20) - 1), 0);
    zkn_free(a);
    zkn_free(c);
    zkn_free(p);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.libc_fallbacks, 4); /* malloc, realloc, calloc, aligned */
    ck_assert_uint_eq(s.hits + s.misses, 0);
#endif
}
END_TEST

static void two_mallocs_of_one_size(void)
{
    void *p = zkn_malloc(1 * MiB);
    zkn_free(p);
    p = zkn_malloc(1 * MiB);
    zkn_free(p);
}

START_TEST(show_stats_at_exit)
{
    char buf[4096];
    int st = zkn_test_child_report(two_mallocs_of_one_size, buf, sizeof buf);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d: %s", st, buf);
    ck_assert_ptr_nonnull(strstr(buf, "zknalloc: stats"));
    ck_assert_ptr_nonnull(strstr(buf, "hits              1\n"));
    ck_assert_ptr_nonnull(strstr(buf, "misses            1\n"));
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
    struct zkn_stats s = zkn_test_lib_stats();
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
    Suite *s = suite_create("client_cache");
    TCase *t = zkn_test_tcase(s, "no_daemon", 60);
    tcase_add_checked_fixture(t, zkn_test_no_daemon, NULL);
    tcase_add_test(t, cache_cap_is_enforced);
    tcase_add_test(t, default_cap_is_ram_over_8_up_to_1g);
    tcase_add_test(t, release_and_soften);
    tcase_add_test(t, no_window_goes_to_libc);
    tcase_add_test(t, small_window_under_a_limit);
    tcase_add_test(t, show_stats_at_exit);
    tcase_add_test(t, no_fd_leaks);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
