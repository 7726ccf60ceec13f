/* zknallocd against what it must refuse or survive: malformed frames,
 * garbage, a client that never reads, a second daemon on the same socket, a
 * stale socket file, bad command lines. Fixture: daemon_fixture.h. */
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

static void send_raw(int s, const void *buf, size_t len)
{
    ck_assert_int_eq(zkn_send_frame(s, buf, len, NULL, 0), (ssize_t)len);
}

START_TEST(malformed_input_is_refused)
{
    char frame[128];
    struct zkn_hdr h;
    int s;

    /* Garbage shorter than a header: ERROR then disconnect. */
    s = zkn_test_connect(fx_daemon.sock);
    send_raw(s, "garbage", 7);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    ck_assert_int_eq(zkn_test_recv(s, frame, sizeof frame, NULL, NULL, 2000), 0);
    close(s);

    /* Bad magic. */
    s = zkn_test_connect(fx_daemon.sock);
    zkn_hdr_init(&h, ZKN_MSG_PING, 0, 1);
    h.magic = 0xdeadbeef;
    send_raw(s, &h, sizeof h);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* Length field that lies about the frame. */
    s = zkn_test_connect(fx_daemon.sock);
    zkn_hdr_init(&h, ZKN_MSG_PING, 100, 1);
    send_raw(s, &h, sizeof h);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* A frame over the limit is truncated by the socket: refused. */
    s = zkn_test_connect(fx_daemon.sock);
    static char big[ZKN_MAX_FRAME + 4096];
    zkn_hdr_init((struct zkn_hdr *)big, ZKN_MSG_STATS, sizeof big - sizeof h, 1);
    send_raw(s, big, sizeof big);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* Requests before HELLO, unknown types, wrong payload sizes. */
    s = zkn_test_connect(fx_daemon.sock);
    struct zkn_lend l = {.size_class = 0, .count = 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 2, &l, sizeof l), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_NEED_HELLO);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_send(s, 999, 3, NULL, 0), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_BAD_TYPE);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_REGIONS, 4, NULL, 0), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_BAD_TYPE);
    struct zkn_hello hello = {.min_version = 1, .max_version = 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_HELLO, 5, &hello, sizeof hello), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_BAD_TYPE); /* second HELLO */
    l.size_class = ZKN_CLASS_COUNT;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 6, &l, sizeof l), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_BAD_CLASS);
    l.size_class = 0;
    l.count = 0;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 7, &l, sizeof l), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    l.count = 17;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 8, &l, sizeof l), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    uint64_t bogus = 12345;
    ck_assert_int_eq(zkn_test_return(s, &bogus, 1), -ZKN_E_UNKNOWN_ID);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 9, &l, 3), 0); /* short payload */
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* RETURN whose count disagrees with its length. */
    s = fx_session();
    struct {
        struct zkn_return r;
        uint64_t id;
    } ret = {{.count = 5}, 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_RETURN, 10, &ret, sizeof ret), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* A HELLO with no common version. */
    s = zkn_test_connect(fx_daemon.sock);
    hello.min_version = 7;
    hello.max_version = 9;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_HELLO, 11, &hello, sizeof hello), 0);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_VERSION);
    close(s);

    /* File descriptors from a client are refused and closed. */
    s = zkn_test_connect(fx_daemon.sock);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    zkn_hdr_init(&h, ZKN_MSG_PING, 0, 12);
    ck_assert_int_ge(zkn_send_frame(s, &h, sizeof h, &devnull, 1), 0);
    close(devnull);
    ck_assert_int_eq(fx_last_error(s), ZKN_E_UNEXPECTED_FD);
    close(s);

    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_ge(zkn_test_stat_int(j, "refusals", "malformed"), 6);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "need_hello"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "bad_type"), 3);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "bad_class"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "unknown_id"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "version"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "unexpected_fd"), 1);
    json_decref(j);
    fx_assert_serves();
}
END_TEST

START_TEST(garbage_fuzz_keeps_daemon_serving)
{
    unsigned seed = 12345;
    for (int i = 0; i < 300; i++) {
        char buf[256];
        int s = zkn_test_connect(fx_daemon.sock);
        ck_assert_int_ge(s, 0);
        if (i % 2)
            zkn_test_hello(s, NULL);
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof buf);
        for (size_t k = 0; k < len; k++)
            buf[k] = (char)rand_r(&seed);
        if (len >= sizeof(struct zkn_hdr) && i % 3 == 0) {
            /* A valid header over random payload reaches the handlers. */
            zkn_hdr_init((struct zkn_hdr *)buf, (uint16_t)(1 + rand_r(&seed) % 14),
                         (uint32_t)(len - sizeof(struct zkn_hdr)), 1);
        }
        zkn_send_frame(s, buf, len, NULL, 0);
        char reply[ZKN_MAX_FRAME];
        int fds[16];
        size_t nfds = 0;
        if (zkn_test_recv(s, reply, sizeof reply, fds, &nfds, 200) > 0)
            zkn_close_fds(fds, nfds);
        close(s);
    }
    fx_assert_serves();
}
END_TEST

START_TEST(slow_reader_is_dropped_alone)
{
    int slow = fx_session();
    int n = 0;
    /* Ask for stats without ever reading the replies. */
    for (; n < 20000; n++) {
        char frame[sizeof(struct zkn_hdr)];
        zkn_hdr_init((struct zkn_hdr *)frame, ZKN_MSG_STATS, 0, (uint32_t)n);
        ssize_t r = send(slow, frame, sizeof frame, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN) {
            usleep(1000);
            continue;
        }
        if (r < 0)
            break; /* the daemon hung up: expected */
    }
    ck_assert_msg(n < 20000, "daemon never dropped a client that does not read");
    fx_assert_serves();
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_ge(zkn_test_stat_int(j, "refusals", "busy"), 1);
    json_decref(j);
    close(slow);
}
END_TEST

START_TEST(second_daemon_refused_stale_socket_replaced)
{
    struct zkn_test_daemon second;
    memset(&second, 0, sizeof second);
    /* Live daemon on the path: a second one must refuse and leave it alone. */
    const char *argv[] = {zkn_test_build_path("zknallocd"), "--socket", fx_daemon.sock, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    fx_assert_serves();

    /* A killed daemon leaves a stale socket: the next one replaces it. */
    char sock[192];
    snprintf(sock, sizeof sock, "%s", fx_daemon.sock);
    zkn_test_daemon_kill(&fx_daemon);
    struct stat sb;
    ck_assert_int_eq(stat(sock, &sb), 0);
    ck_assert_int_eq(zkn_test_daemon_start_at(&fx_daemon, sock, NULL), 0);
    fx_assert_serves();
}
END_TEST

START_TEST(cli_usage_errors)
{
    const char *bad[][3] = {{"--pool-bytes", "lots", NULL},
                            {"--prewarm", "128M", NULL},
                            {"--bogus", NULL, NULL},
                            {"--log-level", "loud", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            const char *argv[4] = {zkn_test_build_path("zknallocd"), bad[i][0], bad[i][1], NULL};
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 2);
            dup2(devnull, 1);
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s accepted", bad[i][0]);
    }
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("daemon_input");
    TCase *tc = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_add_test(tc, malformed_input_is_refused);
    tcase_add_test(tc, garbage_fuzz_keeps_daemon_serving);
    tcase_add_test(tc, slow_reader_is_dropped_alone);
    tcase_add_test(tc, second_daemon_refused_stale_socket_replaced);
    tcase_add_test(tc, cli_usage_errors);
    return s;
}

ZKN_TEST_MAIN(make_suite)
