/* One frame per sendmsg/recvmsg: SOCK_SEQPACKET keeps message boundaries, so
 * the fds travel inside the message that names them. */
#include "wire.h"

#include "zkn_proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FD_CMSG_SPACE CMSG_SPACE(sizeof(int) * ZKN_MAX_REGIONS_PER_REPLY)

void zkn_close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

ssize_t zkn_send_frame(int sock, const void *frame, size_t len, const int *fds, size_t nfds)
{
    union {
        char buf[FD_CMSG_SPACE];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)frame, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    if (nfds > ZKN_MAX_REGIONS_PER_REPLY)
        return -EINVAL;
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t zkn_recv_frame(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *nfds,
                       int flags)
{
    union {
        char buf[FD_CMSG_SPACE];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t n;

    *nfds = 0;
    do
        n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;

    /* Collect every fd that arrived, even past maxfds, so none leaks. */
    int overflow = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*nfds < maxfds) {
                fds[(*nfds)++] = fd;
            } else {
                close(fd);
                overflow = 1;
            }
        }
    }
    if (overflow || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        zkn_close_fds(fds, *nfds);
        *nfds = 0;
        return -EPROTO;
    }
    return n;
}
