/* zknallocctl, the built binary, against the real daemon (ping, stats, trim,
 * watch, version), against nothing (exit 2), against a misbehaving fake
 * (exit 3), and with bad command lines (exit 1). */
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

static void slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Runs build/zknallocctl with the given arguments (NULL-terminated), output
 * captured in memfds so nothing can block on a full pipe. uid >= 0 runs it as
 * that user. */
static struct run *run_ctl_as(int uid, const char *arg0, va_list ap)
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

static struct run *run_ctl(const char *arg0, ...)
{
    va_list ap;
    va_start(ap, arg0);
    struct run *r = run_ctl_as(-1, arg0, ap);
    va_end(ap);
    return r;
}

static struct run *run_ctl_uid(int uid, const char *arg0, ...)
{
    va_list ap;
    va_start(ap, arg0);
    struct run *r = run_ctl_as(uid, arg0, ap);
    va_end(ap);
    return r;
}

static void expect_status(const struct run *r, int want)
{
    ck_assert_msg(r->status == want, "zknallocctl exited %d, expected %d\nstdout:\n%s\nstderr:\n%s",
                  r->status, want, r->out, r->err);
}

static void expect_in(const char *hay, const char *needle)
{
    ck_assert_msg(strstr(hay, needle), "expected '%s' in:\n%s", needle, hay);
}

/* One daemon for the real_daemon cases, started and stopped by check's
 * parent process (an unchecked fixture), so a failed case in its forked child
 * can never leave a daemon behind. */
static struct zkn_test_daemon daemon_;

static void start_daemon(void)
{
    ck_assert_msg(zkn_test_daemon_start(&daemon_, NULL) == 0, "cannot start %s",
                  zkn_test_build_path("zknallocd"));
}

static void stop_daemon(void)
{
    zkn_test_daemon_stop(&daemon_);
    zkn_test_daemon_cleanup(&daemon_);
}

/* ---- against the real daemon ---- */

START_TEST(ping_real)
{
    struct run *r = run_ctl("ping", NULL); /* socket from $ZK_NALLOC_SOCKET */
    expect_status(r, 0);
    expect_in(r->out, "PONG");
    expect_in(r->out, daemon_.sock);
    /* --socket wins over the environment. */
    setenv("ZK_NALLOC_SOCKET", "/nonexistent-zkn/x.sock", 1);
    r = run_ctl("--socket", daemon_.sock, "ping", NULL);
    expect_status(r, 0);
    r = run_ctl("ping", "--socket", daemon_.sock, NULL); /* options after the command too */
    expect_status(r, 0);
}
END_TEST

START_TEST(stats_json_real)
{
    struct run *r = run_ctl("stats", "--json", NULL);
    expect_status(r, 0);
    json_error_t je;
    json_t *root = json_loads(r->out, 0, &je);
    ck_assert_msg(root != NULL, "stats --json is not JSON (%s):\n%s", je.text, r->out);
    ck_assert(json_is_object(root));
    ck_assert_int_eq(json_integer_value(json_object_get(root, "pid")), daemon_.pid);
    ck_assert(json_is_string(json_object_get(root, "version")));
    ck_assert(json_is_object(json_object_get(root, "pool")));
    json_decref(root);
}
END_TEST

START_TEST(stats_table_real)
{
    json_t *root = zkn_test_stats(daemon_.sock);
    const char *kind = json_string_value(json_object_get(json_object_get(root, "backing"), "kind"));
    ck_assert_ptr_nonnull(kind);
    struct run *r = run_ctl("stats", NULL);
    expect_status(r, 0);
    expect_in(r->out, "Backing");
    expect_in(r->out, kind);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)daemon_.pid);
    expect_in(r->out, pid);
    expect_in(r->out, "CLASS");
    ck_assert_ptr_null(strstr(r->out, "(unprintable)"));
    json_decref(root);
}
END_TEST

