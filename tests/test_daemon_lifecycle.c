/* The daemon's side of a lease's life: what stopping, restarting through the
 * fd store, pid namespaces, running out of fds and STATS do to live clients.
 * Invariant: a region's bytes change only through the process holding it;
 * the daemon reuses a region only once no live process can reach it, and
 * never shows one uid another uid's bytes. Several cases need root (CI is). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "wire.h"

#define KIB64 65536u
#define MAX_STORED 64
#define NOBODY 65534

#define NEED_ROOT()                                                                    \
    do {                                                                               \
        if (geteuid() != 0) {                                                          \
            fprintf(stderr, "%s: needs root; skipped\n", __func__);                    \
            return;                                                                    \
        }                                                                              \
    } while (0)

/* ---- a fake service manager: NOTIFY_SOCKET and an fd store that behaves like
 * systemd's (an fd already stored keeps its first name; FDSTOREREMOVE drops
 * every fd of a name) ---- */

struct store {
    int sock;
    char dir[64], path[96];
    int fds[MAX_STORED];
    char names[MAX_STORED][128];
    size_t n;
    char removed[MAX_STORED][128];
    size_t nremoved;
    size_t received; /* fds sent with FDSTORE=1, duplicates included */
    ino_t received_ino[MAX_STORED];
};

static void store_open(struct store *st)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memset(st, 0, sizeof *st);
    snprintf(st->dir, sizeof st->dir, "/tmp/zkn-store-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(st->dir));
    snprintf(st->path, sizeof st->path, "%s/notify", st->dir);
    st->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(st->sock, 0);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", st->path);
    ck_assert_int_eq(bind(st->sock, (struct sockaddr *)&a, sizeof a), 0);
    setenv("NOTIFY_SOCKET", st->path, 1);
}

static void store_close(struct store *st)
{
    unsetenv("NOTIFY_SOCKET");
    zkn_close_fds(st->fds, st->n);
    close(st->sock);
    unlink(st->path);
    rmdir(st->dir);
}

static const char *field(const char *buf, const char *key, char *out, size_t cap)
{
    const char *v = strstr(buf, key);
    if (!v)
        return NULL;
    v += strlen(key);
    size_t len = strcspn(v, "\n");
    snprintf(out, cap, "%.*s", (int)len, v);
    return out;
}

static int same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Reads datagrams until none comes for timeout_ms. */
static void store_drain(struct store *st, int timeout_ms)
{
    char buf[4096], name[128];
    struct pollfd p = {.fd = st->sock, .events = POLLIN};
    while (poll(&p, 1, timeout_ms) > 0) {
        union {
            char b[CMSG_SPACE(sizeof(int) * 16)];
            struct cmsghdr align;
        } ctl;
        int got[16];
        size_t ngot = 0;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                           .msg_controllen = sizeof ctl.b};
        ssize_t n = recvmsg(st->sock, &m, MSG_CMSG_CLOEXEC);
        ck_assert_int_ge(n, 0);
        buf[n] = '\0';
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && ngot < 16; i++)
                    memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        int has_name = field(buf, "FDNAME=", name, sizeof name) != NULL;
        if (strstr(buf, "FDSTOREREMOVE=1") && has_name) {
            ck_assert_uint_lt(st->nremoved, MAX_STORED);
            snprintf(st->removed[st->nremoved++], sizeof st->removed[0], "%s", name);
            for (size_t i = 0; i < st->n;) {
                if (strcmp(st->names[i], name) == 0) {
                    close(st->fds[i]);
                    st->fds[i] = st->fds[st->n - 1];
                    memcpy(st->names[i], st->names[st->n - 1], sizeof st->names[0]);
                    st->n--;
                } else {
                    i++;
                }
            }
        } else if (strstr(buf, "FDSTORE=1")) {
            for (size_t k = 0; k < ngot; k++) {
                struct stat sb;
                ck_assert_int_eq(fstat(got[k], &sb), 0);
                if (st->received < MAX_STORED)
                    st->received_ino[st->received++] = sb.st_ino;
                int dup = 0;
                for (size_t i = 0; i < st->n && !dup; i++)
                    dup = same_file(st->fds[i], got[k]);
                if (dup || st->n >= MAX_STORED) {
                    close(got[k]);
                    continue;
                }
                st->fds[st->n] = got[k];
                snprintf(st->names[st->n++], sizeof st->names[0], "%s", has_name ? name : "stored");
            }
            continue;
        }
        zkn_close_fds(got, ngot);
    }
}

