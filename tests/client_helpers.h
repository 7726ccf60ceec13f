/* Helpers for the suites that link libzknalloc (the harness links without
 * it). */
#ifndef ZKN_TEST_CLIENT_HELPERS_H
#define ZKN_TEST_CLIENT_HELPERS_H

#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#include "zknalloc.h"

/* A checked fixture: ZK_NALLOC_SOCKET names a path where nothing listens, so
 * the library serves everything from private memory. */
static inline void zkn_test_no_daemon(void)
{
    setenv("ZK_NALLOC_SOCKET", "/nonexistent-zknalloc-test/zkn.sock", 1);
}

/* The library's counters; fails the test when zkn_stats does. */
static inline struct zkn_stats zkn_test_lib_stats(void)
{
    struct zkn_stats s;
    ck_assert_int_eq(zkn_stats(&s), 0);
    return s;
}

/* One round of a churning thread: a block of min + r % spread bytes, from
 * calloc (checked zero) when zero, else malloc, filled, checked and freed.
 * 0, or what went wrong: 1 no block, 2 calloc not zero, 3 fill damaged. */
static inline int zkn_test_churn_round(unsigned r, size_t min, size_t spread, int zero)
{
    size_t n = min + r % spread;
    unsigned char *p = zero ? zkn_calloc(1, n) : zkn_malloc(n);
    if (!p)
        return 1;
    if (zero && !zkn_test_all_byte(p, n, 0))
        return 2;
    zkn_test_fill(p, n, r);
    if (!zkn_test_check_fill(p, n, r))
        return 3;
    zkn_free(p);
    return 0;
}

/* A churning thread's body: rounds of zkn_test_churn_round with sizes from
 * rand_r(&seed), calloc where r & zero_mask, until rounds are done (rounds
 * > 0) or *stop is set. NULL, or the first error as a pointer-sized int. */
static inline void *zkn_test_churn(unsigned seed, size_t min, size_t spread, unsigned zero_mask,
                                   int rounds, const volatile int *stop)
{
    for (int it = 0; rounds > 0 ? it < rounds : !*stop; it++) {
        unsigned r = rand_r(&seed);
        int err = zkn_test_churn_round(r, min, spread, (r & zero_mask) != 0);
        if (err)
            return (void *)(uintptr_t)err;
    }
    return NULL;
}

/* Joins n threads; each must return NULL (else its error, a pointer-sized
 * int, fails the test). */
static inline void zkn_test_join_all(const pthread_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_msg(r == NULL, "thread %d: error %d", i, (int)(uintptr_t)r);
    }
}

/* A fork with a handshake over two pipes: to_child (the parent writes, the
 * child reads) and to_parent. Opens both and forks, asserting each step;
 * returns fork()'s pid (0 in the child). */
static inline pid_t zkn_test_fork_piped(int to_child[2], int to_parent[2])
{
    ck_assert_int_eq(pipe(to_child), 0);
    ck_assert_int_eq(pipe(to_parent), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    return pid;
}

/* Closes the four ends zkn_test_fork_piped opened. */
static inline void zkn_test_close_pipes(int to_child[2], int to_parent[2])
{
    for (int i = 0; i < 2; i++) {
        close(to_child[i]);
        close(to_parent[i]);
    }
}

/* Runs body in a child with ZK_NALLOC_SHOW_STATS=1 and its stderr in buf
 * (body returns, or exits with a status of its own; exit, not _exit, so that
 * the library prints its report). Returns the child's wait status. */
static inline int zkn_test_child_report(void (*body)(void), char *buf, size_t cap)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        setenv("ZK_NALLOC_SHOW_STATS", "1", 1);
        body();
        exit(0);
    }
    close(pfd[1]);
    zkn_test_read_all(pfd[0], buf, cap);
    close(pfd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return st;
}

/* rounds of zkn_soften_cache (even rounds) and zkn_release_cache (odd ones,
 * which take regions out of other threads' caches), ms apart. */
static inline void zkn_test_release_and_soften(int rounds, long ms)
{
    for (int k = 0; k < rounds; k++) {
        if (k & 1)
            zkn_release_cache();
        else
            zkn_soften_cache();
        zkn_test_sleep_ms(ms);
    }
}

#endif
