/* zknallocd stopping and starting again through the service manager's fd
 * store: live leases survive a stop, stored regions are named once, removed
 * and trimmed, never cross uids, and a restore respects the pool cap.
 * Invariant and helpers: test_daemon_lifecycle.c, lifecycle_fixture.h. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lifecycle_fixture.h"
#include "runner.h"
#include "wire.h"

START_TEST(stop_keeps_live_leases)
{
    struct tmp t;
    struct store st;
    lc_tmp_make(&t);
    lc_store_open(&st);
    const char *args[] = {"--prewarm", "64K=2", NULL};
    struct spawn sp = {.sock = t.sock, .args = args, .log_path = t.log, .log_level = "info"};
    struct spawned d = lc_spawn_daemon(&sp);
    zkn_test_wait_stat(t.sock, "pool", "clean_bytes", 2 * KIB64);

    int s = zkn_test_connect(t.sock);
    struct zkn_region_desc desc;
    int fd;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    char *p = lc_fill_region(fd, desc.size, 0x5a);
    ino_t lent = lc_ino_of(fd);

    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_store_drain(&st, 300);
    ck_assert_msg(zkn_test_all_byte(p, desc.size, 0x5a),
                  "stopping the daemon changed a live lease");
    /* The idle region is stored, the lent one is not. */
    ck_assert_uint_eq(st.received, 1);
    for (size_t i = 0; i < st.received; i++)
        ck_assert_msg(st.received_ino[i] != lent, "a lent region went to the fd store");
    ck_assert_ptr_null(strstr(lc_read_file(t.log), "is gone"));
    munmap(p, desc.size);
    close(fd);
    close(s);
    lc_store_close(&st);
    lc_tmp_remove(&t);
}
END_TEST

static void trim_all(const char *sock)
{
    int s = zkn_test_connect(sock);
    struct zkn_trim tr = {.target_bytes = 0};
    char buf[256];
    struct zkn_hdr h;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_TRIM, 5, &tr, sizeof tr), 0);
    ck_assert_int_ge(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000), (ssize_t)sizeof h);
    memcpy(&h, buf, sizeof h);
    ck_assert_uint_eq(h.type, ZKN_MSG_TRIM_OK);
    close(s);
}

/* In a fresh t, a daemon prewarms three 64 KiB regions and, as it stops,
 * hands them to st, a fresh fd store (NOTIFY_SOCKET). */
static void store_three(struct tmp *t, struct store *st)
{
    lc_tmp_make(t);
    lc_store_open(st);
    const char *args[] = {"--prewarm", "64K=3", NULL};
    struct spawn sp = {.sock = t->sock, .args = args};
    struct spawned d = lc_spawn_daemon(&sp);
    zkn_test_wait_stat(t->sock, "pool", "clean_bytes", 3 * KIB64);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_store_drain(st, 300);
}

START_TEST(fdstore_names_unique_removed_and_trimmed)
{
    NEED_ROOT();
    struct tmp t;
    struct store st;
    store_three(&t, &st);
    ck_assert_uint_eq(st.received, 3);
    ck_assert_msg(st.n == 3, "3 regions stored under %zu distinct names", st.n);
    for (size_t i = 0; i < st.n; i++)
        for (size_t k = i + 1; k < st.n; k++)
            ck_assert_str_ne(st.names[i], st.names[k]);
    char names[3][128];
    memcpy(names, st.names, sizeof names);

    /* Restored: the manager is told to drop each copy; prewarm counts them. */
    const char *args[] = {"--prewarm", "64K=3", NULL};
    struct spawn sp = {.sock = t.sock, .args = args, .store = &st};
    struct spawned d = lc_spawn_daemon(&sp);
    lc_store_drain(&st, 300);
    ck_assert_int_eq(lc_stat_value(t.sock, "totals", "restored"), 3);
    ck_assert_uint_eq(st.nremoved, 3);
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (size_t k = 0; k < st.nremoved; k++)
            found |= strcmp(st.removed[k], names[i]) == 0;
        ck_assert_msg(found, "no FDSTOREREMOVE for %s", names[i]);
    }
    ck_assert_uint_eq(st.n, 0);
    zkn_test_wait_stat(t.sock, "pool", "clean_bytes", 3 * KIB64);
    ck_assert_int_eq(lc_stat_value(t.sock, "totals", "created"), 0);

    /* Trim leaves nothing: not in the daemon, not in the manager. */
    trim_all(t.sock);
    ck_assert_int_eq(lc_stat_value(t.sock, "pool", "idle_bytes"), 0);
    ck_assert_int_eq(lc_stat_value(t.sock, "pool", "regions"), 0);
    ck_assert_int_eq(lc_count_memfds(d.pid), 0);
    lc_store_drain(&st, 100);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_store_close(&st);
    lc_tmp_remove(&t);
}
END_TEST

