/* The background zeroer (client/zeroer.c): it zeroes cached blocks of the
 * classes calloc uses, never a block the program holds; the caller, a drain
 * and a fork child get its block back; it does not exist for programs that
 * do not calloc big blocks, or with ZK_NALLOC_ZERO_THREAD=0. */
#include <dirent.h>

#include "client_daemon_fixture.h"

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* How many of the process's threads run at this nice value. */
static int threads_at_nice(long want)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        const char *p = strrchr(buf, ')'); /* the name may hold spaces */
        long nice = 0;
        /* After the name: state is field 3, nice field 19. */
        for (int field = 3; p && field <= 19; field++) {
            p = strchr(p + 1, ' ');
            if (p && field == 19)
                nice = strtol(p + 1, NULL, 10);
        }
        n += p && nice == want;
    }
    closedir(d);
    return n;
}

/* Two dirty n-byte blocks cached, then a calloc that takes one of them: the
 * other (returned) is the one left cached dirty. */
static unsigned char *leave_one_dirty(size_t n, unsigned char **taken)
{
    unsigned char *a = zkn_malloc(n), *b = zkn_malloc(n);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    memset(a, 0xAB, n);
    memset(b, 0xAB, n);
    zkn_free(a);
    zkn_free(b);
    *taken = zkn_calloc(1, n);
    ck_assert(*taken == a || *taken == b);
    ck_assert(zkn_test_all_byte(*taken, n, 0));
    return *taken == a ? b : a;
}

START_TEST(calloc_finds_blocks_zeroed_in_the_background)
{
    size_t n = 8 * MiB;
    int threads = thread_count();
    /* Three rounds: the thread must also wake for work after it has slept. */
    for (int round = 0; round < 3; round++) {
        unsigned char *taken;
        /* Reading a cached block is reading the library's own mapping: the
         * test knows it stays mapped while cached. */
        volatile unsigned char *other = leave_one_dirty(n, &taken);
        ck_assert_int_eq(thread_count(), threads + 1); /* one thread, not one per calloc */
        int zero = 0;
        for (int i = 0; i < 100 && threads_at_nice(5) != 1; i++)
            zkn_test_sleep_ms(10); /* it sets its nice value once it runs */
        ck_assert_int_eq(threads_at_nice(5), 1); /* below the program's threads */
        for (int i = 0; i < 1000 && !zero; i++) {
            zero = other[0] == 0 && other[n - 1] == 0 && zkn_test_all_byte((const void *)other, n, 0);
            if (!zero)
                zkn_test_sleep_ms(10);
        }
        ck_assert_msg(zero, "round %d: the cached dirty block was not zeroed within 10 s", round);
        /* The next calloc takes that clean block. */
        unsigned char *again = zkn_calloc(1, n);
        ck_assert_ptr_eq(again, (void *)other);
        ck_assert(zkn_test_all_byte(again, n, 0));
        zkn_free(again);
        zkn_free(taken);
        zkn_test_sleep_ms(20); /* long enough for it to go to sleep */
    }
}
END_TEST

/* Where malloc and calloc share a class, a malloc that finds only clean
 * blocks cancels what the class is owed: the next dirty block stays dirty. */
START_TEST(a_malloc_of_a_clean_block_stops_the_zeroing)
{
    size_t n = 8 * MiB;
    unsigned char *x = zkn_calloc(1, n), *y = zkn_calloc(1, n), *z = zkn_calloc(1, n);
    memset(z, 0xAB, n);
    zkn_free(z); /* three callocs owed, one dirty block: it gets zeroed */
    volatile unsigned char *vz = z;
    for (int i = 0; i < 1000 && !(vz[0] == 0 && vz[n - 1] == 0); i++)
        zkn_test_sleep_ms(10);
    ck_assert(zkn_test_all_byte(z, n, 0));
    unsigned char *m = zkn_malloc(n); /* the only cached block: clean */
    ck_assert_ptr_eq(m, z);
    memset(m, 0xCD, n);
    zkn_free(m);
    zkn_test_sleep_ms(300);
    ck_assert_int_eq(vz[0], 0xCD);
    ck_assert_int_eq(vz[n - 1], 0xCD);
    zkn_free(x);
    zkn_free(y);
}
END_TEST

