/* Arena: alignment, exhaustion, reset reuse, many resets, the typed-array
 * macro, refusal of huge sizes, concurrent allocation, and (in ASan builds)
 * that use after reset is caught. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
/* A request no machine can meet is answered with NULL, as by a real malloc,
 * not by ASan ending the process. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

#define MiB ((size_t)1 << 20)
/* check 0.15 has no ordered pointer comparisons. */
#define assert_ptr_ge(a, b) ck_assert_uint_ge((uintptr_t)(a), (uintptr_t)(b))
#define assert_ptr_le(a, b) ck_assert_uint_le((uintptr_t)(a), (uintptr_t)(b))

/* The arena's first byte: an align-1 allocation at offset 0. */
static unsigned char *arena_base(zkn_arena *a)
{
    zkn_arena_reset(a);
    unsigned char *p = zkn_arena_alloc(a, 1, 1);
    ck_assert_ptr_nonnull(p);
    zkn_arena_reset(a);
    return p;
}

START_TEST(test_create_refuses_bad_capacity)
{
    zkn_test_assert_null_errno(zkn_arena_create(0), EINVAL);
    zkn_test_assert_null_errno(zkn_arena_create(SIZE_MAX), EINVAL);
    zkn_test_assert_null_errno(zkn_arena_create(SIZE_MAX - 4095), EINVAL);
    zkn_test_assert_null_errno(zkn_arena_create((size_t)PTRDIFF_MAX + 1), EINVAL);
    /* Acceptable in size, but no machine has it. */
    zkn_test_assert_null_errno(zkn_arena_create((size_t)PTRDIFF_MAX), ENOMEM);
}
END_TEST

START_TEST(test_capacity_and_used)
{
    zkn_arena *a = zkn_arena_create(3 * MiB);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(zkn_arena_capacity(a), 3 * MiB);
    ck_assert_uint_eq(zkn_arena_used(a), 0);
    unsigned char *p = zkn_arena_alloc(a, 100, 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(zkn_arena_used(a), 100);
    /* The whole block is writable, end to end. */
    zkn_arena_reset(a);
    p = zkn_arena_alloc(a, 3 * MiB, 1);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x5a, 3 * MiB);
    ck_assert_uint_eq(zkn_arena_used(a), 3 * MiB);
    zkn_arena_destroy(a);
    /* NULL is tolerated by the accessors and destroy. */
    ck_assert_uint_eq(zkn_arena_used(NULL), 0);
    ck_assert_uint_eq(zkn_arena_capacity(NULL), 0);
    zkn_arena_destroy(NULL);
    zkn_test_assert_null_errno(zkn_arena_alloc(NULL, 1, 1), EINVAL);
}
END_TEST

/* Every power of two up to 1 MiB, from a deliberately misaligned offset. */
START_TEST(test_alignment_every_power_of_two)
{
    const size_t cap = 4 * MiB;
    zkn_arena *a = zkn_arena_create(cap);
    ck_assert_ptr_nonnull(a);
    unsigned char *base = arena_base(a);
    for (size_t align = 1; align <= MiB; align <<= 1) {
        zkn_arena_reset(a);
        unsigned char *skew = zkn_arena_alloc(a, 1, 1);
        ck_assert_ptr_eq(skew, base);
        unsigned char *p = zkn_arena_alloc(a, 64, align);
        ck_assert_msg(p != NULL, "align %zu failed", align);
        ck_assert_msg((uintptr_t)p % align == 0, "align %zu gave %p", align, (void *)p);
        assert_ptr_ge(p, base + 1);
        /* The padding is never more than needed. */
        ck_assert_uint_lt((size_t)(p - (base + 1)), align);
        assert_ptr_le(p + 64, base + cap);
        ck_assert_uint_eq(zkn_arena_used(a), (size_t)(p - base) + 64);
        memset(p, 0xa5, 64);
        /* A second one right after, same alignment. */
        unsigned char *q = zkn_arena_alloc(a, 1, align);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq((uintptr_t)q % align, 0);
        assert_ptr_ge(q, p + 64);
    }
    /* 0 means alignof(max_align_t). */
    zkn_arena_reset(a);
    ck_assert_ptr_nonnull(zkn_arena_alloc(a, 3, 1));
    void *m = zkn_arena_alloc(a, 8, 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq((uintptr_t)m % alignof(max_align_t), 0);
    zkn_arena_destroy(a);
}
END_TEST

START_TEST(test_bad_alignment_refused)
{
    static const size_t bad[] = {3, 5, 6, 12, 24, 100, 4097, ((size_t)1 << 20) + 1, SIZE_MAX,
                                 ((size_t)1 << 63) + 1};
    zkn_arena *a = zkn_arena_create(MiB);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(zkn_arena_alloc(a, 7, 1));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        ck_assert_ptr_null(zkn_arena_alloc(a, 8, bad[i]));
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_uint_eq(zkn_arena_used(a), 7);
    }
    /* A power of two far beyond any address: exhaustion, not a wrap. */
    zkn_test_assert_null_errno(zkn_arena_alloc(a, 8, (size_t)1 << 63), ENOMEM);
    ck_assert_uint_eq(zkn_arena_used(a), 7);
    zkn_arena_destroy(a);
}
END_TEST

