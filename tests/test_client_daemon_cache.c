/* The library's cache of daemon regions: the cap, threads sharing them,
 * refusals, soften and release, fds, and one log line at most. */
#include "client_daemon_fixture.h"

START_TEST(over_the_cap_regions_go_back)
{
    setenv("ZK_NALLOC_CACHE_BYTES", "8M", 1);
    void *p[10];
    for (int i = 0; i < 10; i++) {
        p[i] = zkn_malloc(4 * MiB);
        memset(p[i], i, 4 * MiB);
    }
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_leased, 40 * MiB);
    for (int i = 0; i < 10; i++)
        zkn_free(p[i]);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_cached, 8 * MiB);
    ck_assert_uint_eq(s.bytes_leased, 8 * MiB);
    ck_assert_uint_eq(s.daemon_returns, 8);
    zkn_release_cache();
    s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_leased, 0);
    ck_assert_uint_eq(s.daemon_returns, 10);
    /* The daemon took them back: they are lent again, warm. */
    void *q = zkn_malloc(4 * MiB);
    ck_assert_ptr_nonnull(q);
    zkn_free(q);
}
END_TEST

/* Eight dirty 4 MiB blocks cached, with the daemon's zeroing of the class
 * done. */
static void cache_dirty_4m(struct zkn_stats *s0)
{
    void *p[8];
    for (int i = 0; i < 8; i++) {
        p[i] = zkn_malloc(4 * MiB);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], 0xA5, 4 * MiB);
    }
    zkn_release_cache(); /* unused extras of the LEND batches go back */
    for (int i = 0; i < 8; i++)
        zkn_free(p[i]);
    *s0 = zkn_test_lib_stats();
    ck_assert_uint_eq(s0->bytes_cached, 32 * MiB); /* all dirty */
    /* Once the daemon has zeroed regions of the class ready again... */
    json_int_t ready = 0;
    for (int i = 0; i < 1000 && ready < 2; i++) {
        json_t *j = zkn_test_stats(daemon_.sock);
        ready = zkn_test_class_int(j, zkn_size_class(4 * MiB), "clean");
        json_decref(j);
        if (ready < 2)
            zkn_test_sleep_ms(10);
    }
    ck_assert_int_ge(ready, 2);
}

/* cache_dirty_4m(s0), then a 4 MiB calloc, which must read all zero; *s1:
 * the stats after it. */
static unsigned char *calloc_4m_over_dirty(struct zkn_stats *s0, struct zkn_stats *s1)
{
    cache_dirty_4m(s0);
    unsigned char *q = zkn_calloc(1, 4 * MiB);
    ck_assert_ptr_nonnull(q);
    ck_assert(zkn_test_all_byte(q, 4 * MiB, 0));
    *s1 = zkn_test_lib_stats();
    return q;
}

START_TEST(calloc_trades_dirty_blocks_for_zeroed_ones)
{
    setenv("ZK_NALLOC_CALLOC_TRADE", "1", 1);
    struct zkn_stats s0, s1;
    unsigned char *q = calloc_4m_over_dirty(&s0, &s1);
    /* ...calloc took daemon-zeroed ones and gave back as many dirty ones,
     * rather than zeroing one of its own. */
    ck_assert_uint_eq(s1.hits, s0.hits);
    ck_assert_uint_eq(s1.misses, s0.misses + 1);
    ck_assert_uint_gt(s1.daemon_returns, s0.daemon_returns);
    ck_assert_uint_le(s1.bytes_cached, s0.bytes_cached);
    zkn_free(q);
}
END_TEST

START_TEST(calloc_zeroes_its_own_block_by_default)
{
    struct zkn_stats s0, s1;
    unsigned char *q = calloc_4m_over_dirty(&s0, &s1);
    ck_assert_uint_eq(s1.hits, s0.hits + 1); /* a dirty block of its own, zeroed here */
    ck_assert_uint_eq(s1.daemon_lends, s0.daemon_lends);
    ck_assert_uint_eq(s1.daemon_returns, s0.daemon_returns);
    zkn_free(q);
}
END_TEST

static void *churn(void *arg)
{
    return zkn_test_churn((unsigned)(uintptr_t)arg, 64 * KiB, 8 * MiB, 1u << 4, 150, NULL);
}

START_TEST(threads_share_daemon_regions)
{
    enum { T = 6 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
    zkn_test_join_all(t, T);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_live, 0);
    ck_assert_uint_gt(s.daemon_lends, 0);
    ck_assert_uint_le(s.bytes_cached, s.cache_cap);
}
END_TEST

