/* libzknalloc against a real zknallocd on a temporary socket: regions lent
 * and mapped, calloc on dirty shared regions, fork with shared regions, the
 * cap returning regions, the daemon killed mid-run and a new one taking over. */
#include "client_daemon_fixture.h"

START_TEST(large_blocks_come_from_the_daemon)
{
    char *p = zkn_malloc(8 * MiB);
    ck_assert_ptr_nonnull(p);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.daemon_connected, 1);
    ck_assert_uint_ge(s.daemon_lends, 1);
    ck_assert_uint_eq(s.bytes_leased, 8 * MiB);
    ck_assert_uint_eq(s.fallbacks, 0);
    zkn_test_fill(p, 8 * MiB, 1);
    ck_assert(zkn_test_check_fill(p, 8 * MiB, 1));
    zkn_free(p);
    char *q = zkn_malloc(8 * MiB);
    ck_assert_ptr_eq(q, p); /* cached, still leased */
    ck_assert(zkn_test_check_fill(q, 8 * MiB, 1)); /* malloc, not calloc: same memory */
    ck_assert_uint_eq(zkn_test_lib_stats().hits, s.hits + 1);
    zkn_free(q);
    /* The daemon sees our lease. */
    char *json = zkn_test_stats_json(daemon_.sock);
    ck_assert_ptr_nonnull(json);
    free(json);
}
END_TEST

START_TEST(small_classes_are_lent_in_batches)
{
    /* Repeated misses of one class ask for several regions at once; the
     * extras are cached, so later requests hit. */
    void *p[40];
    for (int i = 0; i < 40; i++) {
        p[i] = zkn_malloc(200 * KiB);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], i, 200 * KiB);
    }
    for (int i = 0; i < 40; i++) {
        ck_assert(zkn_test_all_byte(p[i], 200 * KiB, (unsigned char)i));
        zkn_free(p[i]);
    }
    /* Second round: the pool now has them; batches come back whole. */
    zkn_release_cache();
    struct zkn_stats before = zkn_test_lib_stats();
    for (int i = 0; i < 40; i++)
        p[i] = zkn_malloc(200 * KiB);
    struct zkn_stats after = zkn_test_lib_stats();
    ck_assert_uint_lt(after.daemon_lends - before.daemon_lends, 40);
    ck_assert_uint_gt(after.hits, before.hits);
    for (int i = 0; i < 40; i++)
        zkn_free(p[i]);
}
END_TEST

START_TEST(calloc_zero_on_daemon_regions)
{
    static const size_t sizes[] = {64 * KiB, 1 * MiB, 2 * MiB, 24 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *p = zkn_calloc(1, n); /* lent ZEROED */
        ck_assert(zkn_test_all_byte(p, n, 0));
        zkn_release_cache(); /* the batch's clean extras go: p will be all there is */
        memset(p, 0xee, n);
        zkn_free(p);
        unsigned char *q = zkn_calloc(n, 1);
        /* The dirty shared region again, zeroed here; from 2 MiB up calloc may
         * instead trade it for one the daemon zeroed. */
        if (n < 2 * MiB)
            ck_assert_ptr_eq(q, p);
        ck_assert_msg(zkn_test_all_byte(q, n, 0), "calloc(%zu) on a dirty daemon region not zero",
                      n);
        zkn_free(q);
    }
    ck_assert_uint_gt(zkn_test_lib_stats().daemon_lends, 0);
}
END_TEST

/* Parent and child must not see each other's writes to a shared region. */
static void fork_check(size_t n)
{
    unsigned char *p = zkn_malloc(n);
    unsigned char *cached = zkn_malloc(n);
    ck_assert_uint_ge(zkn_test_lib_stats().bytes_leased, 2 * n);
    memset(p, 'A', n);
    memset(cached, 'K', n);
    zkn_free(cached); /* a cached shared region at fork time */
    int to_child[2], to_parent[2];
    pid_t pid = zkn_test_fork_piped(to_child, to_parent);
    char b;
    if (pid == 0) {
        int ok = read(to_child[0], &b, 1) == 1; /* the parent has written 'P' by now */
        ok = ok && zkn_test_all_byte(p, n, 'A');
        memset(p, 'C', n);
        struct zkn_stats s;
        zkn_stats(&s);
        ok = ok && s.bytes_leased == 0 && s.daemon_connected == 0; /* nothing shared left */
        unsigned char *q = zkn_malloc(n); /* the child's own, maybe from its own lease */
        ok = ok && q != NULL;
        memset(q, 'Q', n);
        zkn_free(p);
        ok = ok && write(to_parent[1], ok ? "y" : "n", 1) == 1;
        _exit(ok ? 0 : 1);
    }
    memset(p, 'P', n);
    ck_assert_int_eq(write(to_child[1], "x", 1), 1);
    ck_assert_int_eq(read(to_parent[0], &b, 1), 1);
    ck_assert_msg(zkn_test_all_byte(p, n, 'P'), "the child's writes reached the parent");
    /* The parent's cached region is intact (a LEND batch may have cached
     * others beside it). */
    unsigned char *again[4];
    int found = 0;
    for (int i = 0; i < 4 && !found; i++) {
        again[i] = zkn_malloc(n);
        found = again[i] == cached;
        if (found)
            ck_assert(zkn_test_all_byte(again[i], n, 'K'));
        for (int k = 0; found && k < i; k++)
            zkn_free(again[k]);
        if (found)
            again[0] = again[i];
    }
    ck_assert_msg(found, "the parent's cached region is gone");
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child saw the parent's writes");
    zkn_free(p);
    zkn_free(again[0]);
    zkn_test_close_pipes(to_child, to_parent);
}