START_TEST(no_thread_when_off_or_without_calloc)
{
    size_t n = 8 * MiB;
    int threads = thread_count();
    /* malloc and free only: no thread. */
    for (int i = 0; i < 4; i++) {
        unsigned char *p = zkn_malloc(n), *q = zkn_malloc(n);
        memset(p, 1, n);
        memset(q, 1, n);
        zkn_free(p);
        zkn_free(q);
    }
    ck_assert_int_eq(thread_count(), threads);
    /* Turned off: callocs zero for themselves and the cached block stays dirty. */
    setenv("ZK_NALLOC_ZERO_THREAD", "0", 1);
    unsigned char *taken;
    volatile unsigned char *other = leave_one_dirty(n, &taken);
    zkn_test_sleep_ms(200);
    ck_assert_int_eq(thread_count(), threads);
    ck_assert_int_eq(other[0], 0xAB);
    ck_assert_int_eq(other[n - 1], 0xAB);
    zkn_free(taken);
}
END_TEST

/* Freed and asked for again at once: the block the zeroer has just taken
 * comes back to the caller (no new mapping), zeroed or not. */
START_TEST(the_zeroers_block_comes_back_to_the_caller)
{
    size_t n = 32 * MiB;
    unsigned char *first = zkn_calloc(1, n);
    ck_assert_ptr_nonnull(first);
    uint64_t misses = zkn_test_lib_stats().misses;
    volatile unsigned char *head = first;
    int caught = 0;
    for (int i = 0; i < 60; i++) {
        memset(first, i + 1, n);
        zkn_free(first); /* owed one block: the zeroer takes it */
        /* Until it has begun (it zeroes from the start): then ask at once. */
        uint64_t t0 = now_ns();
        while (head[0] != 0 && now_ns() - t0 < 1000000000ull)
            ;
        caught += head[n - 1] != 0; /* begun, not finished: it holds the block */
        unsigned char *m = zkn_malloc(n);
        ck_assert_ptr_eq(m, first);
        memset(m, 0x5A, 2 * MiB);
        zkn_free(m);
        unsigned char *z = zkn_calloc(1, n);
        ck_assert_ptr_eq(z, first);
        ck_assert(zkn_test_all_byte(z, n, 0));
    }
    ck_assert_uint_eq(zkn_test_lib_stats().misses, misses);
    ck_assert_int_gt(caught, 0); /* else this test tested nothing */
    zkn_free(first);
}
END_TEST

/* The thread gives its block back only to a caller of that block's class:
 * misses in other classes while it zeroes leave its work alone. Run in a
 * child, whose report at exit counts the blocks it gave back. */
static void misses_elsewhere_child(void)
{
    enum { HELD_MAX = 512 };
    static void *held[HELD_MAX];
    size_t n = 128 * MiB;
    int caught = 0; /* misses made while the thread held the block */
    unsigned char *first = zkn_calloc(1, n);
    volatile unsigned char *v = first;
    for (int round = 0; round < 20 && caught < 2000; round++) {
        memset(first, round + 1, n);
        zkn_free(first); /* owed one block: the zeroer takes it */
        uint64_t t0 = now_ns();
        while (v[0] != 0 && now_ns() - t0 < 1000000000ull)
            ;
        /* Nothing of 2-4 MiB is cached: each misses (and touches nothing),
         * as many as fit while the thread holds the block. */
        int held_n = 0;
        while (held_n < HELD_MAX && v[n - 1] != 0) {
            held[held_n] = zkn_malloc(2 * MiB + (size_t)(held_n % 8 + 1) * 256 * 1024);
            caught += v[n - 1] != 0;
            held_n++;
        }
        for (int i = 0; i < 1000 && !(v[n - 1] == 0 && zkn_test_all_byte((const void *)v, n, 0)); i++)
            zkn_test_sleep_ms(10);
        first = zkn_calloc(1, n);
        if (first != v || !zkn_test_all_byte(first, n, 0))
            _exit(3);
        for (int i = 0; i < held_n; i++)
            zkn_free(held[i]);
        zkn_release_cache(); /* their blocks: the next round's misses again */
    }
    zkn_free(first);
    if (caught < 100)
        exit(4); /* exit, not _exit: the report is a destructor */
}

