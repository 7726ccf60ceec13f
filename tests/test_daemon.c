/* zknallocd against a real daemon on a temporary socket: protocol round
 * trips, warm reuse, zeroing, reclaim of dead clients' leases, fd hygiene.
 * Refused input: test_daemon_input.c; pool policy: test_daemon_pool.c.
 * Fixture: daemon_fixture.h. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "wire.h"

START_TEST(hello_and_sealed_region)
{
    struct zkn_hello_ok ok;
    struct zkn_region_desc d[4];
    int fds[4];
    int s = zkn_test_connect(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_hello(s, &ok), 0);
    ck_assert_int_eq(ok.version, ZKN_PROTO_VERSION);
    ck_assert_int_eq(ok.class_count, ZKN_CLASS_COUNT);
    ck_assert_int_eq(ok.daemon_pid, fx_daemon.pid);
    ck_assert_str_ne(zkn_backing_name(ok.backing), "unknown");

    int cls = zkn_size_class(3 * MIB);
    int n = fx_lend_warm(s, cls, 1, 0, d, fds);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(d[0].size, zkn_class_size(cls));
    ck_assert_int_eq(d[0].size_class, cls);
    ck_assert_int_eq(d[0].size % (2 * MIB), 0);
    struct stat st;
    ck_assert_int_eq(fstat(fds[0], &st), 0);
    ck_assert_int_eq((uint64_t)st.st_size, d[0].size);
    if (ok.backing != ZKN_BACKING_TMPFS_HUGE) {
        int seals = fcntl(fds[0], F_GET_SEALS);
        ck_assert_int_eq(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
                         F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        /* No client can resize a region under the daemon or another client. */
        ck_assert_int_ne(ftruncate(fds[0], 4096), 0);
        ck_assert_int_ne(ftruncate(fds[0], (off_t)d[0].size * 2), 0);
    }
    ck_assert_int_ne(fcntl(fds[0], F_GETFD) & FD_CLOEXEC, 0);
    close(fds[0]);
    ck_assert_int_eq(zkn_test_return(s, &d[0].id, 1), 1);
    close(s);
}
END_TEST

START_TEST(warm_region_comes_back_resident)
{
    /* One region made ready at start: both LENDs are served from the pool. */
    int s, fd;
    struct zkn_region_desc d, d2;
    int cls = fx_dirty_one_region(8, 0xab, &s, &d);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);

    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d2, &fd), 1);
    ck_assert_uint_eq(d2.id, d.id); /* the same warm region, not a new one */
    char *p = fx_map_region(fd, d2.size);
    unsigned char vec[(8 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, d2.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert_msg(vec[i] & 1, "page %zu of a warm region is not resident", i);
    munmap(p, d2.size);
    ck_assert_int_eq(zkn_test_return(s, &d2.id, 1), 1);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    json_t *classes = json_object_get(j, "classes");
    int found = 0;
    for (size_t i = 0; i < json_array_size(classes); i++) {
        json_t *c = json_array_get(classes, i);
        if (json_integer_value(json_object_get(c, "class")) == cls) {
            found = 1;
            ck_assert_int_eq(json_integer_value(json_object_get(c, "hits")), 2);
            ck_assert_int_eq(json_integer_value(json_object_get(c, "misses")), 0);
            ck_assert_int_eq(json_integer_value(json_object_get(c, "served_warm")), 2);
        }
    }
    ck_assert(found);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "lends"), 2);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "returns"), 2);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "created"), 1);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(zeroed_lend_is_zero)
{
    int s, fd;
    struct zkn_region_desc d, d2;
    int cls = fx_dirty_one_region(4, 0x5a, &s, &d);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "dirty_bytes", 0);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);

    ck_assert_int_eq(zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d2, &fd), 1);
    ck_assert_uint_eq(d2.id, d.id); /* zeroed in the background, then reused */
    ck_assert_int_eq(d2.flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    char *p = fx_map_region(fd, d2.size);
    for (uint64_t i = 0; i < d2.size; i += 8)
        ck_assert_msg(*(uint64_t *)(p + i) == 0, "byte %llu not zero", (unsigned long long)i);
    munmap(p, d2.size);
    ck_assert_int_eq(zkn_test_return(s, &d2.id, 1), 1);
    close(s);
}
END_TEST

START_TEST(zeroed_lend_never_gets_dirty_region)
{
    /* With zeroing stalled behind nothing, a ZEROED lend right after a
     * RETURN must either wait for a clean region or get a new one: never the
     * dirty one. */
    int s = fx_session();
    struct zkn_region_desc d[4];
    int fds[4];
    int cls = zkn_size_class(64 * 1024);
    for (int round = 0; round < 50; round++) {
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, d, fds), 1);
        char *p = fx_map_region(fds[0], d[0].size);
        memset(p, 0xff, d[0].size);
        munmap(p, d[0].size);
        ck_assert_int_eq(zkn_test_return(s, &d[0].id, 1), 1);
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d[1], &fds[1]), 1);
        p = fx_map_region(fds[1], d[1].size);
        for (uint64_t i = 0; i < d[1].size; i++)
            ck_assert_msg(p[i] == 0, "round %d byte %llu dirty", round, (unsigned long long)i);
        munmap(p, d[1].size);
        ck_assert_int_eq(zkn_test_return(s, &d[1].id, 1), 1);
    }
    close(s);
}
END_TEST

