/* See lifecycle_fixture.h. */
#include "lifecycle_fixture.h"

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

#include "wire.h"

void lc_store_open(struct store *st)
{
    memset(st, 0, sizeof *st);
    zkn_test_notify_open(&st->rx, 0);
}

void lc_store_close(struct store *st)
{
    zkn_close_fds(st->fds, st->n);
    zkn_test_notify_close(&st->rx);
}

const char *lc_field(const char *buf, const char *key, char *out, size_t cap)
{
    const char *v = strstr(buf, key);
    if (!v)
        return NULL;
    v += strlen(key);
    size_t len = strcspn(v, "\n");
    snprintf(out, cap, "%.*s", (int)len, v);
    return out;
}

int lc_same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

void lc_store_drain(struct store *st, int timeout_ms)
{
    char buf[4096], name[128];
    int got[256];
    for (size_t ngot = 0;
         zkn_test_notify_recv(&st->rx, buf, sizeof buf, got, 256, &ngot, NULL, timeout_ms) >= 0;
         ngot = 0) {
        int has_name = lc_field(buf, "FDNAME=", name, sizeof name) != NULL;
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
                    dup = lc_same_file(st->fds[i], got[k]);
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
    setenv("ZK_NALLOC_LOG_LEVEL", sp->log_level ? sp->log_level : "warn", 1);
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

struct spawned lc_spawn_daemon(const struct spawn *sp)
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
    ck_assert_int_eq(zkn_test_wait_ping(sp->sock), 0);
    return d;
}

int lc_stop_daemon(struct spawned *d)
{
    int st = -1;
    kill(d->pid, SIGTERM);
    waitpid(d->reap, &st, 0);
    return st;
}

void lc_tmp_make(struct tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/zkn-life-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    ck_assert_int_eq(chmod(t->dir, 0755), 0); /* uid 65534 connects too */
    snprintf(t->sock, sizeof t->sock, "%s/s", t->dir);
    snprintf(t->log, sizeof t->log, "%s/log", t->dir);
}

void lc_tmp_remove(struct tmp *t)
{
    unlink(t->sock);
    unlink(t->log);
    rmdir(t->dir);
}

json_int_t lc_stat_value(const char *sock, const char *section, const char *key)
{
    json_t *j = zkn_test_stats(sock);
    json_int_t v = zkn_test_stat_int(j, section, key);
    json_decref(j);
    return v;
}

char *lc_fill_region(int fd, uint64_t size, int byte)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    memset(p, byte, size);
    return p;
}

ino_t lc_ino_of(int fd)
{
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    return sb.st_ino;
}

int lc_count_memfds(pid_t pid)
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

int lc_count_fds_settled(pid_t pid)
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

char *lc_read_file(const char *path)
{
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? 0 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}
