/* zknallocctl, the built binary, against a misbehaving fake daemon (exit 3)
 * and across a real daemon's restart. */
#include "ctl_helpers.h"

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


static Suite *ctl_fake_suite(void)
{
    Suite *s = suite_create("zknallocctl_fake");
    TCase *bad = zkn_test_tcase(s, "failures", 30);
    tcase_add_test(bad, missing_fields_print_as_dash);
    tcase_add_test(bad, daemon_errors_exit_3);
    tcase_add_test(bad, wrong_socket_type_exit_3);
    tcase_add_test(bad, watch_survives_a_restart);
    return s;
}

ZKN_TEST_MAIN(ctl_fake_suite)