/* ---- starting the daemon in various situations ---- */

struct spawn {
    const char *sock;
    const char *const *args;
    const struct store *store; /* its fds become LISTEN_FDS */
    int nofile;                /* RLIMIT_NOFILE soft and hard; 0: as is */
    int new_pidns;             /* the daemon in a pid namespace of its own */
    const char *log_path;      /* stderr there */
    const char *log_level;
    const char *knob;          /* an extra NAME=VALUE in the environment */
};

struct spawned {
    pid_t pid;  /* to signal */
    pid_t reap; /* to wait for */
};

static void exec_daemon(const struct spawn *sp)
{
    const char *argv[32];
    int argc = 0;
    argv[argc++] = zkn_test_build_path("zknallocd");
    argv[argc++] = "--socket";
    argv[argc++] = sp->sock;
    for (int i = 0; sp->args && sp->args[i] && argc < 30; i++)
        argv[argc++] = sp->args[i];
    argv[argc] = NULL;
    if (sp->log_path) {
        int fd = open(sp->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
    }
    setenv("ZKN_LOG_LEVEL", sp->log_level ? sp->log_level : "warn", 1);
    if (sp->knob)
        putenv((char *)sp->knob);
    if (sp->store && sp->store->n) {
        char names[MAX_STORED * 130] = "", num[32];
        int high[MAX_STORED];
        for (size_t i = 0; i < sp->store->n; i++) {
            high[i] = fcntl(sp->store->fds[i], F_DUPFD, 200);
            if (i)
                strcat(names, ":");
            strcat(names, sp->store->names[i]);
        }
        for (size_t i = 0; i < sp->store->n; i++) {
            dup2(high[i], 3 + (int)i); /* clears close-on-exec */
            close(high[i]);
        }
        snprintf(num, sizeof num, "%zu", sp->store->n);
        setenv("LISTEN_FDS", num, 1);
        snprintf(num, sizeof num, "%d", (int)getpid());
        setenv("LISTEN_PID", num, 1);
        setenv("LISTEN_FDNAMES", names, 1);
    }
    if (sp->nofile) {
        struct rlimit rl = {(rlim_t)sp->nofile, (rlim_t)sp->nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            _exit(126);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static int wait_ping(const char *sock)
{
    for (int i = 0; i < 500; i++) {
        int s = zkn_test_connect(sock);
        if (s >= 0) {
            char buf[64];
            int ok = zkn_test_send(s, ZKN_MSG_PING, 1, NULL, 0) == 0 &&
                     zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 1000) > 0;
            close(s);
            if (ok)
                return 0;
        }
        usleep(10000);
    }
    return -1;
}

static struct spawned spawn_daemon(const struct spawn *sp)
{
    struct spawned d = {-1, -1};
    int pfd[2];
    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(pfd[0]);
        if (!sp->new_pidns)
            exec_daemon(sp);
        if (unshare(CLONE_NEWPID) < 0)
            _exit(125);
        pid_t inner = fork();
        if (inner == 0)
            exec_daemon(sp); /* pid 1 of the new namespace */
        if (inner < 0 || write(pfd[1], &inner, sizeof inner) != sizeof inner)
            _exit(125);
        int st = 0;
        waitpid(inner, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    close(pfd[1]);
    d.pid = d.reap = child;
    if (sp->new_pidns)
        ck_assert_int_eq(read(pfd[0], &d.pid, sizeof d.pid), (ssize_t)sizeof d.pid);
    close(pfd[0]);
    ck_assert_int_eq(wait_ping(sp->sock), 0);
    return d;
}

static int stop_daemon(struct spawned *d)
{
    int st = -1;
    kill(d->pid, SIGTERM);
    waitpid(d->reap, &st, 0);
    return st;
}

struct tmp {
    char dir[64], sock[96], log[96];
};

static void tmp_make(struct tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/zkn-life-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    ck_assert_int_eq(chmod(t->dir, 0755), 0); /* uid 65534 connects too */
    snprintf(t->sock, sizeof t->sock, "%s/s", t->dir);
    snprintf(t->log, sizeof t->log, "%s/log", t->dir);
}

static void tmp_remove(struct tmp *t)
{
    unlink(t->sock);
    unlink(t->log);
    rmdir(t->dir);
}

static json_t *stats(const char *sock)
{
    char *text = zkn_test_stats_json(sock);
    ck_assert_ptr_nonnull(text);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    ck_assert_ptr_nonnull(j);
    return j;
}

static json_int_t stat_value(const char *sock, const char *section, const char *key)
{
    json_t *j = stats(sock);
    json_int_t v = json_integer_value(json_object_get(json_object_get(j, section), key));
    json_decref(j);
    return v;
}

static void wait_value(const char *sock, const char *section, const char *key, json_int_t want)
{
    for (int i = 0; i < 500 && stat_value(sock, section, key) != want; i++)
        usleep(10000);
    ck_assert_int_eq(stat_value(sock, section, key), want);
}

static char *fill_region(int fd, uint64_t size, int byte)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    memset(p, byte, size);
    return p;
}

static int all_bytes(const char *p, uint64_t size, int byte)
{
    for (uint64_t i = 0; i < size; i++)
        if (p[i] != (char)byte)
            return 0;
    return 1;
}

static ino_t ino_of(int fd)
{
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    return sb.st_ino;
}

static int count_memfds(pid_t pid)
{
    char path[64], link[256];
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len < 0)
            continue;
        link[len] = '\0';
        n += strncmp(link, "/memfd:", 7) == 0;
    }
    return n;
}

/* The daemon's open fds, once they stop changing (closes are asynchronous). */
static int count_fds_settled(pid_t pid)
{
    char path[64];
    int last = -1, n = -2;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    for (int i = 0; i < 100 && n != last; i++) {
        last = n;
        usleep(20 * 1000);
        DIR *d = opendir(path);
        ck_assert_ptr_nonnull(d);
        n = 0;
        while (readdir(d))
            n++;
        closedir(d);
    }
    return n;
}

static char *read_file(const char *path)
{
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? 0 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* ---- 1: stopping the daemon leaves live clients' memory alone ---- */

START_TEST(stop_keeps_live_leases)
{
    struct tmp t;
    struct store st;
    tmp_make(&t);
    store_open(&st);
    const char *args[] = {"--prewarm", "64K=2", NULL};
    struct spawn sp = {.sock = t.sock, .args = args, .log_path = t.log, .log_level = "info"};
    struct spawned d = spawn_daemon(&sp);
    wait_value(t.sock, "pool", "clean_bytes", 2 * KIB64);

    int s = zkn_test_connect(t.sock);
    struct zkn_region_desc desc;
    int fd;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    char *p = fill_region(fd, desc.size, 0x5a);
    ino_t lent = ino_of(fd);

    ck_assert_int_eq(stop_daemon(&d), 0);
    store_drain(&st, 300);
    ck_assert_msg(all_bytes(p, desc.size, 0x5a), "stopping the daemon changed a live lease");
    /* The idle region is stored, the lent one is not. */
    ck_assert_uint_eq(st.received, 1);
    for (size_t i = 0; i < st.received; i++)
        ck_assert_msg(st.received_ino[i] != lent, "a lent region went to the fd store");
    ck_assert_ptr_null(strstr(read_file(t.log), "is gone"));
    munmap(p, desc.size);
    close(fd);
    close(s);
    store_close(&st);
    tmp_remove(&t);
}
END_TEST

/* ---- 2: the fd store ---- */

static void trim_all(const char *sock)
{
    int s = zkn_test_connect(sock);
    struct zkn_trim tr = {.target_bytes = 0};
    char buf[256];
    struct zkn_hdr h;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_TRIM, 5, &tr, sizeof tr), 0);
    ck_assert_int_ge(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000), (ssize_t)sizeof h);
    memcpy(&h, buf, sizeof h);
    ck_assert_uint_eq(h.type, ZKN_MSG_TRIM_OK);
    close(s);
}

