/* The daemon is an optimisation: a stopped (SIGSTOP) or slow daemon never
 * stalls a client, and no lease is stranded by a reply that came late. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_helpers.h"
#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

#define MiB ((size_t)1 << 20)

static struct zkn_test_daemon daemon_;

static void start_daemon(void)
{
    static const char *const args[] = {"--prewarm", "4M=8", NULL};
    /* A small cache, so that requests keep reaching the daemon, and the
     * library's own wait (10 ms), which these tests are about. */
    setenv("ZK_NALLOC_CACHE_BYTES", "1M", 1);
    setenv("ZK_NALLOC_DAEMON_WAIT_MS", "10", 1);
    zkn_test_daemon_up(&daemon_, NULL, args);
}

static void stop_daemon(void) { zkn_test_daemon_down(&daemon_); }

/* Allocates size-byte blocks until one comes from the daemon; 1 if within ms. */
static int daemon_serves(size_t size, int ms)
{
    for (double end = zkn_test_now_ms() + ms; zkn_test_now_ms() < end;) {
        uint64_t before = zkn_test_lib_stats().bytes_leased;
        void *p = zkn_malloc(size);
        int lent = zkn_test_lib_stats().bytes_leased >= before + size;
        zkn_free(p);
        if (lent)
            return 1;
        zkn_test_sleep_ms(20);
    }
    return 0;
}

/* Polls the daemon until no byte is lent any more; 1 if within ms. */
static int daemon_lends_nothing(int ms)
{
    for (double end = zkn_test_now_ms() + ms; zkn_test_now_ms() < end;) {
        char *json = zkn_test_stats_json(daemon_.sock);
        int none = json && strstr(json, "\"lent_bytes\":0,") != NULL;
        free(json);
        if (none)
            return 1;
        zkn_test_sleep_ms(50);
    }
    return 0;
}

START_TEST(a_stopped_daemon_never_stalls_the_client)
{
    ck_assert(daemon_serves(4 * MiB, 3000));
    unsigned seed = 12345;
    double start = zkn_test_now_ms(), worst = 0, cont_at = 0;
    int ops[9] = {0}, stopped = 0, served_after = 0;
    for (;;) {
        double now = zkn_test_now_ms() - start;
        if (now >= 9000)
            break;
        if (!stopped && now >= 1000) {
            kill(daemon_.pid, SIGSTOP);
            stopped = 1;
        } else if (stopped == 1 && now >= 6000) {
            kill(daemon_.pid, SIGCONT);
            stopped = 2;
            cont_at = now;
        }
        size_t size = (2 + rand_r(&seed) % 47) * MiB;
        uint64_t before = zkn_test_lib_stats().bytes_leased;
        double t0 = zkn_test_now_ms();
        unsigned char *p = zkn_malloc(size);
        double t1 = zkn_test_now_ms();
        ck_assert_ptr_nonnull(p);
        p[0] = 1;
        p[size - 1] = 1;
        if (stopped == 2 && zkn_test_lib_stats().bytes_leased >= before + size)
            served_after++;
        double t2 = zkn_test_now_ms();
        zkn_free(p);
        double t3 = zkn_test_now_ms();
        if (t1 - t0 > worst)
            worst = t1 - t0;
        if (t3 - t2 > worst)
            worst = t3 - t2;
        ops[(int)(now / 1000)]++;
    }
    ck_assert_msg(worst < 50, "one malloc or free took %.1f ms", worst);
    for (int s = 0; s < 9; s++)
        ck_assert_msg(ops[s] > 0, "no progress in second %d", s);
    /* After SIGCONT the daemon is used again (the prewarmed class at least). */
    ck_assert_msg(served_after > 0 || daemon_serves(4 * MiB, 4000),
                  "daemon not used again after SIGCONT at %.0f ms", cont_at);
    /* Late replies were given back: once the client lets go, nothing is lent. */
    zkn_release_cache();
    ck_assert_msg(daemon_lends_nothing(3000), "leases stranded after the stall");
}
END_TEST

struct lender {
    double took_ms;
};

static void *lend_once(void *arg)
{
    struct lender *l = arg;
    double t0 = zkn_test_now_ms();
    void *p = zkn_malloc(40 * MiB); /* a miss: a LEND the stopped daemon never answers */
    l->took_ms = zkn_test_now_ms() - t0;
    zkn_free(p);
    return NULL;
}

/* How long fork() itself takes here (milliseconds under a sanitizer on a
 * loaded machine): the least of three. */
static double plain_fork_ms(void)
{
    double best = 1e9;
    for (int i = 0; i < 3; i++) {
        double t0 = zkn_test_now_ms();
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        double ms = zkn_test_now_ms() - t0;
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        if (ms < best)
            best = ms;
    }
    return best;
}

