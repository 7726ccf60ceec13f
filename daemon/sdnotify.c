/* See sdnotify.h. The protocols are systemd's documented interfaces
 * (sd_notify(3), sd_listen_fds(3)); this is an independent implementation. */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* A notify datagram must never hang the daemon's event loop for good (a
 * receiver that stopped reading fills the queue); systemd reads these at once,
 * so a few seconds is generous. */
#define NOTIFY_SEND_TIMEOUT_S 5

/* Fills *sa from $NOTIFY_SOCKET. Returns 1 with *len set, 0 when unset or
 * empty, -errno when unusable. */
static int notify_address(struct sockaddr_un *sa, socklen_t *len)
{
    const char *e = getenv("NOTIFY_SOCKET");
    size_t n;

    if (!e || !*e)
        return 0;
    n = strlen(e);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (e[0] == '/') {
        if (n >= sizeof sa->sun_path)
            return -ENAMETOOLONG;
        memcpy(sa->sun_path, e, n + 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 1;
    }
    if (e[0] == '@') {
        /* Abstract namespace: a leading NUL, then the name, no terminator
         * (the address length says where it ends). */
        if (n > sizeof sa->sun_path)
            return -ENAMETOOLONG;
        sa->sun_path[0] = '\0';
        memcpy(sa->sun_path + 1, e + 1, n - 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 1;
    }
    /* systemd also knows vsock: addresses (for VMs); a host daemon does not. */
    return -EAFNOSUPPORT;
}

static int send_one(int s, const struct sockaddr_un *sa, socklen_t salen, const char *state,
                    const int *fds, size_t n)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * ZKN_SD_MAX_FDS_PER_MSG)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)state, .iov_len = strlen(state)};
    struct msghdr msg = {.msg_name = (void *)sa, .msg_namelen = salen, .msg_iov = &iov,
                         .msg_iovlen = 1};

    if (n > 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    for (;;) {
        if (sendmsg(s, &msg, MSG_NOSIGNAL) >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

int zkn_sd_notify_fds(const char *state, const int *fds, size_t n)
{
    struct sockaddr_un sa;
    socklen_t salen = 0;
    int r, s;

    if (!state || (n > 0 && !fds))
        return -EINVAL;
    r = notify_address(&sa, &salen);
    if (r <= 0)
        return r;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct timeval tv = {.tv_sec = NOTIFY_SEND_TIMEOUT_S};
    if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
        r = -errno;
        close(s);
        return r;
    }
    r = 1;
    size_t done = 0;
    do {
        size_t batch = n - done;
        if (batch > ZKN_SD_MAX_FDS_PER_MSG)
            batch = ZKN_SD_MAX_FDS_PER_MSG;
        int e = send_one(s, &sa, salen, state, fds ? fds + done : NULL, batch);
        if (e < 0) {
            r = e;
            break;
        }
        done += batch;
    } while (done < n);
    close(s);
    return r;
}

int zkn_sd_notify(const char *state)
{
    return zkn_sd_notify_fds(state, NULL, 0);
}

int zkn_sd_notifyf(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    return zkn_sd_notify(buf);
}

/* ---- socket activation and the fd store ---- */

static char *names_buf;   /* copy of LISTEN_FDNAMES, ':' replaced by NUL */
static char **names;      /* names[i] for fd 3 + i, NULL past the given list */
static int names_count;   /* LISTEN_FDS of the last successful call */

static void forget_names(void)
{
    free(names);
    free(names_buf);
    names = NULL;
    names_buf = NULL;
    names_count = 0;
}

/* Strict decimal: the whole string, no sign, no overflow past max. */
static int parse_uint(const char *s, long max, long *out)
{
    char *end;
    long v;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int save_names(const char *list, int count)
{
    names = calloc((size_t)count, sizeof *names);
    if (!names)
        return -ENOMEM;
    names_count = count;
    if (!list)
        return 0;
    names_buf = strdup(list);
    if (!names_buf)
        return -ENOMEM;
    char *p = names_buf;
    for (int i = 0; i < count && p; i++) {
        char *colon = strchr(p, ':');
        if (colon)
            *colon = '\0';
        names[i] = *p ? p : NULL;
        p = colon ? colon + 1 : NULL;
    }
    return 0;
}

int zkn_sd_listen_fds(int unset_env)
{
    const char *e_pid = getenv("LISTEN_PID");
    const char *e_fds = getenv("LISTEN_FDS");
    long pid, count;
    int r = 0;

    forget_names();
    if (!e_pid)
        goto out;
    if (parse_uint(e_pid, LONG_MAX, &pid) < 0) {
        r = -EINVAL;
        goto out;
    }
    if ((pid_t)pid != getpid())
        goto out; /* meant for the process that exec'd us, or a stale copy */
    if (parse_uint(e_fds, INT_MAX - ZKN_SD_LISTEN_FDS_START, &count) < 0) {
        r = -EINVAL;
        goto out;
    }
    for (int fd = ZKN_SD_LISTEN_FDS_START; fd < ZKN_SD_LISTEN_FDS_START + (int)count; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl < 0 || (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)) {
            r = -errno;
            goto out;
        }
    }
    if (count > 0 && (r = save_names(getenv("LISTEN_FDNAMES"), (int)count)) < 0) {
        forget_names();
        goto out;
    }
    r = (int)count;
out:
    if (unset_env) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
    }
    return r;
}

const char *zkn_sd_listen_fd_name(int index)
{
    if (index < 0 || index >= names_count)
        return NULL;
    return names[index] ? names[index] : "unknown";
}
