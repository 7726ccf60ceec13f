/* The daemon's shared state: listening socket, connections, client processes. */
#ifndef ZKND_SERVER_H
#define ZKND_SERVER_H

#include <stdint.h>
#include <sys/socket.h>
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

/* A client process: owns leases across its connections, watched by a pidfd.
 * Identified by its pidfd's inode where pidfs gives one (the pid reads as 0
 * across pid namespaces), else by pid. Without any pidfd its liveness cannot
 * be known: it gets a record of its own and its leases are forgotten, never
 * reused, when they come back. */
struct proc {
    pid_t pid;            /* as SO_PEERCRED says: 0 from another pid namespace */
    uid_t uid;
    gid_t gid;
    int pidfd;            /* -1: liveness unknown */
    dev_t pidfs_dev;      /* identity when has_ino */
    ino_t pidfs_ino;
    int has_ino;
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
    /* Out of fds: a spare fd lets us accept and refuse a newcomer, then the
     * listener rests for accept_backoff_ms instead of spinning. */
    int reserve_fd;
    uv_timer_t accept_timer;
    int accept_timer_open;
    uint64_t accept_backoff_ms;
    int fd_exhausted;          /* an episode is on: logged once */
    uint64_t accept_exhausted; /* connections refused for want of fds */
};

int server_start(struct server *s);
/* Closes every connection and the listener; leases die with their regions. */
void server_stop(struct server *s);

/* Closes a connection once its handle is done; safe to call twice. */
void conn_close(struct conn *c);

/* clients.c: processes and their leases */
/* Finds or makes the record of the peer; takes pidfd (may be -1). NULL when
 * the process is already gone or out of memory. */
struct proc *proc_attach(struct server *s, const struct ucred *cred, int pidfd);
/* The peer's pidfd from the socket (SO_PEERPIDFD), else pidfd_open(pid):
 * >= 0, or -errno (EMFILE/ENFILE: out of fds). */
int peer_pidfd(int sock, pid_t pid);
void proc_detach(struct proc *p); /* a connection of p closed */
void proc_add_lease(struct proc *p, struct region *r);
void proc_drop_lease(struct proc *p, struct region *r);
/* A lease ends (RETURN): pooled, or forgotten when p's liveness is unknown. */
void proc_release_lease(struct proc *p, struct region *r);
/* At shutdown: leases of live processes stay theirs (the daemon only drops
 * its own mapping and fd); those of exited ones come back to the pool. */
void procs_shutdown(struct server *s);

/* stats.c: the STATS reply; malloc'd JSON text, NULL on failure. Per-client
 * details are those of the asking uid only, unless it is root or ours. */
char *stats_json(const struct server *s, size_t max_len, uid_t asker);

#endif
