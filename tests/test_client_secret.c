/* SecretBuf: guard pages, wipe before unmap, locking (VmLck and the "lo"
 * flag), dump exclusion ("dd"), what a fork child sees, and the clear error
 * when RLIMIT_MEMLOCK forbids locking (with CAP_IPC_LOCK dropped, as CI runs
 * as root).
 *
 * Most tests run twice: once with the default backing (memfd_secret where
 * this kernel allows it) and once forced to private mlock'd memory through
 * ZK_NALLOC_SECRET_BACKING=mlock. */

#include "secret_helpers.h"

/* ---- munmap interposer: what the library unmaps, read just before ---- */

/* The library calls munmap through the PLT, so this definition (exported by
 * the executable: the library refers to the name) sees each unmap first. The
 * watched range is checked for zeros at that moment, which proves it was
 * wiped before the pages went back to the kernel, whichever the backing (a
 * memfd_secret page cannot be read through any second view). */
static const unsigned char *watch_ptr;
static size_t watch_len;
static int watch_seen, watch_nonzero;

__attribute__((visibility("default"))) int munmap(void *addr, size_t len)
{
    uintptr_t a = (uintptr_t)addr, w = (uintptr_t)watch_ptr;
    if (watch_ptr && w >= a && w + watch_len <= a + len) {
        watch_seen++;
        for (size_t i = 0; i < watch_len; i++)
            watch_nonzero += watch_ptr[i] != 0;
    }
    return (int)syscall(SYS_munmap, addr, len);
}


/* ---- tests ---- */

START_TEST(test_bad_sizes)
{
    zkn_test_assert_null_errno(zkn_secret_new(0), EINVAL);
    zkn_test_assert_null_errno(zkn_secret_new(SIZE_MAX), EINVAL);
    zkn_test_assert_null_errno(zkn_secret_new(SIZE_MAX - ps), EINVAL);
    zkn_test_assert_null_errno(zkn_secret_new((size_t)PTRDIFF_MAX), EINVAL);
    /* Fits the arithmetic, not the machine: refused, not attempted. */
    zkn_test_assert_null_errno(zkn_secret_new((size_t)1 << 46), ENOMEM);
    /* NULL is tolerated. */
    zkn_secret_free(NULL);
    ck_assert_ptr_null(zkn_secret_data(NULL));
    ck_assert_uint_eq(zkn_secret_len(NULL), 0);
}
END_TEST

START_TEST(test_backing_reported)
{
    use_backing(_i);
    zkn_secret *s = zkn_secret_new(4096);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(zkn_secret_backing_of(s), expected_backing(_i));
    if (_i == 0)
        printf("SecretBuf backing on this kernel: %s\n",
               zkn_secret_backing_of(s) == ZKN_SECRET_MEMFD_SECRET ? "memfd_secret" : "mlock");
    zkn_secret_free(s);
}
END_TEST

/* A backing it does not know is named on stderr, once, and the default is
 * used: a typo must not quietly pick something else. */
START_TEST(test_unknown_backing_named)
{
    ck_assert_int_eq(setenv("ZK_NALLOC_SECRET_BACKING", "mlocked", 1), 0);
    char path[] = "/tmp/zkn-secret-stderr-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    zkn_secret *a = zkn_secret_new(100), *b = zkn_secret_new(100);
    ck_assert_int_eq(dup2(saved, 2), 2);
    close(saved);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(zkn_secret_backing_of(a), expected_backing(0));
    zkn_secret_free(a);
    zkn_secret_free(b);
    char err[512];
    ssize_t n = pread(fd, err, sizeof err - 1, 0);
    close(fd);
    ck_assert_int_gt(n, 0);
    err[n] = '\0';
    ck_assert_str_eq(err, "zknalloc: ZK_NALLOC_SECRET_BACKING=mlocked: expected mlock or "
                          "memfd_secret; ignored\n");
    ck_assert_int_eq(unsetenv("ZK_NALLOC_SECRET_BACKING"), 0);
}
END_TEST

/* Zeroed, the right length, 64-byte aligned, writable end to end, and at the
 * end of its pages. */
START_TEST(test_basic)
{
    use_backing(_i);
    static const size_t lens[] = {1, 63, 64, 100, 4095, 4096, 4097, 65536, (1 << 20) + 3};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        zkn_secret *s = zkn_secret_new(lens[k]);
        ck_assert_ptr_nonnull(s);
        unsigned char *d = zkn_secret_data(s);
        ck_assert_ptr_nonnull(d);
        ck_assert_uint_eq(zkn_secret_len(s), lens[k]);
        ck_assert_uint_eq((uintptr_t)d % 64, 0);
        ck_assert_uint_eq(((uintptr_t)d + round_up(lens[k], 64)) % ps, 0);
        ck_assert(zkn_test_all_byte(d, lens[k], 0));
        memset(d, 0xc3, lens[k]);
        ck_assert_uint_eq(d[lens[k] - 1], 0xc3);
        zkn_secret_free(s);
    }
}
END_TEST

/* One byte past the end faults when the length is a multiple of 64;
 * otherwise at the next multiple of 64. */
START_TEST(test_guard_after)
{
    use_backing(_i);
    static const size_t lens[] = {4096, 8192, 192, 64, 100, 1, 5000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        zkn_secret *s = zkn_secret_new(lens[k]);
        ck_assert_ptr_nonnull(s);
        unsigned char *d = zkn_secret_data(s);
        size_t end = round_up(lens[k], 64);
        ck_assert_segv(status_of_write(d + end));
        /* The last byte of the slack is still the buffer's. */
        int st = status_of_write(d + end - 1);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "len %zu: last byte faulted", lens[k]);
        zkn_secret_free(s);
    }
}
END_TEST

