/* The listening socket, connections, and the request handlers. One thread
 * runs all of this; a connection never blocks the loop: replies it does not
 * read are queued up to CONN_MAX_QUEUED_BYTES, then it is dropped. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "wire.h"
#include "zkn_proto.h"

struct outmsg {
    struct outmsg *next;
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
    while (c->outq_head) {
        struct outmsg *m = c->outq_head;
        ssize_t n = zkn_send_frame(c->fd, m->data, m->len, m->fds, m->nfds);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return -1;
        c->outq_head = m->next;
        if (!c->outq_head)
            c->outq_tail = NULL;
        c->outq_bytes -= m->len;
        outmsg_free(m);
    }
    return 0;
}

static void conn_send(struct conn *c, const void *frame, size_t len, const int *fds, size_t nfds)
{
    if (c->closing)
        return;
    if (!c->outq_head) {
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
        c->srv->pool->refusals[ZKN_E_BUSY]++;
        conn_close(c);
        return;
    }
    struct outmsg *m = malloc(sizeof *m + len);
    if (!m) {
        conn_close(c);
        return;
    }
    m->next = NULL;
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
    if (c->outq_tail)
        c->outq_tail->next = m;
    else
        c->outq_head = m;
    c->outq_tail = m;
    c->outq_bytes += len;
    conn_update_events(c);
}

static void reply(struct conn *c, uint16_t type, uint32_t req, const void *payload, size_t len,
                  const int *fds, size_t nfds)
{
    char frame[ZKN_MAX_FRAME];
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, req);
    if (len)
        memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    conn_send(c, frame, sizeof(struct zkn_hdr) + len, fds, nfds);
}

__attribute__((format(printf, 4, 5)))
static void reply_error(struct conn *c, uint32_t req, uint32_t code, const char *fmt, ...)
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
    if (code < POOL_REFUSAL_SLOTS)
        c->srv->pool->refusals[code]++;
    log_debug("pid %d: refused (%s): %.*s", (int)c->proc->pid, zkn_err_name(code), n,
              payload + sizeof e);
    reply(c, ZKN_MSG_ERROR, req, payload, sizeof e + (size_t)n, NULL, 0);
}

/* ---- handlers ---- */

static void handle_hello(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_hello h;
    memcpy(&h, payload, sizeof h);
    if (c->hello_done) {
        reply_error(c, req, ZKN_E_BAD_TYPE, "HELLO was already sent on this connection");
        return;
    }
    unsigned lo = h.min_version > ZKN_PROTO_MIN_VERSION ? h.min_version : ZKN_PROTO_MIN_VERSION;
    unsigned hi = h.max_version < ZKN_PROTO_VERSION ? h.max_version : ZKN_PROTO_VERSION;
    if (lo > hi) {
        reply_error(c, req, ZKN_E_VERSION, "no common version: client %u-%u, daemon %u-%u",
                    h.min_version, h.max_version, ZKN_PROTO_MIN_VERSION, ZKN_PROTO_VERSION);
        conn_close(c);
        return;
    }
    if (h.flags != 0) {
        reply_error(c, req, ZKN_E_MALFORMED, "HELLO flags must be 0");
        return;
    }
    struct zkn_hello_ok ok = {
        .version = (uint16_t)hi,
        .class_count = ZKN_CLASS_COUNT,
        .max_regions_per_reply = ZKN_MAX_REGIONS_PER_REPLY,
        .client_cap_bytes = c->srv->cfg->client_cap_bytes,
        .daemon_pid = (uint32_t)getpid(),
        .backing = c->srv->backing->kind,
    };
    c->hello_done = 1;
    reply(c, ZKN_MSG_HELLO_OK, req, &ok, sizeof ok, NULL, 0);
}

/* Whether one more region of size may be handed to c's process: checked
 * for every region as it is handed over, so no batch or set of connections
 * can pass a cap. Returns 0, or fills why with the refusal's text. */
