/* zknallocd's pool policy: the per-client and pool caps, prewarm, trim and
 * memory pressure, idle decay, and pools kept apart per uid. Fixture:
 * daemon_fixture.h. */
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

START_TEST(client_cap_refuses_clearly)
{
    /* Restart with small caps. */
    const char *args[] = {"--client-cap-bytes", "3M", "--client-max-leases", "2", NULL};
    fx_restart(args);
    int s = fx_session();
    struct zkn_region_desc d[3];
    int fds[3];
    ck_assert_int_eq(zkn_test_lend(s, zkn_size_class(4 * MIB), 1, 0, d, fds), -ZKN_E_CLIENT_CAP);
    ck_assert_int_eq(fx_lend_warm(s, zkn_size_class(2 * MIB), 1, 0, &d[0], &fds[0]), 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d[1], &fds[1]), 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d[2], &fds[2]), -ZKN_E_CLIENT_CAP);
    close(fds[0]);
    close(fds[1]);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "client_cap"), 2);
    ck_assert_int_eq(zkn_test_stat_int(j, "caps", "client_lease_bytes"), 3 * MIB);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(pool_cap_destroys_excess)
{
    /* 1 MiB regions are made inline, so nothing but the three returned ones
     * competes for the 2.5 MiB pool. */
    const char *args[] = {"--pool-bytes", "2560K", NULL};
    fx_restart(args);
    int s = fx_session();
    struct zkn_region_desc d[3];
    int fds[3];
    int cls = zkn_size_class(1 * MIB);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d[i], &fds[i]), 1);
        close(fds[i]);
    }
    uint64_t ids[3] = {d[0].id, d[1].id, d[2].id};
    ck_assert_int_eq(zkn_test_return(s, ids, 3), 3);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "idle_bytes"), 2 * MIB);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "destroyed"), 1);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(prewarm_trim_and_pressure)
{
    zkn_test_daemon_stop(&fx_daemon);
    zkn_test_daemon_cleanup(&fx_daemon);
    char fifo[] = "/tmp/zkn-psi-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(fifo));
    char path[64];
    snprintf(path, sizeof path, "%s/p", fifo);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    setenv("ZK_NALLOC_PSI_SOURCE", path, 1);
    const char *args[] = {"--prewarm", "4M=3", "--low-watermark", "4M", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&fx_daemon, args), 0);
    unsetenv("ZK_NALLOC_PSI_SOURCE");
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 12 * MIB);

    /* Prewarmed regions are zero and resident. */
    int s = fx_session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, zkn_size_class(4 * MIB), 1, ZKN_LEND_ZEROED, &d, &fd), 1);
    ck_assert_int_eq(d.flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    char *p = fx_map_region(fd, d.size);
    unsigned char vec[(4 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, d.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert(vec[i] & 1);
    for (uint64_t i = 0; i < d.size; i++)
        ck_assert(p[i] == 0);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);

    /* Simulated memory pressure trims down to the low watermark. */
    int w = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(w, 0);
    ck_assert_int_eq(write(w, "p", 1), 1);
    close(w);
    zkn_test_wait_stat(fx_daemon.sock, "pressure", "events", 1);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_le(zkn_test_stat_int(j, "pool", "idle_bytes"), 4 * MIB);
    ck_assert_int_eq(zkn_test_stat_int(j, "pressure", "trimmed_bytes"), 8 * MIB);
    json_decref(j);

    /* TRIM to zero empties the pool. */
    struct zkn_trim t = {.target_bytes = 0};
    char buf[128];
    struct zkn_trim_ok ok;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_TRIM, 5, &t, sizeof t), 0);
    ck_assert_int_gt(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000), 0);
    ck_assert_int_eq(((struct zkn_hdr *)buf)->type, ZKN_MSG_TRIM_OK);
    memcpy(&ok, buf + sizeof(struct zkn_hdr), sizeof ok);
    ck_assert_int_eq(ok.freed_bytes, 4 * MIB);
    ck_assert_int_eq(ok.pool_bytes, 0);
    close(s);
    unlink(path);
    rmdir(fifo);
}
END_TEST

