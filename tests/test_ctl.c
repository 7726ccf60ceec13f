/* zknallocctl, the built binary, against the real daemon (ping, stats, trim,
 * watch, version), against nothing (exit 2), against a misbehaving fake
 * (exit 3), and with bad command lines (exit 1). */
#include "ctl_helpers.h"

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
    return s;
}

ZKN_TEST_MAIN(ctl_suite)