/* Fills an odd-sized arena until it refuses; every allocation lies inside
 * the block, the last byte is reachable, nothing past it, and the arena
 * itself never wrote into what it handed out. */
START_TEST(test_exhaustion)
{
    const size_t cap = MiB + 13;
    zkn_arena *a = zkn_arena_create(cap);
    ck_assert_ptr_nonnull(a);
    unsigned char *base = arena_base(a);
    unsigned char *end = base + cap;
    unsigned char *prev_end = base;
    size_t n = 0;
    unsigned char *p;
    while ((errno = 0, p = zkn_arena_alloc(a, 1000, 8)) != NULL) {
        assert_ptr_ge(p, prev_end);
        assert_ptr_le(p + 1000, end);
        ck_assert_uint_eq((uintptr_t)p % 8, 0);
        memset(p, (int)(n & 0xff), 1000);
        prev_end = p + 1000;
        n++;
    }
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_uint_ge(n, cap / 1008);
    size_t used = zkn_arena_used(a);
    ck_assert_uint_le(used, cap);
    size_t left = cap - used;
    ck_assert_uint_lt(left, 1000 + 8);
    /* One more than what is left: refused, and used unchanged. */
    zkn_test_assert_null_errno(zkn_arena_alloc(a, left + 1, 1), ENOMEM);
    ck_assert_uint_eq(zkn_arena_used(a), used);
    /* Exactly what is left: the last byte of the block. */
    p = zkn_arena_alloc(a, left, 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_eq(p + left, end);
    memset(p, 0xee, left);
    ck_assert_uint_eq(zkn_arena_used(a), cap);
    zkn_test_assert_null_errno(zkn_arena_alloc(a, 1, 1), ENOMEM);
    ck_assert_uint_eq(zkn_arena_used(a), cap);
    /* What was written is still there: the arena keeps no headers in it. */
    zkn_arena_reset(a);
    for (size_t i = 0; i < n; i++) {
        unsigned char *q = zkn_arena_alloc(a, 1000, 8);
        ck_assert_ptr_nonnull(q);
        ck_assert_msg(zkn_test_all_byte(q, 1000, (unsigned char)i), "allocation %zu was changed",
                      i);
    }
    zkn_arena_destroy(a);
}
END_TEST

START_TEST(test_size_max_refused)
{
    zkn_arena *a = zkn_arena_create(2 * MiB);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(zkn_arena_alloc(a, 12345, 1));
    size_t used = zkn_arena_used(a);
    static const size_t aligns[] = {1, 8, 64, 4096, (size_t)1 << 20};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        size_t sizes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - aligns[i], SIZE_MAX - used + 1,
                          SIZE_MAX / 2 + 1, (size_t)PTRDIFF_MAX, 2 * MiB - used + 1};
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            errno = 0;
            ck_assert_msg(zkn_arena_alloc(a, sizes[j], aligns[i]) == NULL,
                          "size %zu align %zu not refused", sizes[j], aligns[i]);
            ck_assert_int_eq(errno, ENOMEM);
            ck_assert_uint_eq(zkn_arena_used(a), used);
        }
    }
    zkn_arena_destroy(a);
}
END_TEST

/* After reset the same sequence gets the same addresses. */
START_TEST(test_reset_reuse)
{
    static const size_t sizes[] = {1, 7, 64, 4096, 100000, 3, 1 << 16};
    static const size_t aligns[] = {1, 8, 64, 4096, 16, 1, 1 << 12};
    enum { N = sizeof sizes / sizeof sizes[0] };
    void *first[N];
    zkn_arena *a = zkn_arena_create(2 * MiB);
    ck_assert_ptr_nonnull(a);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            void *p = zkn_arena_alloc(a, sizes[i], aligns[i]);
            ck_assert_ptr_nonnull(p);
            if (round == 0)
                first[i] = p;
            else
                ck_assert_ptr_eq(p, first[i]);
            memset(p, round, sizes[i]);
        }
        ck_assert_uint_gt(zkn_arena_used(a), 0);
        zkn_arena_reset(a);
        ck_assert_uint_eq(zkn_arena_used(a), 0);
    }
    zkn_arena_destroy(a);
}
END_TEST

