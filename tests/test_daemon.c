/* zknallocd against a real daemon on a temporary socket: protocol round
 * trips, warm reuse, zeroing, reclaim of dead clients, malformed input, caps,
 * stats, uid partitions, fd hygiene. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "wire.h"

#define MIB (1u << 20)

static struct zkn_test_daemon daemon_;
static int fds_before;

static void start_with(const char *const *args)
{
    ck_assert_int_eq(zkn_test_daemon_start(&daemon_, args), 0);
    fds_before = zkn_test_count_fds();
}

static void setup(void) { start_with(NULL); }

static void teardown(void)
{
    /* Every fd a test opened must be closed again. */
    ck_assert_int_eq(zkn_test_count_fds(), fds_before);
    int st = zkn_test_daemon_stop(&daemon_);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
    struct stat sb;
    ck_assert_msg(stat(daemon_.sock, &sb) < 0, "socket file left behind");
    zkn_test_daemon_cleanup(&daemon_);
}

/* Restarts the daemon with other arguments. */
static void restart_with(const char *const *args)
{
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
    ck_assert_int_eq(zkn_test_daemon_start(&daemon_, args), 0);
}

/* LEND that asks again while the daemon answers not_warm (it prepares the
 * class in the background), for up to 5 s. Returns what zkn_test_lend does;
 * usable in forked children (no assertions). */
static int lend_warm(int s, int cls, int count, uint32_t flags, struct zkn_region_desc *d,
                     int *fds)
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

static int session(void)
{
    int s = zkn_test_connect(daemon_.sock);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    return s;
}

static char *map_region(int fd, uint64_t size)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    close(fd);
    return p;
}

static json_t *stats(void)
{
    char *text = zkn_test_stats_json(daemon_.sock);
    ck_assert_ptr_nonnull(text);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    ck_assert_msg(j != NULL, "stats is not JSON: %s", err.text);
    free(text);
    return j;
}

static json_int_t stat_int(json_t *j, const char *section, const char *key)
{
    json_t *v = json_object_get(json_object_get(j, section), key);
    ck_assert_msg(json_is_integer(v), "stats lacks %s.%s", section, key);
    return json_integer_value(v);
}

/* Polls stats until section.key == want (background work), up to 5 s. */
static void wait_stat(const char *section, const char *key, json_int_t want)
{
    json_int_t got = -1;
    for (int i = 0; i < 500; i++) {
        json_t *j = stats();
        got = stat_int(j, section, key);
        json_decref(j);
        if (got == want)
            return;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ck_abort_msg("%s.%s stayed %lld, expected %lld", section, key, (long long)got,
                 (long long)want);
}

static uint32_t last_error(int s)
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

/* Another client can still lend: the daemon is serving and its pool intact. */
static void assert_daemon_serves(void)
{
    struct zkn_region_desc d;
    int fd;
    int s = session();
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d, &fd), 1);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    close(s);
}

