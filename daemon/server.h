/* The daemon's shared state: listening socket, connections, client processes. */
#ifndef ZKND_SERVER_H
#define ZKND_SERVER_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "backing.h"
#include "config.h"
#include "pool.h"
#include "region.h"

#define CONN_MAX_QUEUED_BYTES (1u << 20) /* replies queued for a slow reader */
#define CONN_FRAMES_PER_WAKEUP 32        /* fairness between connections */

struct outmsg;
struct server;

/* A client process: owns leases across its connections, watched by a pidfd. */
struct proc {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    int pidfd;            /* -1 where pidfd_open is unavailable */
    uv_poll_t pid_watch;
    int watch_open;       /* pid_watch initialised and not yet closed */
    int dead;
    uint32_t nconns;
    struct region_list leases;
    struct server *srv;
    struct proc *next;
};

struct conn {
    int fd;
    uv_poll_t watch;
    int closing;
    int hello_done;
    struct proc *proc;
    struct outmsg *outq_head, *outq_tail;
    size_t outq_bytes;
    struct server *srv;
    struct conn *prev, *next;
};

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct pool *pool;
    const struct backing *backing;
    int listen_fd;
    int own_socket_file;  /* we bound it, so we remove it */
    uv_poll_t listen_watch;
    int listen_open;
    struct conn *conns;
    uint32_t nconns;
    struct proc *procs;
    uint64_t accepted;
    uint64_t start_ms;
    int stopping;
};

/* Binds cfg->socket_path, or adopts listen_fd >= 0 (socket activation).
 * Refuses (-1, reported) when a live daemon already answers on the path;
 * replaces a stale socket file. */
int server_listen(struct server *s, int inherited_fd);
int server_start(struct server *s);
/* Closes every connection and the listener; leases die with their regions. */
void server_stop(struct server *s);

/* Closes a connection once its handle is done; safe to call twice. */
void conn_close(struct conn *c);

/* clients.c: processes and their leases */
struct proc *proc_attach(struct server *s, pid_t pid, uid_t uid, gid_t gid);
void proc_detach(struct proc *p); /* a connection of p closed */
void proc_add_lease(struct proc *p, struct region *r);
void proc_drop_lease(struct proc *p, struct region *r);
void proc_reclaim_all(struct proc *p);
void procs_shutdown(struct server *s);

/* stats.c: the STATS reply; malloc'd JSON text, NULL on failure. */
char *stats_json(const struct server *s, size_t max_len);

#endif