START_TEST(fdstore_names_unique_removed_and_trimmed)
{
    NEED_ROOT();
    struct tmp t;
    struct store st;
    tmp_make(&t);
    store_open(&st);
    const char *args[] = {"--prewarm", "64K=3", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = spawn_daemon(&sp);
    wait_value(t.sock, "pool", "clean_bytes", 3 * KIB64);
    ck_assert_int_eq(stop_daemon(&d), 0);
    store_drain(&st, 300);
    ck_assert_uint_eq(st.received, 3);
    ck_assert_msg(st.n == 3, "3 regions stored under %zu distinct names", st.n);
    for (size_t i = 0; i < st.n; i++)
        for (size_t k = i + 1; k < st.n; k++)
            ck_assert_str_ne(st.names[i], st.names[k]);
    char names[3][128];
    memcpy(names, st.names, sizeof names);

    /* Restored: the manager is told to drop each copy; prewarm counts them. */
    sp.store = &st;
    d = spawn_daemon(&sp);
    store_drain(&st, 300);
    ck_assert_int_eq(stat_value(t.sock, "totals", "restored"), 3);
    ck_assert_uint_eq(st.nremoved, 3);
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (size_t k = 0; k < st.nremoved; k++)
            found |= strcmp(st.removed[k], names[i]) == 0;
        ck_assert_msg(found, "no FDSTOREREMOVE for %s", names[i]);
    }
    ck_assert_uint_eq(st.n, 0);
    wait_value(t.sock, "pool", "clean_bytes", 3 * KIB64);
    ck_assert_int_eq(stat_value(t.sock, "totals", "created"), 0);

    /* Trim leaves nothing: not in the daemon, not in the manager. */
    trim_all(t.sock);
    ck_assert_int_eq(stat_value(t.sock, "pool", "idle_bytes"), 0);
    ck_assert_int_eq(stat_value(t.sock, "pool", "regions"), 0);
    ck_assert_int_eq(count_memfds(d.pid), 0);
    store_drain(&st, 100);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_int_eq(stop_daemon(&d), 0);
    store_close(&st);
    tmp_remove(&t);
}
END_TEST