START_TEST(fork_makes_shared_regions_private)
{
    void *warm = zkn_malloc(1 * MiB); /* connected before counting fds */
    zkn_free(warm);
    zkn_release_cache(); /* each daemon region holds an fd while mapped */
    int fds = zkn_test_count_fds();
    fork_check(256 * KiB);
    fork_check(16 * MiB);
    zkn_release_cache();
    ck_assert_int_eq(zkn_test_count_fds(), fds); /* no fd left by fork */
    /* The parent still talks to its daemon after forking. */
    void *x = zkn_malloc(40 * MiB);
    ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
    zkn_free(x);
}
END_TEST

static void *fork_writer(void *arg)
{
    volatile int *stop = arg;
    unsigned char *p = zkn_malloc(4 * MiB);
    while (!*stop) {
        memset(p, 1, 4 * MiB);
        void *q = zkn_malloc(3 * MiB);
        zkn_free(q);
    }
    zkn_free(p);
    return NULL;
}

START_TEST(fork_while_other_threads_allocate)
{
    volatile int stop = 0;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, fork_writer, (void *)&stop);
    for (int k = 0; k < 10; k++) {
        unsigned char *p = zkn_malloc(2 * MiB);
        memset(p, 'A', 2 * MiB);
        pid_t pid = fork();
        if (pid == 0) {
            int ok = zkn_test_all_byte(p, 2 * MiB, 'A');
            memset(p, 'C', 2 * MiB);
            void *q = zkn_malloc(5 * MiB); /* no lock inherited held */
            zkn_free(q);
            _exit(ok ? 0 : 1);
        }
        memset(p, 'P', 2 * MiB);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert(zkn_test_all_byte(p, 2 * MiB, 'P'));
        zkn_free(p);
    }
    stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}
END_TEST

START_TEST(daemon_killed_mid_run_then_replaced)
{
    enum { N = 12 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = zkn_malloc((size_t)(i + 1) * MiB);
        zkn_test_fill(p[i], (size_t)(i + 1) * MiB, (uint64_t)i);
    }
    ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
    ck_assert_uint_gt(zkn_test_lib_stats().bytes_leased, 0);
    zkn_test_daemon_kill(&daemon_);
    /* The regions of the dead daemon stay valid here. */
    for (int i = 0; i < N; i++)
        ck_assert(zkn_test_check_fill(p[i], (size_t)(i + 1) * MiB, (uint64_t)i));
    /* New requests never fail; they are served privately. */
    void *q[N];
    for (int i = 0; i < N; i++) {
        q[i] = zkn_malloc(50 * MiB + (size_t)i * 7 * MiB);
        ck_assert_ptr_nonnull(q[i]);
        zkn_test_fill(q[i], 4 * MiB, (uint64_t)i + 100);
    }
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.daemon_connected, 0);
    ck_assert_uint_gt(s.fallbacks, 0);
    for (int i = 0; i < N; i++) {
        ck_assert(zkn_test_check_fill(p[i], (size_t)(i + 1) * MiB, (uint64_t)i));
        ck_assert(zkn_test_check_fill(q[i], 4 * MiB, (uint64_t)i + 100));
        zkn_free(p[i]);
        zkn_free(q[i]);
    }
    /* Old regions are unmapped, never returned to whoever answers next. */
    zkn_release_cache();
    s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_leased, 0);
    ck_assert_uint_eq(s.daemon_returns, 0);

    /* A new daemon on the same path: the library reconnects after backoff. */
    char path[sizeof daemon_.sock];
    memcpy(path, daemon_.sock, sizeof path); /* start_at writes daemon_.sock */
    start_warm_at(path);
    int connected = 0;
    for (int tries = 0; tries < 40 && !connected; tries++) {
        void *r = zkn_malloc(3 * MiB);
        connected = zkn_test_lib_stats().daemon_connected == 1;
        zkn_free(r);
        zkn_release_cache();
        if (!connected)
            zkn_test_sleep_ms(100);
    }
    ck_assert_msg(connected, "no reconnection within 4 s");
    s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.reconnects, 1);
    void *r = zkn_malloc(6 * MiB);
    zkn_test_fill(r, 6 * MiB, 77);
    ck_assert_uint_ge(zkn_test_lib_stats().bytes_leased, 6 * MiB);
    ck_assert(zkn_test_check_fill(r, 6 * MiB, 77));
    zkn_free(r);
}
END_TEST

