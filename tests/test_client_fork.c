/* fork() with daemon regions: exact snapshots while other threads write,
 * children that ran no fork handler (_Fork, raw clone) never reach a parent's
 * block, and a region a child may still map is never reused by the daemon. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

#define MiB ((size_t)1 << 20)

static struct zkn_test_daemon daemon_;

static void start_daemon(void)
{
    static const char *const args[] = {"--prewarm", "64M=2", "--prewarm", "16M=8", NULL};
    zkn_test_daemon_up(&daemon_, NULL, args);
}

static void stop_daemon(void) { zkn_test_daemon_down(&daemon_); }

static uint64_t leased(void)
{
    struct zkn_stats s;
    zkn_stats(&s);
    return s.bytes_leased;
}

/* A block that came from the daemon (the prewarm may still be running). */
static void *daemon_block(size_t n)
{
    for (int tries = 0; tries < 300; tries++) {
        uint64_t before = leased();
        void *p = zkn_malloc(n);
        ck_assert_ptr_nonnull(p);
        if (leased() >= before + n)
            return p;
        zkn_free(p);
        zkn_release_cache(); /* else the private region is what the cache serves next */
        zkn_test_sleep_ms(10);
    }
    ck_abort_msg("no daemon region of %zu bytes within 3 s", n);
    return NULL;
}

/* ---- exact snapshots ---- */

struct writer {
    _Atomic uint64_t *w;
    size_t n;
    atomic_int stop;
};

/* Stores increasing sequence numbers round-robin: word k always holds the
 * last s <= (newest) with s % n == k, so any instant is one exact cut. */
static void *write_sequence(void *arg)
{
    struct writer *wr = arg;
    for (uint64_t seq = wr->n; !atomic_load_explicit(&wr->stop, memory_order_relaxed); seq++)
        atomic_store_explicit(&wr->w[seq % wr->n], seq, memory_order_relaxed);
    return NULL;
}

static int is_exact_cut(const _Atomic uint64_t *w, size_t n)
{
    uint64_t newest = 0;
    for (size_t k = 0; k < n; k++)
        if (w[k] > newest)
            newest = w[k];
    for (size_t k = 0; k < n; k++)
        if (w[k] != newest - ((newest - k) % n))
            return 0;
    return 1;
}

START_TEST(fork_snapshots_are_exact_while_a_thread_writes)
{
    size_t bytes = 64 * MiB, n = bytes / 8;
    struct writer wr = {.w = daemon_block(bytes), .n = n};
    unsigned char *other = daemon_block(16 * MiB);
    for (size_t k = 0; k < n; k++)
        wr.w[k] = k;
    memset(other, 'O', 16 * MiB);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, write_sequence, &wr), 0);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            int ok = is_exact_cut(wr.w, n);
            uint64_t first = wr.w[0];
            zkn_test_sleep_ms(5); /* the parent's writer runs on meanwhile */
            ok = ok && wr.w[0] == first && is_exact_cut(wr.w, n);
            memset(other, 'C', 16 * MiB); /* must not show in the parent */
            _exit(ok ? 0 : 1);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "round %d: the child saw a torn snapshot (status %#x)", round, st);
        ck_assert_msg(zkn_test_all_byte(other, 16 * MiB, 'O'),
                      "a child's write reached the parent");
    }
    atomic_store(&wr.stop, 1);
    pthread_join(t, NULL);
    ck_assert(is_exact_cut(wr.w, n)); /* the parent's block is still its own */
    zkn_free((void *)wr.w);
    zkn_free(other);
}
END_TEST

START_TEST(a_region_a_child_may_map_is_never_reused)
{
    size_t n = 16 * MiB;
    unsigned char *p = daemon_block(n);
    zkn_test_fill(p, n, 1);
    int fds = zkn_test_count_fds();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        zkn_test_sleep_ms(400); /* while the parent frees it and takes new regions */
        _exit(zkn_test_check_fill(p, n, 1) ? 0 : 1);
    }
    struct zkn_stats before, after;
    zkn_stats(&before);
    zkn_free(p);
    zkn_stats(&after);
    /* Made private at the fork, it is unmapped when freed, never cached: the
     * file's pages would stay beside ours for as long as it is mapped. */
    ck_assert_uint_eq(after.bytes_cached, before.bytes_cached);
    zkn_release_cache();
    void *q[6];
    for (int i = 0; i < 6; i++) {
        q[i] = daemon_block(n);
        memset(q[i], 0xEE, n);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the child's snapshot changed: the daemon zeroed or re-lent its region");
    for (int i = 0; i < 6; i++)
        zkn_free(q[i]);
    zkn_release_cache();
    ck_assert_int_le(zkn_test_count_fds(), fds);
}
END_TEST