START_TEST(idle_pool_decays)
{
    zkn_test_daemon_stop(&fx_daemon);
    zkn_test_daemon_cleanup(&fx_daemon);
    const char *args[] = {"--prewarm", "64K=2", "--idle-decay", "1", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&fx_daemon, args), 0);
    /* Regions unused for a second go away on their own. */
    zkn_test_wait_stat(fx_daemon.sock, "totals", "decayed_bytes", 2 * 65536);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "idle_bytes"), 0);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "destroyed"), 2);
    json_decref(j);
}
END_TEST

START_TEST(uid_partition)
{
    if (geteuid() != 0) {
        fprintf(stderr, "uid_partition: needs root to switch uid; skipped\n");
        return;
    }
    /* The socket must admit the other uid for this test. */
    ck_assert_int_eq(chmod(fx_daemon.sock, 0666), 0);
    ck_assert_int_eq(chmod(fx_daemon.dir, 0755), 0);
    int cls = zkn_size_class(1 * MIB);
    int s = fx_session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    char *p = fx_map_region(fd, d.size);
    memset(p, 0x77, d.size);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "zeroing", 0);

    int res[2];
    ck_assert_int_eq(pipe(res), 0);
    pid_t child = fork();
    if (child == 0) {
        struct zkn_region_desc cd[16];
        int cfd[16];
        uint64_t got = 0;
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
            _exit(2);
        int cs = zkn_test_connect(fx_daemon.sock);
        if (cs < 0 || zkn_test_hello(cs, NULL) < 0)
            _exit(3);
        int n = zkn_test_lend(cs, cls, 16, 0, cd, cfd);
        if (n < 1)
            _exit(4);
        got = cd[0].id;
        if (write(res[1], &got, sizeof got) != sizeof got)
            _exit(5);
        _exit(0);
    }
    close(res[1]);
    uint64_t other = 0;
    ck_assert_int_eq(read(res[0], &other, sizeof other), sizeof other);
    close(res[0]);
    int st;
    waitpid(child, &st, 0);
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_uint_ne(other, d.id); /* never the region uid 0 had */
    zkn_test_wait_stat(fx_daemon.sock, "pool", "lent_bytes", 0);
    /* And uid 0 still gets its own region back. */
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    ck_assert_uint_ne(d.id, other);
    close(fd);
    close(s);
}
END_TEST

/* SIGTERM while background workers prepare and zero: the daemon still exits
 * 0 (fx_teardown checks), the queued jobs finish first, and after a restart
 * it serves. */
START_TEST(stops_with_background_work_in_flight)
{
    const char *args[] = {"--prewarm", "8M=24", "--pool-bytes", "512M", NULL};
    fx_restart(args);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    int busy = zkn_test_stat_int(j, "pool", "clean_bytes") < 24 * 8 * (json_int_t)MIB;
    json_decref(j);
    if (busy) { /* still preparing: stop now, then start again */
        int st = zkn_test_daemon_stop(&fx_daemon);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d while preparing", st);
        zkn_test_daemon_cleanup(&fx_daemon);
        ck_assert_int_eq(zkn_test_daemon_start(&fx_daemon, args), 0);
    }
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 24 * 8 * MIB);

    /* Dirty every region and hand all back: zeroing is in flight when the
     * fixture's SIGTERM comes. */
    int s = fx_session();
    int cls = zkn_size_class(8 * MIB);
    uint64_t ids[24];
    int n = 0;
    while (n < 24) {
        struct zkn_region_desc d[8];
        int fds[8];
        int got = fx_lend_warm(s, cls, 8, 0, d, fds);
        ck_assert_int_gt(got, 0);
        for (int i = 0; i < got && n < 24; i++) {
            char *p = fx_map_region(fds[i], d[i].size);
            memset(p, 0x5a, d[i].size);
            munmap(p, d[i].size);
            ids[n++] = d[i].id;
        }
    }
    ck_assert_int_eq(zkn_test_return(s, ids, 24), 24);
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 0);
    json_decref(j);
    close(s);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("daemon_pool");
    TCase *tc = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_add_test(tc, client_cap_refuses_clearly);
    tcase_add_test(tc, pool_cap_destroys_excess);
    tcase_add_test(tc, prewarm_trim_and_pressure);
    tcase_add_test(tc, idle_pool_decays);
    tcase_add_test(tc, uid_partition);
    tcase_add_test(tc, stops_with_background_work_in_flight);
    return s;
}

ZKN_TEST_MAIN(make_suite)
