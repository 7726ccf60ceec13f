/* SecretBuf across fork and clone, under RLIMIT_MEMLOCK (with CAP_IPC_LOCK
 * dropped, as CI runs as root), in numbers, and never from the daemon.
 *
 * Each test runs twice: once with the default backing (memfd_secret where
 * this kernel allows it) and once forced to private mlock'd memory through
 * ZK_NALLOC_SECRET_BACKING=mlock. */
#include "secret_helpers.h"

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


static Suite *secret_fork_suite(void)
{
    long p = sysconf(_SC_PAGESIZE);
    ps = p > 0 ? (size_t)p : 4096;
    Suite *s = suite_create("client_secret_fork");
    TCase *tc = zkn_test_tcase(s, "secret_fork", 60);
    tcase_add_loop_test(tc, test_fork_child_sees_zeros, 0, 2);
    tcase_add_loop_test(tc, test_raw_clone_never_sees_secret, 0, 2);
    tcase_add_loop_test(tc, test_memlock_limit, 0, 2);
    tcase_add_loop_test(tc, test_many, 0, 2);
    tcase_add_loop_test(tc, test_not_from_daemon, 0, 2);
    tcase_add_loop_test(tc, test_fork_while_threads_churn, 0, 2);
    return s;
}

ZKN_TEST_CLIENT_MAIN(secret_fork_suite)
