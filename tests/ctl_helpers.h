/* What the zknallocctl suites (test_ctl*.c) share: running the built tool
 * and the real daemon it talks to. */
#ifndef ZKN_TEST_CTL_HELPERS_H
#define ZKN_TEST_CTL_HELPERS_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "wire.h"

#ifndef ZKN_VERSION
#define ZKN_VERSION "unknown"
#endif

/* ---- running the tool ---- */

struct run {
    int status; /* exit status, or -1 when it did not exit normally */
    char out[65536 * 4];
    char err[8192];
};

static inline void slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Runs build/zknallocctl with the given arguments (NULL-terminated), output
 * captured in memfds so nothing can block on a full pipe. uid >= 0 runs it as
 * that user. */
static inline struct run *run_ctl_as(int uid, const char *arg0, va_list ap)
{
    static struct run r;
    const char *argv[32];
    int argc = 0;
    char bin[512];

    snprintf(bin, sizeof bin, "%s", zkn_test_build_path("zknallocctl"));
    argv[argc++] = bin;
    for (const char *a = arg0; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = a;
    argv[argc] = NULL;

    int out = memfd_create("ctl-out", MFD_CLOEXEC), err = memfd_create("ctl-err", MFD_CLOEXEC);
    ck_assert(out >= 0 && err >= 0);
    fflush(NULL);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        dup2(out, 1);
        dup2(err, 2);
        if (uid >= 0 && (setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0))
            _exit(120);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    slurp(out, r.out, sizeof r.out);
    slurp(err, r.err, sizeof r.err);
    return &r;
}

static inline struct run *run_ctl(const char *arg0, ...)
{
    va_list ap;
    va_start(ap, arg0);
    struct run *r = run_ctl_as(-1, arg0, ap);
    va_end(ap);
    return r;
}

static inline struct run *run_ctl_uid(int uid, const char *arg0, ...)
{
    va_list ap;
    va_start(ap, arg0);
    struct run *r = run_ctl_as(uid, arg0, ap);
    va_end(ap);
    return r;
}

static inline void expect_status(const struct run *r, int want)
{
    ck_assert_msg(r->status == want, "zknallocctl exited %d, expected %d\nstdout:\n%s\nstderr:\n%s",
                  r->status, want, r->out, r->err);
}

static inline void expect_in(const char *hay, const char *needle)
{
    ck_assert_msg(strstr(hay, needle), "expected '%s' in:\n%s", needle, hay);
}

/* One daemon for the real_daemon cases, started and stopped by check's
 * parent process (an unchecked fixture), so a failed case in its forked child
 * can never leave a daemon behind. */
static struct zkn_test_daemon daemon_;

static inline void start_daemon(void)
{
    ck_assert_msg(zkn_test_daemon_start(&daemon_, NULL) == 0, "cannot start %s",
                  zkn_test_build_path("zknallocd"));
}

static inline void stop_daemon(void)
{
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
}


/* A socket of type bound at dir/sock.sock (dir a mkdtemp template, made
 * here; the path to path). */
static inline int bound_socket(int type, char *dir, char *path, size_t cap)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, cap, "%s/sock.sock", dir);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int s = socket(AF_UNIX, type, 0);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    return s;
}

#endif
