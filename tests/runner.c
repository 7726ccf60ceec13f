/* See runner.h. */
#include "runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static void (*release_)(void); /* the library's zkn_release_cache, or NULL */

/* The fds open when the test process started (its checked setup). */
static int *before_;
static size_t nbefore_;

/* Open fds, sorted, into a malloc'd array; the count to *n. */
static int *open_fds(size_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    int *fds = NULL;
    size_t cap = 0;
    *n = 0;
    if (!d)
        return NULL;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int *grown = realloc(fds, cap * sizeof *fds);
            if (!grown)
                break;
            fds = grown;
        }
        fds[(*n)++] = fd;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) /* insertion sort: readdir order is already close */
        for (size_t j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
            int t = fds[j];
            fds[j] = fds[j - 1];
            fds[j - 1] = t;
        }
    return fds;
}

static int was_open(int fd)
{
    for (size_t i = 0; i < nbefore_; i++)
        if (before_[i] == fd)
            return 1;
    return 0;
}

/* The library's daemon link: a non-blocking AF_UNIX SOCK_SEQPACKET socket. */
static int is_library_link(int fd)
{
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET)
        return 0;
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
        return 0;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

static void fds_before(void)
{
    free(before_);
    before_ = open_fds(&nbefore_);
}

static void fds_after(void)
{
    char leaked[1024] = "";
    size_t used = 0, nafter;
    int nleaked = 0, link_kept = 0;
    if (release_)
        release_();
    int *after = open_fds(&nafter);
    for (size_t i = 0; i < nafter; i++) {
        int fd = after[i];
        if (was_open(fd))
            continue;
        if (release_ && !link_kept && is_library_link(fd)) {
            link_kept = 1;
            continue;
        }
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, target, sizeof target - 1);
        target[k > 0 ? k : 0] = '\0';
        nleaked++;
        if (used < sizeof leaked - 1) {
            int w = snprintf(leaked + used, sizeof leaked - used, " %d -> %s;", fd, target);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    free(after);
    ck_assert_msg(nleaked == 0, "fd leak: %d fd(s) left open by the test:%s", nleaked, leaked);
}

TCase *zkn_test_tcase(Suite *s, const char *name, double timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, fds_before, fds_after); /* check runs teardowns last-first */
    if (timeout_s > 0)
        tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

int zkn_test_main(Suite *(*make)(void), void (*release)(void))
{
    char tap[512];
    const char *env = getenv("ZKN_TEST_TAP");
    release_ = release;
    if (env && *env)
        snprintf(tap, sizeof tap, "%s", env);
    else /* $ZKN_BUILD_DIR/tests/<program>.tap */
        snprintf(tap, sizeof tap, "%s/%s.tap", zkn_test_build_path("tests"),
                 program_invocation_short_name);
    SRunner *sr = srunner_create(make());
    srunner_set_tap(sr, tap);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
