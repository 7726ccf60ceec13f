/* Arenas shared: by threads, backed by the library's blocks, across fork,
 * and (under ASan) poisoned where nothing is allocated. */
#include "arena_helpers.h"

/* Several threads allocate from one arena at once: nothing overlaps. */
enum { THREADS = 8, PER_THREAD = 2000 };
struct worker {
    zkn_arena *a;
    int id;
    unsigned char *ptr[PER_THREAD];
    size_t len[PER_THREAD];
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        size_t len = 1 + (size_t)((i * 37 + w->id) % 200);
        size_t align = (size_t)1 << (i % 8);
        unsigned char *p = zkn_arena_alloc(w->a, len, align);
        if (!p || (uintptr_t)p % align != 0)
            return (void *)1;
        memset(p, w->id + 1, len);
        w->ptr[i] = p;
        w->len[i] = len;
    }
    return NULL;
}

START_TEST(test_concurrent_alloc)
{
    static struct worker w[THREADS];
    pthread_t t[THREADS];
    zkn_arena *a = zkn_arena_create(8 * MiB);
    ck_assert_ptr_nonnull(a);
    for (int i = 0; i < THREADS; i++) {
        w[i].a = a;
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    size_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *rv;
        ck_assert_int_eq(pthread_join(t[i], &rv), 0);
        ck_assert_ptr_null(rv);
    }
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++) {
            total += w[i].len[j];
            ck_assert_msg(zkn_test_all_byte(w[i].ptr[j], w[i].len[j], (unsigned char)(i + 1)),
                          "thread %d allocation %d overwritten", i, j);
        }
    ck_assert_uint_ge(zkn_arena_used(a), total);
    ck_assert_uint_le(zkn_arena_used(a), 8 * MiB);
    zkn_arena_destroy(a);
}
END_TEST

/* With a daemon running, the arena's block is one large region of the
 * library's, so it is counted as live large memory while the arena exists. */
START_TEST(test_block_from_library)
{
    struct zkn_test_daemon d;
    static const char *const warm[] = {"--prewarm", "16M=1", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&d, warm), 0);
    ck_assert_int_eq(zkn_test_daemon_wait_clean(d.sock, 16 * MiB, 10000), 0);
    struct zkn_stats before, during, after;
    zkn_stats(&before);
    zkn_arena *a = zkn_arena_create(16 * MiB);
    ck_assert_ptr_nonnull(a);
    unsigned char *p = zkn_arena_alloc(a, 16 * MiB, 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % (2 * MiB), 0);
    memset(p, 3, 16 * MiB);
    zkn_stats(&during);
    ck_assert_uint_ge(during.bytes_live, before.bytes_live + 16 * MiB);
    ck_assert_uint_eq(during.daemon_connected, 1);
    ck_assert_uint_ge(during.bytes_leased, 16 * MiB);
    zkn_arena_destroy(a);
    zkn_stats(&after);
    ck_assert_uint_le(after.bytes_live, during.bytes_live - 16 * MiB);
    zkn_test_daemon_stop(&d);
    zkn_test_daemon_cleanup(&d);
}
END_TEST

/* Arena memory is the process's own across fork, even when the daemon lent
 * it: the child sees the parent's data, and what each writes after the fork
 * stays its own. */
START_TEST(test_fork_keeps_arena_private)
{
    struct zkn_test_daemon d;
    ck_assert_int_eq(zkn_test_daemon_start(&d, NULL), 0);
    zkn_arena *a = zkn_arena_create(8 * MiB);
    ck_assert_ptr_nonnull(a);
    unsigned char *p = zkn_arena_alloc(a, 8 * MiB, 1);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x21, 8 * MiB);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!zkn_test_all_byte(p, 8 * MiB, 0x21))
            _exit(1);
        memset(p, 0x43, 8 * MiB);
        zkn_arena_reset(a);
        unsigned char *q = zkn_arena_alloc(a, MiB, 64);
        if (q != p)
            _exit(2);
        zkn_arena_destroy(a);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    ck_assert_msg(zkn_test_all_byte(p, 8 * MiB, 0x21), "the child's writes reached the parent");
    zkn_arena_destroy(a);
    zkn_test_daemon_stop(&d);
    zkn_test_daemon_cleanup(&d);
}
END_TEST

#ifdef TEST_ASAN
START_TEST(test_asan_poisoning)
{
    zkn_arena *a = zkn_arena_create(MiB);
    ck_assert_ptr_nonnull(a);
    unsigned char *base = arena_base(a);
    /* Fresh or reset: all poisoned. */
    ck_assert(__asan_address_is_poisoned(base));
    ck_assert(__asan_address_is_poisoned(base + MiB - 1));
    unsigned char *p = zkn_arena_alloc(a, 100, 64);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(__asan_region_is_poisoned(p, 100));
    /* Past the allocation and in the padding before an aligned one: poisoned. */
    ck_assert(__asan_address_is_poisoned(p + 128));
    unsigned char *q = zkn_arena_alloc(a, 8, 4096);
    ck_assert_ptr_nonnull(q);
    ck_assert(__asan_address_is_poisoned(q - 8));
    zkn_arena_reset(a);
    ck_assert(__asan_address_is_poisoned(p));
    ck_assert(__asan_address_is_poisoned(q));
    /* Destroy hands the block back unpoisoned. */
    zkn_arena_destroy(a);
}
END_TEST

/* A write through a pointer from before the reset is reported by ASan (in a
 * forked child, since the report ends the process). */
START_TEST(test_asan_use_after_reset_caught)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        zkn_arena *a = zkn_arena_create(MiB);
        if (!a)
            _exit(10);
        volatile unsigned char *p = zkn_arena_alloc(a, 64, 8);
        if (!p)
            _exit(11);
        p[0] = 1; /* fine */
        zkn_arena_reset(a);
        p[0] = 2; /* use after reset */
        _exit(0);
    }
    close(pfd[1]);
    char buf[8192];
    zkn_test_read_all(pfd[0], buf, sizeof buf);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "use after reset went unnoticed");
    ck_assert_msg(!WIFEXITED(st) || (WEXITSTATUS(st) != 10 && WEXITSTATUS(st) != 11),
                  "child setup failed");
    ck_assert_msg(strstr(buf, "use-after-poison") != NULL, "no ASan report: %s", buf);
}
END_TEST
#endif


static Suite *arena_shared_suite(void)
{
    Suite *s = suite_create("client_arena_shared");
    TCase *tc = zkn_test_tcase(s, "arena", 60);
    tcase_add_test(tc, test_concurrent_alloc);
    tcase_add_test(tc, test_block_from_library);
    tcase_add_test(tc, test_fork_keeps_arena_private);
#ifdef TEST_ASAN
    tcase_add_test(tc, test_asan_poisoning);
    tcase_add_test(tc, test_asan_use_after_reset_caught);
#endif
    return s;
}

ZKN_TEST_CLIENT_MAIN(arena_shared_suite)