START_TEST(trim_real)
{
    struct zkn_region_desc descs[2];
    int fds[2];
    /* Below 2 MiB the daemon makes regions inside the LEND (larger classes
     * answer not_warm on a cold daemon). */
    int cls = zkn_size_class(1u << 20);

    /* Give the pool something to trim: lend two regions and hand them back. */
    int s = zkn_test_connect(daemon_.sock);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(zkn_test_hello(s, NULL), 0);
    /* One at a time: the daemon may lend fewer than asked. */
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &descs[0], &fds[0]), 1);
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &descs[1], &fds[1]), 1);
    zkn_close_fds(fds, 2);
    uint64_t ids[2] = {descs[0].id, descs[1].id};
    ck_assert_int_eq(zkn_test_return(s, ids, 2), 2);
    close(s);

    /* Wait for background zeroing to settle so the whole pool is idle. */
    json_t *root = NULL;
    for (int i = 0; i < 500; i++) {
        json_decref(root);
        root = zkn_test_stats(daemon_.sock);
        if (zkn_test_stat_int(root, "pool", "zeroing") == 0 &&
            zkn_test_stat_int(root, "pool", "lent_bytes") == 0 &&
            (uint64_t)zkn_test_stat_int(root, "pool", "idle_bytes") >= 2 * descs[0].size)
            break;
        usleep(10000);
    }
    uint64_t idle = (uint64_t)zkn_test_stat_int(root, "pool", "idle_bytes");
    ck_assert_uint_ge(idle, 2 * descs[0].size);
    json_decref(root);

    struct run *r = run_ctl("trim", "--to", "0", "--json", NULL);
    expect_status(r, 0);
    root = json_loads(r->out, 0, NULL);
    ck_assert_msg(root != NULL, "trim --json is not JSON:\n%s", r->out);
    ck_assert_uint_eq((uint64_t)zkn_test_stat_int(root, "freed_bytes", NULL), idle);
    ck_assert_uint_eq((uint64_t)zkn_test_stat_int(root, "pool_bytes", NULL), 0);
    json_decref(root);

    root = zkn_test_stats(daemon_.sock);
    ck_assert_uint_eq((uint64_t)zkn_test_stat_int(root, "pool", "idle_bytes"), 0);
    ck_assert_uint_ge((uint64_t)zkn_test_stat_int(root, "totals", "trimmed_bytes"), idle);
    json_decref(root);

    /* Default target (0) and the readable form. */
    r = run_ctl("trim", NULL);
    expect_status(r, 0);
    expect_in(r->out, "trimmed 0 B");
}
END_TEST

START_TEST(watch_real)
{
    struct run *r = run_ctl("watch", "--interval", "0.05", "--count", "3", NULL);
    expect_status(r, 0);
    int n = 0;
    for (const char *p = r->out; (p = strstr(p, "Backing")); p++)
        n++;
    ck_assert_int_eq(n, 3);
    expect_in(r->out, "Rates/s");

    r = run_ctl("watch", "--json", "-i", "0.05", "-n", "2", NULL);
    expect_status(r, 0);
    char *save = NULL;
    int lines = 0;
    for (char *l = strtok_r(r->out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *root = json_loads(l, 0, NULL);
        ck_assert_msg(root != NULL, "watch --json line is not JSON: %s", l);
        ck_assert_int_eq(json_integer_value(json_object_get(root, "pid")), daemon_.pid);
        json_decref(root);
        lines++;
    }
    ck_assert_int_eq(lines, 2);
}
END_TEST

START_TEST(watch_ends_on_sigint)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s", zkn_test_build_path("zknallocctl"));
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(devnull, 0);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        dup2(devnull, 1);
        execl(bin, bin, "watch", "--interval", "0.05", (char *)NULL);
        _exit(127);
    }
    close(devnull);
    usleep(300 * 1000);
    ck_assert_int_eq(kill(p, SIGINT), 0);
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "watch status %d after SIGINT", st);
}
END_TEST

START_TEST(version_real)
{
    struct run *r = run_ctl("version", NULL);
    expect_status(r, 0);
    expect_in(r->out, "zknallocctl " ZKN_VERSION);
    expect_in(r->out, "zknallocd ");
    expect_in(r->out, daemon_.sock);
}
END_TEST