START_TEST(no_fd_leaks_with_daemon)
{
    int before = zkn_test_count_fds();
    for (int i = 0; i < 100; i++) {
        void *p = zkn_malloc((size_t)(i % 9 + 1) * 700 * KiB);
        zkn_free(p);
        if (i % 10 == 0)
            zkn_release_cache();
    }
    zkn_release_cache();
    /* One socket, no region fds kept. */
    ck_assert_int_eq(zkn_test_count_fds(), before + 1);
}
END_TEST

START_TEST(refusals_fall_back_quietly)
{
    /* This daemon lends at most 8 MiB to us: the rest must come from private
     * memory, with the daemon still connected. */
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
    static const char *const args[] = {"--client-cap-bytes", "8M", "--prewarm", "4M=4", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&daemon_, args), 0);
    ck_assert_int_eq(zkn_test_daemon_wait_clean(daemon_.sock, 16 * MiB, 10000), 0);
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = zkn_malloc(4 * MiB);
        ck_assert_ptr_nonnull(p[i]);
        zkn_test_fill(p[i], 4 * MiB, (uint64_t)i);
    }
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.daemon_connected, 1);
    ck_assert_uint_eq(s.bytes_leased, 8 * MiB);
    ck_assert_uint_ge(s.fallbacks, 1);
    for (int i = 0; i < 5; i++) {
        ck_assert(zkn_test_check_fill(p[i], 4 * MiB, (uint64_t)i));
        zkn_free(p[i]);
    }
}
END_TEST

START_TEST(soften_gives_daemon_regions_back)
{
    void *p = zkn_malloc(6 * MiB);
    void *q = zkn_malloc(16 * MiB);
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_leased, 22 * MiB);
    zkn_free(p);
    zkn_free(q);
    zkn_soften_cache();
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_leased, 0);
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.daemon_returns, 2);
    unsigned char *r = zkn_calloc(1, 6 * MiB); /* lent again (maybe the same one, zeroed) */
    ck_assert(zkn_test_all_byte(r, 6 * MiB, 0));
    zkn_free(r);
}
END_TEST

START_TEST(release_while_threads_use_daemon_regions)
{
    enum { T = 4 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 40));
    zkn_test_release_and_soften(100, 2);
    zkn_test_join_all(t, T);
    zkn_release_cache();
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_leased, 0);
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_gt(s.daemon_returns, 0);
    ck_assert_uint_eq(s.daemon_connected, 1);
}
END_TEST

/* Waits until a miss reconnects to the daemon at daemon_.sock. */
static int reconnect(void)
{
    for (int tries = 0; tries < 60; tries++) {
        void *r = zkn_malloc(11 * MiB + (size_t)tries * 2 * MiB); /* a new class each time */
        int ok = zkn_test_lib_stats().daemon_connected == 1;
        zkn_free(r);
        if (ok)
            return 1;
        zkn_test_sleep_ms(100);
    }
    return 0;
}

START_TEST(one_log_line_at_most)
{
    char path[sizeof daemon_.sock], logf[] = "/tmp/zkn-log-XXXXXX";
    memcpy(path, daemon_.sock, sizeof path);
    int fd = mkstemp(logf);
    ck_assert_int_ge(fd, 0);
    unlink(logf); /* read back through fd */
    int saved = dup(2);
    dup2(fd, 2);
    for (int round = 0; round < 2; round++) {
        void *p = zkn_malloc(3 * MiB);
        ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
        zkn_test_daemon_kill(&daemon_);
        void *q = zkn_malloc(5 * MiB + (size_t)round * MiB * 4); /* notices the loss */
        ck_assert_ptr_nonnull(q);
        zkn_free(p);
        zkn_free(q);
        start_warm_at(path);
        ck_assert(reconnect());
    }
    dup2(saved, 2);
    close(saved);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    int lines = 0; /* the library's lines, not the daemons' ("zknallocd: ...") */
    for (char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        lines += strncmp(l, "zknalloc: ", 10) == 0;
    ck_assert_msg(lines == 1, "%d log lines: %s", lines, buf);
    ck_assert_uint_eq(zkn_test_lib_stats().reconnects, 2);
}
END_TEST


static Suite *suite(void)
{
    Suite *s = suite_create("client_daemon_cache");
    TCase *t = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(t, start_daemon, stop_daemon);
    tcase_add_test(t, one_log_line_at_most);
    tcase_add_test(t, over_the_cap_regions_go_back);
    tcase_add_test(t, calloc_trades_dirty_blocks_for_zeroed_ones);
    tcase_add_test(t, calloc_zeroes_its_own_block_by_default);
    tcase_add_test(t, threads_share_daemon_regions);
    tcase_add_test(t, release_while_threads_use_daemon_regions);
    tcase_add_test(t, no_fd_leaks_with_daemon);
    tcase_add_test(t, refusals_fall_back_quietly);
    tcase_add_test(t, soften_gives_daemon_regions_back);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
