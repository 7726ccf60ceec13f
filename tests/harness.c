/* The harness's daemon (start, stop, fixtures), NOTIFY_SOCKET, fd
 * accounting and small shared helpers (harness.h). */
#include "harness.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"


const char *zkn_test_build_path(const char *name)
{
    static char path[512];
    const char *dir = getenv("ZKN_BUILD_DIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "build", name);
    return path;
}

int zkn_test_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the DIR's own fd */
}


static int ping(const char *path)
{
    int s = zkn_test_connect(path);
    char buf[64];
    struct zkn_hdr hdr;
    int ok = 0;
    if (s < 0)
        return 0;
    if (zkn_test_send(s, ZKN_MSG_PING, 1, NULL, 0) == 0 &&
        zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 2000) >= (ssize_t)sizeof hdr) {
        memcpy(&hdr, buf, sizeof hdr);
        ok = hdr.type == ZKN_MSG_PONG;
    }
    close(s);
    return ok;
}

int zkn_test_wait_ping(const char *sock_path)
{
    for (int i = 0; i < 500; i++) {
        if (ping(sock_path))
            return 0;
        zkn_test_sleep_ms(10);
    }
    return -1;
}

int zkn_test_daemon_start_at(struct zkn_test_daemon *d, const char *sock,
                             const char *const *extra_args)
{
    const char *argv[64];
    int argc = 0;
    char bin[512];
    snprintf(bin, sizeof bin, "%s", zkn_test_build_path("zknallocd"));
    snprintf(d->sock, sizeof d->sock, "%s", sock);
    argv[argc++] = bin;
    argv[argc++] = "--socket";
    argv[argc++] = d->sock;
    for (int i = 0; extra_args && extra_args[i] && argc < 62; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    setenv("ZK_NALLOC_SOCKET", d->sock, 1);
    /* Suites that check where a block came from are not timing tests: a
     * loaded machine must not turn a slow answer into private memory. (The
     * never-wait suite sets the library's default back.) */
    setenv("ZK_NALLOC_DAEMON_WAIT_MS", "500", 0);

    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        if (!getenv("ZKN_TEST_DAEMON_VERBOSE")) {
            /* Keep test output readable; warnings still reach stderr. */
            setenv("ZK_NALLOC_LOG_LEVEL", "warn", 0);
        }
        execv(bin, (char *const *)argv);
        fprintf(stderr, "harness: exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        if (ping(d->sock))
            return 0;
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            fprintf(stderr, "harness: daemon exited early (status %d)\n", st);
            d->pid = -1;
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "harness: daemon did not answer on %s\n", d->sock);
    zkn_test_daemon_kill(d);
    return -1;
}

int zkn_test_daemon_start(struct zkn_test_daemon *d, const char *const *extra_args)
{
    char sock[192];
    snprintf(d->dir, sizeof d->dir, "/tmp/zkn-test-XXXXXX");
    if (!mkdtemp(d->dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/zkn.sock", d->dir);
    return zkn_test_daemon_start_at(d, sock, extra_args);
}

int zkn_test_daemon_stop(struct zkn_test_daemon *d)
{
    int st = -1;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    if (waitpid(d->pid, &st, 0) != d->pid)
        st = -1;
    d->pid = -1;
    return st;
}

void zkn_test_daemon_kill(struct zkn_test_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = -1;
}

void zkn_test_daemon_cleanup(struct zkn_test_daemon *d)
{
    if (d->dir[0]) {
        unlink(d->sock);
        rmdir(d->dir);
        d->dir[0] = '\0';
    }
}

void zkn_test_fill(void *p, size_t n, uint64_t seed)
{
    uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++)
        w[i] = seed ^ (i * 0x9e3779b97f4a7c15ull);
    for (size_t i = n / 8 * 8; i < n; i++)
        ((unsigned char *)p)[i] = (unsigned char)(seed + i);
}

int zkn_test_check_fill(const void *p, size_t n, uint64_t seed)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < n / 8; i++)
        if (w[i] != (seed ^ (i * 0x9e3779b97f4a7c15ull)))
            return 0;
    for (size_t i = n / 8 * 8; i < n; i++)
        if (((const unsigned char *)p)[i] != (unsigned char)(seed + i))
            return 0;
    return 1;
}

