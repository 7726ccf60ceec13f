/* See daemon_fixture.h. */
#include "daemon_fixture.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sizeclass.h"
#include "wire.h"

struct zkn_test_daemon fx_daemon;

static int fds_before;

void fx_start(const char *const *args)
{
    ck_assert_int_eq(zkn_test_daemon_start(&fx_daemon, args), 0);
    fds_before = zkn_test_count_fds();
}

void fx_setup(void) { fx_start(NULL); }

void fx_teardown(void)
{
    /* Every fd a test opened must be closed again. */
    ck_assert_int_eq(zkn_test_count_fds(), fds_before);
    int st = zkn_test_daemon_stop(&fx_daemon);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
    struct stat sb;
    ck_assert_msg(stat(fx_daemon.sock, &sb) < 0, "socket file left behind");
    zkn_test_daemon_cleanup(&fx_daemon);
}

void fx_restart(const char *const *args)
{
    zkn_test_daemon_stop(&fx_daemon);
    zkn_test_daemon_cleanup(&fx_daemon);
    ck_assert_int_eq(zkn_test_daemon_start(&fx_daemon, args), 0);
}

int fx_lend_warm(int s, int cls, int count, uint32_t flags, struct zkn_region_desc *d, int *fds)
{
    int n = -ZKN_E_NOT_WARM;
    for (int i = 0; i < 500 && n == -ZKN_E_NOT_WARM; i++) {
        if (i) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        n = zkn_test_lend(s, cls, count, flags, d, fds);
    }
    return n;
}

int fx_session(void) { return zkn_test_session(fx_daemon.sock, NULL); }

char *fx_map_region(int fd, uint64_t size)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    close(fd);
    return p;
}

uint32_t fx_last_error(int s)
{
    char buf[ZKN_MAX_FRAME];
    struct zkn_hdr h;
    struct zkn_error e;
    ssize_t n = zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000);
    ck_assert_int_ge(n, (ssize_t)(sizeof h + sizeof e));
    memcpy(&h, buf, sizeof h);
    ck_assert_int_eq(h.type, ZKN_MSG_ERROR);
    memcpy(&e, buf + sizeof h, sizeof e);
    return e.code;
}

int fx_dirty_one_region(int mib, int byte, int *s, struct zkn_region_desc *d)
{
    char warm[16];
    snprintf(warm, sizeof warm, "%dM=1", mib);
    const char *args[] = {"--prewarm", warm, NULL};
    fx_restart(args);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", (json_int_t)mib * MIB);
    *s = fx_session();
    int fd, cls = zkn_size_class((size_t)mib * MIB);
    ck_assert_int_eq(zkn_test_lend(*s, cls, 1, 0, d, &fd), 1);
    char *p = fx_map_region(fd, d->size);
    memset(p, byte, d->size);
    munmap(p, d->size);
    ck_assert_int_eq(zkn_test_return(*s, &d->id, 1), 1);
    return cls;
}

void fx_assert_serves(void)
{
    struct zkn_region_desc d;
    int fd;
    int s = fx_session();
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d, &fd), 1);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    close(s);
}
