/* libzknalloc without a daemon, across threads and fork: blocks freed by
 * another thread, caches handed back at thread exit, many threads checking
 * their contents, release and soften while others allocate, and a fork's
 * writes kept apart. ZK_NALLOC_SOCKET points where nothing listens. */
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

struct handoff {
    void *blocks[16];
    size_t size;
};

static void *producer(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 16; i++) {
        h->blocks[i] = zkn_malloc(h->size);
        zkn_test_fill(h->blocks[i], h->size, (uint64_t)i + 1000);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 16; i++) {
        h->blocks[i] = zkn_malloc(h->size);
        zkn_test_fill(h->blocks[i], h->size, (uint64_t)i + 2000);
    }
    for (int i = 0; i < 16; i++) {
        if (!zkn_test_check_fill(h->blocks[i], h->size, (uint64_t)i + 2000))
            return (void *)1;
        zkn_free(h->blocks[i]);
    }
    return NULL;
}

START_TEST(cross_thread_free_and_reuse)
{
    struct handoff h = {.size = 2 * MiB};
    pthread_t t;
    pthread_create(&t, NULL, producer, &h);
    pthread_join(t, NULL);
    for (int i = 0; i < 16; i++) {
        ck_assert(zkn_test_check_fill(h.blocks[i], h.size, (uint64_t)i + 1000));
        zkn_free(h.blocks[i]); /* freed here, allocated there */
    }
    struct zkn_stats before = zkn_test_lib_stats();
    void *r;
    pthread_create(&t, NULL, consumer, &h);
    pthread_join(t, &r);
    ck_assert_ptr_null(r);
    /* The second thread was served from what this one freed. */
    ck_assert_uint_eq(zkn_test_lib_stats().hits, before.hits + 16);
    ck_assert_uint_eq(zkn_test_lib_stats().misses, before.misses);
}
END_TEST

static void *alloc_free_exit(void *arg)
{
    void *p = zkn_malloc(8 * MiB);
    zkn_test_fill(p, 8 * MiB, 5);
    zkn_free(p); /* cached in this thread's cache, then the thread ends */
    *(void **)arg = p;
    return NULL;
}

START_TEST(thread_exit_hands_back_its_cache)
{
    void *freed;
    pthread_t t;
    pthread_create(&t, NULL, alloc_free_exit, &freed);
    pthread_join(t, NULL);
    struct zkn_stats before = zkn_test_lib_stats();
    ck_assert_uint_eq(before.bytes_cached, 8 * MiB);
    void *p = zkn_malloc(8 * MiB);
    ck_assert_ptr_eq(p, freed);
    ck_assert_uint_eq(zkn_test_lib_stats().hits, before.hits + 1);
    zkn_free(p);
}
END_TEST

/* A churning thread: up to 8 live blocks, each checked and freed when its
 * place comes up again, then replaced by one of size(r), from calloc
 * (checked zero) when r & calloc_bit. NULL, or what went wrong: 1 contents
 * damaged, 2 no block, 3 calloc not zero. */
struct churn_plan {
    unsigned seed;
    int places, rounds;
    unsigned calloc_bit;
    size_t (*size)(unsigned r);
};

static void *churn_with(const struct churn_plan *pl)
{
    unsigned seed = pl->seed;
    void *live[8] = {0};
    size_t sz[8] = {0};
    uint64_t tag[8] = {0};
    for (int it = 0; it < pl->rounds; it++) {
        int k = (int)(rand_r(&seed) % (unsigned)pl->places);
        if (live[k]) {
            if (!zkn_test_check_fill(live[k], sz[k], tag[k]))
                return (void *)1;
            zkn_free(live[k]);
        }
        unsigned r = rand_r(&seed);
        sz[k] = pl->size(r);
        live[k] = (r & pl->calloc_bit) ? zkn_calloc(1, sz[k]) : zkn_malloc(sz[k]);
        if (!live[k])
            return (void *)2;
        if ((r & pl->calloc_bit) && !zkn_test_all_byte(live[k], sz[k], 0))
            return (void *)3;
        tag[k] = (uint64_t)(uintptr_t)live[k] ^ r;
        zkn_test_fill(live[k], sz[k], tag[k]);
    }
    for (int k = 0; k < pl->places; k++)
        if (live[k]) {
            if (!zkn_test_check_fill(live[k], sz[k], tag[k]))
                return (void *)1;
            zkn_free(live[k]);
        }
    return NULL;
}