START_TEST(version_without_daemon)
{
    /* Without a daemon: still 0, the tool's own version, and a note. */
    struct run *r = run_ctl("--socket", "/nonexistent-zkn/x.sock", "version", NULL);
    expect_status(r, 0);
    expect_in(r->out, "zknallocctl " ZKN_VERSION);
    expect_in(r->err, "/nonexistent-zkn/x.sock");
    r = run_ctl("--version", NULL);
    expect_status(r, 0);
    expect_in(r->out, ZKN_VERSION);
}
END_TEST

/* ---- unreachable: exit 2 ---- */

START_TEST(unreachable_no_socket)
{
    const char *path = "/nonexistent-zkn-dir/zknallocd.sock";
    const char *cmds[] = {"ping", "stats", "trim", "watch"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        struct run *r = run_ctl("--socket", path, cmds[i], NULL);
        expect_status(r, 2);
        expect_in(r->err, path);
        ck_assert_str_eq(r->out, "");
    }
    /* The path from the environment is named as such. */
    setenv("ZK_NALLOC_SOCKET", path, 1);
    struct run *r = run_ctl("stats", NULL);
    expect_status(r, 2);
    expect_in(r->err, path);
    expect_in(r->err, "ZK_NALLOC_SOCKET");
}
END_TEST

/* A socket of type bound at dir/sock.sock (dir a mkdtemp template, made
 * here; the path to path). */
static int bound_socket(int type, char *dir, char *path, size_t cap)
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

/* A socket file nobody listens on, as a crashed daemon leaves behind. */
START_TEST(unreachable_stale_socket)
{
    char dir[] = "/tmp/zkn-ctl-XXXXXX", path[64];
    close(bound_socket(SOCK_SEQPACKET, dir, path, sizeof path));
    struct run *r = run_ctl("--socket", path, "ping", NULL);
    expect_status(r, 2);
    expect_in(r->err, path);
    expect_in(r->err, "refused");
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(unreachable_permission)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_ctl: skipping the permission check (needs root to switch user)\n");
        return;
    }
    /* Another user may reach the directory but not write to the socket:
     * the same as a prover outside group zknalloc. */
    struct stat dir_st, sock_st;
    ck_assert_int_eq(stat(daemon_.dir, &dir_st), 0);
    ck_assert_int_eq(stat(daemon_.sock, &sock_st), 0);
    ck_assert_int_eq(chmod(daemon_.dir, 0755), 0);
    ck_assert_int_eq(chmod(daemon_.sock, 0600), 0);
    struct passwd *nobody = getpwnam("nobody");
    struct run *r = run_ctl_uid(nobody ? (int)nobody->pw_uid : 65534, "--socket", daemon_.sock,
                                "ping", NULL);
    expect_status(r, 2);
    expect_in(r->err, "permission denied");
    expect_in(r->err, daemon_.sock);
    chmod(daemon_.sock, sock_st.st_mode & 07777);
    chmod(daemon_.dir, dir_st.st_mode & 07777);
}
END_TEST

/* ---- usage: exit 1 ---- */

START_TEST(usage_errors)
{
    static const char *const bad[][4] = {
        {NULL},
        {"frobnicate", NULL},
        {"--frobnicate", "stats", NULL},
        {"stats", "extra", NULL},
        {"ping", "--to", "5", NULL},
        {"stats", "--count", "2", NULL},
        {"watch", "--interval", "abc", NULL},
        {"watch", "--interval", "-1", NULL},
        {"watch", "--count", "0", NULL},
        {"trim", "--to", "12Q", NULL},
        {"trim", "--to", NULL},
        {"ping", "--json", NULL},
        {"--socket", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct run *r = run_ctl(bad[i][0], bad[i][0] ? bad[i][1] : NULL,
                                bad[i][0] && bad[i][1] ? bad[i][2] : NULL, NULL);
        expect_status(r, 1);
        ck_assert_msg(strlen(r->err) > 0, "usage error %zu printed nothing", i);
        ck_assert_str_eq(r->out, "");
    }
    struct run *r = run_ctl("--help", NULL);
    expect_status(r, 0);
    expect_in(r->out, "Exit status");
    expect_in(r->out, "2  daemon unreachable");
    r = run_ctl("help", NULL);
    expect_status(r, 0);
    expect_in(r->out, "Usage: zknallocctl");
}
END_TEST

/* ---- a misbehaving daemon: exit 3 ---- */

enum fake_mode { FAKE_MINIMAL, FAKE_REFUSE, FAKE_GARBAGE, FAKE_SILENT, FAKE_BAD_JSON, FAKE_ONE_STATS };

struct fake {
    pid_t pid;
    char dir[64];
    char path[96];
};

static void fake_reply(int c, uint16_t type, uint32_t req, const void *payload, size_t len)
{
    char frame[ZKN_MAX_FRAME];
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, req);
    memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    zkn_send_frame(c, frame, sizeof(struct zkn_hdr) + len, NULL, 0);
}