/* ---- children that ran no fork handler ---- */

static sigjmp_buf fault_jmp;

static void on_fault(int sig)
{
    (void)sig;
    siglongjmp(fault_jmp, 1);
}

/* Writes c over p; returns 1 when the write faulted. */
static int write_faults(unsigned char *p, size_t n, unsigned char c)
{
    struct sigaction sa = {.sa_handler = on_fault};
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    if (sigsetjmp(fault_jmp, 1))
        return 1;
    memset(p, c, n);
    return 0;
}

static pid_t raw_clone(void)
{
    return (pid_t)syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
}

/* In the child: p must be out of reach, and the library usable. */
static void unhandled_child(unsigned char *p, size_t n)
{
    int faulted = write_faults(p, n, 'X');
    unsigned char *q = zkn_malloc(n); /* the library notices it is a child */
    int ok = q != NULL;
    if (q) {
        memset(q, 'Q', n);
        zkn_free(q);
    }
    zkn_free(p);
    _exit(ok ? (faulted ? 0 : 2) : 1);
}

static void check_unhandled_fork(pid_t (*do_fork)(void))
{
    size_t n = 16 * MiB;
    unsigned char *p = daemon_block(n);
    memset(p, 'P', n);
    pid_t pid = do_fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        unhandled_child(p, n);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(zkn_test_all_byte(p, n, 'P'), "the child wrote into the parent's block");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    /* The parent's lease is intact and goes back normally. */
    zkn_free(p);
    zkn_release_cache();
    ck_assert_uint_eq(leased(), 0);
}

static pid_t call_underscore_fork(void)
{
    return _Fork();
}

START_TEST(underscore_fork_child_cannot_reach_the_parents_block)
{
    check_unhandled_fork(call_underscore_fork);
}
END_TEST

START_TEST(raw_clone_child_cannot_reach_the_parents_block)
{
    check_unhandled_fork(raw_clone);
}
END_TEST

START_TEST(orphaned_helper_never_writes_into_another_process)
{
    size_t n = 16 * MiB;
    int report[2];
    ck_assert_int_eq(pipe(report), 0);
    pid_t a = fork();
    ck_assert_int_ge(a, 0);
    if (a == 0) {
        unsigned char *p = daemon_block(n); /* process A's own lease */
        memset(p, 'A', n);
        pid_t helper = raw_clone();
        if (helper == 0) {
            zkn_test_sleep_ms(600); /* A is gone; its region went back and out again */
            char r = write_faults(p, n, 'Z') ? 'f' : 'w';
            if (write(report[1], &r, 1) != 1)
                _exit(1);
            _exit(0);
        }
        _exit(helper > 0 ? 0 : 1);
    }
    int st;
    ck_assert_int_eq(waitpid(a, &st, 0), a);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(report[1]);
    /* This process takes 16 MiB regions, likely A's reclaimed one among them. */
    void *q[8];
    for (int i = 0; i < 8; i++) {
        zkn_test_sleep_ms(20);
        q[i] = daemon_block(n);
        zkn_test_fill(q[i], n, 100 + (uint64_t)i);
    }
    char r = 0;
    ck_assert_int_eq(read(report[0], &r, 1), 1);
    close(report[0]);
    ck_assert_msg(r == 'f', "the orphaned helper could write to the block it inherited");
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(zkn_test_check_fill(q[i], n, 100 + (uint64_t)i),
                      "another process's writes reached block %d", i);
        zkn_free(q[i]);
    }
}
END_TEST

START_TEST(posix_spawn_and_system_still_work)
{
    unsigned char *p = daemon_block(16 * MiB);
    memset(p, 'S', 16 * MiB);
    ck_assert_int_eq(system("exit 7") >> 8, 7);
    pid_t v = vfork();
    if (v == 0)
        _exit(3);
    int st;
    ck_assert_int_eq(waitpid(v, &st, 0), v);
    ck_assert_int_eq(WEXITSTATUS(st), 3);
    ck_assert(zkn_test_all_byte(p, 16 * MiB, 'S'));
    zkn_free(p);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_fork");
    TCase *t = zkn_test_tcase(s, "fork", 60);
    tcase_add_checked_fixture(t, start_daemon, stop_daemon);
    tcase_add_test(t, fork_snapshots_are_exact_while_a_thread_writes);
    tcase_add_test(t, a_region_a_child_may_map_is_never_reused);
    tcase_add_test(t, underscore_fork_child_cannot_reach_the_parents_block);
    tcase_add_test(t, raw_clone_child_cannot_reach_the_parents_block);
    tcase_add_test(t, orphaned_helper_never_writes_into_another_process);
    tcase_add_test(t, posix_spawn_and_system_still_work);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