START_TEST(hello_and_sealed_region)
{
    struct zkn_hello_ok ok;
    struct zkn_region_desc d[4];
    int fds[4];
    int s = zkn_test_connect(daemon_.sock);
    ck_assert_int_eq(zkn_test_hello(s, &ok), 0);
    ck_assert_int_eq(ok.version, ZKN_PROTO_VERSION);
    ck_assert_int_eq(ok.class_count, ZKN_CLASS_COUNT);
    ck_assert_int_eq(ok.daemon_pid, daemon_.pid);
    ck_assert_str_ne(zkn_backing_name(ok.backing), "unknown");

    int cls = zkn_size_class(3 * MIB);
    int n = lend_warm(s, cls, 1, 0, d, fds);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(d[0].size, zkn_class_size(cls));
    ck_assert_int_eq(d[0].size_class, cls);
    ck_assert_int_eq(d[0].size % (2 * MIB), 0);
    struct stat st;
    ck_assert_int_eq(fstat(fds[0], &st), 0);
    ck_assert_int_eq((uint64_t)st.st_size, d[0].size);
    if (ok.backing != ZKN_BACKING_TMPFS_HUGE) {
        int seals = fcntl(fds[0], F_GET_SEALS);
        ck_assert_int_eq(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
                         F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        /* No client can resize a region under the daemon or another client. */
        ck_assert_int_ne(ftruncate(fds[0], 4096), 0);
        ck_assert_int_ne(ftruncate(fds[0], (off_t)d[0].size * 2), 0);
    }
    ck_assert_int_ne(fcntl(fds[0], F_GETFD) & FD_CLOEXEC, 0);
    close(fds[0]);
    ck_assert_int_eq(zkn_test_return(s, &d[0].id, 1), 1);
    close(s);
}
END_TEST

START_TEST(warm_region_comes_back_resident)
{
    /* One region made ready at start: both LENDs are served from the pool. */
    const char *args[] = {"--prewarm", "8M=1", NULL};
    restart_with(args);
    wait_stat("pool", "clean_bytes", 8 * MIB);
    int s = session();
    struct zkn_region_desc d, d2;
    int fd;
    int cls = zkn_size_class(8 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    char *p = map_region(fd, d.size);
    memset(p, 0xab, d.size);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    wait_stat("pool", "zeroing", 0);

    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d2, &fd), 1);
    ck_assert_uint_eq(d2.id, d.id); /* the same warm region, not a new one */
    p = map_region(fd, d2.size);
    unsigned char vec[(8 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, d2.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert_msg(vec[i] & 1, "page %zu of a warm region is not resident", i);
    munmap(p, d2.size);
    ck_assert_int_eq(zkn_test_return(s, &d2.id, 1), 1);
    json_t *j = stats();
    json_t *classes = json_object_get(j, "classes");
    int found = 0;
    for (size_t i = 0; i < json_array_size(classes); i++) {
        json_t *c = json_array_get(classes, i);
        if (json_integer_value(json_object_get(c, "class")) == cls) {
            found = 1;
            ck_assert_int_eq(json_integer_value(json_object_get(c, "hits")), 2);
            ck_assert_int_eq(json_integer_value(json_object_get(c, "misses")), 0);
            ck_assert_int_eq(json_integer_value(json_object_get(c, "served_warm")), 2);
        }
    }
    ck_assert(found);
    ck_assert_int_eq(stat_int(j, "totals", "lends"), 2);
    ck_assert_int_eq(stat_int(j, "totals", "returns"), 2);
    ck_assert_int_eq(stat_int(j, "totals", "created"), 1);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(zeroed_lend_is_zero)
{
    const char *args[] = {"--prewarm", "4M=1", NULL};
    restart_with(args);
    wait_stat("pool", "clean_bytes", 4 * MIB);
    int s = session();
    struct zkn_region_desc d, d2;
    int fd;
    int cls = zkn_size_class(4 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    char *p = map_region(fd, d.size);
    memset(p, 0x5a, d.size);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    wait_stat("pool", "dirty_bytes", 0);
    wait_stat("pool", "zeroing", 0);

    ck_assert_int_eq(zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d2, &fd), 1);
    ck_assert_uint_eq(d2.id, d.id); /* zeroed in the background, then reused */
    ck_assert_int_eq(d2.flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    p = map_region(fd, d2.size);
    for (uint64_t i = 0; i < d2.size; i += 8)
        ck_assert_msg(*(uint64_t *)(p + i) == 0, "byte %llu not zero", (unsigned long long)i);
    munmap(p, d2.size);
    ck_assert_int_eq(zkn_test_return(s, &d2.id, 1), 1);
    close(s);
}
END_TEST

START_TEST(zeroed_lend_never_gets_dirty_region)
{
    /* With zeroing stalled behind nothing, a ZEROED lend right after a
     * RETURN must either wait for a clean region or get a new one: never the
     * dirty one. */
    int s = session();
    struct zkn_region_desc d[4];
    int fds[4];
    int cls = zkn_size_class(64 * 1024);
    for (int round = 0; round < 50; round++) {
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, d, fds), 1);
        char *p = map_region(fds[0], d[0].size);
        memset(p, 0xff, d[0].size);
        munmap(p, d[0].size);
        ck_assert_int_eq(zkn_test_return(s, &d[0].id, 1), 1);
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d[1], &fds[1]), 1);
        p = map_region(fds[1], d[1].size);
        for (uint64_t i = 0; i < d[1].size; i++)
            ck_assert_msg(p[i] == 0, "round %d byte %llu dirty", round, (unsigned long long)i);
        munmap(p, d[1].size);
        ck_assert_int_eq(zkn_test_return(s, &d[1].id, 1), 1);
    }
    close(s);
}
END_TEST

