/* SecretBuf: guard pages, wipe before unmap, locking (VmLck and the "lo"
 * flag), dump exclusion ("dd"), what a fork child sees, and the clear error
 * when RLIMIT_MEMLOCK forbids locking (with CAP_IPC_LOCK dropped, as CI runs
 * as root).
 *
 * Most tests run twice: once with the default backing (memfd_secret where
 * this kernel allows it) and once forced to private mlock'd memory through
 * ZK_NALLOC_SECRET_BACKING=mlock. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

static size_t ps;

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

/* ---- helpers ---- */

static const char *const backings[] = {NULL, "mlock"};

/* Loop index 0: default backing; 1: forced private mlock'd memory. */
static void use_backing(int i)
{
    if (backings[i])
        ck_assert_int_eq(setenv("ZK_NALLOC_SECRET_BACKING", backings[i], 1), 0);
    else
        ck_assert_int_eq(unsetenv("ZK_NALLOC_SECRET_BACKING"), 0);
}

/* Whether memfd_secret works here, found independently of the library. */
static int kernel_has_memfd_secret(void)
{
#ifdef SYS_memfd_secret
    int fd = (int)syscall(SYS_memfd_secret, (unsigned int)O_CLOEXEC);
    if (fd < 0)
        return 0;
    int ok = ftruncate(fd, (off_t)ps) == 0;
    if (ok) {
        void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ok = p != MAP_FAILED;
        if (ok)
            munmap(p, ps);
    }
    close(fd);
    return ok;
#else
    return 0;
#endif
}

static enum zkn_secret_backing expected_backing(int i)
{
    return i == 0 && kernel_has_memfd_secret() ? ZKN_SECRET_MEMFD_SECRET : ZKN_SECRET_MLOCKED;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* VmLck of this process in kB, or -1. */
static long vmlck_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The /proc/self/smaps header line and VmFlags line of the mapping that holds
 * addr. 0, or -1 if not found. */
static int mapping_of(const void *addr, char *head, size_t headlen, char *flags, size_t flagslen)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        /* Only a mapping's header line starts with "hex-hex". */
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            if (in)
                snprintf(head, headlen, "%s", line);
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, flagslen, "%s", line + 8);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int has_flag(const char *flags, const char *flag)
{
    char want[8];
    snprintf(want, sizeof want, " %s", flag);
    const char *p = flags;
    while ((p = strstr(p, want)) != NULL) {
        char after = p[strlen(want)];
        if (after == ' ' || after == '\n' || after == 0)
            return 1;
        p++;
    }
    return 0;
}

/* Forks; the child writes one byte at p and exits 0 if it survives.
 * Returns the wait status. */
static int status_of_write(volatile unsigned char *p)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* No core file for the expected fault, and no sanitizer handler
         * turning the signal into an exit. */
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        signal(SIGSEGV, SIG_DFL);
        *p = 0x42;
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return st;
}

#define ck_assert_segv(st)                                                                   \
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "no SIGSEGV (status %#x)", st)

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

/* A fork child sees zeros where the parent's secret is, at the same address;
 * its copy is usable, locked again, and freeable; the parent's is untouched. */
START_TEST(test_fork_child_sees_zeros)
{
    use_backing(_i);
    zkn_secret *s = zkn_secret_new(2 * ps + 10);
    zkn_secret *t = zkn_secret_new(77);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(t);
    unsigned char *d = zkn_secret_data(s), *e = zkn_secret_data(t);
    memset(d, 0x77, zkn_secret_len(s));
    memset(e, 0x99, zkn_secret_len(t));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!zkn_test_all_byte(d, zkn_secret_len(s), 0) ||
            !zkn_test_all_byte(e, zkn_secret_len(t), 0))
            _exit(1);
        char head[512], flags[512];
        if (mapping_of(d, head, sizeof head, flags, sizeof flags) != 0 || !has_flag(flags, "lo") ||
            !has_flag(flags, "dd") || !has_flag(flags, "wf"))
            _exit(2);
        memset(d, 0x11, zkn_secret_len(s));
        zkn_secret_free(s);
        zkn_secret_free(t);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child died (status %#x)", st);
    ck_assert_msg(WEXITSTATUS(st) != 1, "child saw the secret");
    ck_assert_msg(WEXITSTATUS(st) != 2, "child's copy is not locked, dump-excluded and wipe-on-fork");
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    for (size_t i = 0; i < zkn_secret_len(s); i++)
        if (d[i] != 0x77)
            ck_abort_msg("parent's byte %zu changed", i);
    for (size_t i = 0; i < zkn_secret_len(t); i++)
        if (e[i] != 0x99)
            ck_abort_msg("parent's byte %zu of the second buffer changed", i);
    zkn_secret_free(t);
    zkn_secret_free(s);
}
END_TEST