static int lease_fits(const struct conn *c, uint64_t size, char *why, size_t why_len)
{
    const struct proc *p = c->proc;
    const struct config *cfg = c->srv->cfg;
    const struct pool *pool = c->srv->pool;
    if (p->leases.bytes + size > cfg->client_cap_bytes ||
        p->leases.count >= cfg->client_max_leases) {
        snprintf(why, why_len,
                 "client cap reached: %llu bytes in %llu regions held, cap %llu bytes / %u "
                 "regions (--client-cap-bytes, --client-max-leases)",
                 (unsigned long long)p->leases.bytes, (unsigned long long)p->leases.count,
                 (unsigned long long)cfg->client_cap_bytes, cfg->client_max_leases);
        return 0;
    }
    if (pool->lent_bytes + size > cfg->max_lent_bytes) {
        snprintf(why, why_len,
                 "daemon lent-bytes cap reached: %llu bytes lent to all clients, %llu more "
                 "asked, cap %llu (--max-lent-bytes)",
                 (unsigned long long)pool->lent_bytes, (unsigned long long)size,
                 (unsigned long long)cfg->max_lent_bytes);
        return 0;
    }
    return 1;
}

static void send_regions(struct conn *c, uint32_t req, struct region **rs, uint32_t n)
{
    char payload[sizeof(struct zkn_regions) + ZKN_MAX_REGIONS_PER_REPLY *
                                                  sizeof(struct zkn_region_desc)];
    struct zkn_regions head = {.count = n};
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    memcpy(payload, &head, sizeof head);
    for (uint32_t i = 0; i < n; i++) {
        struct zkn_region_desc d = {
            .id = rs[i]->id,
            .size = rs[i]->size,
            .size_class = (uint16_t)rs[i]->size_class,
            .flags = rs[i]->lent_clean ? ZKN_REGION_CLEAN : 0,
        };
        memcpy(payload + sizeof head + i * sizeof d, &d, sizeof d);
        fds[i] = rs[i]->fd;
    }
    c->srv->pool->lends++;
    reply(c, ZKN_MSG_REGIONS, req, payload, sizeof head + n * sizeof(struct zkn_region_desc),
          fds, n);
}

/* Answered at once: from the pool, by an inline creation for cheap classes,
 * or ERROR not_warm while the pool prepares the class in the background.
 * Nothing here waits on a worker. */
static void handle_lend(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_lend l;
    struct region *got[ZKN_MAX_REGIONS_PER_REPLY];
    struct pool *pool = c->srv->pool;
    char why[ZKN_MAX_ERROR_TEXT + 1];
    uint32_t n = 0;
    int capped = 0;
    memcpy(&l, payload, sizeof l);
    if (l.size_class >= ZKN_CLASS_COUNT) {
        reply_error(c, req, ZKN_E_BAD_CLASS, "size class %u out of range (0-%d)", l.size_class,
                    ZKN_CLASS_COUNT - 1);
        return;
    }
    if (l.count == 0 || l.count > ZKN_MAX_REGIONS_PER_REPLY || (l.flags & ~ZKN_LEND_ZEROED)) {
        reply_error(c, req, ZKN_E_MALFORMED, "LEND count must be 1-%u and flags known",
                    ZKN_MAX_REGIONS_PER_REPLY);
        return;
    }
    uint64_t size = zkn_class_size(l.size_class);
    int want_zero = (l.flags & ZKN_LEND_ZEROED) != 0;
    uint32_t demand = l.demand > l.count ? l.demand : l.count; /* what to keep ready */
    if (!lease_fits(c, size, why, sizeof why)) {
        reply_error(c, req, ZKN_E_CLIENT_CAP, "%s", why);
        return;
    }
    /* Each region becomes a lease before the next is checked against the caps. */
    while (n < l.count) {
        if (n > 0 && !lease_fits(c, size, why, sizeof why)) {
            capped = 1;
            break;
        }
        struct region *r = pool_take(pool, c->proc->uid, l.size_class, want_zero);
        if (!r)
            break;
        proc_add_lease(c->proc, r);
        got[n++] = r;
    }
    if (n > 0) {
        pool_note_served(pool, c->proc->uid, l.size_class, capped ? n : demand, n);
    } else if (pool_class_inline(pool, l.size_class)) {
        struct region *r;
        int rc = pool_create_inline(pool, c->proc->uid, l.size_class, &r);
        if (rc < 0) {
            reply_error(c, req, ZKN_E_NOMEM, "cannot create a %llu-byte region: %s",
                        (unsigned long long)size, strerror(-rc));
            return;
        }
        proc_add_lease(c->proc, r);
        got[n++] = r;
    } else {
        pool_note_not_warm(pool, c->proc->uid, l.size_class, demand);
        reply_error(c, req, ZKN_E_NOT_WARM,
                    "no %llu-byte region ready; preparing some, ask again later",
                    (unsigned long long)size);
        return;
    }
    send_regions(c, req, got, n);
}