START_TEST(batch_lend_and_two_clients)
{
    int a = session(), b = session();
    struct zkn_region_desc da[16], db[16];
    int fa[16], fb[16];
    int cls = zkn_size_class(256 * 1024);
    int na = zkn_test_lend(a, cls, 16, 0, da, fa);
    ck_assert_int_eq(na, 1); /* empty pool: one new region per LEND */
    ck_assert_int_eq(zkn_test_return(a, &da[0].id, 1), 1);
    close(fa[0]);
    wait_stat("pool", "zeroing", 0);
    for (int i = 1; i < 6; i++) {
        ck_assert_int_eq(zkn_test_lend(a, cls, 1, 0, &da[i], &fa[i]), 1);
    }
    uint64_t ids[5];
    for (int i = 1; i < 6; i++) {
        ids[i - 1] = da[i].id;
        close(fa[i]);
    }
    ck_assert_int_eq(zkn_test_return(a, ids, 5), 5);
    wait_stat("pool", "zeroing", 0);
    /* Five pooled now: one LEND of 16 hands them all over in one frame. */
    na = zkn_test_lend(a, cls, 16, 0, da, fa);
    ck_assert_int_eq(na, 5);
    int nb = zkn_test_lend(b, cls, 1, 0, db, fb);
    ck_assert_int_eq(nb, 1);
    char *pb = map_region(fb[0], db[0].size);
    memset(pb, 0x11, db[0].size);
    for (int i = 0; i < na; i++) {
        ck_assert_uint_ne(da[i].id, db[0].id);
        char *p = map_region(fa[i], da[i].size);
        memset(p, 0x22, da[i].size);
        munmap(p, da[i].size);
        ids[i] = da[i].id;
    }
    for (uint64_t i = 0; i < db[0].size; i++)
        ck_assert_int_eq(pb[i], 0x11);
    munmap(pb, db[0].size);
    /* Another process cannot return them (leases belong to processes; a and
     * b, both ours, share them). */
    pid_t other = fork();
    if (other == 0) {
        int cs = zkn_test_connect(daemon_.sock);
        _exit(cs >= 0 && zkn_test_hello(cs, NULL) == 0 &&
                      zkn_test_return(cs, ids, 1) == -ZKN_E_UNKNOWN_ID
                  ? 0
                  : 1);
    }
    int st;
    waitpid(other, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process returned our lease");
    ck_assert_int_eq(zkn_test_return(b, ids, 1), 1);
    ck_assert_int_eq(zkn_test_return(a, ids + 1, (uint32_t)na - 1), na - 1);
    ck_assert_int_eq(zkn_test_return(b, &db[0].id, 1), 1);
    close(a);
    close(b);
}
END_TEST

START_TEST(killed_client_leases_reclaimed)
{
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct zkn_region_desc d;
        int fd;
        int s = zkn_test_connect(daemon_.sock);
        if (s < 0 || zkn_test_hello(s, NULL) < 0 ||
            lend_warm(s, zkn_size_class(2 * MIB), 1, 0, &d, &fd) != 1)
            _exit(1);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    close(ready[0]);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "pool", "lent_bytes"), 2 * MIB);
    json_decref(j);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    wait_stat("totals", "reclaimed", 1);
    wait_stat("pool", "lent_bytes", 0);
    assert_daemon_serves();
}
END_TEST

