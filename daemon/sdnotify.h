/* A small, self-contained implementation of the systemd service protocols the
 * daemon needs, so that it does not depend on libsystemd:
 *
 *   - readiness and status (sd_notify(3)): a datagram to $NOTIFY_SOCKET;
 *   - the file descriptor store: FDSTORE=1 with the fds attached (SCM_RIGHTS),
 *     which lets `systemctl restart` hand the warm pool's memfds back;
 *   - socket activation and fd-store restore (sd_listen_fds(3)): fds from 3 on,
 *     counted by $LISTEN_FDS, meant for us when $LISTEN_PID is our pid, named
 *     by the ':'-separated $LISTEN_FDNAMES.
 *
 * The listening socket arrives under the socket unit's name (by default
 * "zknallocd.socket"; systemd-socket-activate names it only with --fdname),
 * and stored fds under the FDNAME= they were stored with. Checking an fd's
 * kind (fstat: S_ISSOCK) is more robust than trusting names alone.
 *
 * Without systemd every call is a harmless no-op: zkn_sd_notify* return 0,
 * zkn_sd_listen_fds returns 0. */
#ifndef ZKN_SDNOTIFY_H
#define ZKN_SDNOTIFY_H

#include <stddef.h>

/* The first fd passed by socket activation or the fd store. */
#define ZKN_SD_LISTEN_FDS_START 3

/* The kernel accepts at most this many fds in one message (SCM_MAX_FD). */
#define ZKN_SD_MAX_FDS_PER_MSG 253

/* Sends `state` (newline-separated assignments, e.g. "READY=1\nSTATUS=...")
 * to $NOTIFY_SOCKET: a filesystem path, or an abstract address written with
 * a leading '@'. Returns 0 when NOTIFY_SOCKET is unset or empty (not run by
 * systemd), 1 when sent, -errno on failure (-EAFNOSUPPORT for an address form
 * this implementation does not speak, -ENAMETOOLONG for one that does not fit). */
int zkn_sd_notify(const char *state);

/* printf-style zkn_sd_notify. The text is cut at 4095 bytes. */
int zkn_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Same, with fds attached by SCM_RIGHTS: for the fd store use a state such as
 * "FDSTORE=1\nFDNAME=pool-7". More than ZKN_SD_MAX_FDS_PER_MSG fds are sent
 * as several messages, each carrying `state` again (systemd accepts many fds
 * under one name). The caller keeps its own copies of the fds. Returns as
 * zkn_sd_notify; on a failure part-way, the batches already sent stay sent. */
int zkn_sd_notify_fds(const char *state, const int *fds, size_t n);

/* Counts the fds passed to this process: 0 when LISTEN_PID is unset or names
 * another process (the variables were meant for a parent), else LISTEN_FDS.
 * The fds (ZKN_SD_LISTEN_FDS_START onwards) are marked close-on-exec. Saves
 * LISTEN_FDNAMES for zkn_sd_listen_fd_name(). With unset_env, LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES are removed from the environment (in every
 * case) so children do not inherit them. Returns -EINVAL for malformed
 * variables, -EBADF when a counted fd is not open, -ENOMEM. Not thread-safe:
 * call it at start-up. */
int zkn_sd_listen_fds(int unset_env);

/* Name of passed fd number `index` (0 for fd 3) as given in LISTEN_FDNAMES
 * when zkn_sd_listen_fds() last ran: NULL when index is out of range,
 * "unknown" (as systemd says) when no name was given for it. The string lives
 * until the next zkn_sd_listen_fds() call; a later call to this function does
 * not overwrite it. */
const char *zkn_sd_listen_fd_name(int index);

#endif