static void handle_return(struct conn *c, uint32_t req, const char *payload, uint32_t len)
{
    struct zkn_return head;
    uint32_t ok = 0, bad = 0;
    if (len < sizeof head) {
        reply_error(c, req, ZKN_E_MALFORMED, "RETURN shorter than its header");
        conn_close(c);
        return;
    }
    memcpy(&head, payload, sizeof head);
    if (head.flags & ~ZKN_RETURN_FORGET) {
        reply_error(c, req, ZKN_E_MALFORMED, "RETURN flags 0x%x unknown (only FORGET = 1)",
                    head.flags);
        conn_close(c);
        return;
    }
    if (head.count == 0 || head.count > ZKN_MAX_RETURN_IDS ||
        len != sizeof head + (uint64_t)head.count * sizeof(uint64_t)) {
        reply_error(c, req, ZKN_E_MALFORMED, "RETURN must carry 1-%u ids and nothing else",
                    ZKN_MAX_RETURN_IDS);
        conn_close(c);
        return;
    }
    for (uint32_t i = 0; i < head.count; i++) {
        uint64_t id;
        memcpy(&id, payload + sizeof head + i * sizeof id, sizeof id);
        struct region *r = rtable_find(&c->srv->pool->ids, id);
        if (!r || r->state != REGION_LENT || r->holder != c->proc) {
            bad++;
            continue;
        }
        if (head.flags & ZKN_RETURN_FORGET) {
            proc_drop_lease(c->proc, r);
            pool_forget(c->srv->pool, r); /* another process may map it: never reused */
        } else {
            proc_release_lease(c->proc, r); /* forgotten when the holder's liveness is unknown */
            c->srv->pool->returns++;
        }
        ok++;
    }
    if (bad) {
        reply_error(c, req, ZKN_E_UNKNOWN_ID, "%u of %u ids are not held by this client "
                    "(%u taken back)", bad, head.count, ok);
        return;
    }
    struct zkn_return_ok r = {.count = ok};
    reply(c, ZKN_MSG_RETURN_OK, req, &r, sizeof r, NULL, 0);
}

static void handle_stats(struct conn *c, uint32_t req)
{
    char *json = stats_json(c->srv, ZKN_MAX_PAYLOAD, c->proc->uid);
    if (!json) {
        reply_error(c, req, ZKN_E_NOMEM, "cannot build stats");
        return;
    }
    reply(c, ZKN_MSG_STATS_REPLY, req, json, strlen(json), NULL, 0);
    free(json);
}

static void handle_trim(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_trim t;
    memcpy(&t, payload, sizeof t);
    if (c->proc->uid != 0 && c->proc->uid != geteuid()) {
        reply_error(c, req, ZKN_E_DENIED, "TRIM needs root or the daemon's uid %u",
                    (unsigned)geteuid());
        return;
    }
    struct zkn_trim_ok ok = {.freed_bytes = pool_trim(c->srv->pool, t.target_bytes)};
    ok.pool_bytes = c->srv->pool->idle_bytes;
    log_info("trim to %llu bytes by pid %d: %llu bytes freed", (unsigned long long)t.target_bytes,
             (int)c->proc->pid, (unsigned long long)ok.freed_bytes);
    reply(c, ZKN_MSG_TRIM_OK, req, &ok, sizeof ok, NULL, 0);
}