START_TEST(leases_follow_process_not_socket)
{
    /* A process that exits while a child it forked holds its socket still
     * gets its leases reclaimed (pidfd), and a live process that closes its
     * socket keeps them and can return them on a new connection. */
    struct zkn_region_desc d;
    int fd;
    int s = session();
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d, &fd), 1);
    close(fd);
    close(s);
    usleep(50 * 1000);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "pool", "lent_bytes"), 64 * 1024);
    json_decref(j);
    s = session();
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    close(s);

    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t parent = fork();
    if (parent == 0) {
        int cs = zkn_test_connect(daemon_.sock);
        if (cs < 0 || zkn_test_hello(cs, NULL) < 0 || zkn_test_lend(cs, 0, 1, 0, &d, &fd) != 1)
            _exit(1);
        pid_t grandchild = fork();
        if (grandchild == 0) { /* holds the socket open, then exits on its own */
            close(ready[0]);
            sleep(3);
            _exit(0);
        }
        if (write(ready[1], &grandchild, sizeof grandchild) != sizeof grandchild)
            _exit(1);
        _exit(0);
    }
    close(ready[1]);
    pid_t grandchild;
    ck_assert_int_eq(read(ready[0], &grandchild, sizeof grandchild), sizeof grandchild);
    close(ready[0]);
    waitpid(parent, NULL, 0);
    wait_stat("pool", "lent_bytes", 0);
    kill(grandchild, SIGKILL);
}
END_TEST

static void send_raw(int s, const void *buf, size_t len)
{
    ck_assert_int_eq(zkn_send_frame(s, buf, len, NULL, 0), (ssize_t)len);
}

START_TEST(malformed_input_is_refused)
{
    char frame[128];
    struct zkn_hdr h;
    int s;

    /* Garbage shorter than a header: ERROR then disconnect. */
    s = zkn_test_connect(daemon_.sock);
    send_raw(s, "garbage", 7);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    ck_assert_int_eq(zkn_test_recv(s, frame, sizeof frame, NULL, NULL, 2000), 0);
    close(s);

    /* Bad magic. */
    s = zkn_test_connect(daemon_.sock);
    zkn_hdr_init(&h, ZKN_MSG_PING, 0, 1);
    h.magic = 0xdeadbeef;
    send_raw(s, &h, sizeof h);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* Length field that lies about the frame. */
    s = zkn_test_connect(daemon_.sock);
    zkn_hdr_init(&h, ZKN_MSG_PING, 100, 1);
    send_raw(s, &h, sizeof h);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* A frame over the limit is truncated by the socket: refused. */
    s = zkn_test_connect(daemon_.sock);
    static char big[ZKN_MAX_FRAME + 4096];
    zkn_hdr_init((struct zkn_hdr *)big, ZKN_MSG_STATS, sizeof big - sizeof h, 1);
    send_raw(s, big, sizeof big);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* Requests before HELLO, unknown types, wrong payload sizes. */
    s = zkn_test_connect(daemon_.sock);
    struct zkn_lend l = {.size_class = 0, .count = 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 2, &l, sizeof l), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_NEED_HELLO);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    ck_assert_int_eq(zkn_test_send(s, 999, 3, NULL, 0), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_BAD_TYPE);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_REGIONS, 4, NULL, 0), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_BAD_TYPE);
    struct zkn_hello hello = {.min_version = 1, .max_version = 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_HELLO, 5, &hello, sizeof hello), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_BAD_TYPE); /* second HELLO */
    l.size_class = ZKN_CLASS_COUNT;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 6, &l, sizeof l), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_BAD_CLASS);
    l.size_class = 0;
    l.count = 0;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 7, &l, sizeof l), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    l.count = 17;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 8, &l, sizeof l), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    uint64_t bogus = 12345;
    ck_assert_int_eq(zkn_test_return(s, &bogus, 1), -ZKN_E_UNKNOWN_ID);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 9, &l, 3), 0); /* short payload */
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* RETURN whose count disagrees with its length. */
    s = session();
    struct {
        struct zkn_return r;
        uint64_t id;
    } ret = {{.count = 5}, 1};
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_RETURN, 10, &ret, sizeof ret), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_MALFORMED);
    close(s);

    /* A HELLO with no common version. */
    s = zkn_test_connect(daemon_.sock);
    hello.min_version = 7;
    hello.max_version = 9;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_HELLO, 11, &hello, sizeof hello), 0);
    ck_assert_int_eq(last_error(s), ZKN_E_VERSION);
    close(s);

    /* File descriptors from a client are refused and closed. */
    s = zkn_test_connect(daemon_.sock);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    zkn_hdr_init(&h, ZKN_MSG_PING, 0, 12);
    ck_assert_int_ge(zkn_send_frame(s, &h, sizeof h, &devnull, 1), 0);
    close(devnull);
    ck_assert_int_eq(last_error(s), ZKN_E_UNEXPECTED_FD);
    close(s);

    json_t *j = stats();
    ck_assert_int_ge(stat_int(j, "refusals", "malformed"), 6);
    ck_assert_int_eq(stat_int(j, "refusals", "need_hello"), 1);
    ck_assert_int_eq(stat_int(j, "refusals", "bad_type"), 3);
    ck_assert_int_eq(stat_int(j, "refusals", "bad_class"), 1);
    ck_assert_int_eq(stat_int(j, "refusals", "unknown_id"), 1);
    ck_assert_int_eq(stat_int(j, "refusals", "version"), 1);
    ck_assert_int_eq(stat_int(j, "refusals", "unexpected_fd"), 1);
    json_decref(j);
    assert_daemon_serves();
}
END_TEST

