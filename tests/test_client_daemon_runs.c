/* Daemon runs: blocks of 256 KiB to 1 MiB carved from one daemon region of
 * a huge page (client/region.c). The parts are mapped, handed out, cached and
 * released one at a time; the lease goes back whole, once, and a fork makes
 * the daemon forget the run once. */
#include <sys/mman.h>

#include "client_daemon_fixture.h"
#include "zkn_proto.h"

#define HUGE (2 * MiB)

/* Whether the daemon's backing makes runs (huge pages that can be split). */
static int runs_expected(void)
{
    uint32_t backing = 0;
    close(zkn_test_session(daemon_.sock, &backing));
    return backing == ZKN_BACKING_MEMFD_THP || backing == ZKN_BACKING_TMPFS_HUGE ||
           backing == ZKN_BACKING_MEMFD_COLLAPSE;
}

/* Connects the library, so that its first LEND of a small class already
 * knows the daemon's backing. */
static void connect_library(void)
{
    void *p = zkn_malloc(8 * MiB);
    ck_assert_ptr_nonnull(p);
    zkn_free(p);
    zkn_release_cache();
    ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
}

/* The mapping that holds p in /proc/self/maps: its bounds, and whether it
 * maps a memfd. 0 when found. */
static int mapping_of(const void *p, uintptr_t *start, uintptr_t *end, int *memfd)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = -1;
    while (f && found && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (uintptr_t)p >= a && (uintptr_t)p < b) {
            *start = a;
            *end = b;
            *memfd = strstr(line, "/memfd:") != NULL;
            found = 0;
        }
    }
    if (f)
        fclose(f);
    return found;
}

static json_int_t daemon_stat(const char *section, const char *key)
{
    json_t *j = zkn_test_stats(daemon_.sock);
    json_int_t v = zkn_test_stat_int(j, section, key);
    json_decref(j);
    return v;
}

START_TEST(small_blocks_share_one_daemon_huge_page)
{
    int runs = runs_expected();
    connect_library();
    int fds = zkn_test_count_fds();
    struct zkn_stats before = zkn_test_lib_stats();
    unsigned char *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = zkn_malloc(512 * KiB);
        ck_assert_ptr_nonnull(p[i]);
        zkn_test_fill(p[i], 512 * KiB, (uint64_t)i + 1);
    }
    struct zkn_stats after = zkn_test_lib_stats();
    ck_assert_uint_eq(after.fallbacks, before.fallbacks);
    if (runs) {
        /* One LEND of one huge page served all four, from one mapping. */
        ck_assert_uint_eq(after.daemon_lends - before.daemon_lends, 1);
        ck_assert_uint_eq(after.bytes_leased, HUGE);
        uintptr_t base = (uintptr_t)p[0] & ~(uintptr_t)(HUGE - 1), start, end;
        for (int i = 0; i < 4; i++) {
            ck_assert_uint_eq((uintptr_t)p[i] & ~(uintptr_t)(HUGE - 1), base);
            for (int j = 0; j < i; j++)
                ck_assert_ptr_ne(p[i], p[j]);
        }
        int memfd;
        ck_assert_int_eq(mapping_of(p[0], &start, &end, &memfd), 0);
        ck_assert_msg(start == base && end == base + HUGE && memfd,
                      "the run is not one mapping of a daemon file");
        ck_assert_int_eq(daemon_stat("pool", "lent_bytes"), (json_int_t)HUGE);
    }
    for (int i = 0; i < 4; i++)
        ck_assert(zkn_test_check_fill(p[i], 512 * KiB, (uint64_t)i + 1));

    /* Two parts released: unmapped here, the lease still ours. */
    zkn_free(p[1]);
    zkn_free(p[2]);
    zkn_release_cache();
    if (runs) {
        ck_assert_uint_eq(zkn_test_lib_stats().bytes_leased, HUGE / 2);
        zkn_test_sleep_ms(50); /* a RETURN would have reached the daemon by now */
        ck_assert_int_eq(daemon_stat("pool", "lent_bytes"), (json_int_t)HUGE);
        uintptr_t start, end;
        int memfd;
        ck_assert_int_eq(mapping_of(p[1], &start, &end, &memfd), 0);
        ck_assert_msg(!memfd, "a released part still maps the daemon's file");
    }
    ck_assert(zkn_test_check_fill(p[0], 512 * KiB, 1));
    ck_assert(zkn_test_check_fill(p[3], 512 * KiB, 4));
    memset(p[3], 0x5a, 512 * KiB);
    ck_assert(zkn_test_all_byte(p[3], 512 * KiB, 0x5a));

    /* The last part back: the whole lease returns, its file is closed. */
    zkn_free(p[0]);
    zkn_free(p[3]);
    zkn_release_cache();
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_leased, 0);
    zkn_test_wait_stat(daemon_.sock, "pool", "lent_bytes", 0);
    ck_assert_int_eq(zkn_test_count_fds(), fds);

    /* The daemon zeroed it: calloc from the returned huge page reads zero. */
    unsigned char *z = zkn_calloc(1, 1 * MiB);
    ck_assert_ptr_nonnull(z);
    ck_assert(zkn_test_all_byte(z, 1 * MiB, 0));
    zkn_free(z);
}
END_TEST