/* One byte before the start faults when the length is a multiple of the page
 * size; otherwise one byte before the buffer's first page. */
START_TEST(test_guard_before)
{
    use_backing(_i);
    static const size_t lens[] = {4096, 8192, 100, 5000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        zkn_secret *s = zkn_secret_new(lens[k]);
        ck_assert_ptr_nonnull(s);
        unsigned char *d = zkn_secret_data(s);
        unsigned char *first_page = (unsigned char *)((uintptr_t)d / ps * ps);
        if (lens[k] % ps == 0)
            ck_assert_ptr_eq(first_page, d);
        ck_assert_segv(status_of_write(first_page - 1));
        ck_assert_segv(status_of_write(first_page - ps));
        zkn_secret_free(s);
    }
}
END_TEST

/* What free hands back to the kernel is zero at that moment, and the data
 * is gone from the address space after. */
START_TEST(test_wiped_before_unmap)
{
    use_backing(_i);
    static const size_t lens[] = {1, 100, 4096, 100000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        zkn_secret *s = zkn_secret_new(lens[k]);
        ck_assert_ptr_nonnull(s);
        unsigned char *d = zkn_secret_data(s);
        memset(d, 0x5a, lens[k]);
        /* The whole page span, slack included, is checked. */
        watch_ptr = (unsigned char *)((uintptr_t)d / ps * ps);
        watch_len = round_up(lens[k], ps);
        watch_seen = watch_nonzero = 0;
        zkn_secret_free(s);
        watch_ptr = NULL;
        ck_assert_int_eq(watch_seen, 1);
        ck_assert_int_eq(watch_nonzero, 0);
        /* mincore answers ENOMEM for an address that is not mapped. */
        unsigned char vec;
        errno = 0;
        ck_assert_int_eq(mincore((void *)((uintptr_t)d / ps * ps), ps, &vec), -1);
        ck_assert_int_eq(errno, ENOMEM);
    }
}
END_TEST

/* Locked: VmLck grows by the page-rounded size and shrinks back on free,
 * and the data mapping carries the kernel's "lo" (locked) flag. */
START_TEST(test_locked)
{
    use_backing(_i);
    long before = vmlck_kb();
    ck_assert_int_ge(before, 0);
    size_t len = (1 << 20) + 1;
    zkn_secret *s = zkn_secret_new(len);
    ck_assert_ptr_nonnull(s);
    long during = vmlck_kb();
    ck_assert_int_eq(during - before, (long)(round_up(len, ps) / 1024));
    char head[512], flags[512];
    ck_assert_int_eq(mapping_of(zkn_secret_data(s), head, sizeof head, flags, sizeof flags), 0);
    ck_assert_msg(has_flag(flags, "lo"), "not locked: %s", flags);
    zkn_secret_free(s);
    ck_assert_int_eq(vmlck_kb(), before);
}
END_TEST

/* Private, out of core dumps, wiped (or not given) in fork children, and
 * guarded by inaccessible pages. */
START_TEST(test_mapping_flags)
{
    use_backing(_i);
    zkn_secret *s = zkn_secret_new(3 * ps);
    ck_assert_ptr_nonnull(s);
    unsigned char *d = zkn_secret_data(s);
    char head[512], flags[512];
    ck_assert_int_eq(mapping_of(d, head, sizeof head, flags, sizeof flags), 0);
    ck_assert_msg(has_flag(flags, "dd"), "dumpable: %s", flags);
    if (zkn_secret_backing_of(s) == ZKN_SECRET_MEMFD_SECRET) {
        /* Shared in name only: the file was never handed to anyone. */
        ck_assert_msg(strstr(head, " rw-s ") && strstr(head, "secretmem"), "%s", head);
        ck_assert_msg(has_flag(flags, "dc"), "not MADV_DONTFORK: %s", flags);
    } else {
        /* Anonymous and private: no path after the inode column. */
        ck_assert_msg(strstr(head, " rw-p ") != NULL, "%s", head);
        ck_assert_msg(strchr(head, '/') == NULL, "named mapping: %s", head);
        ck_assert_msg(has_flag(flags, "wf"), "not MADV_WIPEONFORK: %s", flags);
    }
    /* The guards: inaccessible, on both sides. */
    ck_assert_int_eq(mapping_of(d - 1, head, sizeof head, flags, sizeof flags), 0);
    ck_assert_msg(strstr(head, " ---p ") != NULL, "front guard: %s", head);
    ck_assert_int_eq(mapping_of(d + 3 * ps, head, sizeof head, flags, sizeof flags), 0);
    ck_assert_msg(strstr(head, " ---p ") != NULL, "rear guard: %s", head);
    zkn_secret_free(s);
}
END_TEST


static Suite *secret_suite(void)
{
    long p = sysconf(_SC_PAGESIZE);
    ps = p > 0 ? (size_t)p : 4096;
    Suite *s = suite_create("client_secret");
    TCase *tc = zkn_test_tcase(s, "secret", 60);
    tcase_add_test(tc, test_bad_sizes);
    tcase_add_loop_test(tc, test_backing_reported, 0, 2);
    tcase_add_test(tc, test_unknown_backing_named);
    tcase_add_loop_test(tc, test_basic, 0, 2);
    tcase_add_loop_test(tc, test_guard_after, 0, 2);
    tcase_add_loop_test(tc, test_guard_before, 0, 2);
    tcase_add_loop_test(tc, test_wiped_before_unmap, 0, 2);
    tcase_add_loop_test(tc, test_locked, 0, 2);
    tcase_add_loop_test(tc, test_mapping_flags, 0, 2);
    return s;
}

ZKN_TEST_CLIENT_MAIN(secret_suite)
