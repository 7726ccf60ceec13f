/* Client processes and their leases. A lease belongs to the process (pid from
 * SO_PEERCRED), not the connection: a client that reconnects keeps them, and
 * they come back only when a pidfd says the process is gone, since a process
 * may hold a region mapped after its socket closed. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "server.h"

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static void proc_maybe_free(struct proc *p)
{
    if (!p->dead || p->nconns > 0 || p->watch_open)
        return;
    struct proc **pp = &p->srv->procs;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    free(p);
}

static void on_watch_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
    p->watch_open = 0;
    proc_maybe_free(p);
}

void proc_reclaim_all(struct proc *p)
{
    struct region *r;
    uint64_t n = 0;
    while ((r = rlist_pop(&p->leases))) {
        p->srv->pool->reclaimed++;
        pool_give_back(p->srv->pool, r);
        n++;
    }
    if (n)
        log_info("client pid %d (uid %u) is gone: %llu leases reclaimed", (int)p->pid,
                 (unsigned)p->uid, (unsigned long long)n);
}

/* The process exited: every lease comes back, its connections (perhaps held
 * by a child that inherited the socket) are closed. */
static void proc_died(struct proc *p)
{
    if (p->dead)
        return;
    p->dead = 1;
    proc_reclaim_all(p);
    for (struct conn *c = p->srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->proc == p)
            conn_close(c);
    }
    if (p->watch_open && !uv_is_closing((uv_handle_t *)&p->pid_watch))
        uv_close((uv_handle_t *)&p->pid_watch, on_watch_closed);
    proc_maybe_free(p);
}

static void on_pid_event(uv_poll_t *w, int status, int events)
{
    (void)status;
    (void)events;
    proc_died(w->data);
}

static int pidfd_says_exited(int pidfd)
{
    struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

struct proc *proc_attach(struct server *s, pid_t pid, uid_t uid, gid_t gid)
{
    struct proc *p;
    for (p = s->procs; p; p = p->next) {
        if (p->dead || p->pid != pid || p->uid != uid)
            continue;
        if (p->pidfd >= 0 && pidfd_says_exited(p->pidfd)) {
            proc_died(p); /* pid reused before we saw the exit */
            break;
        }
        p->nconns++;
        return p;
    }
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pid = pid;
    p->uid = uid;
    p->gid = gid;
    p->srv = s;
    p->pidfd = open_pidfd(pid);
    if (p->pidfd < 0) {
        if (errno == ESRCH) { /* already gone */
            free(p);
            return NULL;
        }
        static int warned;
        if (!warned++)
            log_warn("pidfd_open: %s; leases come back when a client's last connection "
                     "closes instead of when it exits",
                     strerror(errno));
    } else if (uv_poll_init(s->loop, &p->pid_watch, p->pidfd) == 0) {
        p->pid_watch.data = p;
        p->watch_open = 1;
        uv_poll_start(&p->pid_watch, UV_READABLE, on_pid_event);
    } else {
        close(p->pidfd);
        p->pidfd = -1;
    }
    p->nconns = 1;
    p->next = s->procs;
    s->procs = p;
    return p;
}

void proc_detach(struct proc *p)
{
    p->nconns--;
    if (p->nconns == 0 && p->pidfd < 0 && !p->watch_open && !p->dead) {
        /* No pidfd: the last connection's end is the best sign we have. */
        p->dead = 1;
        proc_reclaim_all(p);
    }
    proc_maybe_free(p);
}

void proc_add_lease(struct proc *p, struct region *r)
{
    r->holder = p;
    rlist_push(&p->leases, r);
}

void proc_drop_lease(struct proc *p, struct region *r)
{
    rlist_remove(&p->leases, r);
    r->holder = NULL;
}

void procs_shutdown(struct server *s)
{
    for (struct proc *p = s->procs, *next; p; p = next) {
        next = p->next;
        proc_died(p);
    }
}
