/* The in-tree systemd helper (daemon/sdnotify.c): readiness and status reach a
 * notify socket, fds sent with FDSTORE=1 arrive, and LISTEN_FDS/LISTEN_PID/
 * LISTEN_FDNAMES are parsed as systemd means them. Linked with the daemon's
 * library (libzknd.a). */
#include "sdnotify.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"
#include "runner.h"

/* Receives one datagram: text NUL-terminated into buf, fds into fds (at most
 * maxfds), sender pid into *pid (0 if no credentials came). Returns the text
 * length, or -1 when nothing arrived within 2 s. */
static ssize_t rx_recv(struct zkn_test_notify *rx, char *buf, size_t cap, int *fds,
                       size_t maxfds, size_t *nfds, pid_t *pid)
{
    *nfds = 0;
    *pid = 0;
    return zkn_test_notify_recv(rx, buf, cap, fds, maxfds, nfds, pid, 2000);
}

START_TEST(no_notify_socket_is_a_noop)
{
    int fd = 5;
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(zkn_sd_notify("READY=1"), 0);
    ck_assert_int_eq(zkn_sd_notify_fds("FDSTORE=1", &fd, 1), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

START_TEST(ready_and_status_reach_a_path_socket)
{
    struct zkn_test_notify rx = {0};
    char buf[4096];
    int fds[4];
    size_t nfds;
    pid_t pid;
    int before = zkn_test_count_fds();

    zkn_test_notify_open(&rx, 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1\nSTATUS=pool 0 B idle, 0 clients"), 1);
    ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, fds, 4, &nfds, &pid), 0);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=pool 0 B idle, 0 clients");
    ck_assert_uint_eq(nfds, 0);
    /* NotifyAccess=main relies on the sender being the main pid. */
    ck_assert_int_eq(pid, getpid());

    ck_assert_int_eq(zkn_sd_notifyf("STATUS=%d regions, %s", 12, "memfd-thp"), 1);
    ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, fds, 4, &nfds, &pid), 0);
    ck_assert_str_eq(buf, "STATUS=12 regions, memfd-thp");

    ck_assert_int_eq(zkn_sd_notify("STOPPING=1"), 1);
    ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, fds, 4, &nfds, &pid), 0);
    ck_assert_str_eq(buf, "STOPPING=1");
    zkn_test_notify_close(&rx);
    ck_assert_int_eq(zkn_test_count_fds(), before); /* the sending socket is closed */
}
END_TEST

START_TEST(abstract_address)
{
    struct zkn_test_notify rx = {.fd = -1};
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char name[64], env[80], buf[256];
    int fds[4];
    size_t nfds;
    pid_t pid;

    /* The abstract namespace has no files: a name unique to this process. */
    int len = snprintf(name, sizeof name, "zkn-sdnotify-test-%ld", (long)getpid());
    memcpy(a.sun_path + 1, name, (size_t)len);
    rx.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(rx.fd, 0);
    ck_assert_int_eq(bind(rx.fd, (struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)),
                     0);
    snprintf(env, sizeof env, "@%s", name);
    setenv("NOTIFY_SOCKET", env, 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1"), 1);
    ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, fds, 4, &nfds, &pid), 0);
    ck_assert_str_eq(buf, "READY=1");
    zkn_test_notify_close(&rx);
}
END_TEST

START_TEST(bad_addresses_fail_cleanly)
{
    char longpath[200];
    int before = zkn_test_count_fds();

    setenv("NOTIFY_SOCKET", "/nonexistent-zkn-dir/notify", 1);
    ck_assert_int_lt(zkn_sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/notify", 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1"), -EAFNOSUPPORT);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1"), -EAFNOSUPPORT);
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("NOTIFY_SOCKET", longpath, 1);
    ck_assert_int_eq(zkn_sd_notify("READY=1"), -ENAMETOOLONG);
    ck_assert_int_eq(zkn_sd_notify_fds(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(zkn_sd_notify_fds("FDSTORE=1", NULL, 2), -EINVAL);
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(zkn_test_count_fds(), before);
}
END_TEST

/* A memfd holding `tag`, as the daemon's pool regions are memfds. */
static int tagged_memfd(const char *tag)
{
    int fd = memfd_create("zkn-sdnotify-test", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, tag, strlen(tag)), (ssize_t)strlen(tag));
    return fd;
}