/* As uid 65534: LEND one 64 KiB region; exit 0 when it is not the file
 * `forbidden` and no byte is `byte`, 1 when it is, 2 on failure. */
static int lend_as_nobody_sees(const char *sock, int byte, ino_t forbidden)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
            _exit(2);
        int s = zkn_test_connect(sock), fd;
        struct zkn_region_desc desc;
        if (s < 0 || zkn_test_hello(s, NULL) < 0 || zkn_test_lend(s, 0, 1, 0, &desc, &fd) != 1)
            _exit(2);
        char *p = mmap(NULL, desc.size, PROT_READ, MAP_SHARED, fd, 0);
        struct stat sb;
        if (p == MAP_FAILED || fstat(fd, &sb) < 0)
            _exit(2);
        if (sb.st_ino == forbidden)
            _exit(1);
        for (uint64_t i = 0; i < desc.size; i++)
            if (p[i] == (char)byte)
                _exit(1);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}

START_TEST(fdstore_never_crosses_uids)
{
    NEED_ROOT();
    struct tmp t;
    struct store st;
    tmp_make(&t);
    store_open(&st);
    const char *args[] = {"--prewarm", "64K=1", "--socket-mode", "0666", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = spawn_daemon(&sp);
    wait_value(t.sock, "pool", "clean_bytes", KIB64);
    ck_assert_int_eq(stop_daemon(&d), 0);
    store_drain(&st, 300);
    ck_assert_uint_eq(st.n, 1);

    /* Instance 2: root takes the restored region and writes to it. */
    const char *args2[] = {"--socket-mode", "0666", NULL};
    sp.args = args2;
    sp.store = &st;
    d = spawn_daemon(&sp);
    store_drain(&st, 300);
    int s = zkn_test_connect(t.sock), fd;
    struct zkn_region_desc desc;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    ck_assert_int_eq(stat_value(t.sock, "totals", "created"), 0); /* the restored one */
    char *p = fill_region(fd, desc.size, 0xa5);
    ck_assert_int_eq(stop_daemon(&d), 0);
    close(s);
    store_drain(&st, 300);

    /* Instance 3: uid 65534 must never see root's bytes. */
    d = spawn_daemon(&sp);
    store_drain(&st, 300);
    ck_assert_int_eq(lend_as_nobody_sees(t.sock, 0xa5, ino_of(fd)), 0);
    ck_assert(all_bytes(p, desc.size, 0xa5));
    ck_assert_int_eq(stop_daemon(&d), 0);
    munmap(p, desc.size);
    close(fd);
    store_close(&st);
    tmp_remove(&t);
}
END_TEST

/* ---- 3: identity from the socket's pidfd ---- */

/* A child that LENDs, fills, closes its connection and lives on until told.
 * Returns its pid; *ino: the region's inode; *go: write a byte to let it
 * check its bytes and exit (status 0 when intact). */
static pid_t holder_start(const char *sock, ino_t *ino, int *go)
{
    int up[2], down[2];
    ck_assert_int_eq(pipe(up), 0);
    ck_assert_int_eq(pipe(down), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        int s = zkn_test_connect(sock), fd;
        struct zkn_region_desc desc;
        if (s < 0 || zkn_test_hello(s, NULL) < 0 || zkn_test_lend(s, 0, 1, 0, &desc, &fd) != 1)
            _exit(2);
        char *p = mmap(NULL, desc.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            _exit(2);
        memset(p, 0x77, desc.size);
        struct stat sb;
        fstat(fd, &sb);
        close(fd);
        close(s); /* as the library does on a timeout: the process lives on */
        if (write(up[1], &sb.st_ino, sizeof sb.st_ino) != sizeof sb.st_ino)
            _exit(2);
        char c;
        if (read(down[0], &c, 1) != 1)
            _exit(2);
        _exit(all_bytes(p, desc.size, 0x77) ? 0 : 1);
    }
    close(up[1]);
    close(down[0]);
    ck_assert_int_eq(read(up[0], ino, sizeof *ino), (ssize_t)sizeof *ino);
    close(up[0]);
    *go = down[1];
    return pid;
}

static int holder_finish(pid_t pid, int go)
{
    int st;
    ck_assert_int_eq(write(go, "g", 1), 1);
    close(go);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}

/* Another process LENDs a few regions: none may be the holder's. */
static void others_never_get(const char *sock, ino_t ino)
{
    int s = zkn_test_connect(sock), fds[4];
    struct zkn_region_desc desc[4];
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc[i], &fds[i]), 1);
        ck_assert_msg(ino_of(fds[i]) != ino, "the holder's region was lent again");
    }
    zkn_close_fds(fds, 4);
    close(s);
}

