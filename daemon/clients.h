/* Client processes and their leases (see clients.c). */
#ifndef ZKND_CLIENTS_H
#define ZKND_CLIENTS_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "list.h"
#include "region.h"

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
    LIST_LINK(struct proc) link; /* in the server's procs */
};

struct proc_list {
    struct proc *head, *tail;
};

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
/* Processes not known to have exited. */
uint32_t procs_live(const struct proc_list *l);

#endif