static void assert_same_file(int a, int b)
{
    struct stat sa, sb;
    ck_assert_int_eq(fstat(a, &sa), 0);
    ck_assert_int_eq(fstat(b, &sb), 0);
    ck_assert(sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
}

START_TEST(fdstore_fds_arrive)
{
    struct zkn_test_notify rx = {0};
    char buf[256], tag[32];
    int sent[3], got[8];
    size_t nfds;
    pid_t pid;

    zkn_test_notify_open(&rx, 1);
    for (int i = 0; i < 3; i++) {
        snprintf(tag, sizeof tag, "region-%d", i);
        sent[i] = tagged_memfd(tag);
    }
    ck_assert_int_eq(zkn_sd_notify_fds("FDSTORE=1\nFDNAME=pool", sent, 3), 1);
    ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, got, 8, &nfds, &pid), 0);
    ck_assert_str_eq(buf, "FDSTORE=1\nFDNAME=pool");
    ck_assert_uint_eq(nfds, 3);
    for (int i = 0; i < 3; i++) {
        /* Same open file, in order, and its contents readable through it. */
        assert_same_file(sent[i], got[i]);
        snprintf(tag, sizeof tag, "region-%d", i);
        ck_assert_int_eq(pread(got[i], buf, sizeof buf, 0), (ssize_t)strlen(tag));
        ck_assert_int_eq(memcmp(buf, tag, strlen(tag)), 0);
        close(got[i]);
        /* The caller keeps its copy. */
        ck_assert_int_ge(fcntl(sent[i], F_GETFD), 0);
        close(sent[i]);
    }
    zkn_test_notify_close(&rx);
}
END_TEST

START_TEST(many_fds_are_split_into_batches)
{
    enum { N = ZKN_SD_MAX_FDS_PER_MSG + 20 };
    struct zkn_test_notify rx = {0};
    char buf[256];
    int base, *sent = calloc(N, sizeof(int)), got[ZKN_SD_MAX_FDS_PER_MSG];
    size_t nfds, total = 0;
    pid_t pid;

    ck_assert_ptr_nonnull(sent);
    zkn_test_notify_open(&rx, 1);
    base = tagged_memfd("x");
    for (int i = 0; i < N; i++) {
        sent[i] = fcntl(base, F_DUPFD_CLOEXEC, 0);
        ck_assert_int_ge(sent[i], 0);
    }
    ck_assert_int_eq(zkn_sd_notify_fds("FDSTORE=1\nFDNAME=pool", sent, N), 1);
    for (int m = 0; m < 2; m++) {
        ck_assert_int_gt(rx_recv(&rx, buf, sizeof buf, got, ZKN_SD_MAX_FDS_PER_MSG, &nfds, &pid),
                         0);
        ck_assert_str_eq(buf, "FDSTORE=1\nFDNAME=pool");
        ck_assert_uint_eq(nfds, m == 0 ? ZKN_SD_MAX_FDS_PER_MSG : 20);
        for (size_t i = 0; i < nfds; i++) {
            assert_same_file(base, got[i]);
            close(got[i]);
        }
        total += nfds;
    }
    ck_assert_uint_eq(total, N);
    for (int i = 0; i < N; i++)
        close(sent[i]);
    close(base);
    free(sent);
    zkn_test_notify_close(&rx);
}
END_TEST

/* ---- LISTEN_FDS ----
 * Passed fds sit at 3, 4, ...: where check itself may keep files. Each case
 * runs in a child of its own, which may overwrite those fds freely and reports
 * by exit status (a message on stderr names the failed condition). */

#define REQUIRE(cond)                                                                       \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__, __LINE__, #cond);  \
            _exit(1);                                                                       \
        }                                                                                   \
    } while (0)

static void run_in_child(void (*fn)(void))
{
    int st;
    fflush(NULL);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        fn();
        _exit(0);
    }
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child case failed (status %d)", st);
}

/* Puts a fresh socket (without close-on-exec, as systemd passes them) at fd. */
static void place_socket_at(int fd)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    /* Park the pair above the low fds first: socketpair may itself have
     * returned the target number, or one placed earlier. */
    int hi = fcntl(sv[0], F_DUPFD, 100);
    REQUIRE(hi >= 100);
    close(sv[0]);
    close(sv[1]);
    REQUIRE(dup2(hi, fd) == fd); /* dup2 leaves FD_CLOEXEC clear */
    close(hi);
}

static void set_pid_env(pid_t pid)
{
    char s[32];
    snprintf(s, sizeof s, "%ld", (long)pid);
    REQUIRE(setenv("LISTEN_PID", s, 1) == 0);
}

