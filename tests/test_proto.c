/* The pieces of proto/ both sides share: size classes, size parsing, header
 * checks, socket path rule, and frame transport with fds. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "sockpath.h"
#include "wire.h"
#include "zkn_proto.h"

START_TEST(classes_round_trip)
{
    uint64_t prev = 0;
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint64_t size = zkn_class_size(c);
        ck_assert_uint_gt(size, prev);
        ck_assert_int_eq(zkn_size_class(size), c);
        ck_assert_int_eq(zkn_size_class(prev + 1), c);
        if (size >= ZKN_HUGE_PAGE_SIZE)
            ck_assert_uint_eq(size % ZKN_HUGE_PAGE_SIZE, 0);
        /* Waste bound: 25% below 2 MiB and from 8 MiB on, 2 MiB between. */
        if (prev >= ZKN_MIN_CLASS_SIZE && (size < ZKN_HUGE_PAGE_SIZE || prev >= (8u << 20)))
            ck_assert_uint_le((size - (prev + 1)) * 4, prev + 1);
        else if (prev >= ZKN_MIN_CLASS_SIZE)
            ck_assert_uint_le(size - (prev + 1), ZKN_HUGE_PAGE_SIZE);
        prev = size;
    }
    ck_assert_uint_eq(prev, ZKN_MAX_CLASS_SIZE);
    ck_assert_int_eq(zkn_size_class(1), 0);
    ck_assert_int_eq(zkn_size_class(ZKN_MAX_CLASS_SIZE + 1), -1);
    ck_assert_int_eq(zkn_size_class(UINT64_MAX), -1);
    ck_assert_uint_eq(zkn_class_size(-1), 0);
    ck_assert_uint_eq(zkn_class_size(ZKN_CLASS_COUNT), 0);
    ck_assert_uint_eq(zkn_class_size(zkn_size_class(128u << 20)), 128u << 20);
}
END_TEST

START_TEST(sizes_parse)
{
    uint64_t v;
    ck_assert_int_eq(zkn_parse_size("4096", &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(zkn_parse_size("128M", &v), 0);
    ck_assert_uint_eq(v, 128u << 20);
    ck_assert_int_eq(zkn_parse_size("1GiB", &v), 0);
    ck_assert_uint_eq(v, 1u << 30);
    ck_assert_int_eq(zkn_parse_size("64k", &v), 0);
    ck_assert_uint_eq(v, 64u << 10);
    ck_assert_int_eq(zkn_parse_size("", &v), -1);
    ck_assert_int_eq(zkn_parse_size("-1", &v), -1);
    ck_assert_int_eq(zkn_parse_size("12Q", &v), -1);
    ck_assert_int_eq(zkn_parse_size("99999999999999999999", &v), -1);
    ck_assert_int_eq(zkn_parse_size("20000000000000T", &v), -1);
}
END_TEST

START_TEST(header_checks)
{
    char frame[64];
    struct zkn_hdr *h = (struct zkn_hdr *)frame;
    zkn_hdr_init(h, ZKN_MSG_PING, 0, 1);
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h), 0);
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h - 1), ZKN_E_MALFORMED);
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h + 4), ZKN_E_MALFORMED);
    h->version = 99;
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h), ZKN_E_VERSION);
    h->type = ZKN_MSG_HELLO; /* HELLO negotiates, so any version passes */
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h), 0);
    h->magic = 0;
    ck_assert_int_eq(zkn_hdr_check(frame, sizeof *h), ZKN_E_MALFORMED);
    ck_assert_str_eq(zkn_msg_type_name(ZKN_MSG_LEND), "LEND");
    ck_assert_str_eq(zkn_msg_type_name(999), "UNKNOWN");
    /* One table says who sends what: the daemon refuses the rest. */
    ck_assert(zkn_msg_is_request(ZKN_MSG_LEND) && zkn_msg_is_request(ZKN_MSG_PING));
    ck_assert(!zkn_msg_is_request(ZKN_MSG_REGIONS) && !zkn_msg_is_request(ZKN_MSG_ERROR));
    ck_assert(!zkn_msg_is_request(0) && !zkn_msg_is_request(999));
    ck_assert_int_eq(zkn_fixed_payload_size(ZKN_MSG_LEND), (long)sizeof(struct zkn_lend));
    ck_assert_int_eq(zkn_fixed_payload_size(ZKN_MSG_RETURN), -1);
    ck_assert_str_eq(zkn_err_name(ZKN_E_CLIENT_CAP), "client_cap");
    ck_assert_str_eq(zkn_backing_name(ZKN_BACKING_MEMFD_COLLAPSE), "memfd-collapse");
}
END_TEST