int zkn_test_all_byte(const void *p, size_t n, unsigned char v)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != v)
            return 0;
    return 1;
}

void zkn_test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

size_t zkn_test_read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap - 1 && (n = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    return got;
}

double zkn_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int zkn_test_daemon_wait_clean(const char *sock, uint64_t clean_bytes, int timeout_ms)
{
    for (double end = zkn_test_now_ms() + timeout_ms; zkn_test_now_ms() < end;) {
        char *json = zkn_test_stats_json(sock);
        const char *v = json ? strstr(json, "\"clean_bytes\":") : NULL;
        uint64_t clean = v ? strtoull(v + strlen("\"clean_bytes\":"), NULL, 10) : 0;
        free(json);
        if (v && clean >= clean_bytes)
            return 0;
        zkn_test_sleep_ms(20);
    }
    fprintf(stderr, "harness: %s never held %llu clean bytes\n", sock,
            (unsigned long long)clean_bytes);
    return -1;
}

static struct zkn_test_daemon *at_exit_[8];

static void kill_daemons_at_exit(void)
{
    for (size_t i = 0; i < sizeof at_exit_ / sizeof *at_exit_; i++) {
        struct zkn_test_daemon *d = at_exit_[i];
        if (!d)
            continue;
        if (d->pid > 0)
            kill(d->pid, SIGCONT);
        zkn_test_daemon_kill(d);
        zkn_test_daemon_cleanup(d);
    }
}

void zkn_test_daemon_kill_at_exit(struct zkn_test_daemon *d)
{
    static int registered;
    size_t free_slot = sizeof at_exit_ / sizeof *at_exit_;
    for (size_t i = 0; i < sizeof at_exit_ / sizeof *at_exit_; i++) {
        if (at_exit_[i] == d)
            return;
        if (!at_exit_[i] && free_slot == sizeof at_exit_ / sizeof *at_exit_)
            free_slot = i;
    }
    ck_assert_msg(free_slot < sizeof at_exit_ / sizeof *at_exit_, "too many daemons to kill");
    at_exit_[free_slot] = d;
    if (!registered++)
        atexit(kill_daemons_at_exit);
}

void zkn_test_daemon_up(struct zkn_test_daemon *d, const char *path, const char *const *args)
{
    int rc = path ? zkn_test_daemon_start_at(d, path, args) : zkn_test_daemon_start(d, args);
    ck_assert_msg(rc == 0, "cannot start zknallocd (%s)", zkn_test_build_path("zknallocd"));
    zkn_test_daemon_kill_at_exit(d);
}

void zkn_test_daemon_down(struct zkn_test_daemon *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGCONT);
        zkn_test_daemon_stop(d);
    }
    zkn_test_daemon_cleanup(d);
}


void zkn_test_notify_open(struct zkn_test_notify *n, int passcred)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int one = 1;
    snprintf(n->dir, sizeof n->dir, "/tmp/zkn-notify-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(n->dir));
    snprintf(n->path, sizeof n->path, "%s/notify", n->dir);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(n->fd, 0);
    if (passcred)
        ck_assert_int_eq(setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", n->path);
    ck_assert_int_eq(bind(n->fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", n->path, 1), 0);
}

void zkn_test_notify_close(struct zkn_test_notify *n)
{
    unsetenv("NOTIFY_SOCKET");
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
    if (n->path[0])
        unlink(n->path);
    if (n->dir[0])
        rmdir(n->dir);
    n->path[0] = n->dir[0] = '\0';
}

ssize_t zkn_test_notify_recv(struct zkn_test_notify *n, char *buf, size_t cap, int *fds,
                             size_t maxfds, size_t *nfds, pid_t *pid, int timeout_ms)
{
    union {
        char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                       .msg_controllen = sizeof ctl.b};
    struct pollfd p = {.fd = n->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t len = recvmsg(n->fd, &m, MSG_CMSG_CLOEXEC);
    ck_assert_msg(len >= 0, "notify socket: %s", strerror(errno));
    ck_assert_int_eq(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC), 0);
    buf[len] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && pid) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof u);
            *pid = u.pid;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (!fds) {
                    close(fd);
                    continue;
                }
                ck_assert_uint_lt(*nfds, maxfds);
                fds[(*nfds)++] = fd;
            }
        }
    }
    return len;
}