START_TEST(batch_lend_and_two_clients)
{
    int a = fx_session(), b = fx_session();
    struct zkn_region_desc da[16], db[16];
    int fa[16], fb[16];
    int cls = zkn_size_class(256 * 1024);
    int na = zkn_test_lend(a, cls, 16, 0, da, fa);
    ck_assert_int_eq(na, 1); /* empty pool: one new region per LEND */
    ck_assert_int_eq(zkn_test_return(a, &da[0].id, 1), 1);
    close(fa[0]);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);
    for (int i = 1; i < 6; i++) {
        ck_assert_int_eq(zkn_test_lend(a, cls, 1, 0, &da[i], &fa[i]), 1);
    }
    uint64_t ids[5];
    for (int i = 1; i < 6; i++) {
        ids[i - 1] = da[i].id;
        close(fa[i]);
    }
    ck_assert_int_eq(zkn_test_return(a, ids, 5), 5);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);
    /* Five pooled now: one LEND of 16 hands them all over in one frame. */
    na = zkn_test_lend(a, cls, 16, 0, da, fa);
    ck_assert_int_eq(na, 5);
    int nb = zkn_test_lend(b, cls, 1, 0, db, fb);
    ck_assert_int_eq(nb, 1);
    char *pb = fx_map_region(fb[0], db[0].size);
    memset(pb, 0x11, db[0].size);
    for (int i = 0; i < na; i++) {
        ck_assert_uint_ne(da[i].id, db[0].id);
        char *p = fx_map_region(fa[i], da[i].size);
        memset(p, 0x22, da[i].size);
        munmap(p, da[i].size);
        ids[i] = da[i].id;
    }
    for (uint64_t i = 0; i < db[0].size; i++)
        ck_assert_int_eq(pb[i], 0x11);
    munmap(pb, db[0].size);
    /* Another process cannot return them (leases belong to processes; a and
     * b, both ours, share them). */
    pid_t other = fork();
    if (other == 0) {
        int cs = zkn_test_connect(fx_daemon.sock);
        _exit(cs >= 0 && zkn_test_hello(cs, NULL) == 0 &&
                      zkn_test_return(cs, ids, 1) == -ZKN_E_UNKNOWN_ID
                  ? 0
                  : 1);
    }
    int st;
    waitpid(other, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process returned our lease");
    ck_assert_int_eq(zkn_test_return(b, ids, 1), 1);
    ck_assert_int_eq(zkn_test_return(a, ids + 1, (uint32_t)na - 1), na - 1);
    ck_assert_int_eq(zkn_test_return(b, &db[0].id, 1), 1);
    close(a);
    close(b);
}
END_TEST

START_TEST(killed_client_leases_reclaimed)
{
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct zkn_region_desc d;
        int fd;
        int s = zkn_test_connect(fx_daemon.sock);
        if (s < 0 || zkn_test_hello(s, NULL) < 0 ||
            fx_lend_warm(s, zkn_size_class(2 * MIB), 1, 0, &d, &fd) != 1)
            _exit(1);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    close(ready[0]);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 2 * MIB);
    json_decref(j);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    zkn_test_wait_stat(fx_daemon.sock, "totals", "reclaimed", 1);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "lent_bytes", 0);
    fx_assert_serves();
}
END_TEST

START_TEST(leases_follow_process_not_socket)
{
    /* A process that exits while a child it forked holds its socket still
     * gets its leases reclaimed (pidfd), and a live process that closes its
     * socket keeps them and can return them on a new connection. */
    struct zkn_region_desc d;
    int fd;
    int s = fx_session();
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d, &fd), 1);
    close(fd);
    close(s);
    usleep(50 * 1000);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 64 * 1024);
    json_decref(j);
    s = fx_session();
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    close(s);

    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t parent = fork();
    if (parent == 0) {
        int cs = zkn_test_connect(fx_daemon.sock);
        if (cs < 0 || zkn_test_hello(cs, NULL) < 0 || zkn_test_lend(cs, 0, 1, 0, &d, &fd) != 1)
            _exit(1);
        pid_t grandchild = fork();
        if (grandchild == 0) { /* holds the socket open, then exits on its own */
            close(ready[0]);
            sleep(3);
            _exit(0);
        }
        if (write(ready[1], &grandchild, sizeof grandchild) != sizeof grandchild)
            _exit(1);
        _exit(0);
    }
    close(ready[1]);
    pid_t grandchild;
    ck_assert_int_eq(read(ready[0], &grandchild, sizeof grandchild), sizeof grandchild);
    close(ready[0]);
    waitpid(parent, NULL, 0);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "lent_bytes", 0);
    kill(grandchild, SIGKILL);
}
END_TEST

START_TEST(double_return_refused)
{
    int s = fx_session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, 1, 1, 0, &d, &fd), 1);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), -ZKN_E_UNKNOWN_ID);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "returns"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 0);
    json_decref(j);
    close(s);
}
END_TEST

static Suite *daemon_suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_add_test(tc, hello_and_sealed_region);
    tcase_add_test(tc, warm_region_comes_back_resident);
    tcase_add_test(tc, zeroed_lend_is_zero);
    tcase_add_test(tc, zeroed_lend_never_gets_dirty_region);
    tcase_add_test(tc, batch_lend_and_two_clients);
    tcase_add_test(tc, killed_client_leases_reclaimed);
    tcase_add_test(tc, leases_follow_process_not_socket);
    tcase_add_test(tc, double_return_refused);
    return s;
}

ZKN_TEST_MAIN(daemon_suite)