/* Small and large sizes mixed. */
static size_t mixed_size(unsigned r)
{
    return (r & 1) ? 100 + r % 60000 : 64 * KiB + r % (6 * MiB);
}

static void *churn(void *arg)
{
    struct churn_plan pl = {(unsigned)(uintptr_t)arg, 6, 300, 2, mixed_size};
    return churn_with(&pl);
}

START_TEST(many_threads_verify_contents)
{
    enum { T = 8 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i * 7919 + 1));
    zkn_test_join_all(t, T);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_live, 0);
    ck_assert_uint_le(s.bytes_cached, s.cache_cap);
    ck_assert_uint_gt(s.hits, 0);
}
END_TEST

/* Sizes that make whole huge pages of small blocks (runs) and big blocks
 * built from them, so threads race to take, free and move the same runs. */
static size_t run_size(unsigned r)
{
    static const size_t sizes[] = {256 * KiB, 512 * KiB, 1 * MiB, 3 * MiB, 6 * MiB};
    return sizes[r % 5];
}

static void *churn_runs(void *arg)
{
    struct churn_plan pl = {(unsigned)(uintptr_t)arg, 8, 1500, 8, run_size};
    return churn_with(&pl);
}

START_TEST(runs_move_while_threads_allocate)
{
    enum { T = 6 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn_runs, (void *)(uintptr_t)(i * 104729 + 3));
    zkn_test_join_all(t, T);
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_live, 0);
    ck_assert_uint_le(s.bytes_cached, s.cache_cap);
}
END_TEST

START_TEST(fork_writes_stay_apart)
{
    size_t n = 4 * MiB;
    unsigned char *p = zkn_malloc(n);
    memset(p, 'A', n);
    int to_child[2], to_parent[2];
    pid_t pid = zkn_test_fork_piped(to_child, to_parent);
    char b;
    if (pid == 0) {
        int ok = read(to_child[0], &b, 1) == 1;
        for (size_t i = 0; ok && i < n; i++)
            ok = p[i] == 'A';
        memset(p, 'C', n);
        void *q = zkn_malloc(n); /* the child allocates on its own too */
        memset(q, 'D', n);
        zkn_free(q);
        ok = ok && write(to_parent[1], "x", 1) == 1;
        _exit(ok ? 0 : 1);
    }
    memset(p, 'P', n);
    ck_assert_int_eq(write(to_child[1], "x", 1), 1);
    ck_assert_int_eq(read(to_parent[0], &b, 1), 1);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(p[i], 'P');
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zkn_free(p);
    zkn_test_close_pipes(to_child, to_parent);
}
END_TEST

static volatile int stop_churn;

static void *churn_until_stopped(void *arg)
{
    return zkn_test_churn((unsigned)(uintptr_t)arg, 64 * KiB, 3 * MiB, 1, 0, &stop_churn);
}

START_TEST(release_and_soften_while_threads_allocate)
{
    enum { T = 4 };
    pthread_t t[T];
    stop_churn = 0;
    for (int i = 0; i < T; i++)
        pthread_create(&t[i], NULL, churn_until_stopped, (void *)(uintptr_t)(i + 17));
    zkn_test_release_and_soften(200, 1);
    stop_churn = 1;
    zkn_test_join_all(t, T);
    zkn_release_cache();
    struct zkn_stats s = zkn_test_lib_stats();
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.bytes_live, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_threads");
    TCase *t = zkn_test_tcase(s, "no_daemon", 60);
    tcase_add_checked_fixture(t, zkn_test_no_daemon, NULL);
    tcase_add_test(t, cross_thread_free_and_reuse);
    tcase_add_test(t, thread_exit_hands_back_its_cache);
    tcase_add_test(t, many_threads_verify_contents);
    tcase_add_test(t, runs_move_while_threads_allocate);
    tcase_add_test(t, release_and_soften_while_threads_allocate);
    tcase_add_test(t, fork_writes_stay_apart);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
