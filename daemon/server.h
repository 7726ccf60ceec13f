/* The daemon's shared state: the listener, connections, client processes. */
#ifndef ZKND_SERVER_H
#define ZKND_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "backing.h"
#include "clients.h"
#include "config.h"
#include "conn.h"
#include "pool.h"

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct pool *pool;
    const struct backing *backing;
    int listen_fd;
    int own_socket_file;  /* we bound it, so we remove it */
    uv_poll_t listen_watch;
    int listen_open;
    struct conn_list conns;
    struct proc_list procs;
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

/* Starts accepting on listen_fd (bound by server_listen, listen.c). */
int server_start(struct server *s);
/* Closes every connection and the listener; leases die with their regions. */
void server_stop(struct server *s);

#endif