START_TEST(misses_in_other_classes_leave_the_zeroer_alone)
{
    char buf[4096];
    int st = zkn_test_child_report(misses_elsewhere_child, buf, sizeof buf);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "child status %d (3: not zeroed, 4: too few misses while it zeroed): %s", st, buf);
    const char *g = strstr(buf, "zeroer_gave_back");
    ck_assert_msg(g, "no report: %s", buf);
    ck_assert_msg(strtoull(g + strlen("zeroer_gave_back"), NULL, 10) == 0, "%s", buf);
}
END_TEST

START_TEST(release_cache_leaves_nothing_with_the_zeroer)
{
    size_t n = 8 * MiB;
    for (int round = 0; round < 40; round++) {
        unsigned char *p[4];
        for (int i = 0; i < 4; i++) {
            p[i] = zkn_malloc(n);
            memset(p[i], 0x11, n);
        }
        for (int i = 0; i < 4; i++)
            zkn_free(p[i]);
        unsigned char *z = zkn_calloc(1, n); /* the zeroer starts on the other three */
        zkn_release_cache();
        struct zkn_stats s = zkn_test_lib_stats();
        ck_assert_uint_eq(s.bytes_cached, 0);
        ck_assert(zkn_test_all_byte(z, n, 0));
        zkn_free(z);
    }
}
END_TEST

/* Threads calloc (checked zero) and malloc (filled, checked intact) blocks of
 * 2-10 MiB while the zeroer works and the main thread forks: a child's
 * callocs are zero and its fills intact too, whatever the zeroer was doing
 * when it forked. */
static volatile int stop_churn;

static void *churn(void *arg)
{
    return zkn_test_churn((unsigned)(uintptr_t)arg, 2 * MiB, 8 * MiB, 1, 0, &stop_churn);
}

static void churn_and_fork(void)
{
    enum { T = 2, FORKS = 20 };
    pthread_t t[T];
    stop_churn = 0;
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 101));
    for (int f = 0; f < FORKS; f++) {
        zkn_test_sleep_ms(20);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            static const volatile int never = 0;
            void *err = zkn_test_churn(7u + (unsigned)f, 2 * MiB, 8 * MiB, 1, 40, &never);
            _exit(err ? 1 : 0);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", f);
    }
    stop_churn = 1;
    zkn_test_join_all(t, T);
}

START_TEST(callocs_zero_and_fills_intact_across_threads_and_forks)
{
    churn_and_fork();
}
END_TEST

START_TEST(daemon_blocks_zeroed_across_threads_and_forks)
{
    churn_and_fork();
    ck_assert_uint_gt(zkn_test_lib_stats().daemon_lends, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_zeroer");
    TCase *t = zkn_test_tcase(s, "no_daemon", 90);
    tcase_add_checked_fixture(t, zkn_test_no_daemon, NULL);
    tcase_add_test(t, calloc_finds_blocks_zeroed_in_the_background);
    tcase_add_test(t, no_thread_when_off_or_without_calloc);
    tcase_add_test(t, a_malloc_of_a_clean_block_stops_the_zeroing);
    tcase_add_test(t, the_zeroers_block_comes_back_to_the_caller);
    tcase_add_test(t, release_cache_leaves_nothing_with_the_zeroer);
    tcase_add_test(t, misses_in_other_classes_leave_the_zeroer_alone);
    tcase_add_test(t, callocs_zero_and_fills_intact_across_threads_and_forks);
    TCase *d = zkn_test_tcase(s, "daemon", 90);
    tcase_add_checked_fixture(d, start_daemon, stop_daemon);
    tcase_add_test(d, daemon_blocks_zeroed_across_threads_and_forks);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