static void case_two_named_fds(void)
{
    place_socket_at(3);
    place_socket_at(4);
    set_pid_env(getpid());
    setenv("LISTEN_FDS", "2", 1);
    setenv("LISTEN_FDNAMES", "zknallocd.socket:pool-7", 1);
    REQUIRE(zkn_sd_listen_fds(1) == 2);
    REQUIRE(fcntl(3, F_GETFD) & FD_CLOEXEC);
    REQUIRE(fcntl(4, F_GETFD) & FD_CLOEXEC);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(0), "zknallocd.socket") == 0);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(1), "pool-7") == 0);
    REQUIRE(zkn_sd_listen_fd_name(2) == NULL);
    REQUIRE(zkn_sd_listen_fd_name(-1) == NULL);
    /* unset_env: children of the daemon must not think the fds are theirs. */
    REQUIRE(!getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES"));
    /* Names were saved, so they outlive the environment. */
    REQUIRE(strcmp(zkn_sd_listen_fd_name(1), "pool-7") == 0);
}

static void case_wrong_pid(void)
{
    place_socket_at(3);
    set_pid_env(getppid()); /* meant for our parent */
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "zknallocd.socket", 1);
    REQUIRE(zkn_sd_listen_fds(0) == 0);
    REQUIRE(zkn_sd_listen_fd_name(0) == NULL);
    REQUIRE(!(fcntl(3, F_GETFD) & FD_CLOEXEC)); /* not ours: left alone */
    REQUIRE(getenv("LISTEN_PID") && getenv("LISTEN_FDS")); /* kept without unset_env */
    REQUIRE(zkn_sd_listen_fds(1) == 0);
    REQUIRE(!getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES"));
}

static void case_no_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    REQUIRE(zkn_sd_listen_fds(1) == 0);
    REQUIRE(zkn_sd_listen_fd_name(0) == NULL);
}

static void case_names_missing_or_short(void)
{
    place_socket_at(3);
    place_socket_at(4);
    place_socket_at(5);
    set_pid_env(getpid());
    setenv("LISTEN_FDS", "3", 1);
    unsetenv("LISTEN_FDNAMES");
    REQUIRE(zkn_sd_listen_fds(0) == 3);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(0), "unknown") == 0);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(2), "unknown") == 0);
    /* Fewer names than fds, and an empty one: the rest are "unknown". */
    setenv("LISTEN_FDNAMES", "listen:", 1);
    REQUIRE(zkn_sd_listen_fds(0) == 3);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(0), "listen") == 0);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(1), "unknown") == 0);
    REQUIRE(strcmp(zkn_sd_listen_fd_name(2), "unknown") == 0);
    REQUIRE(zkn_sd_listen_fd_name(3) == NULL);
    /* LISTEN_FDS=0 for us: nothing passed. */
    setenv("LISTEN_FDS", "0", 1);
    REQUIRE(zkn_sd_listen_fds(0) == 0);
    REQUIRE(zkn_sd_listen_fd_name(0) == NULL);
}

static void case_malformed(void)
{
    set_pid_env(getpid());
    setenv("LISTEN_FDS", "abc", 1);
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    setenv("LISTEN_FDS", "-1", 1);
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    setenv("LISTEN_FDS", "2x", 1);
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    setenv("LISTEN_FDS", "99999999999999999999", 1);
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    unsetenv("LISTEN_FDS");
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", "12abc", 1);
    REQUIRE(zkn_sd_listen_fds(0) == -EINVAL);
    /* A count that names a closed fd. */
    place_socket_at(3);
    close(4);
    set_pid_env(getpid());
    setenv("LISTEN_FDS", "2", 1);
    REQUIRE(zkn_sd_listen_fds(1) == -EBADF);
    REQUIRE(!getenv("LISTEN_PID"));
}

START_TEST(listen_fds_right_pid_with_names) { run_in_child(case_two_named_fds); }
END_TEST
START_TEST(listen_fds_wrong_pid) { run_in_child(case_wrong_pid); }
END_TEST
START_TEST(listen_fds_absent) { run_in_child(case_no_env); }
END_TEST
START_TEST(listen_fds_default_names) { run_in_child(case_names_missing_or_short); }
END_TEST
START_TEST(listen_fds_malformed) { run_in_child(case_malformed); }
END_TEST

static Suite *sdnotify_suite(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *n = zkn_test_tcase(s, "notify", 0);
    tcase_add_test(n, no_notify_socket_is_a_noop);
    tcase_add_test(n, ready_and_status_reach_a_path_socket);
    tcase_add_test(n, abstract_address);
    tcase_add_test(n, bad_addresses_fail_cleanly);
    tcase_add_test(n, fdstore_fds_arrive);
    tcase_add_test(n, many_fds_are_split_into_batches);
    TCase *l = zkn_test_tcase(s, "listen_fds", 0);
    tcase_add_test(l, listen_fds_right_pid_with_names);
    tcase_add_test(l, listen_fds_wrong_pid);
    tcase_add_test(l, listen_fds_absent);
    tcase_add_test(l, listen_fds_default_names);
    tcase_add_test(l, listen_fds_malformed);
    return s;
}

ZKN_TEST_MAIN(sdnotify_suite)
