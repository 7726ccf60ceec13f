/* Test harness shared by the check suites: a real zknallocd on a temporary
 * socket, a raw protocol client, and fd accounting. */
#ifndef ZKN_TEST_HARNESS_H
#define ZKN_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
/* SIGTERM, wait; returns the daemon's exit status (as from waitpid) or -1. */
int zkn_test_daemon_stop(struct zkn_test_daemon *d);
/* SIGKILL, wait. */
void zkn_test_daemon_kill(struct zkn_test_daemon *d);
/* Removes the temporary directory (after stop or kill). */
void zkn_test_daemon_cleanup(struct zkn_test_daemon *d);

/* Path of a built binary: $ZKN_BUILD_DIR/name. */
const char *zkn_test_build_path(const char *name);

/* Open fds of this process (counting /proc/self/fd). */
int zkn_test_count_fds(void);

/* ---- shared test helpers ---- */

/* A pattern that differs per word and per seed, and its check (1 = intact). */
void zkn_test_fill(void *p, size_t n, uint64_t seed);
int zkn_test_check_fill(const void *p, size_t n, uint64_t seed);
/* 1 when all n bytes are v. */
int zkn_test_all_byte(const void *p, size_t n, unsigned char v);
void zkn_test_sleep_ms(long ms);
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
/* RETURN ids; returns the count accepted, or -(error code), -1000 on failure. */
int zkn_test_return(int sock, const uint64_t *ids, uint32_t n);
/* STATS; returns malloc'd NUL-terminated JSON text or NULL. */
char *zkn_test_stats_json(const char *sock_path);

#endif