START_TEST(fork_and_release_do_not_wait_for_another_threads_lend)
{
    ck_assert(daemon_serves(4 * MiB, 3000)); /* connected */
    double fork_base = plain_fork_ms();
    kill(daemon_.pid, SIGSTOP);
    struct lender l = {0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, lend_once, &l), 0);
    zkn_test_sleep_ms(4); /* the lender is waiting for its reply now */
    double t0 = zkn_test_now_ms();
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    double fork_ms = zkn_test_now_ms() - t0;
    t0 = zkn_test_now_ms();
    zkn_release_cache();
    double release_ms = zkn_test_now_ms() - t0;
    pthread_join(t, NULL);
    kill(daemon_.pid, SIGCONT);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    /* The lender waits its bounded time; fork and release never queue behind it. */
    ck_assert_msg(l.took_ms < 50, "the LEND waited %.1f ms", l.took_ms);
    ck_assert_msg(l.took_ms < 10 || (fork_ms < fork_base + 8 && release_ms < 10),
                  "fork %.1f ms (%.1f ms alone) and release %.1f ms waited for a LEND of %.1f ms",
                  fork_ms, fork_base, release_ms, l.took_ms);
}
END_TEST

START_TEST(a_daemon_stopped_before_the_first_request_costs_one_short_wait)
{
    kill(daemon_.pid, SIGSTOP);
    double worst = 0;
    for (int i = 0; i < 50; i++) {
        double t0 = zkn_test_now_ms();
        void *p = zkn_malloc(8 * MiB + (size_t)i * MiB);
        double took = zkn_test_now_ms() - t0;
        ck_assert_ptr_nonnull(p);
        memset(p, 1, 4096);
        zkn_free(p);
        if (took > worst)
            worst = took;
    }
    kill(daemon_.pid, SIGCONT);
    ck_assert_msg(worst < 50, "one malloc took %.1f ms", worst);
    ck_assert_uint_ge(zkn_test_lib_stats().fallbacks, 1);
    /* The HELLO answered late completes the session: the daemon serves again. */
    ck_assert(daemon_serves(4 * MiB, 5000));
}
END_TEST

/* A short-lived process that bursts misses of a class the daemon has nothing
 * ready of gets private memory, but tells the daemon its demand: the next
 * process of the uid finds the whole burst ready. */
START_TEST(a_burst_teaches_the_daemon_what_to_keep_ready)
{
    enum { BURST = 12 };
    const size_t size = 6 * MiB;
    /* Where blocks come from is the point here, not the wait. */
    setenv("ZK_NALLOC_DAEMON_WAIT_MS", "500", 1);
    int served[2] = {0, 0};
    for (int proc = 0; proc < 2; proc++) {
        int out[2];
        ck_assert_int_eq(pipe(out), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            void *p[BURST];
            int lent = 0;
            for (int i = 0; i < BURST; i++) {
                uint64_t before = zkn_test_lib_stats().bytes_leased;
                p[i] = zkn_calloc(1, size);
                lent += zkn_test_lib_stats().bytes_leased > before;
            }
            for (int i = 0; i < BURST; i++)
                zkn_free(p[i]);
            _exit(write(out[1], &lent, sizeof lent) == sizeof lent ? 0 : 1);
        }
        close(out[1]);
        ck_assert_int_eq(read(out[0], &served[proc], sizeof served[proc]),
                         (ssize_t)sizeof served[proc]);
        close(out[0]);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        /* The daemon prepares in the background: give it time to. */
        char *json = NULL;
        for (int tries = 0; tries < 150; tries++) {
            free(json);
            json = zkn_test_stats_json(daemon_.sock);
            if (json && strstr(json, "\"preparing_bytes\":0,") && strstr(json, "\"lent_bytes\":0,"))
                break;
            zkn_test_sleep_ms(20);
        }
        free(json);
    }
    ck_assert_msg(served[1] >= BURST - 1, "the daemon served %d of %d in the second process "
                  "(first: %d)", served[1], BURST, served[0]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_nowait");
    TCase *t = zkn_test_tcase(s, "nowait", 60);
    tcase_add_checked_fixture(t, start_daemon, stop_daemon);
    tcase_add_test(t, a_stopped_daemon_never_stalls_the_client);
    tcase_add_test(t, fork_and_release_do_not_wait_for_another_threads_lend);
    tcase_add_test(t, a_daemon_stopped_before_the_first_request_costs_one_short_wait);
    tcase_add_test(t, a_burst_teaches_the_daemon_what_to_keep_ready);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