START_TEST(double_return_refused)
{
    int s = session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, 1, 1, 0, &d, &fd), 1);
    close(fd);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), -ZKN_E_UNKNOWN_ID);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "totals", "returns"), 1);
    ck_assert_int_eq(stat_int(j, "pool", "lent_bytes"), 0);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(garbage_fuzz_keeps_daemon_serving)
{
    unsigned seed = 12345;
    for (int i = 0; i < 300; i++) {
        char buf[256];
        int s = zkn_test_connect(daemon_.sock);
        ck_assert_int_ge(s, 0);
        if (i % 2)
            zkn_test_hello(s, NULL);
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof buf);
        for (size_t k = 0; k < len; k++)
            buf[k] = (char)rand_r(&seed);
        if (len >= sizeof(struct zkn_hdr) && i % 3 == 0) {
            /* A valid header over random payload reaches the handlers. */
            zkn_hdr_init((struct zkn_hdr *)buf, (uint16_t)(1 + rand_r(&seed) % 14),
                         (uint32_t)(len - sizeof(struct zkn_hdr)), 1);
        }
        zkn_send_frame(s, buf, len, NULL, 0);
        char reply[ZKN_MAX_FRAME];
        int fds[16];
        size_t nfds = 0;
        if (zkn_test_recv(s, reply, sizeof reply, fds, &nfds, 200) > 0)
            zkn_close_fds(fds, nfds);
        close(s);
    }
    assert_daemon_serves();
}
END_TEST

START_TEST(slow_reader_is_dropped_alone)
{
    int slow = session();
    int n = 0;
    /* Ask for stats without ever reading the replies. */
    for (; n < 20000; n++) {
        char frame[sizeof(struct zkn_hdr)];
        zkn_hdr_init((struct zkn_hdr *)frame, ZKN_MSG_STATS, 0, (uint32_t)n);
        ssize_t r = send(slow, frame, sizeof frame, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN) {
            usleep(1000);
            continue;
        }
        if (r < 0)
            break; /* the daemon hung up: expected */
    }
    ck_assert_msg(n < 20000, "daemon never dropped a client that does not read");
    assert_daemon_serves();
    json_t *j = stats();
    ck_assert_int_ge(stat_int(j, "refusals", "busy"), 1);
    json_decref(j);
    close(slow);
}
END_TEST