START_TEST(test_many_resets)
{
    zkn_arena *a = zkn_arena_create(MiB);
    ck_assert_ptr_nonnull(a);
    void *p0 = NULL, *q0 = NULL;
    for (int i = 0; i < 10000; i++) {
        unsigned char *p = zkn_arena_alloc(a, 4096, 64);
        uint64_t *q = ZKN_ARENA_ARRAY(a, uint64_t, 512);
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(q);
        if (i == 0) {
            p0 = p;
            q0 = q;
        }
        ck_assert_ptr_eq(p, p0);
        ck_assert_ptr_eq(q, q0);
        p[i % 4096] = (unsigned char)i;
        q[i % 512] = (uint64_t)i;
        zkn_arena_reset(a);
        ck_assert_uint_eq(zkn_arena_used(a), 0);
    }
    zkn_arena_destroy(a);
}
END_TEST

/* Reset does not depend on the capacity: 10000 resets of a 256 MiB arena
 * that was written end to end take a blink. (A reset that touched the
 * memory would write 2.5 TB here.) Not in ASan builds, whose poisoning is
 * proportional to the capacity by design. */
#ifndef TEST_ASAN
START_TEST(test_reset_is_constant_time)
{
    const size_t cap = 256 * MiB;
    zkn_arena *a = zkn_arena_create(cap);
    ck_assert_ptr_nonnull(a);
    unsigned char *p = zkn_arena_alloc(a, cap, 1);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, cap);
    double t0 = zkn_test_now_ms() / 1e3;
    for (int i = 0; i < 10000; i++) {
        zkn_arena_reset(a);
        unsigned char *q = zkn_arena_alloc(a, cap, 1);
        ck_assert_ptr_eq(q, p);
        q[(size_t)i * 4096 % cap] = 2;
    }
    double dt = zkn_test_now_ms() / 1e3 - t0;
    ck_assert_msg(dt < 1.0, "10000 resets took %.3f s", dt);
    zkn_arena_destroy(a);
}
END_TEST
#endif

struct big {
    alignas(64) unsigned char bytes[192];
};

START_TEST(test_typed_array)
{
    zkn_arena *a = zkn_arena_create(MiB);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(zkn_arena_alloc(a, 1, 1));
    uint64_t *u = ZKN_ARENA_ARRAY(a, uint64_t, 1000);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq((uintptr_t)u % alignof(uint64_t), 0);
    for (size_t i = 0; i < 1000; i++)
        u[i] = i * 3;
    struct big *b = ZKN_ARENA_ARRAY(a, struct big, 10);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq((uintptr_t)b % 64, 0);
    assert_ptr_ge((unsigned char *)b, (unsigned char *)(u + 1000));
    memset(b, 0x11, 10 * sizeof *b);
    for (size_t i = 0; i < 1000; i++)
        ck_assert_uint_eq(u[i], i * 3);
    size_t used = zkn_arena_used(a);
    /* n * sizeof(type) overflowing is refused, not wrapped to something small. */
    const size_t overflow_n[] = {SIZE_MAX / sizeof(uint64_t) + 1, SIZE_MAX, SIZE_MAX / 2 + 1,
                                 ((size_t)1 << 61) + 1};
    for (size_t i = 0; i < sizeof overflow_n / sizeof overflow_n[0]; i++) {
        errno = 0;
        ck_assert_ptr_null(ZKN_ARENA_ARRAY(a, uint64_t, overflow_n[i]));
        ck_assert_int_eq(errno, ENOMEM);
        errno = 0;
        ck_assert_ptr_null(ZKN_ARENA_ARRAY(a, struct big, overflow_n[i]));
        ck_assert_int_eq(errno, ENOMEM);
    }
    /* No overflow but more than the arena holds. */
    zkn_test_assert_null_errno(ZKN_ARENA_ARRAY(a, uint64_t, MiB / 8), ENOMEM);
    ck_assert_uint_eq(zkn_arena_used(a), used);
    zkn_arena_destroy(a);
}
END_TEST

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

static Suite *arena_suite(void)
{
    Suite *s = suite_create("client_arena");
    TCase *tc = zkn_test_tcase(s, "arena", 60);
    tcase_add_test(tc, test_create_refuses_bad_capacity);
    tcase_add_test(tc, test_capacity_and_used);
    tcase_add_test(tc, test_alignment_every_power_of_two);
    tcase_add_test(tc, test_bad_alignment_refused);
    tcase_add_test(tc, test_exhaustion);
    tcase_add_test(tc, test_size_max_refused);
    tcase_add_test(tc, test_reset_reuse);
    tcase_add_test(tc, test_many_resets);
#ifndef TEST_ASAN
    tcase_add_test(tc, test_reset_is_constant_time);
#endif
    tcase_add_test(tc, test_typed_array);
    tcase_add_test(tc, test_concurrent_alloc);
    tcase_add_test(tc, test_block_from_library);
    tcase_add_test(tc, test_fork_keeps_arena_private);
#ifdef TEST_ASAN
    tcase_add_test(tc, test_asan_poisoning);
    tcase_add_test(tc, test_asan_use_after_reset_caught);
#endif
    return s;
}

ZKN_TEST_CLIENT_MAIN(arena_suite)
