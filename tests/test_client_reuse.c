/* libzknalloc without a daemon: a miss is served from what the cache holds
 * in other classes (pages moved, not faulted anew), a slightly bigger cached
 * block serves a smaller request, and calloc still reads zero whatever the
 * pages held before. ZK_NALLOC_SOCKET points where nothing listens. */
#include <check.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_helpers.h"
#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

#define MiB ((size_t)1 << 20)

/* Resident bytes of this process. */
static uint64_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* n blocks of size bytes, each written in full, then all freed (cached). */
static void cache_dirty_blocks(int n, size_t size)
{
    void *p[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++) {
        p[i] = zkn_malloc(size);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], 0xA5, size);
    }
    for (int i = 0; i < n; i++)
        zkn_free(p[i]);
}

START_TEST(miss_takes_pages_of_other_classes)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    cache_dirty_blocks(6, 8 * MiB);
    struct zkn_stats s0 = zkn_test_lib_stats();
    ck_assert_uint_eq(s0.bytes_cached, 48 * MiB);
    uint64_t rss0 = rss_bytes();
    /* No 40 MiB block was ever cached: its pages are the 8 MiB blocks'. */
    unsigned char *p = zkn_malloc(40 * MiB);
    ck_assert_ptr_nonnull(p);
    zkn_test_fill(p, 40 * MiB, 7);
    ck_assert(zkn_test_check_fill(p, 40 * MiB, 7));
    struct zkn_stats s1 = zkn_test_lib_stats();
    ck_assert_uint_eq(s1.hits, s0.hits + 1);
    ck_assert_uint_eq(s1.misses, s0.misses);
    ck_assert_uint_eq(s1.bytes_cached, 8 * MiB);
    /* Writing all 40 MiB faulted nothing new in (allowing for page tables,
     * and for a sanitizer's shadow: an eighth of what it checks). */
    ck_assert_uint_lt(rss_bytes(), rss0 + 2 * MiB + 40 * MiB / 8);
    zkn_free(p);
}
END_TEST

START_TEST(calloc_from_dirty_pages_reads_zero)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    cache_dirty_blocks(3, 8 * MiB);
    unsigned char *p = zkn_calloc(1, 20 * MiB); /* 2 x 8 MiB moved, the rest fresh */
    ck_assert_ptr_nonnull(p);
    ck_assert(zkn_test_all_byte(p, 20 * MiB, 0));
    zkn_free(p);
    /* A bigger dirty block split: part serves the calloc, the rest is filed. */
    zkn_release_cache();
    cache_dirty_blocks(1, 64 * MiB);
    uint64_t rss0 = rss_bytes();
    unsigned char *q = zkn_calloc(1, 20 * MiB);
    ck_assert_ptr_nonnull(q);
    ck_assert(zkn_test_all_byte(q, 20 * MiB, 0));
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_cached, 44 * MiB); /* the rest of the 64 MiB, kept */
    unsigned char *r = zkn_malloc(40 * MiB);      /* served by what was filed */
    ck_assert_ptr_nonnull(r);
    memset(r, 1, 40 * MiB);
    ck_assert_uint_lt(rss_bytes(), rss0 + 2 * MiB + 60 * MiB / 8);
    zkn_free(q);
    zkn_free(r);
}
END_TEST

START_TEST(realloc_grows_a_block_built_from_pieces)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    cache_dirty_blocks(3, 8 * MiB);
    unsigned char *p = zkn_malloc(24 * MiB); /* three donors: three mappings */
    ck_assert_ptr_nonnull(p);
    zkn_test_fill(p, 24 * MiB, 11);
    unsigned char *q = zkn_realloc(p, 100 * MiB);
    ck_assert_ptr_nonnull(q);
    ck_assert(zkn_test_check_fill(q, 24 * MiB, 11));
    memset(q + 24 * MiB, 3, 76 * MiB);
    ck_assert(zkn_test_check_fill(q, 24 * MiB, 11));
    zkn_free(q);
}
END_TEST