START_TEST(client_cap_refuses_clearly)
{
    /* Restart with small caps. */
    const char *args[] = {"--client-cap-bytes", "3M", "--client-max-leases", "2", NULL};
    restart_with(args);
    int s = session();
    struct zkn_region_desc d[3];
    int fds[3];
    ck_assert_int_eq(zkn_test_lend(s, zkn_size_class(4 * MIB), 1, 0, d, fds), -ZKN_E_CLIENT_CAP);
    ck_assert_int_eq(lend_warm(s, zkn_size_class(2 * MIB), 1, 0, &d[0], &fds[0]), 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d[1], &fds[1]), 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d[2], &fds[2]), -ZKN_E_CLIENT_CAP);
    close(fds[0]);
    close(fds[1]);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "refusals", "client_cap"), 2);
    ck_assert_int_eq(stat_int(j, "caps", "client_lease_bytes"), 3 * MIB);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(pool_cap_destroys_excess)
{
    /* 1 MiB regions are made inline, so nothing but the three returned ones
     * competes for the 2.5 MiB pool. */
    const char *args[] = {"--pool-bytes", "2560K", NULL};
    restart_with(args);
    int s = session();
    struct zkn_region_desc d[3];
    int fds[3];
    int cls = zkn_size_class(1 * MIB);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d[i], &fds[i]), 1);
        close(fds[i]);
    }
    uint64_t ids[3] = {d[0].id, d[1].id, d[2].id};
    ck_assert_int_eq(zkn_test_return(s, ids, 3), 3);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "pool", "idle_bytes"), 2 * MIB);
    ck_assert_int_eq(stat_int(j, "totals", "destroyed"), 1);
    json_decref(j);
    close(s);
}
END_TEST

START_TEST(prewarm_trim_and_pressure)
{
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
    char fifo[] = "/tmp/zkn-psi-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(fifo));
    char path[64];
    snprintf(path, sizeof path, "%s/p", fifo);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    setenv("ZKN_PSI_SOURCE", path, 1);
    const char *args[] = {"--prewarm", "4M=3", "--low-watermark", "4M", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&daemon_, args), 0);
    unsetenv("ZKN_PSI_SOURCE");
    wait_stat("pool", "clean_bytes", 12 * MIB);

    /* Prewarmed regions are zero and resident. */
    int s = session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, zkn_size_class(4 * MIB), 1, ZKN_LEND_ZEROED, &d, &fd), 1);
    ck_assert_int_eq(d.flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    char *p = map_region(fd, d.size);
    unsigned char vec[(4 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, d.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert(vec[i] & 1);
    for (uint64_t i = 0; i < d.size; i++)
        ck_assert(p[i] == 0);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    wait_stat("pool", "zeroing", 0);

    /* Simulated memory pressure trims down to the low watermark. */
    int w = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(w, 0);
    ck_assert_int_eq(write(w, "p", 1), 1);
    close(w);
    wait_stat("pressure", "events", 1);
    json_t *j = stats();
    ck_assert_int_le(stat_int(j, "pool", "idle_bytes"), 4 * MIB);
    ck_assert_int_eq(stat_int(j, "pressure", "trimmed_bytes"), 8 * MIB);
    json_decref(j);

    /* TRIM to zero empties the pool. */
    struct zkn_trim t = {.target_bytes = 0};
    char buf[128];
    struct zkn_trim_ok ok;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_TRIM, 5, &t, sizeof t), 0);
    ck_assert_int_gt(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000), 0);
    ck_assert_int_eq(((struct zkn_hdr *)buf)->type, ZKN_MSG_TRIM_OK);
    memcpy(&ok, buf + sizeof(struct zkn_hdr), sizeof ok);
    ck_assert_int_eq(ok.freed_bytes, 4 * MIB);
    ck_assert_int_eq(ok.pool_bytes, 0);
    close(s);
    unlink(path);
    rmdir(fifo);
}
END_TEST

START_TEST(idle_pool_decays)
{
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
    const char *args[] = {"--prewarm", "64K=2", "--idle-decay", "1", NULL};
    ck_assert_int_eq(zkn_test_daemon_start(&daemon_, args), 0);
    /* Regions unused for a second go away on their own. */
    wait_stat("totals", "decayed_bytes", 2 * 65536);
    json_t *j = stats();
    ck_assert_int_eq(stat_int(j, "pool", "idle_bytes"), 0);
    ck_assert_int_eq(stat_int(j, "totals", "destroyed"), 2);
    json_decref(j);
}
END_TEST

