/* zknallocd under a service manager: readiness and status over
 * NOTIFY_SOCKET, a warm restart through a fake fd store (this test plays
 * systemd's part), and socket activation by systemd-socket-activate. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "wire.h"

#define MIB (1u << 20)
#define MAX_STORED 64

START_TEST(ready_and_status)
{
    struct zkn_test_notify sink;
    struct zkn_test_daemon d;
    char buf[4096];
    zkn_test_notify_open(&sink, 0);
    ck_assert_int_eq(zkn_test_daemon_start(&d, NULL), 0);
    ck_assert_int_gt(zkn_test_notify_recv(&sink, buf, sizeof buf, NULL, 0, NULL, NULL, 5000), 0);
    ck_assert_ptr_nonnull(strstr(buf, "READY=1"));
    ck_assert_ptr_nonnull(strstr(buf, "STATUS=pool "));
    ck_assert_ptr_nonnull(strstr(buf, "backing "));
    zkn_test_daemon_stop(&d);
    int saw_stopping = 0;
    while (zkn_test_notify_recv(&sink, buf, sizeof buf, NULL, 0, NULL, NULL, 500) > 0)
        saw_stopping |= strstr(buf, "STOPPING=1") != NULL;
    ck_assert(saw_stopping);
    zkn_test_daemon_cleanup(&d);
    zkn_test_notify_close(&sink);
}
END_TEST

/* Starts the daemon with fds[0..n) as LISTEN_FDS 3.., named by names. */
static pid_t spawn_with_fds(const char *sock, const int *fds, size_t n, const char *names)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int high[MAX_STORED];
    for (size_t i = 0; i < n; i++)
        high[i] = fcntl(fds[i], F_DUPFD, 200);
    for (size_t i = 0; i < n; i++) {
        dup2(high[i], 3 + (int)i); /* dup2 clears close-on-exec */
        close(high[i]);
    }
    char num[32];
    snprintf(num, sizeof num, "%zu", n);
    setenv("LISTEN_FDS", num, 1);
    snprintf(num, sizeof num, "%d", (int)getpid());
    setenv("LISTEN_PID", num, 1);
    setenv("LISTEN_FDNAMES", names, 1);
    setenv("ZK_NALLOC_LOG_LEVEL", "warn", 1);
    const char *argv[] = {zkn_test_build_path("zknallocd"), "--socket", sock, NULL};
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static json_int_t stats_value(const char *sock, const char *section, const char *key)
{
    char *text = zkn_test_stats_json(sock);
    ck_assert_ptr_nonnull(text);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    ck_assert_ptr_nonnull(j);
    json_int_t v = json_integer_value(json_object_get(json_object_get(j, section), key));
    json_decref(j);
    return v;
}

START_TEST(warm_restart_through_fd_store)
{
    struct zkn_test_notify sink;
    struct zkn_test_daemon d;
    char buf[4096];
    int stored[MAX_STORED];
    size_t nstored = 0;
    char names[2048] = "";
    zkn_test_notify_open(&sink, 0);
    const char *args[] = {"--prewarm", "4M=2", "--prewarm", "64K=1", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&d, args), 0);
    for (int i = 0; i < 500 && stats_value(d.sock, "pool", "clean_bytes") != 8 * MIB + 65536; i++)
        usleep(10000);
    ck_assert_int_eq(stats_value(d.sock, "pool", "clean_bytes"), 8 * MIB + 65536);
    /* Dirty a region so both states travel. */
    int s = zkn_test_connect(d.sock);
    struct zkn_region_desc desc;
    int fd;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    char *p = mmap(NULL, desc.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    memset(p, 0x3c, desc.size);
    munmap(p, desc.size);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &desc.id, 1), 1);
    close(s);

    char sock[192];
    snprintf(sock, sizeof sock, "%s", d.sock);
    zkn_test_daemon_stop(&d);
    while (zkn_test_notify_recv(&sink, buf, sizeof buf, stored, MAX_STORED, &nstored, NULL,
                                500) > 0) {
        char *name = strstr(buf, "FDNAME=");
        if (strstr(buf, "FDSTORE=1") && name) {
            if (names[0])
                strcat(names, ":");
            strncat(names, name + 7, strcspn(name + 7, "\n"));
        }
    }
    ck_assert_uint_eq(nstored, 3);
    ck_assert_ptr_nonnull(strstr(names, "zkn-region-"));
    struct stat before;
    ck_assert_int_eq(fstat(stored[0], &before), 0);

    /* The next instance gets the regions back and lends them warm. */
    pid_t pid = spawn_with_fds(sock, stored, nstored, names);
    zkn_close_fds(stored, nstored);
    ck_assert_int_eq(zkn_test_wait_ping(sock), 0);
    ck_assert_int_eq(stats_value(sock, "totals", "restored"), 3);
    ck_assert_int_eq(stats_value(sock, "totals", "created"), 0);
    for (int i = 0; i < 500 && stats_value(sock, "pool", "clean_bytes") != 8 * MIB + 65536; i++)
        usleep(10000);
    s = zkn_test_connect(sock);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, zkn_size_class(4 * MIB), 1, ZKN_LEND_ZEROED, &desc, &fd),
                     1);
    p = mmap(NULL, desc.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    unsigned char vec[(4 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, desc.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert_msg(vec[i] & 1, "page %zu not resident after restart", i);
    for (uint64_t i = 0; i < desc.size; i++)
        ck_assert(p[i] == 0);
    munmap(p, desc.size);
    close(fd);
    /* The dirty one was zeroed after the restart. */
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, ZKN_LEND_ZEROED, &desc, &fd), 1);
    p = mmap(NULL, desc.size, PROT_READ, MAP_SHARED, fd, 0);
    for (uint64_t i = 0; i < desc.size; i++)
        ck_assert(p[i] == 0);
    munmap(p, desc.size);
    close(fd);
    ck_assert_int_eq(stats_value(sock, "totals", "created"), 0);
    close(s);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zkn_test_daemon_cleanup(&d);
    zkn_test_notify_close(&sink);
}
END_TEST

