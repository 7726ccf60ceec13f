/* Connections: framing, the send queue, reading frames, their life. One
 * thread runs all of this; a connection never blocks the loop: replies it
 * does not read are queued up to CONN_MAX_QUEUED_BYTES, then it is dropped. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clients.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "wire.h"
#include "zkn_proto.h"

struct outmsg {
    LIST_LINK(struct outmsg) link;
    size_t len;
    size_t nfds;
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    char data[];
};

static void conn_update_events(struct conn *c);

/* ---- sending ---- */

static void outmsg_free(struct outmsg *m)
{
    zkn_close_fds(m->fds, m->nfds);
    free(m);
}

static int flush_queue(struct conn *c)
{
    while (c->outq.head) {
        struct outmsg *m = c->outq.head;
        ssize_t n = zkn_send_frame(c->fd, m->data, m->len, m->fds, m->nfds);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return -1;
        list_remove(&c->outq, m, link);
        c->outq_bytes -= m->len;
        outmsg_free(m);
    }
    return 0;
}

static void conn_send(struct conn *c, const void *frame, size_t len, const int *fds, size_t nfds)
{
    if (c->closing)
        return;
    if (!c->outq.head) {
        ssize_t n = zkn_send_frame(c->fd, frame, len, fds, nfds);
        if (n >= 0)
            return;
        if (n != -EAGAIN) {
            log_debug("send to pid %d: %s", (int)c->proc->pid, strerror((int)-n));
            conn_close(c);
            return;
        }
    }
    if (c->outq_bytes + len > CONN_MAX_QUEUED_BYTES) {
        log_warn("client pid %d does not read its replies: disconnected", (int)c->proc->pid);
        pool_count_refusal(c->srv->pool, ZKN_E_BUSY);
        conn_close(c);
        return;
    }
    struct outmsg *m = malloc(sizeof *m + len);
    if (!m) {
        conn_close(c);
        return;
    }
    m->len = len;
    m->nfds = 0;
    memcpy(m->data, frame, len);
    /* Our own copies: the regions may be returned or destroyed before this
     * frame leaves. */
    for (size_t i = 0; i < nfds; i++) {
        m->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (m->fds[i] < 0) {
            outmsg_free(m);
            conn_close(c);
            return;
        }
        m->nfds++;
    }
    list_push_tail(&c->outq, m, link);
    c->outq_bytes += len;
    conn_update_events(c);
}

void conn_reply(struct conn *c, uint16_t type, uint32_t req, const void *payload, size_t len,
                const int *fds, size_t nfds)
{
    char frame[ZKN_MAX_FRAME];
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, req);
    if (len)
        memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    conn_send(c, frame, sizeof(struct zkn_hdr) + len, fds, nfds);
}

void conn_reply_error(struct conn *c, uint32_t req, uint32_t code, const char *fmt, ...)
{
    char payload[sizeof(struct zkn_error) + ZKN_MAX_ERROR_TEXT + 1];
    struct zkn_error e = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(payload + sizeof e, ZKN_MAX_ERROR_TEXT + 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)ZKN_MAX_ERROR_TEXT)
        n = ZKN_MAX_ERROR_TEXT;
    memcpy(payload, &e, sizeof e);
    pool_count_refusal(c->srv->pool, code);
    log_debug("pid %d: refused (%s): %.*s", (int)c->proc->pid, zkn_err_name(code), n,
              payload + sizeof e);
    conn_reply(c, ZKN_MSG_ERROR, req, payload, sizeof e + (size_t)n, NULL, 0);
}

/* ---- life ---- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct outmsg *m, *next;
    close(c->fd);
    list_for_each_safe(m, next, &c->outq, link)
        outmsg_free(m);
    list_remove(c->list, c, link);
    c->list->count--;
    c->hooks->on_closed(c);
    free(c);
}

void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->watch, on_conn_closed);
}

void conns_close(struct conn_list *l, const struct proc *p)
{
    struct conn *c, *next;
    list_for_each_safe(c, next, l, link)
        if (!p || c->proc == p)
            conn_close(c);
}

static void on_conn_event(uv_poll_t *w, int status, int events);

static void conn_update_events(struct conn *c)
{
    if (c->closing)
        return;
    int ev = UV_READABLE;
    if (c->outq.head)
        ev |= UV_WRITABLE;
    uv_poll_start(&c->watch, ev, on_conn_event);
}

static void conn_read(struct conn *c)
{
    static char frame[ZKN_MAX_FRAME];
    for (int i = 0; i < CONN_FRAMES_PER_WAKEUP && !c->closing; i++) {
        int fds[ZKN_MAX_REGIONS_PER_REPLY];
        size_t nfds = 0;
        ssize_t n = zkn_recv_frame(c->fd, frame, sizeof frame, fds, ZKN_MAX_REGIONS_PER_REPLY,
                                   &nfds, MSG_DONTWAIT);
        if (n == -EAGAIN)
            return;
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (n == -EPROTO) {
            conn_reply_error(c, 0, ZKN_E_MALFORMED, "frame truncated or carrying too many fds");
            conn_close(c);
            return;
        }
        if (n < 0) {
            conn_close(c);
            return;
        }
        if (nfds > 0) {
            zkn_close_fds(fds, nfds);
            conn_reply_error(c, 0, ZKN_E_UNEXPECTED_FD, "clients may not send file descriptors");
            conn_close(c);
            return;
        }
        c->hooks->on_frame(c, frame, (size_t)n);
    }
}

static void on_conn_event(uv_poll_t *w, int status, int events)
{
    struct conn *c = w->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if ((events & UV_WRITABLE) && flush_queue(c) < 0) {
        conn_close(c);
        return;
    }
    if (events & UV_READABLE)
        conn_read(c);
    conn_update_events(c);
}

int conn_open(struct conn *c, struct conn_list *l, struct server *s, struct proc *p, int fd,
              const struct conn_hooks *hooks)
{
    if (uv_poll_init(s->loop, &c->watch, fd) != 0)
        return -1;
    c->fd = fd;
    c->srv = s;
    c->proc = p;
    c->hooks = hooks;
    c->list = l;
    c->watch.data = c;
    list_push_head(l, c, link);
    l->count++;
    conn_update_events(c);
    return 0;
}