START_TEST(pidns_client_keeps_leases)
{
    NEED_ROOT();
    struct tmp t;
    tmp_make(&t);
    /* In its own pid namespace the daemon reads pid 0 for every client here. */
    struct spawn sp = {.sock = t.sock, .new_pidns = 1};
    struct spawned d = spawn_daemon(&sp);
    int base = count_fds_settled(d.pid);
    ino_t ino;
    int go;
    pid_t holder = holder_start(t.sock, &ino, &go);
    usleep(200 * 1000); /* the daemon sees the close */
    others_never_get(t.sock, ino);
    /* Two processes, two records, though both read as pid 0. */
    json_t *j = stats(t.sock);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "clients")), 2);
    json_decref(j);
    ck_assert_int_eq(holder_finish(holder, go), 0);
    /* The holder is gone: its lease comes back. */
    wait_value(t.sock, "totals", "reclaimed", 1);
    /* The holder's record and pidfd are gone; what remains beyond the start
     * is one fd per region (this process's leases, the holder's pooled one). */
    int regions = (int)stat_value(t.sock, "pool", "regions");
    ck_assert_int_eq(count_fds_settled(d.pid), base + regions);
    ck_assert_int_eq(stop_daemon(&d), 0);
    tmp_remove(&t);
}
END_TEST

START_TEST(no_pidfd_forgets_instead_of_reusing)
{
    struct tmp t;
    tmp_make(&t);
    struct spawn sp = {.sock = t.sock, .knob = "ZKND_TEST_NO_PIDFD=1", .log_path = t.log};
    struct spawned d = spawn_daemon(&sp);
    ino_t ino;
    int go;
    pid_t holder = holder_start(t.sock, &ino, &go);
    wait_value(t.sock, "totals", "forgotten", 1);
    others_never_get(t.sock, ino);
    ck_assert_int_eq(holder_finish(holder, go), 0);
    ck_assert_int_eq(stat_value(t.sock, "totals", "reclaimed"), 0);
    ck_assert_int_eq(stop_daemon(&d), 0);
    tmp_remove(&t);
}
END_TEST

