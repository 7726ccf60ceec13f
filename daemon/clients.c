/* Client processes and their leases. A lease belongs to the process, not the
 * connection: a client that reconnects keeps them, and they come back only
 * when a pidfd says the process is gone, since a process may hold a region
 * mapped after its socket closed. The pidfd comes from the socket
 * (SO_PEERPIDFD), so a client in another pid namespace, whose pid reads as 0,
 * is still known; its inode on pidfs names the process. */
#include "clients.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "server.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef PIDFS_MAGIC
#define PIDFS_MAGIC 0x50494446
#endif

/* Tests only: act as if no pidfd could be had (see zknallocd(8)). */
static int no_pidfd_for_tests(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = config_env("ZK_NALLOC_TEST_NO_PIDFD", "ZKND_TEST_NO_PIDFD", NULL);
        v = e && strcmp(e, "1") == 0;
    }
    return v;
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int peer_pidfd(int sock, pid_t pid)
{
    if (no_pidfd_for_tests())
        return -ENOSYS;
    int fd = -1;
    socklen_t len = sizeof fd;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0)
        return fd; /* the kernel makes it close-on-exec */
    if (errno == EMFILE || errno == ENFILE)
        return -errno;
    if (pid <= 0)
        return -ENOENT; /* no pid to look up */
    fd = open_pidfd(pid);
    return fd >= 0 ? fd : -errno;
}

static void proc_maybe_free(struct proc *p)
{
    if (!p->dead || p->nconns > 0 || p->watch_open)
        return;
    list_remove(&p->srv->procs, p, link);
    if (p->pidfd >= 0)
        close(p->pidfd);
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

/* Every lease comes back: to the pool when the holder is known to be gone,
 * forgotten (never zeroed or lent again) when it may still map them. */
static uint64_t proc_end_leases(struct proc *p, int forget)
{
    struct region *r;
    uint64_t n = 0;
    while ((r = rlist_pop(&p->leases))) {
        r->holder = NULL;
        if (forget) {
            pool_forget(p->srv->pool, r);
        } else {
            pool_count_reclaimed(p->srv->pool);
            pool_give_back(p->srv->pool, r);
        }
        n++;
    }
    return n;
}

static void proc_close_conns_and_watch(struct proc *p)
{
    conns_close(&p->srv->conns, p);
    if (p->watch_open && !uv_is_closing((uv_handle_t *)&p->pid_watch))
        uv_close((uv_handle_t *)&p->pid_watch, on_watch_closed);
}

/* The process exited: every lease comes back, its connections (perhaps held
 * by a child that inherited the socket) are closed. */
static void proc_died(struct proc *p)
{
    if (p->dead)
        return;
    p->dead = 1;
    uint64_t n = proc_end_leases(p, 0);
    if (n)
        log_info("client pid %d (uid %u) is gone: %llu leases reclaimed", (int)p->pid,
                 (unsigned)p->uid, (unsigned long long)n);
    proc_close_conns_and_watch(p);
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

/* A pidfd's inode names its process only on pidfs (Linux 6.9+); older
 * kernels give every pidfd the same anonymous inode. */
static int pidfd_identity(int pidfd, dev_t *dev, ino_t *ino)
{
    struct statfs sf;
    struct stat st;
    if (fstatfs(pidfd, &sf) < 0 || sf.f_type != PIDFS_MAGIC || fstat(pidfd, &st) < 0)
        return 0;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 1;
}

struct proc *proc_attach(struct server *s, const struct ucred *cred, int pidfd)
{
    dev_t dev = 0;
    ino_t ino = 0;
    int has_ino = pidfd >= 0 && pidfd_identity(pidfd, &dev, &ino);
    struct proc *p;
    for (p = s->procs.head; pidfd >= 0 && p; p = p->link.next) {
        if (p->dead || p->pidfd < 0 || p->uid != cred->uid || p->has_ino != has_ino)
            continue;
        if (has_ino ? p->pidfs_dev != dev || p->pidfs_ino != ino
                    : cred->pid <= 0 || p->pid != cred->pid)
            continue;
        if (!has_ino && pidfd_says_exited(p->pidfd)) {
            proc_died(p); /* pid reused before we saw the exit */
            break;
        }
        close(pidfd);
        p->nconns++;
        return p;
    }
    if (pidfd >= 0 && pidfd_says_exited(pidfd)) { /* already gone */
        close(pidfd);
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
        if (pidfd >= 0)
            close(pidfd);
        return NULL;
    }
    p->pid = cred->pid;
    p->uid = cred->uid;
    p->gid = cred->gid;
    p->srv = s;
    p->pidfd = pidfd;
    p->pidfs_dev = dev;
    p->pidfs_ino = ino;
    p->has_ino = has_ino;
    if (pidfd >= 0 && uv_poll_init(s->loop, &p->pid_watch, pidfd) == 0) {
        p->pid_watch.data = p;
        p->watch_open = 1;
        uv_poll_start(&p->pid_watch, UV_READABLE, on_pid_event);
    } else if (pidfd >= 0) {
        close(pidfd);
        p->pidfd = -1;
    }
    if (p->pidfd < 0) {
        static int warned;
        if (!warned++)
            log_warn("no pidfd for client pid %d (uid %u): while it is connected its leases "
                     "are its own; when they come back they are let go of, never lent again",
                     (int)cred->pid, (unsigned)cred->uid);
    }
    p->nconns = 1;
    list_push_head(&s->procs, p, link);
    return p;
}

void proc_detach(struct proc *p)
{
    p->nconns--;
    if (p->nconns == 0 && p->pidfd < 0 && !p->watch_open && !p->dead) {
        /* Liveness unknown: it may map its leases still, so none is reused. */
        p->dead = 1;
        uint64_t n = proc_end_leases(p, 1);
        if (n)
            log_info("client pid %d (uid %u) closed its last connection; it may live on, "
                     "so its %llu leases are let go of, not reused",
                     (int)p->pid, (unsigned)p->uid, (unsigned long long)n);
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

void proc_release_lease(struct proc *p, struct region *r)
{
    proc_drop_lease(p, r);
    if (p->pidfd < 0)
        pool_forget(p->srv->pool, r);
    else
        pool_give_back(p->srv->pool, r);
}

void procs_shutdown(struct server *s)
{
    uint64_t kept = 0, holders = 0;
    struct proc *p, *next;
    list_for_each_safe(p, next, &s->procs, link) {
        if (p->dead)
            continue;
        if (p->pidfd >= 0 && pidfd_says_exited(p->pidfd)) {
            proc_died(p);
            continue;
        }
        /* Alive, or cannot tell: the memory stays with the process. */
        p->dead = 1;
        uint64_t n = proc_end_leases(p, 1);
        kept += n;
        holders += n > 0;
        proc_close_conns_and_watch(p);
        proc_maybe_free(p);
    }
    if (kept)
        log_info("%llu leases stay with the %llu live clients that hold them",
                 (unsigned long long)kept, (unsigned long long)holders);
}

uint32_t procs_live(const struct proc_list *l)
{
    uint32_t n = 0;
    const struct proc *p;
    list_for_each(p, l, link)
        n += !p->dead;
    return n;
}
