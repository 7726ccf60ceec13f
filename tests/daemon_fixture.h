/* The daemon suites' fixture: one zknallocd on a temporary socket per test,
 * started by the checked setup fx_setup (or by the test, fx_start) and, in
 * the checked teardown fx_teardown, checked: the test closed every fd it
 * opened, the daemon exits 0 on SIGTERM and removes its socket file. */
#ifndef ZKN_TEST_DAEMON_FIXTURE_H
#define ZKN_TEST_DAEMON_FIXTURE_H

#include <stdint.h>

#include "harness.h"

#define MIB (1u << 20)

extern struct zkn_test_daemon fx_daemon;

/* Starts fx_daemon with args (NULL-terminated, may be NULL) and notes the
 * fds open now. */
void fx_start(const char *const *args);
/* fx_start(NULL), as a checked setup. */
void fx_setup(void);
/* The checked teardown described above. */
void fx_teardown(void);
/* Restarts the daemon with other arguments. */
void fx_restart(const char *const *args);

/* A session: connected and past HELLO. */
int fx_session(void);
/* Maps a lent region's fd shared, read-write, and closes the fd. */
char *fx_map_region(int fd, uint64_t size);
/* LEND that asks again while the daemon answers not_warm (it prepares the
 * class in the background), for up to 5 s. Returns what zkn_test_lend does;
 * usable in forked children (no assertions). */
int fx_lend_warm(int s, int cls, int count, uint32_t flags, struct zkn_region_desc *d, int *fds);
/* Receives the next frame, which must be an ERROR; returns its code. */
uint32_t fx_last_error(int s);
/* A daemon restarted with one prewarmed region of mib MiB lends it, has it
 * written over with byte, and takes it back. The session to *s, the region
 * to *d; returns its class. */
int fx_dirty_one_region(int mib, int byte, int *s, struct zkn_region_desc *d);
/* Another client can still lend: the daemon is serving and its pool intact. */
void fx_assert_serves(void);

#endif