START_TEST(socket_path_rule)
{
    char buf[128];
    setenv("ZK_NALLOC_SOCKET", "/tmp/x/y.sock", 1);
    ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_CLIENT), 0);
    ck_assert_str_eq(buf, "/tmp/x/y.sock");
    ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_DAEMON), 0);
    ck_assert_str_eq(buf, "/tmp/x/y.sock");
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("ZK_NALLOC_SOCKET", longpath, 1);
    ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_CLIENT), -1);
    unsetenv("ZK_NALLOC_SOCKET");
    ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_DAEMON), 0);
    if (geteuid() == 0) {
        ck_assert_str_eq(buf, ZKN_SYSTEM_SOCKET);
    } else {
        setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
        ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_DAEMON), 0);
        ck_assert_str_eq(buf, "/run/user/1234/zknalloc/zknallocd.sock");
        /* No per-user daemon there: clients use the system one. */
        ck_assert_int_eq(zkn_socket_path(buf, sizeof buf, ZKN_PATH_CLIENT), 0);
        ck_assert_str_eq(buf, ZKN_SYSTEM_SOCKET);
    }
}
END_TEST

START_TEST(frames_carry_fds_and_reject_overflow)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int before = zkn_test_count_fds();
    int fds[3] = {open("/dev/null", O_RDONLY), open("/dev/zero", O_RDONLY),
                  open("/dev/null", O_RDONLY)};
    char frame[32] = "hello";
    ck_assert_int_eq(zkn_send_frame(sv[0], frame, 10, fds, 3), 10);
    zkn_close_fds(fds, 3);
    int got[4];
    size_t n;
    ck_assert_int_eq(zkn_recv_frame(sv[1], frame, sizeof frame, got, 4, &n, 0), 10);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_ne(fcntl(got[0], F_GETFD) & FD_CLOEXEC, 0);
    zkn_close_fds(got, n);
    /* More fds than the receiver accepts: all closed, protocol error. */
    int fds2[3] = {open("/dev/null", O_RDONLY), open("/dev/null", O_RDONLY),
                   open("/dev/null", O_RDONLY)};
    ck_assert_int_eq(zkn_send_frame(sv[0], frame, 4, fds2, 3), 4);
    zkn_close_fds(fds2, 3);
    ck_assert_int_eq(zkn_recv_frame(sv[1], frame, sizeof frame, got, 2, &n, 0), -EPROTO);
    ck_assert_uint_eq(n, 0);
    /* A frame longer than the buffer: truncated, an error. */
    char big[64] = {0};
    ck_assert_int_eq(zkn_send_frame(sv[0], big, sizeof big, NULL, 0), (ssize_t)sizeof big);
    ck_assert_int_eq(zkn_recv_frame(sv[1], frame, 16, got, 4, &n, 0), -EPROTO);
    ck_assert_int_eq(zkn_test_count_fds(), before);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = zkn_test_tcase(s, "proto", 0);
    tcase_add_test(tc, classes_round_trip);
    tcase_add_test(tc, sizes_parse);
    tcase_add_test(tc, header_checks);
    tcase_add_test(tc, socket_path_rule);
    tcase_add_test(tc, frames_carry_fds_and_reject_overflow);
    return s;
}

ZKN_TEST_MAIN(make_suite)
