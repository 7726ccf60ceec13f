/* Test harness shared by the check suites: a real zknallocd on a temporary
 * socket, a raw protocol client, and fd accounting. */
#ifndef ZKN_TEST_HARNESS_H
#define ZKN_TEST_HARNESS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "zkn_proto.h"

struct zkn_test_daemon {
    pid_t pid;
    char dir[128];  /* temporary directory holding the socket */
    char sock[192]; /* socket path, also exported as ZK_NALLOC_SOCKET */
};

/* Starts $ZKN_BUILD_DIR/zknallocd (default ./build) with --socket in a fresh
 * temporary directory, plus extra_args (NULL-terminated, may be NULL), and waits
 * until it answers PING. Sets ZK_NALLOC_SOCKET for the calling process.
 * Returns 0, or -1 (with a message on stderr). */
int zkn_test_daemon_start(struct zkn_test_daemon *d, const char *const *extra_args);
/* Same, on a given socket path (the directory must exist). */
int zkn_test_daemon_start_at(struct zkn_test_daemon *d, const char *sock,
                             const char *const *extra_args);
/* Waits until the daemon's pool holds at least clean_bytes of clean regions
 * (a --prewarm finished): LEND answers not_warm until then. 0, or -1 after
 * timeout_ms. */
int zkn_test_daemon_wait_clean(const char *sock, uint64_t clean_bytes, int timeout_ms);
/* Waits up to about 5 s until a daemon answers PING on sock_path; 0 or -1. */
int zkn_test_wait_ping(const char *sock_path);
/* SIGTERM, wait; returns the daemon's exit status (as from waitpid) or -1. */
int zkn_test_daemon_stop(struct zkn_test_daemon *d);
/* SIGKILL, wait. */
void zkn_test_daemon_kill(struct zkn_test_daemon *d);
/* Removes the temporary directory (after stop or kill). */
void zkn_test_daemon_cleanup(struct zkn_test_daemon *d);

/* Check-fixture helpers for a suite's daemon (they assert; use them in
 * checked fixtures and tests). Start: zkn_test_daemon_start with args, or on
 * path when not NULL, and kill it when the test process exits (a failing
 * check exits it). Stop: SIGCONT (a test may have stopped it), SIGTERM when
 * still running, remove the temporary directory. */
void zkn_test_daemon_up(struct zkn_test_daemon *d, const char *path, const char *const *args);
void zkn_test_daemon_down(struct zkn_test_daemon *d);
/* Kills d (SIGCONT first) and removes its directory when the process exits. */
void zkn_test_daemon_kill_at_exit(struct zkn_test_daemon *d);

/* ---- systemd's side of NOTIFY_SOCKET ---- */

struct zkn_test_notify {
    int fd;
    char dir[64];  /* temporary directory holding the socket ("" when none) */
    char path[96]; /* the socket's path ("" when none) */
};
/* Binds a datagram socket in a fresh temporary directory and exports it as
 * NOTIFY_SOCKET; with passcred, the kernel attaches each sender's
 * credentials (as systemd asks). Asserts. */
void zkn_test_notify_open(struct zkn_test_notify *n, int passcred);
/* Unsets NOTIFY_SOCKET, closes the socket (fd >= 0), removes path and dir. */
void zkn_test_notify_close(struct zkn_test_notify *n);
/* One datagram within timeout_ms: its text NUL-terminated into buf; the fds
 * it carried appended to fds[*nfds] (at most maxfds in all, which the test
 * fails beyond), or closed when fds is NULL; the sender's pid to *pid when
 * credentials came and pid is not NULL. Returns the text length, or -1 when
 * nothing came in time. A failing or truncated receive fails the test. */
ssize_t zkn_test_notify_recv(struct zkn_test_notify *n, char *buf, size_t cap, int *fds,
                             size_t maxfds, size_t *nfds, pid_t *pid, int timeout_ms);

/* Path of a built binary: $ZKN_BUILD_DIR/name. */
const char *zkn_test_build_path(const char *name);

/* Open fds of this process (counting /proc/self/fd). */
int zkn_test_count_fds(void);

/* ---- shared test helpers ---- */

/* A pattern that differs per word and per seed (any n; the tail bytes too),
 * and its check (1 = intact). */
void zkn_test_fill(void *p, size_t n, uint64_t seed);
int zkn_test_check_fill(const void *p, size_t n, uint64_t seed);
/* 1 when all n bytes are v. */
int zkn_test_all_byte(const void *p, size_t n, unsigned char v);
void zkn_test_sleep_ms(long ms);
/* Reads fd to its end (or until cap - 1 bytes) into buf, NUL-terminated, and
 * closes it; returns the length. */
size_t zkn_test_read_all(int fd, char *buf, size_t cap);
/* The pointer expr is NULL, with errno set to err (a check assertion). */
#define zkn_test_assert_null_errno(expr, err)                                                     \
    do {                                                                                           \
        errno = 0;                                                                                 \
        ck_assert_ptr_null(expr);                                                                  \
        ck_assert_int_eq(errno, (err));                                                            \
    } while (0)
/* Monotonic milliseconds. */
double zkn_test_now_ms(void);

/* ---- raw protocol client ---- */

/* Connects a SOCK_SEQPACKET socket to path; -1 on failure. */
int zkn_test_connect(const char *path);
/* Sends HELLO and checks HELLO_OK; fills *ok when not NULL. 0 or -1. */
int zkn_test_hello(int sock, struct zkn_hello_ok *ok);
/* Sends a frame of `type` with payload. 0 or -1. */
int zkn_test_send(int sock, uint16_t type, uint32_t req, const void *payload, size_t len);
/* Receives one frame into buf (header included); fds to fds (max 16).
 * Returns frame length, 0 on EOF, -1 on error. Waits at most timeout_ms. */
ssize_t zkn_test_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds, int timeout_ms);
/* LEND count regions of cls; on success fills descs/fds and returns the
 * number lent; on ERROR returns -(error code); -1000 on transport failure. */
int zkn_test_lend(int sock, int cls, int count, uint32_t flags, struct zkn_region_desc *descs,
                  int *fds);
/* The same, telling the daemon it expects to want `demand` regions of cls. */
int zkn_test_lend_demand(int sock, int cls, int count, uint32_t demand, uint32_t flags,
                         struct zkn_region_desc *descs, int *fds);
/* RETURN ids; returns the count accepted, or -(error code), -1000 on failure. */
int zkn_test_return(int sock, const uint64_t *ids, uint32_t n);
/* STATS; returns malloc'd NUL-terminated JSON text or NULL. */
char *zkn_test_stats_json(const char *sock_path);
/* Connects and says HELLO (asserting both); the daemon's backing to *backing
 * when not NULL. Returns the socket. */
int zkn_test_session(const char *sock_path, uint32_t *backing);

/* ---- the daemon's STATS as JSON (these assert) ---- */

/* Parsed STATS of the daemon on sock_path; json_decref it. */
json_t *zkn_test_stats(const char *sock_path);
/* j.section.key (j.section when key is NULL), which must be an integer. */
json_int_t zkn_test_stat_int(json_t *j, const char *section, const char *key);
/* classes[cls].key; 0 when the class is not listed (never used). */
json_int_t zkn_test_class_int(json_t *j, int cls, const char *key);
/* Polls STATS every 10 ms until section.key (or classes[cls].key) == want,
 * for up to 5 s; fails the test otherwise. */
void zkn_test_wait_stat(const char *sock_path, const char *section, const char *key,
                        json_int_t want);
void zkn_test_wait_class(const char *sock_path, int cls, const char *key, json_int_t want);

#endif