START_TEST(no_pidfd_return_forgets)
{
    struct tmp t;
    tmp_make(&t);
    struct spawn sp = {.sock = t.sock, .knob = "ZKND_TEST_NO_PIDFD=1", .log_path = t.log};
    struct spawned d = spawn_daemon(&sp);
    int s = zkn_test_connect(t.sock);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    struct zkn_region_desc desc, again;
    int fd, fd2;
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    close(fd);
    /* The holder's liveness is unknown: a RETURNed region is let go of. */
    ck_assert_int_eq(zkn_test_return(s, &desc.id, 1), 1);
    wait_value(t.sock, "totals", "forgotten", 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &again, &fd2), 1);
    close(fd2);
    ck_assert(again.id != desc.id);
    close(s);
    ck_assert_int_eq(stop_daemon(&d), 0);
    tmp_remove(&t);
}
END_TEST

/* ---- 4: out of file descriptors ---- */

static long cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    const char *s = strrchr(read_file(path), ')');
    unsigned long ut = 0, st = 0;
    ck_assert_ptr_nonnull(s);
    /* after "pid (comm)": state is field 3, utime 14, stime 15 */
    ck_assert_int_eq(sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st),
                     2);
    return (long)(ut + st);
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

START_TEST(fd_exhaustion_does_not_spin)
{
#define NCONN 160
    struct tmp t;
    tmp_make(&t);
    const char *args[] = {"--max-clients", "4096", NULL};
    struct spawn sp = {.sock = t.sock, .args = args, .nofile = 64, .log_path = t.log};
    struct spawned d = spawn_daemon(&sp);
    int first = zkn_test_connect(t.sock);
    ck_assert_int_eq(zkn_test_hello(first, NULL), 0);
    int base = count_fds_settled(d.pid);
    int conns[NCONN], n = 0;
    for (; n < NCONN; n++) {
        conns[n] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", t.sock);
        if (connect(conns[n], (struct sockaddr *)&a, sizeof a) < 0) {
            close(conns[n]);
            break;
        }
    }
    ck_assert_int_ge(n, 100);
    usleep(300 * 1000);
    long before = cpu_ticks(d.pid);
    usleep(1000 * 1000);
    long spent = cpu_ticks(d.pid) - before;
    ck_assert_msg(spent < 20, "the daemon used %ld ticks in 1 s out of fds", spent);
    /* An existing client is still answered. */
    char buf[512];
    struct zkn_hdr h;
    ck_assert_int_eq(zkn_test_send(first, ZKN_MSG_PING, 2, NULL, 0), 0);
    ck_assert_int_ge(zkn_test_recv(first, buf, sizeof buf, NULL, NULL, 1000), (ssize_t)sizeof h);
    memcpy(&h, buf, sizeof h);
    ck_assert_uint_eq(h.type, ZKN_MSG_PONG);
    /* Newcomers past the limit are told why. */
    ssize_t len = zkn_test_recv(conns[n - 1], buf, sizeof buf - 1, NULL, NULL, 5000);
    ck_assert_int_ge(len, (ssize_t)(sizeof h + sizeof(struct zkn_error)));
    memcpy(&h, buf, sizeof h);
    ck_assert_uint_eq(h.type, ZKN_MSG_ERROR);
    buf[len] = '\0';
    ck_assert_ptr_nonnull(strstr(buf + sizeof h + sizeof(struct zkn_error), "file descriptors"));
    for (int i = 0; i < n; i++)
        close(conns[i]);
    /* Recovers: new connections are served again. */
    ck_assert_int_eq(wait_ping(t.sock), 0);
    ck_assert_int_ge(stat_value(t.sock, "totals", "accept_exhausted"), 1);
    ck_assert_int_eq(count_fds_settled(d.pid), base); /* no pidfd or socket left over */
    close(first);
    ck_assert_int_eq(stop_daemon(&d), 0);
    int lines = count_lines(read_file(t.log));
    ck_assert_msg(lines <= 6, "%d log lines", lines);
    tmp_remove(&t);
#undef NCONN
}
END_TEST

/* ---- 5: STATS shows a uid only its own clients ---- */