static void fake_serve(int c, enum fake_mode mode)
{
    char buf[ZKN_MAX_FRAME];
    int fds[16];
    size_t nfds;
    ssize_t n;

    while ((n = zkn_recv_frame(c, buf, sizeof buf, fds, 16, &nfds, 0)) > 0) {
        struct zkn_hdr h;
        memcpy(&h, buf, sizeof h);
        if (mode == FAKE_SILENT)
            continue;
        if (mode == FAKE_GARBAGE) {
            send(c, "garbage!", 8, MSG_NOSIGNAL);
            continue;
        }
        if (h.type == ZKN_MSG_HELLO && mode == FAKE_REFUSE) {
            char p[sizeof(struct zkn_error) + 32];
            struct zkn_error e = {.code = ZKN_E_BUSY};
            memcpy(p, &e, sizeof e);
            memcpy(p + sizeof e, "too many clients", 16);
            fake_reply(c, ZKN_MSG_ERROR, h.request_id, p, sizeof e + 16);
        } else if (h.type == ZKN_MSG_HELLO) {
            struct zkn_hello_ok ok = {.version = ZKN_PROTO_VERSION, .class_count = ZKN_CLASS_COUNT,
                                      .max_regions_per_reply = 16, .daemon_pid = 4242,
                                      .backing = ZKN_BACKING_MEMFD_4K};
            fake_reply(c, ZKN_MSG_HELLO_OK, h.request_id, &ok, sizeof ok);
        } else if (h.type == ZKN_MSG_STATS) {
            /* Only a few fields, some of the wrong type, one hostile string. */
            const char *j = mode == FAKE_BAD_JSON
                                ? "{\"version\": \"9.9.9\", oops"
                                : "{\"version\":\"9.9.9\",\"pid\":4242,\"uptime_s\":\"soon\","
                                  "\"backing\":{\"kind\":\"memfd-4k\",\"detail\":\"\\u001b[2J\"},"
                                  "\"pool\":{\"idle_bytes\":1572864},"
                                  "\"classes\":[{\"class\":3,\"size\":131072,\"hits\":true}],"
                                  "\"clients\":[{\"pid\":7}],\"clients_omitted\":5}";
            fake_reply(c, ZKN_MSG_STATS_REPLY, h.request_id, j, strlen(j));
            if (mode == FAKE_ONE_STATS)
                return; /* hang up, as a daemon that restarts does */
        } else if (h.type == ZKN_MSG_PING) {
            fake_reply(c, ZKN_MSG_PONG, h.request_id, "", 0);
        }
    }
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(f->dir, sizeof f->dir, "/tmp/zkn-fake-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/fake.sock", f->dir);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", f->path);
    int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(l, 8), 0);
    fflush(NULL);
    f->pid = fork();
    ck_assert_int_ge(f->pid, 0);
    if (f->pid == 0) {
        for (;;) {
            int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                _exit(0);
            fake_serve(c, mode);
            close(c);
        }
    }
    close(l);
}

static void fake_stop(struct fake *f)
{
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    unlink(f->path);
    rmdir(f->dir);
}

