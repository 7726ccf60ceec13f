/* Sending and receiving one frame, with file descriptors, over SOCK_SEQPACKET.
 * No allocation: buffers belong to the caller. */
#ifndef ZKN_WIRE_H
#define ZKN_WIRE_H

#include <stddef.h>
#include <sys/types.h>

/* Sends one frame with up to ZKN_MAX_REGIONS_PER_REPLY fds. Never raises
 * SIGPIPE. Returns bytes sent or -errno (-EAGAIN on a full non-blocking socket). */
ssize_t zkn_send_frame(int sock, const void *frame, size_t len, const int *fds, size_t nfds);

/* Receives one frame into buf. Received fds (marked close-on-exec) go to fds,
 * at most maxfds; their number to *nfds. Returns the frame's length, 0 at EOF,
 * or -errno. A frame longer than cap or whose fds did not fit (MSG_TRUNC,
 * MSG_CTRUNC) is a protocol error: every fd that did arrive is closed and
 * -EPROTO is returned. `flags` is passed to recvmsg (e.g. MSG_DONTWAIT). */
ssize_t zkn_recv_frame(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *nfds,
                       int flags);

/* Closes fds[0..n). */
void zkn_close_fds(const int *fds, size_t n);

#endif