START_TEST(uid_partition)
{
    if (geteuid() != 0) {
        fprintf(stderr, "uid_partition: needs root to switch uid; skipped\n");
        return;
    }
    /* The socket must admit the other uid for this test. */
    ck_assert_int_eq(chmod(daemon_.sock, 0666), 0);
    ck_assert_int_eq(chmod(daemon_.dir, 0755), 0);
    int cls = zkn_size_class(1 * MIB);
    int s = session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    char *p = map_region(fd, d.size);
    memset(p, 0x77, d.size);
    munmap(p, d.size);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    wait_stat("pool", "zeroing", 0);

    int res[2];
    ck_assert_int_eq(pipe(res), 0);
    pid_t child = fork();
    if (child == 0) {
        struct zkn_region_desc cd[16];
        int cfd[16];
        uint64_t got = 0;
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
            _exit(2);
        int cs = zkn_test_connect(daemon_.sock);
        if (cs < 0 || zkn_test_hello(cs, NULL) < 0)
            _exit(3);
        int n = zkn_test_lend(cs, cls, 16, 0, cd, cfd);
        if (n < 1)
            _exit(4);
        got = cd[0].id;
        if (write(res[1], &got, sizeof got) != sizeof got)
            _exit(5);
        _exit(0);
    }
    close(res[1]);
    uint64_t other = 0;
    ck_assert_int_eq(read(res[0], &other, sizeof other), sizeof other);
    close(res[0]);
    int st;
    waitpid(child, &st, 0);
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_uint_ne(other, d.id); /* never the region uid 0 had */
    wait_stat("pool", "lent_bytes", 0);
    /* And uid 0 still gets its own region back. */
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    ck_assert_uint_ne(d.id, other);
    close(fd);
    close(s);
}
END_TEST

START_TEST(second_daemon_refused_stale_socket_replaced)
{
    struct zkn_test_daemon second;
    memset(&second, 0, sizeof second);
    /* Live daemon on the path: a second one must refuse and leave it alone. */
    const char *argv[] = {zkn_test_build_path("zknallocd"), "--socket", daemon_.sock, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    assert_daemon_serves();

    /* A killed daemon leaves a stale socket: the next one replaces it. */
    char sock[192];
    snprintf(sock, sizeof sock, "%s", daemon_.sock);
    zkn_test_daemon_kill(&daemon_);
    struct stat sb;
    ck_assert_int_eq(stat(sock, &sb), 0);
    ck_assert_int_eq(zkn_test_daemon_start_at(&daemon_, sock, NULL), 0);
    assert_daemon_serves();
}
END_TEST

START_TEST(cli_usage_errors)
{
    const char *bad[][3] = {{"--pool-bytes", "lots", NULL},
                            {"--prewarm", "128M", NULL},
                            {"--bogus", NULL, NULL},
                            {"--log-level", "loud", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            const char *argv[4] = {zkn_test_build_path("zknallocd"), bad[i][0], bad[i][1], NULL};
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 2);
            dup2(devnull, 1);
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s accepted", bad[i][0]);
    }
}
END_TEST

static Suite *daemon_suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = zkn_test_tcase(s, "daemon", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, hello_and_sealed_region);
    tcase_add_test(tc, warm_region_comes_back_resident);
    tcase_add_test(tc, zeroed_lend_is_zero);
    tcase_add_test(tc, zeroed_lend_never_gets_dirty_region);
    tcase_add_test(tc, batch_lend_and_two_clients);
    tcase_add_test(tc, killed_client_leases_reclaimed);
    tcase_add_test(tc, leases_follow_process_not_socket);
    tcase_add_test(tc, malformed_input_is_refused);
    tcase_add_test(tc, double_return_refused);
    tcase_add_test(tc, garbage_fuzz_keeps_daemon_serving);
    tcase_add_test(tc, slow_reader_is_dropped_alone);
    tcase_add_test(tc, client_cap_refuses_clearly);
    tcase_add_test(tc, pool_cap_destroys_excess);
    tcase_add_test(tc, prewarm_trim_and_pressure);
    tcase_add_test(tc, idle_pool_decays);
    tcase_add_test(tc, uid_partition);
    tcase_add_test(tc, second_daemon_refused_stale_socket_replaced);
    tcase_add_test(tc, cli_usage_errors);
    return s;
}

ZKN_TEST_MAIN(daemon_suite)