START_TEST(realloc_growth_takes_cached_pages)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    unsigned char *a = zkn_malloc(8 * MiB);
    ck_assert_ptr_nonnull(a);
    zkn_test_fill(a, 8 * MiB, 5);
    cache_dirty_blocks(2, 8 * MiB);
    uint64_t rss0 = rss_bytes();
    unsigned char *b = zkn_realloc(a, 24 * MiB); /* a's pages, then the cached ones */
    ck_assert_ptr_nonnull(b);
    ck_assert(zkn_test_check_fill(b, 8 * MiB, 5));
    memset(b + 8 * MiB, 4, 16 * MiB);
    ck_assert_uint_lt(rss_bytes(), rss0 + 2 * MiB + 24 * MiB / 8);
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 0);
    zkn_free(b);
}
END_TEST

START_TEST(slightly_bigger_block_serves)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    void *big = zkn_malloc(10 * MiB);
    ck_assert_ptr_nonnull(big);
    memset(big, 9, 10 * MiB);
    zkn_free(big);
    struct zkn_stats s0 = zkn_test_lib_stats();
    void *p = zkn_malloc(8 * MiB); /* 10 MiB is within a quarter more */
    ck_assert_ptr_eq(p, big);
    ck_assert_uint_eq(zkn_usable_size(p), 10 * MiB);
    ck_assert_uint_eq(zkn_test_lib_stats().hits, s0.hits + 1);
    zkn_free(p);
    /* Past a quarter more it is not handed out whole. */
    void *q = zkn_malloc(6 * MiB);
    ck_assert_ptr_ne(q, big);
    ck_assert_uint_eq(zkn_usable_size(q), 6 * MiB);
    zkn_free(q);
    /* Below a huge page, up to twice the size (small blocks' pages are not
     * moved between classes). */
    void *small = zkn_malloc(512 * 1024);
    ck_assert_ptr_nonnull(small);
    memset(small, 8, 512 * 1024);
    zkn_free(small);
    void *r = zkn_malloc(256 * 1024);
    ck_assert_ptr_eq(r, small);
    ck_assert_uint_eq(zkn_usable_size(r), 512 * 1024);
    zkn_free(r);
}
END_TEST

/* Anonymous transparent huge pages are on (madvise or always). */
static int thp_on(void)
{
    char buf[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n > 0 && strstr(buf, "[never]") == NULL;
}

START_TEST(a_huge_page_serves_its_neighbours)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    /* 64 KiB: never a whole huge page for one small block. */
    void *tiny = zkn_malloc(64 * 1024);
    ck_assert_ptr_nonnull(tiny);
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 0);
    zkn_free(tiny);
    zkn_release_cache();
    /* 512 KiB: its huge page holds three more, kept clean for later. */
    unsigned char *p = zkn_malloc(512 * 1024);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x77, 512 * 1024);
    if (!thp_on()) {
        ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 0);
        zkn_free(p);
        return;
    }
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_cached, 3 * 512 * 1024);
    struct zkn_stats s0 = zkn_test_lib_stats();
    unsigned char *q[3];
    for (int i = 0; i < 3; i++) {
        q[i] = zkn_calloc(1, 512 * 1024); /* clean neighbours: hits, all zero */
        ck_assert_ptr_nonnull(q[i]);
        ck_assert(zkn_test_all_byte(q[i], 512 * 1024, 0));
        ck_assert_uint_eq((uintptr_t)q[i] >> 21, (uintptr_t)p >> 21); /* the same huge page */
    }
    ck_assert_uint_eq(zkn_test_lib_stats().hits, s0.hits + 3);
    ck_assert(zkn_test_all_byte(p, 512 * 1024, 0x77));
    zkn_free(p);
    for (int i = 0; i < 3; i++)
        zkn_free(q[i]);
}
END_TEST