/* A child made without fork()'s handlers (a raw clone) has no chance to
 * fix anything up: it must still never read the secret. With the private
 * backing the kernel wipes it (zeros); with memfd_secret the pages were
 * never inherited (a fault). */
START_TEST(test_raw_clone_never_sees_secret)
{
    use_backing(_i);
    zkn_secret *s = zkn_secret_new(5000);
    ck_assert_ptr_nonnull(s);
    volatile unsigned char *d = zkn_secret_data(s);
    memset((void *)d, 0x3c, zkn_secret_len(s));
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        signal(SIGSEGV, SIG_DFL);
        for (size_t i = 0; i < 5000; i++)
            if (d[i] != 0)
                _exit(1);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (zkn_secret_backing_of(s) == ZKN_SECRET_MEMFD_SECRET)
        ck_assert_segv(st);
    else
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    ck_assert_uint_eq(d[4999], 0x3c);
    zkn_secret_free(s);
}
END_TEST

/* Drops CAP_IPC_LOCK (which lets root lock past any limit) from this
 * process's effective and permitted sets. 0 or -1. */
static int drop_ipc_lock(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct c[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &h, c) != 0)
        return -1;
    c[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    c[CAP_TO_INDEX(CAP_IPC_LOCK)].permitted &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    c[CAP_TO_INDEX(CAP_IPC_LOCK)].inheritable &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    return syscall(SYS_capset, &h, c) == 0 ? 0 : -1;
}

/* Sets the soft limit only, so it can be raised again without privilege. */
static int set_memlock(rlim_t bytes)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < bytes))
        return -1;
    rl.rlim_cur = bytes;
    return setrlimit(RLIMIT_MEMLOCK, &rl);
}

/* Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK too small, new() fails with
 * EPERM (limit 0) or ENOMEM (over the limit) and leaves nothing mapped; a
 * buffer within the limit still works. In a child, as the caps do not come
 * back. */