/* As uid 65534: LEND one 64 KiB region; exit 0 when it is not the file
 * `forbidden` and no byte is `byte`, 1 when it is, 2 on failure. */
static int lend_as_nobody_sees(const char *sock, int byte, ino_t forbidden)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
            _exit(2);
        int s = zkn_test_connect(sock), fd;
        struct zkn_region_desc desc;
        if (s < 0 || zkn_test_hello(s, NULL) < 0 || zkn_test_lend(s, 0, 1, 0, &desc, &fd) != 1)
            _exit(2);
        char *p = mmap(NULL, desc.size, PROT_READ, MAP_SHARED, fd, 0);
        struct stat sb;
        if (p == MAP_FAILED || fstat(fd, &sb) < 0)
            _exit(2);
        if (sb.st_ino == forbidden)
            _exit(1);
        for (uint64_t i = 0; i < desc.size; i++)
            if (p[i] == (char)byte)
                _exit(1);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}

START_TEST(fdstore_never_crosses_uids)
{
    NEED_ROOT();
    struct tmp t;
    struct store st;
    lc_tmp_make(&t);
    lc_store_open(&st);
    const char *args[] = {"--prewarm", "64K=1", "--socket-mode", "0666", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = lc_spawn_daemon(&sp);
    zkn_test_wait_stat(t.sock, "pool", "clean_bytes", KIB64);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_store_drain(&st, 300);
    ck_assert_uint_eq(st.n, 1);

    /* Instance 2: root takes the restored region and writes to it. */
    const char *args2[] = {"--socket-mode", "0666", NULL};
    sp.args = args2;
    sp.store = &st;
    d = lc_spawn_daemon(&sp);
    lc_store_drain(&st, 300);
    int s = zkn_test_connect(t.sock), fd;
    struct zkn_region_desc desc;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    ck_assert_int_eq(lc_stat_value(t.sock, "totals", "created"), 0); /* the restored one */
    char *p = lc_fill_region(fd, desc.size, 0xa5);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    close(s);
    lc_store_drain(&st, 300);

    /* Instance 3: uid 65534 must never see root's bytes. */
    d = lc_spawn_daemon(&sp);
    lc_store_drain(&st, 300);
    ck_assert_int_eq(lend_as_nobody_sees(t.sock, 0xa5, lc_ino_of(fd)), 0);
    ck_assert(zkn_test_all_byte(p, desc.size, 0xa5));
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    munmap(p, desc.size);
    close(fd);
    lc_store_close(&st);
    lc_tmp_remove(&t);
}
END_TEST

START_TEST(fdstore_restore_respects_the_cap)
{
    struct tmp t;
    struct store st;
    store_three(&t, &st);
    ck_assert_uint_eq(st.n, 3);
    const char *small[] = {"--pool-bytes", "128K", NULL};
    struct spawn sp = {.sock = t.sock, .args = small, .store = &st};
    struct spawned d = lc_spawn_daemon(&sp);
    lc_store_drain(&st, 300);
    ck_assert_int_eq(lc_stat_value(t.sock, "totals", "restored"), 2);
    ck_assert_int_eq(lc_stat_value(t.sock, "pool", "idle_bytes"), 2 * KIB64);
    ck_assert_uint_eq(st.nremoved, 3);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_int_eq(lc_count_memfds(d.pid), 2);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_store_close(&st);
    lc_tmp_remove(&t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("daemon_fdstore");
    TCase *tc = zkn_test_tcase(s, "fdstore", 60);
    tcase_add_test(tc, stop_keeps_live_leases);
    tcase_add_test(tc, fdstore_names_unique_removed_and_trimmed);
    tcase_add_test(tc, fdstore_never_crosses_uids);
    tcase_add_test(tc, fdstore_restore_respects_the_cap);
    return s;
}

ZKN_TEST_MAIN(make_suite)