START_TEST(old_daemon_regions_are_not_returned_to_a_new_one)
{
    /* Live across the restart: when freed after the new daemon answered, they
     * must be unmapped here, never RETURNed (the new daemon's ids may well
     * be the same numbers). */
    void *old[4], *parts[2]; /* parts: two blocks of one daemon run (client/region.c) */
    for (int i = 0; i < 4; i++) {
        old[i] = zkn_malloc(2 * MiB);
        zkn_test_fill(old[i], 2 * MiB, (uint64_t)i);
    }
    for (int i = 0; i < 2; i++) {
        parts[i] = zkn_malloc(512 * KiB);
        zkn_test_fill(parts[i], 512 * KiB, (uint64_t)i + 10);
    }
    char path[sizeof daemon_.sock];
    memcpy(path, daemon_.sock, sizeof path);
    zkn_test_daemon_kill(&daemon_);
    ck_assert_ptr_nonnull(zkn_malloc(5 * MiB)); /* notices, falls back (leaks: fine) */
    start_warm_at(path);
    int connected = 0;
    for (int tries = 0; tries < 40 && !connected; tries++) {
        void *r = zkn_malloc(7 * MiB + (size_t)tries * 2 * MiB); /* a new class each time */
        connected = zkn_test_lib_stats().daemon_connected == 1;
        zkn_free(r);
        if (!connected)
            zkn_test_sleep_ms(100);
    }
    ck_assert(connected);
    void *fresh = zkn_malloc(2 * MiB); /* cached? no: all four are live. Lent anew. */
    struct zkn_stats before = zkn_test_lib_stats();
    for (int i = 0; i < 4; i++) {
        ck_assert(zkn_test_check_fill(old[i], 2 * MiB, (uint64_t)i));
        zkn_free(old[i]);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert(zkn_test_check_fill(parts[i], 512 * KiB, (uint64_t)i + 10));
        zkn_free(parts[i]);
    }
    zkn_free(fresh);
    zkn_release_cache();
    struct zkn_stats after = zkn_test_lib_stats();
    ck_assert_uint_ge(after.daemon_returns, before.daemon_returns);
    ck_assert_uint_eq(after.bytes_leased, 0);
    /* The new daemon got back what it lent and never an id of the old one. */
    char *json = NULL;
    for (int tries = 0; tries < 50; tries++) { /* RETURNs are pipelined */
        free(json);
        json = zkn_test_stats_json(path);
        ck_assert_ptr_nonnull(json);
        if (strstr(json, "\"lent_bytes\":0,"))
            break;
        zkn_test_sleep_ms(20);
    }
    ck_assert_msg(strstr(json, "\"lent_bytes\":0,") != NULL, "%s", json);
    ck_assert_msg(strstr(json, "\"unknown_id\":0,") != NULL, "%s", json);
    free(json);
}
END_TEST

START_TEST(hung_daemon_times_out)
{
    setenv("ZK_NALLOC_DAEMON_WAIT_MS", "10", 1); /* the library's default: the wait is tested */
    void *p = zkn_malloc(1 * MiB);
    ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
    kill(daemon_.pid, SIGSTOP);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    void *q = zkn_malloc(3 * MiB); /* a miss: LEND, no answer */
    clock_gettime(CLOCK_MONOTONIC, &b);
    kill(daemon_.pid, SIGCONT);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    ck_assert_ptr_nonnull(q);
    memset(q, 1, 3 * MiB);
    ck_assert_msg(secs < 0.05, "a hung daemon blocked malloc for %.3f s", secs);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_ge(s.fallbacks, 1);
    /* While backing off, misses do not wait at all. */
    clock_gettime(CLOCK_MONOTONIC, &a);
    void *r = zkn_malloc(9 * MiB);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ck_assert_int_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 200);
    zkn_free(p);
    zkn_free(q);
    zkn_free(r);
}
END_TEST


static Suite *suite(void)
{
    Suite *s = suite_create("client_daemon");
    TCase *t = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(t, start_daemon, stop_daemon);
    tcase_add_test(t, large_blocks_come_from_the_daemon);
    tcase_add_test(t, small_classes_are_lent_in_batches);
    tcase_add_test(t, calloc_zero_on_daemon_regions);
    tcase_add_test(t, fork_makes_shared_regions_private);
    tcase_add_test(t, fork_while_other_threads_allocate);
    tcase_add_test(t, daemon_killed_mid_run_then_replaced);
    tcase_add_test(t, old_daemon_regions_are_not_returned_to_a_new_one);
    tcase_add_test(t, hung_daemon_times_out);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
