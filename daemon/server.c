/* Accepting connections, and the server's start and stop. Socket setup and
 * ownership are listen.c's, a connection's life conn.c's, requests
 * handlers.c's, client processes clients.c's. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handlers.h"
#include "log.h"
#include "wire.h"
#include "zkn_proto.h"

/* A connection's end is its process's: the process may be gone with it. */
static void on_conn_closed(struct conn *c) { proc_detach(c->proc); }

static const struct conn_hooks conn_hooks = {
    .on_frame = handle_frame,
    .on_closed = on_conn_closed,
};

static void refuse_connection(struct server *s, int fd, uint32_t code, const char *text)
{
    char frame[sizeof(struct zkn_hdr) + sizeof(struct zkn_error) + 128];
    struct zkn_error e = {.code = code};
    size_t tl = strlen(text);
    zkn_hdr_init((struct zkn_hdr *)frame, ZKN_MSG_ERROR, (uint32_t)(sizeof e + tl), 0);
    memcpy(frame + sizeof(struct zkn_hdr), &e, sizeof e);
    memcpy(frame + sizeof(struct zkn_hdr) + sizeof e, text, tl);
    zkn_send_frame(fd, frame, sizeof(struct zkn_hdr) + sizeof e + tl, NULL, 0);
    pool_count_refusal(s->pool, code);
    close(fd);
}

#define ACCEPT_BACKOFF_MIN_MS 100
#define ACCEPT_BACKOFF_MAX_MS 2000

static void on_listen_event(uv_poll_t *w, int status, int events);

static void reserve_fd_open(struct server *s)
{
    if (s->reserve_fd < 0)
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_accept_timer(uv_timer_t *t)
{
    struct server *s = t->data;
    if (!s->stopping && s->listen_open)
        uv_poll_start(&s->listen_watch, UV_READABLE, on_listen_event);
}

/* Out of fds. A pending connection would keep the listener readable and the
 * loop spinning: spend the reserve fd to accept and refuse it, then rest the
 * listener for a while (one log line per episode). */
static void on_fds_exhausted(struct server *s, int err)
{
    int waiting = 1;
    reserve_fd_open(s); /* a worker may have taken its number last time */
    for (int i = 0; i < 64 && waiting && s->reserve_fd >= 0; i++) {
        close(s->reserve_fd);
        s->reserve_fd = -1;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int e = errno;
        reserve_fd_open(s);
        if (fd >= 0) {
            refuse_connection(s, fd, ZKN_E_BUSY, "daemon out of file descriptors");
            s->accept_exhausted++;
        } else if (e == EAGAIN || e == EINTR || e == ECONNABORTED) {
            waiting = 0;
        } else {
            break; /* the reserve was not enough: rest */
        }
    }
    if (!waiting)
        return; /* nobody is waiting: the listener is not readable */
    if (!s->fd_exhausted) {
        s->fd_exhausted = 1;
        log_warn("accept: %s: refusing new connections until fds are free (raise "
                 "LimitNOFILE= or lower the lease caps)",
                 strerror(err));
    }
    s->accept_backoff_ms = s->accept_backoff_ms ? s->accept_backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
    if (s->accept_backoff_ms > ACCEPT_BACKOFF_MAX_MS)
        s->accept_backoff_ms = ACCEPT_BACKOFF_MAX_MS;
    if (s->accept_timer_open) {
        uv_poll_stop(&s->listen_watch);
        uv_timer_start(&s->accept_timer, on_accept_timer, s->accept_backoff_ms, 0);
    }
}

static void accept_recovered(struct server *s)
{
    reserve_fd_open(s);
    if (s->fd_exhausted)
        log_info("accepting connections again (%llu refused for want of fds so far)",
                 (unsigned long long)s->accept_exhausted);
    s->fd_exhausted = 0;
    s->accept_backoff_ms = 0;
}

static void on_listen_event(uv_poll_t *w, int status, int events)
{
    struct server *s = w->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                on_fds_exhausted(s, errno);
                return;
            }
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        struct ucred cred;
        socklen_t cl = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
            close(fd);
            continue;
        }
        if (s->conns.count >= s->cfg->max_clients) {
            log_warn("connection from pid %d refused: %u connections open (--max-clients)",
                     (int)cred.pid, s->conns.count);
            refuse_connection(s, fd, ZKN_E_BUSY, "too many connections");
            continue;
        }
        int pidfd = peer_pidfd(fd, cred.pid);
        if (pidfd == -EMFILE || pidfd == -ENFILE) {
            refuse_connection(s, fd, ZKN_E_BUSY, "daemon out of file descriptors");
            s->accept_exhausted++;
            on_fds_exhausted(s, -pidfd);
            return;
        }
        if (pidfd == -ESRCH) { /* gone before we looked */
            close(fd);
            continue;
        }
        accept_recovered(s);
        struct conn *c = calloc(1, sizeof *c);
        struct proc *p = c ? proc_attach(s, &cred, pidfd) : NULL;
        if (!c && pidfd >= 0)
            close(pidfd);
        if (!p || conn_open(c, &s->conns, s, p, fd, &conn_hooks) != 0) {
            if (p)
                proc_detach(p);
            free(c);
            close(fd);
            continue;
        }
        s->accepted++;
        log_debug("client pid %d uid %u connected", (int)cred.pid, (unsigned)cred.uid);
    }
}

int server_start(struct server *s)
{
    s->reserve_fd = -1;
    reserve_fd_open(s);
    if (s->reserve_fd < 0)
        log_warn("open /dev/null: %s; out of fds, newcomers will wait unanswered",
                 strerror(errno));
    if (uv_timer_init(s->loop, &s->accept_timer) == 0) {
        s->accept_timer.data = s;
        s->accept_timer_open = 1;
    }
    if (uv_poll_init(s->loop, &s->listen_watch, s->listen_fd) != 0)
        return -1;
    s->listen_watch.data = s;
    s->listen_open = 1;
    s->start_ms = uv_now(s->loop);
    return uv_poll_start(&s->listen_watch, UV_READABLE, on_listen_event);
}

void server_stop(struct server *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    if (s->listen_open) {
        uv_close((uv_handle_t *)&s->listen_watch, NULL);
        s->listen_open = 0;
    }
    if (s->accept_timer_open) {
        uv_close((uv_handle_t *)&s->accept_timer, NULL);
        s->accept_timer_open = 0;
    }
    if (s->reserve_fd >= 0)
        close(s->reserve_fd);
    s->reserve_fd = -1;
    if (s->own_socket_file)
        unlink(s->cfg->socket_path);
    close(s->listen_fd);
    conns_close(&s->conns, NULL);
    procs_shutdown(s);
}
