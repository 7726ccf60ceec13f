/* What the service suites (test_systemd*.c) share: running tools, the
 * source and build trees, a temporary directory, make install. */
#ifndef ZKN_TEST_SYSTEMD_HELPERS_H
#define ZKN_TEST_SYSTEMD_HELPERS_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sockpath.h"

/* ---- helpers ---- */

struct out {
    int status; /* exit status, -1 when killed or not run */
    char text[1 << 16];
    char err[1 << 16];
};

static inline void slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Runs argv[0] (found on PATH) with stdout/stderr captured. A nested make
 * must not see the outer make's jobserver, so its variables are dropped. */
static inline struct out *run(const char *const *argv)
{
    static struct out o;
    int fo = memfd_create("out", MFD_CLOEXEC), fe = memfd_create("err", MFD_CLOEXEC);
    ck_assert(fo >= 0 && fe >= 0);
    fflush(NULL);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        unsetenv("MAKEFLAGS");
        unsetenv("MFLAGS");
        unsetenv("MAKELEVEL");
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    slurp(fo, o.text, sizeof o.text);
    slurp(fe, o.err, sizeof o.err);
    return &o;
}

static inline int have(const char *tool)
{
    const char *argv[] = {"sh", "-c", "command -v \"$0\" >/dev/null", tool, NULL};
    return run(argv)->status == 0;
}

#define SKIP_WITHOUT(tool)                                                                 \
    do {                                                                                   \
        if (!have(tool)) {                                                                 \
            fprintf(stderr, "test_systemd: %s not installed; skipping %s\n", tool,         \
                    __func__);                                                             \
            return;                                                                        \
        }                                                                                  \
    } while (0)

static inline char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static inline void must_exist(const char *root, const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s%s", root, rel);
    ck_assert_msg(lstat(p, &st) == 0, "not installed: %s", p);
}

/* The source tree: the current directory when `make test` runs, else the
 * parent of the build directory. */
static inline const char *repo_root(void)
{
    static char root[256];
    struct stat st;
    if (!root[0]) {
        char *r;
        if (stat("systemd/install.mk", &st) == 0 && stat("Makefile", &st) == 0)
            r = realpath(".", NULL);
        else
            r = realpath(zkn_test_build_path(""), NULL);
        ck_assert_ptr_nonnull(r);
        ck_assert_uint_lt(strlen(r), sizeof root);
        snprintf(root, sizeof root, "%s", stat("systemd/install.mk", &st) == 0 ? r : dirname(r));
        free(r);
    }
    return root;
}

/* The make variable B naming the build tree the tests were built in, so a
 * nested `make install` installs those very binaries without rebuilding. */
static inline const char *build_var(void)
{
    static char b[600];
    char *dir = realpath(zkn_test_build_path("."), NULL);
    ck_assert_ptr_nonnull(dir);
    snprintf(b, sizeof b, "B=%s", dir);
    free(dir);
    return b;
}

static char tmp_[64];

static inline void make_tmp(void)
{
    snprintf(tmp_, sizeof tmp_, "/tmp/zkn-sd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_));
}

static inline void rm_tmp(void)
{
    if (tmp_[0]) {
        const char *argv[] = {"rm", "-rf", tmp_, NULL};
        run(argv);
        tmp_[0] = '\0';
    }
}

static inline void make_install(const char *destdir, const char *prefix)
{
    char d[600], p[600];
    snprintf(d, sizeof d, "DESTDIR=%s", destdir);
    snprintf(p, sizeof p, "PREFIX=%s", prefix);
    const char *argv[] = {"make", "-s", "-C", repo_root(), build_var(), d, p, "install", NULL};
    struct out *o = run(argv);
    ck_assert_msg(o->status == 0, "make install failed:\n%s\n%s", o->text, o->err);
}

#endif