START_TEST(whole_runs_of_small_blocks_serve_a_big_miss)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "256M", 1);
    if (!thp_on())
        return; /* no runs: each small block is its own mapping */
    const size_t small = 512 * 1024;
    unsigned char *p[17];
    /* 16 blocks: four whole huge pages (runs); the 17th starts a fifth run
     * whose other three blocks stay cached beside it. */
    for (int i = 0; i < 17; i++) {
        p[i] = zkn_malloc(small);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], 0x5A, small);
    }
    for (int i = 0; i < 16; i++)
        zkn_free(p[i]);
    struct zkn_stats s0 = zkn_test_lib_stats();
    ck_assert_uint_eq(s0.bytes_cached, 19 * small);
    uint64_t rss0 = rss_bytes();
    /* Nothing of 8 MiB is cached: the four runs' huge pages move into it. */
    unsigned char *big = zkn_calloc(1, 8 * MiB);
    ck_assert_ptr_nonnull(big);
    ck_assert(zkn_test_all_byte(big, 8 * MiB, 0));
    zkn_test_fill(big, 8 * MiB, 9);
    ck_assert(zkn_test_check_fill(big, 8 * MiB, 9));
    struct zkn_stats s1 = zkn_test_lib_stats();
    ck_assert_uint_eq(s1.misses, s0.misses + 1); /* not a hit: runs are found only on a miss */
    ck_assert_uint_eq(s1.bytes_cached, 3 * small); /* the fifth run is not whole: kept */
    ck_assert_uint_lt(rss_bytes(), rss0 + 2 * MiB + 8 * MiB / 8);
    ck_assert(zkn_test_all_byte(p[16], small, 0x5A)); /* the live block is untouched */
    /* Its neighbours still serve small requests. */
    unsigned char *q = zkn_calloc(1, small);
    ck_assert_ptr_nonnull(q);
    ck_assert(zkn_test_all_byte(q, small, 0));
    ck_assert_uint_eq((uintptr_t)q >> 21, (uintptr_t)p[16] >> 21);
    /* Two more neighbours, then a miss: its new run reuses the place of one
     * that moved (the window does not grow). */
    unsigned char *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = zkn_malloc(small);
        ck_assert_ptr_nonnull(r[i]);
        memset(r[i], 0x33, small);
    }
    ck_assert_uint_eq((uintptr_t)r[1] >> 21, (uintptr_t)p[16] >> 21);
    ck_assert((uintptr_t)r[2] >= (uintptr_t)p[0] && (uintptr_t)r[2] <= (uintptr_t)p[15]);
    ck_assert(zkn_test_all_byte(p[16], small, 0x5A));
    ck_assert(zkn_test_check_fill(big, 8 * MiB, 9));
    for (int i = 0; i < 3; i++)
        zkn_free(r[i]);
    zkn_free(q);
    zkn_free(p[16]);
    zkn_free(big);
}
END_TEST

START_TEST(churn_across_classes_stays_correct)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "64M", 1);
    /* Sizes over 2-40 MiB, calloc every third round: contents checked each
     * time while blocks are built from, and split into, each other. */
    ck_assert_ptr_null(zkn_test_churn(1234, 2 * MiB, 38 * MiB, 3, 300, NULL));
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_le(s.bytes_cached, 64 * MiB);
    ck_assert_uint_eq(s.bytes_live, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_reuse");
    TCase *t = zkn_test_tcase(s, "no_daemon", 60);
    tcase_add_checked_fixture(t, zkn_test_no_daemon, NULL);
    tcase_add_test(t, miss_takes_pages_of_other_classes);
    tcase_add_test(t, calloc_from_dirty_pages_reads_zero);
    tcase_add_test(t, realloc_grows_a_block_built_from_pieces);
    tcase_add_test(t, realloc_growth_takes_cached_pages);
    tcase_add_test(t, slightly_bigger_block_serves);
    tcase_add_test(t, a_huge_page_serves_its_neighbours);
    tcase_add_test(t, whole_runs_of_small_blocks_serve_a_big_miss);
    tcase_add_test(t, churn_across_classes_stays_correct);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