START_TEST(stats_clients_per_uid)
{
    NEED_ROOT();
    struct tmp t;
    tmp_make(&t);
    const char *args[] = {"--socket-mode", "0666", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = spawn_daemon(&sp);
    int s = zkn_test_connect(t.sock), fd;
    struct zkn_region_desc desc;
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
            _exit(2);
        char *text = zkn_test_stats_json(t.sock);
        json_t *j = text ? json_loads(text, 0, NULL) : NULL;
        json_t *clients = json_object_get(j, "clients");
        if (!json_is_array(clients))
            _exit(2);
        size_t i;
        json_t *c;
        json_array_foreach(clients, i, c)
        {
            if (json_integer_value(json_object_get(c, "uid")) != NOBODY)
                _exit(1);
        }
        _exit(json_array_size(clients) == 1 ? 0 : 3);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uid 65534 saw others (status %d)", st);
    /* Root sees everyone, its own lease included. */
    json_t *j = stats(t.sock);
    json_t *clients = json_object_get(j, "clients"), *c;
    size_t i;
    int found = 0;
    json_array_foreach(clients, i, c)
    {
        found |= json_integer_value(json_object_get(c, "uid")) == 0 &&
                 json_integer_value(json_object_get(c, "leases")) == 1;
    }
    ck_assert(found);
    json_decref(j);
    close(fd);
    close(s);
    ck_assert_int_eq(stop_daemon(&d), 0);
    tmp_remove(&t);
}
END_TEST

/* ---- 6: a configuration error is an error to the journal, and final ---- */

START_TEST(config_error_logged_as_error_and_final)
{
    struct tmp t;
    tmp_make(&t);
    int fd = open(t.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char js[64];
        /* stderr is "the journal": JOURNAL_STREAM names it */
        snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)sb.st_dev,
                 (unsigned long long)sb.st_ino);
        setenv("JOURNAL_STREAM", js, 1);
        dup2(fd, 2);
        execl(zkn_test_build_path("zknallocd"), "zknallocd", "--socket", t.sock,
              "--pool-bytes", "lots", (char *)NULL);
        _exit(127);
    }
    close(fd);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %#x", st);
    const char *log = read_file(t.log);
    ck_assert_msg(strncmp(log, "<3>", 3) == 0, "not at priority err: %s", log);
    ck_assert_ptr_nonnull(strstr(log, "--pool-bytes"));
    /* The unit does not restart into the same error. */
    char unit[600];
    snprintf(unit, sizeof unit, "%s/../systemd/zknallocd.service", zkn_test_build_path(""));
    if (access(unit, R_OK) != 0)
        snprintf(unit, sizeof unit, "systemd/zknallocd.service");
    ck_assert_ptr_nonnull(strstr(read_file(unit), "\nRestartPreventExitStatus=2\n"));
    tmp_remove(&t);
}
END_TEST

/* ---- 2 again: the pool cap holds for restored regions, and dropped ones
 * leave the store too ---- */

START_TEST(fdstore_restore_respects_the_cap)
{
    struct tmp t;
    struct store st;
    tmp_make(&t);
    store_open(&st);
    const char *args[] = {"--prewarm", "64K=3", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = spawn_daemon(&sp);
    wait_value(t.sock, "pool", "clean_bytes", 3 * KIB64);
    ck_assert_int_eq(stop_daemon(&d), 0);
    store_drain(&st, 300);
    ck_assert_uint_eq(st.n, 3);
    const char *small[] = {"--pool-bytes", "128K", NULL};
    sp.args = small;
    sp.store = &st;
    d = spawn_daemon(&sp);
    store_drain(&st, 300);
    ck_assert_int_eq(stat_value(t.sock, "totals", "restored"), 2);
    ck_assert_int_eq(stat_value(t.sock, "pool", "idle_bytes"), 2 * KIB64);
    ck_assert_uint_eq(st.nremoved, 3);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_int_eq(count_memfds(d.pid), 2);
    ck_assert_int_eq(stop_daemon(&d), 0);
    store_close(&st);
    tmp_remove(&t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("daemon_lifecycle");
    TCase *tc = zkn_test_tcase(s, "lifecycle", 60);
    tcase_add_test(tc, stop_keeps_live_leases);
    tcase_add_test(tc, fdstore_names_unique_removed_and_trimmed);
    tcase_add_test(tc, fdstore_never_crosses_uids);
    tcase_add_test(tc, pidns_client_keeps_leases);
    tcase_add_test(tc, no_pidfd_forgets_instead_of_reusing);
    tcase_add_test(tc, no_pidfd_return_forgets);
    tcase_add_test(tc, fd_exhaustion_does_not_spin);
    tcase_add_test(tc, stats_clients_per_uid);
    tcase_add_test(tc, config_error_logged_as_error_and_final);
    tcase_add_test(tc, fdstore_restore_respects_the_cap);
    return s;
}

ZKN_TEST_MAIN(make_suite)