START_TEST(test_memlock_limit)
{
    use_backing(_i);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (drop_ipc_lock() != 0)
            _exit(10);
        if (set_memlock(0) != 0)
            _exit(11);
        long lck = vmlck_kb();
        errno = 0;
        if (zkn_secret_new(4096) != NULL || errno != EPERM)
            _exit(1);
        if (set_memlock(64 * 1024) != 0)
            _exit(12);
        errno = 0;
        if (zkn_secret_new(1 << 20) != NULL || errno != ENOMEM)
            _exit(2);
        errno = 0;
        if (zkn_secret_new(64 * 1024 + 1) != NULL || errno != ENOMEM)
            _exit(3);
        if (vmlck_kb() != lck)
            _exit(4);
        zkn_secret *s = zkn_secret_new(60 * 1024);
        if (!s)
            _exit(5);
        memset(zkn_secret_data(s), 1, zkn_secret_len(s));
        /* The limit is now nearly used: the next one does not fit. */
        errno = 0;
        if (zkn_secret_new(8192) != NULL || errno != ENOMEM)
            _exit(6);
        zkn_secret_free(s);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child died (status %#x)", st);
    ck_assert_msg(WEXITSTATUS(st) < 10, "child setup failed (%d)", WEXITSTATUS(st));
    ck_assert_msg(WEXITSTATUS(st) != 1, "limit 0: not NULL/EPERM");
    ck_assert_msg(WEXITSTATUS(st) != 2 && WEXITSTATUS(st) != 3, "over the limit: not NULL/ENOMEM");
    ck_assert_msg(WEXITSTATUS(st) != 4, "a refused buffer left locked memory behind");
    ck_assert_msg(WEXITSTATUS(st) != 5, "a buffer within the limit was refused");
    ck_assert_msg(WEXITSTATUS(st) != 6, "the limit was not counted");
    ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

/* Many buffers, freed out of order, with a fork in the middle. */
START_TEST(test_many)
{
    use_backing(_i);
    enum { N = 64 };
    zkn_secret *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = zkn_secret_new(1 + (size_t)i * 300);
        ck_assert_ptr_nonnull(s[i]);
        memset(zkn_secret_data(s[i]), i + 1, zkn_secret_len(s[i]));
    }
    for (int i = 0; i < N; i += 3) {
        zkn_secret_free(s[i]);
        s[i] = NULL;
    }
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (int i = 0; i < N; i++)
            if (s[i] && !zkn_test_all_byte(zkn_secret_data(s[i]), zkn_secret_len(s[i]), 0))
                _exit(1);
        for (int i = 0; i < N; i++)
            zkn_secret_free(s[i]);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    for (int i = N - 1; i >= 0; i--) {
        if (s[i]) {
            const unsigned char *d = zkn_secret_data(s[i]);
            for (size_t k = 0; k < zkn_secret_len(s[i]); k++)
                if (d[k] != (unsigned char)(i + 1))
                    ck_abort_msg("buffer %d byte %zu changed", i, k);
        }
        zkn_secret_free(s[i]);
    }
}
END_TEST

/* With a daemon running, a SecretBuf still takes nothing from it nor from
 * the library's large-block path. */
START_TEST(test_not_from_daemon)
{
    use_backing(_i);
    struct zkn_test_daemon d;
    ck_assert_int_eq(zkn_test_daemon_start(&d, NULL), 0);
    /* A large malloc first, so the daemon session is up. */
    void *warm = zkn_malloc(4 << 20);
    ck_assert_ptr_nonnull(warm);
    struct zkn_stats before, after;
    zkn_stats(&before);
    zkn_secret *s = zkn_secret_new(4 << 20);
    ck_assert_ptr_nonnull(s);
    memset(zkn_secret_data(s), 7, zkn_secret_len(s));
    zkn_stats(&after);
    ck_assert_uint_eq(after.daemon_lends, before.daemon_lends);
    ck_assert_uint_eq(after.bytes_leased, before.bytes_leased);
    ck_assert_uint_eq(after.bytes_live, before.bytes_live);
    ck_assert_uint_eq(after.misses + after.hits, before.misses + before.hits);
    zkn_secret_free(s);
    zkn_free(warm);
    zkn_test_daemon_stop(&d);
    zkn_test_daemon_cleanup(&d);
}
END_TEST

/* Threads create and free buffers while the main thread forks: nothing
 * deadlocks (the registry lock is held across fork), and every child sees
 * only zeros in the buffers it inherited. */
static atomic_int stop_churn;

static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        zkn_secret *s = zkn_secret_new(3000);
        if (!s)
            return (void *)1;
        memset(zkn_secret_data(s), 0xee, 3000);
        zkn_secret_free(s);
    }
    return NULL;
}

START_TEST(test_fork_while_threads_churn)
{
    use_backing(_i);
    pthread_t t[4];
    atomic_store(&stop_churn, 0);
    zkn_secret *mine = zkn_secret_new(10000);
    ck_assert_ptr_nonnull(mine);
    memset(zkn_secret_data(mine), 0xdd, 10000);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, NULL), 0);
    for (int k = 0; k < 30; k++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            /* The one this thread owns is reachable and zero; the
             * churning threads' are gone with them. */
            _exit(zkn_test_all_byte(zkn_secret_data(mine), 10000, 0) ? 0 : 1);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %#x", k, st);
    }
    atomic_store(&stop_churn, 1);
    for (int i = 0; i < 4; i++) {
        void *rv;
        ck_assert_int_eq(pthread_join(t[i], &rv), 0);
        ck_assert_ptr_null(rv);
    }
    const unsigned char *d = zkn_secret_data(mine);
    ck_assert_uint_eq(d[0], 0xdd);
    ck_assert_uint_eq(d[9999], 0xdd);
    zkn_secret_free(mine);
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
    tcase_add_loop_test(tc, test_basic, 0, 2);
    tcase_add_loop_test(tc, test_guard_after, 0, 2);
    tcase_add_loop_test(tc, test_guard_before, 0, 2);
    tcase_add_loop_test(tc, test_wiped_before_unmap, 0, 2);
    tcase_add_loop_test(tc, test_locked, 0, 2);
    tcase_add_loop_test(tc, test_mapping_flags, 0, 2);
    tcase_add_loop_test(tc, test_fork_child_sees_zeros, 0, 2);
    tcase_add_loop_test(tc, test_raw_clone_never_sees_secret, 0, 2);
    tcase_add_loop_test(tc, test_memlock_limit, 0, 2);
    tcase_add_loop_test(tc, test_many, 0, 2);
    tcase_add_loop_test(tc, test_not_from_daemon, 0, 2);
    tcase_add_loop_test(tc, test_fork_while_threads_churn, 0, 2);
    return s;
}

ZKN_TEST_CLIENT_MAIN(secret_suite)
