/* The daemon the test_client_daemon*.c suites run against: prewarmed, so
 * LEND answers at once. */
#ifndef ZKN_TEST_CLIENT_DAEMON_FIXTURE_H
#define ZKN_TEST_CLIENT_DAEMON_FIXTURE_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_helpers.h"
#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "zknalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static struct zkn_test_daemon daemon_;

/* The classes these tests take from the daemon, made ready before each test:
 * a daemon with nothing ready answers not_warm and the client then uses
 * private memory (classes under 2 MiB are made on demand; those that tile a
 * huge page are lent as 2 MiB regions). */
static const char *const WARM[] = {"--prewarm", "2M=8", "--prewarm", "4M=12", "--prewarm",
                                   "6M=2",      "--prewarm", "8M=2", "--prewarm", "16M=4", NULL};
#define WARM_BYTES ((8 * 2 + 12 * 4 + 2 * 6 + 2 * 8 + 4 * 16) * MiB)

static inline void start_warm_at(const char *path)
{
    zkn_test_daemon_up(&daemon_, path, WARM);
    ck_assert_int_eq(zkn_test_daemon_wait_clean(daemon_.sock, WARM_BYTES, 10000), 0);
}

static inline void start_daemon(void) { start_warm_at(NULL); }

static inline void stop_daemon(void) { zkn_test_daemon_down(&daemon_); }

#endif
