/* A synchronous client for the few requests zknallocctl makes. Every failure
 * is turned into one of the documented exit statuses with a message that
 * names the socket. */
#include "ctl.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

volatile sig_atomic_t ctl_stop; /* set by watch's signal handler */

__attribute__((format(printf, 3, 4))) static int fail(struct ctl_conn *c, int status,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return status;
}

int ctl_connect(struct ctl_conn *c, const char *path, int timeout_ms)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);

    c->fd = -1;
    c->path = path;
    c->timeout_ms = timeout_ms;
    c->next_req = 1;
    c->err[0] = '\0';
    if (n == 0 || n >= sizeof a.sun_path)
        return fail(c, CTL_USAGE, "socket path '%s' does not fit a Unix socket address", path);
    memcpy(a.sun_path, path, n + 1);
    c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail(c, CTL_UNREACHABLE, "cannot create a socket: %s", strerror(errno));
    int r;
    do
        r = connect(c->fd, (struct sockaddr *)&a, sizeof a);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return CTL_OK;

    int e = errno;
    close(c->fd);
    c->fd = -1;
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return fail(c, CTL_UNREACHABLE, "no daemon socket at %s (is zknallocd running?)", path);
    case ECONNREFUSED:
        return fail(c, CTL_UNREACHABLE,
                    "connection refused at %s: nothing is listening there (a stale socket, "
                    "or not a socket at all)",
                    path);
    case EACCES:
    case EPERM:
        return fail(c, CTL_UNREACHABLE,
                    "permission denied connecting to %s: connecting needs write access to the "
                    "socket (the system daemon admits members of group zknalloc)",
                    path);
    case EPROTOTYPE:
        return fail(c, CTL_PROTO,
                    "%s is not a SOCK_SEQPACKET socket: something other than zknallocd listens "
                    "there",
                    path);
    case EAGAIN:
        return fail(c, CTL_UNREACHABLE, "the daemon at %s is not accepting connections (backlog "
                    "full)", path);
    default:
        return fail(c, CTL_UNREACHABLE, "cannot connect to %s: %s", path, strerror(e));
    }
}

void ctl_close(struct ctl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Receives one frame, waiting at most until `deadline` (CLOCK_MONOTONIC ms). */
static int recv_reply(struct ctl_conn *c, const char *what, void *buf, size_t cap, size_t *len,
                      long deadline)
{
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds = 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    for (;;) {
        long left = deadline - now_ms();
        if (left < 0)
            left = 0;
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR && ctl_stop)
            return fail(c, CTL_PROTO, "interrupted waiting for %s from %s", what, c->path);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fail(c, CTL_PROTO, "waiting for the %s reply from %s: %s", what, c->path,
                        strerror(errno));
        if (r == 0)
            return fail(c, CTL_PROTO, "no %s reply from the daemon at %s within %.1f s", what,
                        c->path, c->timeout_ms / 1000.0);
        break;
    }
    ssize_t n = zkn_recv_frame(c->fd, buf, cap, fds, ZKN_MAX_REGIONS_PER_REPLY, &nfds,
                               MSG_DONTWAIT);
    if (n == 0)
        return fail(c, CTL_PROTO, "the daemon at %s closed the connection instead of answering %s",
                    c->path, what);
    if (n == -EAGAIN || n == -EWOULDBLOCK)
        return fail(c, CTL_PROTO, "spurious wake-up waiting for %s from %s", what, c->path);
    if (n == -EPROTO)
        return fail(c, CTL_PROTO, "malformed %s reply from %s (truncated, or carried fds)", what,
                    c->path);
    if (n < 0)
        return fail(c, CTL_PROTO, "reading the %s reply from %s: %s", what, c->path,
                    strerror((int)-n));
    if (nfds > 0) {
        /* No reply zknallocctl asks for carries fds; never keep strays. */
        zkn_close_fds(fds, nfds);
        return fail(c, CTL_PROTO, "the %s reply from %s carried unexpected file descriptors",
                    what, c->path);
    }
    *len = (size_t)n;
    return CTL_OK;
}