START_TEST(missing_fields_print_as_dash)
{
    struct fake f;
    fake_start(&f, FAKE_MINIMAL);
    struct run *r = run_ctl("--socket", f.path, "stats", NULL);
    expect_status(r, 0);
    expect_in(r->out, "zknallocd 9.9.9");
    expect_in(r->out, "pid 4242");
    expect_in(r->out, "up -");          /* uptime of the wrong type */
    expect_in(r->out, "idle 1.5 MiB"); /* human sizes */
    expect_in(r->out, "clean -");
    expect_in(r->out, "Refusals  -");
    expect_in(r->out, "128 KiB");
    expect_in(r->out, "5 more not listed");
    ck_assert_ptr_null(strchr(r->out, '\033')); /* no terminal escapes from the daemon */
    fake_stop(&f);
}
END_TEST

START_TEST(daemon_errors_exit_3)
{
    struct fake f;
    struct run *r;

    fake_start(&f, FAKE_REFUSE);
    r = run_ctl("--socket", f.path, "stats", NULL);
    expect_status(r, 3);
    expect_in(r->err, f.path);
    expect_in(r->err, "busy");
    expect_in(r->err, "too many clients");
    fake_stop(&f);

    fake_start(&f, FAKE_GARBAGE);
    r = run_ctl("--socket", f.path, "stats", NULL);
    expect_status(r, 3);
    expect_in(r->err, "malformed");
    r = run_ctl("--socket", f.path, "ping", NULL);
    expect_status(r, 3);
    fake_stop(&f);

    fake_start(&f, FAKE_SILENT);
    r = run_ctl("--socket", f.path, "--timeout", "0.2", "ping", NULL);
    expect_status(r, 3);
    expect_in(r->err, "within");
    fake_stop(&f);

    fake_start(&f, FAKE_BAD_JSON);
    r = run_ctl("--socket", f.path, "stats", "--json", NULL);
    expect_status(r, 3);
    expect_in(r->err, "JSON");
    ck_assert_str_eq(r->out, "");
    fake_stop(&f);
}
END_TEST

/* A daemon that goes away between refreshes: watch says so, reconnects,
 * and still ends normally. */
START_TEST(watch_survives_a_restart)
{
    struct fake f;
    fake_start(&f, FAKE_ONE_STATS);
    struct run *r = run_ctl("--socket", f.path, "watch", "-i", "0.05", "-n", "3", NULL);
    expect_status(r, 0);
    int shown = 0;
    for (const char *p = r->out; (p = strstr(p, "zknallocd 9.9.9")); p++)
        shown++;
    ck_assert_int_eq(shown, 2);
    expect_in(r->out, "daemon not answering");
    expect_in(r->out, "retrying");
    fake_stop(&f);
}
END_TEST

/* A stream socket at the path: something else listens there. */
START_TEST(wrong_socket_type_exit_3)
{
    char dir[] = "/tmp/zkn-ctl-XXXXXX", path[64];
    int s = bound_socket(SOCK_STREAM, dir, path, sizeof path);
    ck_assert_int_eq(listen(s, 1), 0);
    struct run *r = run_ctl("--socket", path, "ping", NULL);
    expect_status(r, 3);
    expect_in(r->err, path);
    close(s);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *ctl_suite(void)
{
    Suite *s = suite_create("zknallocctl");
    TCase *real = zkn_test_tcase(s, "real_daemon", 30);
    tcase_add_unchecked_fixture(real, start_daemon, stop_daemon);
    tcase_add_test(real, ping_real);
    tcase_add_test(real, stats_json_real);
    tcase_add_test(real, stats_table_real);
    tcase_add_test(real, trim_real);
    tcase_add_test(real, watch_real);
    tcase_add_test(real, watch_ends_on_sigint);
    tcase_add_test(real, version_real);
    tcase_add_test(real, unreachable_permission);
    TCase *bad = zkn_test_tcase(s, "failures", 30);
    tcase_add_test(bad, unreachable_no_socket);
    tcase_add_test(bad, version_without_daemon);
    tcase_add_test(bad, unreachable_stale_socket);
    tcase_add_test(bad, usage_errors);
    tcase_add_test(bad, missing_fields_print_as_dash);
    tcase_add_test(bad, daemon_errors_exit_3);
    tcase_add_test(bad, wrong_socket_type_exit_3);
    tcase_add_test(bad, watch_survives_a_restart);
    return s;
}

ZKN_TEST_MAIN(ctl_suite)
