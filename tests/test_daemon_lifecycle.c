/* The daemon's side of a lease's life: what stopping, restarting through the
 * fd store, pid namespaces, running out of fds and STATS do to live clients.
 * Invariant: a region's bytes change only through the process holding it;
 * the daemon reuses a region only once no live process can reach it, and
 * never shows one uid another uid's bytes. Several cases need root (CI is).
 * The stop and fd-store cases are in test_daemon_fdstore.c; the helpers in
 * lifecycle_fixture.h. */
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
#include "lifecycle_fixture.h"
#include "runner.h"
#include "wire.h"

/* ---- 1 and 2, stopping and the fd store: test_daemon_fdstore.c ---- */

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
        _exit(zkn_test_all_byte(p, desc.size, 0x77) ? 0 : 1);
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
        ck_assert_msg(lc_ino_of(fds[i]) != ino, "the holder's region was lent again");
    }
    zkn_close_fds(fds, 4);
    close(s);
}

START_TEST(pidns_client_keeps_leases)
{
    NEED_ROOT();
    struct tmp t;
    lc_tmp_make(&t);
    /* In its own pid namespace the daemon reads pid 0 for every client here. */
    struct spawn sp = {.sock = t.sock, .new_pidns = 1};
    struct spawned d = lc_spawn_daemon(&sp);
    int base = lc_count_fds_settled(d.pid);
    ino_t ino;
    int go;
    pid_t holder = holder_start(t.sock, &ino, &go);
    usleep(200 * 1000); /* the daemon sees the close */
    others_never_get(t.sock, ino);
    /* Two processes, two records, though both read as pid 0. */
    json_t *j = zkn_test_stats(t.sock);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "clients")), 2);
    json_decref(j);
    ck_assert_int_eq(holder_finish(holder, go), 0);
    /* The holder is gone: its lease comes back. */
    zkn_test_wait_stat(t.sock, "totals", "reclaimed", 1);
    /* The holder's record and pidfd are gone; what remains beyond the start
     * is one fd per region (this process's leases, the holder's pooled one). */
    int regions = (int)lc_stat_value(t.sock, "pool", "regions");
    ck_assert_int_eq(lc_count_fds_settled(d.pid), base + regions);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_tmp_remove(&t);
}
END_TEST

START_TEST(no_pidfd_forgets_instead_of_reusing)
{
    struct tmp t;
    lc_tmp_make(&t);
    struct spawn sp = {.sock = t.sock, .knob = "ZK_NALLOC_TEST_NO_PIDFD=1", .log_path = t.log};
    struct spawned d = lc_spawn_daemon(&sp);
    ino_t ino;
    int go;
    pid_t holder = holder_start(t.sock, &ino, &go);
    zkn_test_wait_stat(t.sock, "totals", "forgotten", 1);
    others_never_get(t.sock, ino);
    ck_assert_int_eq(holder_finish(holder, go), 0);
    ck_assert_int_eq(lc_stat_value(t.sock, "totals", "reclaimed"), 0);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_tmp_remove(&t);
}
END_TEST

START_TEST(no_pidfd_return_forgets)
{
    struct tmp t;
    lc_tmp_make(&t);
    struct spawn sp = {.sock = t.sock, .knob = "ZK_NALLOC_TEST_NO_PIDFD=1", .log_path = t.log};
    struct spawned d = lc_spawn_daemon(&sp);
    int s = zkn_test_connect(t.sock);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    struct zkn_region_desc desc, again;
    int fd, fd2;
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &desc, &fd), 1);
    close(fd);
    /* The holder's liveness is unknown: a RETURNed region is let go of. */
    ck_assert_int_eq(zkn_test_return(s, &desc.id, 1), 1);
    zkn_test_wait_stat(t.sock, "totals", "forgotten", 1);
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &again, &fd2), 1);
    close(fd2);
    ck_assert(again.id != desc.id);
    close(s);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_tmp_remove(&t);
}
END_TEST

/* ---- 4: out of file descriptors ---- */

static long cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    const char *s = strrchr(lc_read_file(path), ')');
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
    lc_tmp_make(&t);
    const char *args[] = {"--max-clients", "4096", NULL};
    struct spawn sp = {.sock = t.sock, .args = args, .nofile = 64, .log_path = t.log};
    struct spawned d = lc_spawn_daemon(&sp);
    int first = zkn_test_connect(t.sock);
    ck_assert_int_eq(zkn_test_hello(first, NULL), 0);
    int base = lc_count_fds_settled(d.pid);
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
    ck_assert_int_eq(zkn_test_wait_ping(t.sock), 0);
    ck_assert_int_ge(lc_stat_value(t.sock, "totals", "accept_exhausted"), 1);
    ck_assert_int_eq(lc_count_fds_settled(d.pid), base); /* no pidfd or socket left over */
    close(first);
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    int lines = count_lines(lc_read_file(t.log));
    ck_assert_msg(lines <= 6, "%d log lines", lines);
    lc_tmp_remove(&t);
#undef NCONN
}
END_TEST

/* ---- 5: STATS shows a uid only its own clients ---- */

START_TEST(stats_clients_per_uid)
{
    NEED_ROOT();
    struct tmp t;
    lc_tmp_make(&t);
    const char *args[] = {"--socket-mode", "0666", NULL};
    struct spawn sp = {.sock = t.sock, .args = args};
    struct spawned d = lc_spawn_daemon(&sp);
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
    json_t *j = zkn_test_stats(t.sock);
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
    ck_assert_int_eq(lc_stop_daemon(&d), 0);
    lc_tmp_remove(&t);
}
END_TEST

/* ---- 6: a configuration error is an error to the journal, and final ---- */

START_TEST(config_error_logged_as_error_and_final)
{
    struct tmp t;
    lc_tmp_make(&t);
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
    const char *log = lc_read_file(t.log);
    ck_assert_msg(strncmp(log, "<3>", 3) == 0, "not at priority err: %s", log);
    ck_assert_ptr_nonnull(strstr(log, "--pool-bytes"));
    /* The unit does not restart into the same error. */
    char unit[600];
    snprintf(unit, sizeof unit, "%s/../systemd/zknallocd.service", zkn_test_build_path(""));
    if (access(unit, R_OK) != 0)
        snprintf(unit, sizeof unit, "systemd/zknallocd.service");
    ck_assert_ptr_nonnull(strstr(lc_read_file(unit), "\nRestartPreventExitStatus=2\n"));
    lc_tmp_remove(&t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("daemon_lifecycle");
    TCase *tc = zkn_test_tcase(s, "lifecycle", 60);
    tcase_add_test(tc, pidns_client_keeps_leases);
    tcase_add_test(tc, no_pidfd_forgets_instead_of_reusing);
    tcase_add_test(tc, no_pidfd_return_forgets);
    tcase_add_test(tc, fd_exhaustion_does_not_spin);
    tcase_add_test(tc, stats_clients_per_uid);
    tcase_add_test(tc, config_error_logged_as_error_and_final);
    return s;
}

ZKN_TEST_MAIN(make_suite)