START_TEST(bogus_stored_fds_are_dropped)
{
    char dir[] = "/tmp/zkn-fdstore-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char sock[128];
    snprintf(sock, sizeof sock, "%s/s", dir);
    /* A file of the wrong size, one with a garbage name, an unsealed memfd. */
    int fds[3];
    fds[0] = memfd_create("wrong-size", MFD_CLOEXEC);
    ck_assert_int_eq(ftruncate(fds[0], 12345), 0);
    fds[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    fds[2] = memfd_create("unsealed", MFD_CLOEXEC);
    ck_assert_int_eq(ftruncate(fds[2], 65536), 0);
    pid_t pid = spawn_with_fds(sock, fds, 3, "zkn-region-0--1-c:garbage:zkn-region-0--1-c");
    zkn_close_fds(fds, 3);
    ck_assert_int_eq(zkn_test_wait_ping(sock), 0);
    ck_assert_int_eq(stats_value(sock, "totals", "restored"), 0);
    ck_assert_int_eq(stats_value(sock, "pool", "idle_bytes"), 0);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    rmdir(dir);
}
END_TEST

START_TEST(socket_activation)
{
    if (access("/usr/bin/systemd-socket-activate", X_OK) != 0) {
        fprintf(stderr, "socket_activation: systemd-socket-activate not installed; skipped\n");
        return;
    }
    char dir[] = "/tmp/zkn-activate-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char sock[128];
    snprintf(sock, sizeof sock, "%s/s", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        setenv("ZK_NALLOC_LOG_LEVEL", "warn", 1);
        execl("/usr/bin/systemd-socket-activate", "systemd-socket-activate", "--seqpacket",
              "-l", sock, zkn_test_build_path("zknallocd"), "--socket", sock, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (int i = 0; i < 500 && stat(sock, &st) != 0; i++)
        usleep(10000);
    ck_assert_int_eq(stat(sock, &st), 0);
    /* The first connection starts the daemon on the passed listener. */
    int s = zkn_test_connect(sock);
    ck_assert_int_ge(s, 0);
    struct zkn_hello_ok ok;
    ck_assert_int_eq(zkn_test_hello(s, &ok), 0);
    ck_assert_int_ne(ok.daemon_pid, 0);
    struct zkn_region_desc desc;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &desc.id, 1), 1);
    close(s);
    kill((pid_t)ok.daemon_pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(sock);
    rmdir(dir);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("service");
    TCase *tc = zkn_test_tcase(s, "service", 60);
    tcase_add_test(tc, ready_and_status);
    tcase_add_test(tc, warm_restart_through_fd_store);
    tcase_add_test(tc, bogus_stored_fds_are_dropped);
    tcase_add_test(tc, socket_activation);
    return s;
}

ZKN_TEST_MAIN(make_suite)