START_TEST(fork_forgets_a_run_once)
{
    int runs = runs_expected();
    connect_library();
    int fds = zkn_test_count_fds();
    json_int_t forgotten = daemon_stat("totals", "forgotten");
    /* Two live parts and two cached ones of one run at the fork. */
    unsigned char *a = zkn_malloc(512 * KiB), *b = zkn_malloc(512 * KiB);
    unsigned char *c = zkn_malloc(512 * KiB), *d = zkn_malloc(512 * KiB);
    ck_assert(a && b && c && d);
    memset(a, 'a', 512 * KiB);
    memset(b, 'b', 512 * KiB);
    memset(c, 'c', 512 * KiB);
    zkn_free(c);
    zkn_free(d);
    int to_child[2], to_parent[2];
    pid_t pid = zkn_test_fork_piped(to_child, to_parent);
    char x;
    if (pid == 0) {
        int ok = read(to_child[0], &x, 1) == 1; /* the parent has written by now */
        ok = ok && zkn_test_all_byte(a, 512 * KiB, 'a') && zkn_test_all_byte(b, 512 * KiB, 'b');
        memset(a, 'A', 512 * KiB);
        ok = ok && zkn_test_lib_stats().bytes_leased == 0;
        zkn_free(a);
        zkn_free(b);
        zkn_release_cache();
        ok = ok && write(to_parent[1], ok ? "y" : "n", 1) == 1;
        _exit(ok ? 0 : 1);
    }
    memset(b, 'B', 512 * KiB);
    /* The cached part is reused and written, shared with no one now. */
    unsigned char *again = zkn_malloc(512 * KiB);
    memset(again, 'R', 512 * KiB);
    ck_assert_int_eq(write(to_child[1], "x", 1), 1);
    ck_assert_int_eq(read(to_parent[0], &x, 1), 1);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child saw the parent's writes");
    ck_assert(zkn_test_all_byte(a, 512 * KiB, 'a'));
    ck_assert(zkn_test_all_byte(b, 512 * KiB, 'B'));
    ck_assert(zkn_test_all_byte(again, 512 * KiB, 'R'));
    if (runs) /* one FORGET for the run, not one per live part */
        zkn_test_wait_stat(daemon_.sock, "totals", "forgotten", forgotten + 1);
    zkn_free(a);
    zkn_free(b);
    zkn_free(again);
    zkn_release_cache();
    /* A forgotten run is never returned; the link is still good. */
    zkn_test_wait_stat(daemon_.sock, "pool", "lent_bytes", 0);
    ck_assert_int_eq(daemon_stat("refusals", "unknown_id"), 0);
    void *more = zkn_malloc(512 * KiB);
    ck_assert_uint_eq(zkn_test_lib_stats().daemon_connected, 1);
    zkn_free(more);
    zkn_release_cache();
    zkn_test_close_pipes(to_child, to_parent);
    ck_assert_int_eq(zkn_test_count_fds(), fds);
}
END_TEST