static void dispatch(struct conn *c, const char *frame, size_t len)
{
    struct zkn_hdr h;
    int bad = zkn_hdr_check(frame, len);
    if (bad == ZKN_E_MALFORMED) {
        reply_error(c, 0, ZKN_E_MALFORMED, "bad frame header (%zu bytes)", len);
        conn_close(c);
        return;
    }
    memcpy(&h, frame, sizeof h);
    const char *payload = frame + sizeof h;
    if (bad == ZKN_E_VERSION) {
        reply_error(c, h.request_id, ZKN_E_VERSION, "frame version %u, expected %u", h.version,
                    ZKN_PROTO_VERSION);
        return;
    }
    long fixed = zkn_fixed_payload_size(h.type);
    int is_request = h.type == ZKN_MSG_HELLO || h.type == ZKN_MSG_LEND ||
                     h.type == ZKN_MSG_RETURN || h.type == ZKN_MSG_STATS ||
                     h.type == ZKN_MSG_TRIM || h.type == ZKN_MSG_PING;
    if (!is_request) {
        reply_error(c, h.request_id, ZKN_E_BAD_TYPE, "message type %u (%s) is not a request",
                    h.type, zkn_msg_type_name(h.type));
        return;
    }
    if (fixed >= 0 && h.length != (uint32_t)fixed) {
        reply_error(c, h.request_id, ZKN_E_MALFORMED, "%s payload must be %ld bytes, got %u",
                    zkn_msg_type_name(h.type), fixed, h.length);
        conn_close(c);
        return;
    }
    if (h.type == ZKN_MSG_PING) {
        reply(c, ZKN_MSG_PONG, h.request_id, NULL, 0, NULL, 0);
        return;
    }
    if (h.type == ZKN_MSG_HELLO) {
        handle_hello(c, h.request_id, payload);
        return;
    }
    if (!c->hello_done) {
        reply_error(c, h.request_id, ZKN_E_NEED_HELLO, "send HELLO first");
        return;
    }
    switch (h.type) {
    case ZKN_MSG_LEND: handle_lend(c, h.request_id, payload); break;
    case ZKN_MSG_RETURN: handle_return(c, h.request_id, payload, h.length); break;
    case ZKN_MSG_STATS: handle_stats(c, h.request_id); break;
    case ZKN_MSG_TRIM: handle_trim(c, h.request_id, payload); break;
    default: break;
    }
}

/* ---- connection life ---- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct server *s = c->srv;
    close(c->fd);
    while (c->outq_head) {
        struct outmsg *m = c->outq_head;
        c->outq_head = m->next;
        outmsg_free(m);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    proc_detach(c->proc);
    free(c);
}

void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->watch, on_conn_closed);
}

static void on_conn_event(uv_poll_t *w, int status, int events);

static void conn_update_events(struct conn *c)
{
    if (c->closing)
        return;
    int ev = UV_READABLE;
    if (c->outq_head)
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
            reply_error(c, 0, ZKN_E_MALFORMED, "frame truncated or carrying too many fds");
            conn_close(c);
            return;
        }
        if (n < 0) {
            conn_close(c);
            return;
        }
        if (nfds > 0) {
            zkn_close_fds(fds, nfds);
            reply_error(c, 0, ZKN_E_UNEXPECTED_FD, "clients may not send file descriptors");
            conn_close(c);
            return;
        }
        dispatch(c, frame, (size_t)n);
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

static void refuse_connection(struct server *s, int fd, uint32_t code, const char *text)
{
    char frame[sizeof(struct zkn_hdr) + sizeof(struct zkn_error) + 128];
    struct zkn_error e = {.code = code};
    size_t tl = strlen(text);
    zkn_hdr_init((struct zkn_hdr *)frame, ZKN_MSG_ERROR, (uint32_t)(sizeof e + tl), 0);
    memcpy(frame + sizeof(struct zkn_hdr), &e, sizeof e);
    memcpy(frame + sizeof(struct zkn_hdr) + sizeof e, text, tl);
    zkn_send_frame(fd, frame, sizeof(struct zkn_hdr) + sizeof e + tl, NULL, 0);
    if (code < POOL_REFUSAL_SLOTS)
        s->pool->refusals[code]++;
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
        if (s->nconns >= s->cfg->max_clients) {
            log_warn("connection from pid %d refused: %u connections open (--max-clients)",
                     (int)cred.pid, s->nconns);
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
        if (!p || uv_poll_init(s->loop, &c->watch, fd) != 0) {
            if (p)
                proc_detach(p);
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->srv = s;
        c->proc = p;
        c->watch.data = c;
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        s->accepted++;
        log_debug("client pid %d uid %u connected", (int)cred.pid, (unsigned)cred.uid);
        conn_update_events(c);
    }
}

/* ---- serving (socket setup and ownership: listen.c) ---- */

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
    for (struct conn *c = s->conns; c; c = c->next)
        conn_close(c);
    procs_shutdown(s);
}
