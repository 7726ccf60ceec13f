/* One client connection: framing, the send queue, its life (see conn.c). */
#ifndef ZKND_CONN_H
#define ZKND_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"

#define CONN_MAX_QUEUED_BYTES (1u << 20) /* replies queued for a slow reader */
#define CONN_FRAMES_PER_WAKEUP 32        /* fairness between connections */

struct outmsg;
struct proc;
struct server;
struct conn;

/* What the owner does with a connection. Through these, not by name, so
 * handlers.c and clients.c may call conn.c without an import loop. */
struct conn_hooks {
    void (*on_frame)(struct conn *c, const char *frame, size_t len);
    void (*on_closed)(struct conn *c); /* just before c is freed */
};

struct conn {
    int fd;
    uv_poll_t watch;
    int closing;
    int hello_done;
    struct proc *proc;
    LIST_OF(struct outmsg) outq;
    size_t outq_bytes;
    struct server *srv;
    const struct conn_hooks *hooks;
    struct conn_list *list;
    LIST_LINK(struct conn) link;
};

struct conn_list {
    struct conn *head, *tail;
    uint32_t count;
};

/* Starts serving fd on c (zeroed memory) and adds it to l: 0, or -1 when
 * the loop cannot watch fd (c is untouched, fd still the caller's). */
int conn_open(struct conn *c, struct conn_list *l, struct server *s, struct proc *p, int fd,
              const struct conn_hooks *hooks);

/* Closes a connection once its handle is done; safe to call twice. */
void conn_close(struct conn *c);
/* Closes every connection in l (of p only, when p is not NULL). */
void conns_close(struct conn_list *l, const struct proc *p);

/* Sends one reply frame; queued when the peer is slow. fds are duplicated. */
void conn_reply(struct conn *c, uint16_t type, uint32_t req, const void *payload, size_t len,
                const int *fds, size_t nfds);
/* An ERROR reply, counted as a refusal of its code. */
void conn_reply_error(struct conn *c, uint32_t req, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
