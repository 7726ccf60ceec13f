/* Arena: alignment, exhaustion, reset reuse, many resets, the typed-array
 * macro, refusal of huge sizes, concurrent allocation, and (in ASan builds)
 * that use after reset is caught. */
#include "arena_helpers.h"

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
    return s;
}

ZKN_TEST_CLIENT_MAIN(arena_suite)