int ctl_call(struct ctl_conn *c, uint16_t type, const void *payload, size_t plen, uint16_t want,
             void *buf, size_t cap, size_t *len)
{
    char frame[sizeof(struct zkn_hdr) + 64];
    const char *what = zkn_msg_type_name(type);
    uint32_t req = c->next_req++;
    struct zkn_hdr h;

    if (plen > sizeof frame - sizeof h)
        return fail(c, CTL_PROTO, "internal: %s payload too large", what);
    zkn_hdr_init(&h, type, (uint32_t)plen, req);
    memcpy(frame, &h, sizeof h);
    if (plen)
        memcpy(frame + sizeof h, payload, plen);
    ssize_t s = zkn_send_frame(c->fd, frame, sizeof h + plen, NULL, 0);
    if (s < 0)
        return fail(c, CTL_PROTO, "sending %s to %s: %s", what, c->path, strerror((int)-s));

    int r = recv_reply(c, what, buf, cap, len, now_ms() + c->timeout_ms);
    if (r != CTL_OK)
        return r;
    int bad = zkn_hdr_check(buf, *len);
    if (bad)
        return fail(c, CTL_PROTO, "malformed %s reply from %s (%s)", what, c->path,
                    zkn_err_name((uint32_t)bad));
    memcpy(&h, buf, sizeof h);
    if (h.request_id != req)
        return fail(c, CTL_PROTO, "the %s reply from %s answers request %u, not %u", what,
                    c->path, h.request_id, req);
    if (h.type == ZKN_MSG_ERROR) {
        struct zkn_error e = {0};
        const char *text = (const char *)buf + sizeof h + sizeof e;
        int tlen = 0;
        if (h.length >= sizeof e) {
            memcpy(&e, (const char *)buf + sizeof h, sizeof e);
            tlen = (int)(h.length - sizeof e);
            if (tlen > (int)ZKN_MAX_ERROR_TEXT)
                tlen = (int)ZKN_MAX_ERROR_TEXT;
        }
        return fail(c, CTL_PROTO, "the daemon at %s refused %s: %s%s%.*s", c->path, what,
                    zkn_err_name(e.code), tlen ? ": " : "", tlen, text);
    }
    if (h.type != want)
        return fail(c, CTL_PROTO, "the daemon at %s answered %s with %s, expected %s", c->path,
                    what, zkn_msg_type_name(h.type), zkn_msg_type_name(want));
    long fixed = zkn_fixed_payload_size(want);
    if (fixed >= 0 && h.length != (uint32_t)fixed)
        return fail(c, CTL_PROTO, "the %s reply from %s has %u payload bytes, expected %ld",
                    zkn_msg_type_name(want), c->path, h.length, fixed);
    return CTL_OK;
}

int ctl_hello(struct ctl_conn *c, struct zkn_hello_ok *ok)
{
    struct zkn_hello h = {.min_version = ZKN_PROTO_MIN_VERSION,
                          .max_version = ZKN_PROTO_VERSION};
    char buf[256];
    size_t len;
    struct zkn_hello_ok tmp;

    int r = ctl_call(c, ZKN_MSG_HELLO, &h, sizeof h, ZKN_MSG_HELLO_OK, buf, sizeof buf, &len);
    if (r != CTL_OK)
        return r;
    memcpy(&tmp, buf + sizeof(struct zkn_hdr), sizeof tmp);
    if (tmp.version < ZKN_PROTO_MIN_VERSION || tmp.version > ZKN_PROTO_VERSION)
        return fail(c, CTL_PROTO, "the daemon at %s chose protocol version %u, outside %u..%u",
                    c->path, tmp.version, ZKN_PROTO_MIN_VERSION, ZKN_PROTO_VERSION);
    if (ok)
        *ok = tmp;
    return CTL_OK;
}

int ctl_stats(struct ctl_conn *c, char **json)
{
    static char buf[ZKN_MAX_FRAME];
    size_t len;

    *json = NULL;
    int r = ctl_call(c, ZKN_MSG_STATS, NULL, 0, ZKN_MSG_STATS_REPLY, buf, sizeof buf, &len);
    if (r != CTL_OK)
        return r;
    size_t n = len - sizeof(struct zkn_hdr);
    if (memchr(buf + sizeof(struct zkn_hdr), '\0', n))
        return fail(c, CTL_PROTO, "the STATS reply from %s contains a NUL byte", c->path);
    char *out = malloc(n + 1);
    if (!out)
        return fail(c, CTL_PROTO, "out of memory");
    memcpy(out, buf + sizeof(struct zkn_hdr), n);
    out[n] = '\0';
    *json = out;
    return CTL_OK;
}