struct free_job {
    unsigned char **p;
    int n;
};

static void *free_evens(void *arg)
{
    struct free_job *job = arg;
    for (int i = 0; i < job->n; i += 2)
        zkn_free(job->p[i]);
    return NULL;
}

START_TEST(runs_of_each_class_across_threads)
{
    /* 256 KiB (8 parts), 512 KiB (4), 1 MiB (2): allocated on one thread,
     * freed on others, contents checked, everything back at the end. */
    connect_library();
    enum { N = 24 };
    static const size_t sizes[] = {256 * KiB, 512 * KiB, 1 * MiB};
    for (size_t s = 0; s < 3; s++) {
        unsigned char *p[N];
        for (int i = 0; i < N; i++) {
            p[i] = zkn_malloc(sizes[s]);
            ck_assert_ptr_nonnull(p[i]);
            zkn_test_fill(p[i], sizes[s], (uint64_t)(s * N + i));
        }
        for (int i = 0; i < N; i++)
            ck_assert(zkn_test_check_fill(p[i], sizes[s], (uint64_t)(s * N + i)));
        pid_t pid = fork(); /* parts live at a fork, in every class */
        if (pid == 0) {
            int ok = 1;
            for (int i = 0; i < N; i++)
                ok = ok && zkn_test_check_fill(p[i], sizes[s], (uint64_t)(s * N + i));
            _exit(ok ? 0 : 1);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        pthread_t t;
        struct free_job job = {p, N};
        ck_assert_int_eq(pthread_create(&t, NULL, free_evens, &job), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        for (int i = 1; i < N; i += 2)
            ck_assert(zkn_test_check_fill(p[i], sizes[s], (uint64_t)(s * N + i)));
        for (int i = 1; i < N; i += 2)
            zkn_free(p[i]);
    }
    zkn_release_cache();
    ck_assert_uint_eq(zkn_test_lib_stats().bytes_leased, 0);
    zkn_test_wait_stat(daemon_.sock, "pool", "lent_bytes", 0);
}
END_TEST

START_TEST(runs_teach_the_daemon_their_huge_pages)
{
    /* Each miss of a run class takes at least one huge page, so the daemon
     * learns a 2 MiB target of at least as many as the LENDs that told it
     * (the last LEND's demand counts every miss before it). */
    if (!runs_expected())
        return;
    connect_library();
    uint64_t lends = zkn_test_lib_stats().daemon_lends;
    enum { N = 64 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = zkn_malloc(512 * KiB);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], i, 512 * KiB);
    }
    json_t *j = zkn_test_stats(daemon_.sock);
    json_int_t target = zkn_test_class_int(j, zkn_size_class(HUGE), "target");
    json_decref(j);
    lends = zkn_test_lib_stats().daemon_lends - lends;
    ck_assert_uint_ge(lends, 4);
    ck_assert_msg(target >= (json_int_t)lends, "2 MiB target %lld after %llu LENDs of 512 KiB runs",
                  (long long)target, (unsigned long long)lends);
    for (int i = 0; i < N; i++)
        zkn_free(p[i]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_daemon_runs");
    TCase *t = zkn_test_tcase(s, "runs", 60);
    tcase_add_checked_fixture(t, start_daemon, stop_daemon);
    tcase_add_test(t, small_blocks_share_one_daemon_huge_page);
    tcase_add_test(t, fork_forgets_a_run_once);
    tcase_add_test(t, runs_of_each_class_across_threads);
    tcase_add_test(t, runs_teach_the_daemon_their_huge_pages);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
