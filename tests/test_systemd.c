/* The service side: systemd units pass `systemd-analyze verify` once
 * installed, agree with the shared socket path rule, the sysusers and
 * tmpfiles snippets do what they say, `make install DESTDIR=...` installs
 * every documented file with no DESTDIR inside any of them, the man pages
 * format without a warning, and the real daemon works under socket activation
 * (systemd-socket-activate) and reports readiness over NOTIFY_SOCKET.
 *
 * Checks that need a tool (systemd-analyze, systemd-sysusers, groff,
 * systemd-socket-activate) are skipped with a message naming it when it is
 * absent. */
#include "systemd_helpers.h"

/* ---- units ---- */

/* Installed with PREFIX pointing into a temporary tree (no DESTDIR), the
 * units' ExecStart names a binary that exists, which verify insists on. */
START_TEST(units_pass_systemd_analyze_verify)
{
    SKIP_WITHOUT("systemd-analyze");
    char prefix[128], manpath[160], svc[200], sock[200], usvc[200], usock[200], rt[160];
    make_tmp();
    snprintf(prefix, sizeof prefix, "%s/prefix", tmp_);
    make_install("", prefix);
    snprintf(svc, sizeof svc, "%s/lib/systemd/system/zknallocd.service", prefix);
    snprintf(sock, sizeof sock, "%s/lib/systemd/system/zknallocd.socket", prefix);
    snprintf(usvc, sizeof usvc, "%s/lib/systemd/user/zknallocd.service", prefix);
    snprintf(usock, sizeof usock, "%s/lib/systemd/user/zknallocd.socket", prefix);

    /* Documentation= is checked too: against the man pages just installed. */
    int man = have("man");
    snprintf(manpath, sizeof manpath, "%s/share/man", prefix);
    setenv("MANPATH", manpath, 1);
    if (!man)
        fprintf(stderr, "test_systemd: man not installed; verify runs with --man=no\n");
    const char *manopt = man ? "--man=yes" : "--man=no";

    const char *sys[] = {"systemd-analyze", "verify", manopt, svc, sock, NULL};
    struct out *o = run(sys);
    ck_assert_msg(o->status == 0 && o->err[0] == '\0' && o->text[0] == '\0',
                  "verify of the system units (status %d):\n%s%s", o->status, o->text, o->err);

    snprintf(rt, sizeof rt, "%s/run", tmp_);
    mkdir(rt, 0700);
    setenv("XDG_RUNTIME_DIR", rt, 1);
    const char *user[] = {"systemd-analyze", "verify", "--user", manopt, usvc, usock, NULL};
    o = run(user);
    ck_assert_msg(o->status == 0 && o->err[0] == '\0' && o->text[0] == '\0',
                  "verify of the user units (status %d):\n%s%s", o->status, o->text, o->err);
    rm_tmp();
}
END_TEST

/* The units name the same sockets as the shared rule in proto/sockpath.h and
 * carry the settings the documentation promises. */
START_TEST(units_agree_with_the_socket_rule)
{
    char p[600];
    const char *root = repo_root();
    char line[256];

    snprintf(p, sizeof p, "%s/systemd/zknallocd.socket", root);
    char *s = strdup(read_file(p));
    snprintf(line, sizeof line, "\nListenSequentialPacket=%s\n", ZKN_SYSTEM_SOCKET);
    ck_assert_msg(strstr(s, line), "system socket unit does not listen on %s", ZKN_SYSTEM_SOCKET);
    ck_assert_ptr_nonnull(strstr(s, "\nSocketMode=0660\n"));
    ck_assert_ptr_nonnull(strstr(s, "\nSocketGroup=zknalloc\n"));
    free(s);

    snprintf(p, sizeof p, "%s/systemd/zknallocd.service", root);
    s = strdup(read_file(p));
    static const char *const need[] = {
        "\nType=notify\n", "\nNotifyAccess=main\n", "\nFileDescriptorStoreMax=4096\n",
        "\nRuntimeDirectory=zknalloc\n", "\nMemoryHigh=", "\nMemoryMax=",
        "\nNoNewPrivileges=yes\n", "\nProtectSystem=strict\n", "\nProtectHome=yes\n",
        "\nPrivateTmp=yes\n", "\nPrivateDevices=yes\n", "\nRestrictAddressFamilies=AF_UNIX\n",
        "\nSystemCallFilter=@system-service\n", "\nCapabilityBoundingSet=\n",
        "\nMemoryDenyWriteExecute=yes\n", "\nProtectKernelTunables=yes\n",
        "\nProtectKernelModules=yes\n", "\nProtectControlGroups=yes\n",
        "\nRestrictNamespaces=yes\n", "\nLockPersonality=yes\n", "\nRestrictRealtime=yes\n",
        "\nRestrictSUIDSGID=yes\n", "\nSystemCallArchitectures=native\n",
        "\nExecStart=/usr/local/sbin/zknallocd --socket " ZKN_SYSTEM_SOCKET " "};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        ck_assert_msg(strstr(s, need[i]), "zknallocd.service lacks '%s'", need[i] + 1);
    /* A user namespace would turn every client's uid into nobody, and pools
     * are partitioned by uid. */
    ck_assert_ptr_null(strstr(s, "\nPrivateUsers=yes"));
    free(s);

    /* The per-user socket is the rule's per-user path: $XDG_RUNTIME_DIR is %t. */
    char user[256];
    setenv("XDG_RUNTIME_DIR", "/RUNTIME", 1);
    ck_assert_int_eq(zkn_user_socket_path(user, sizeof user), 0);
    ck_assert_str_eq(user, "/RUNTIME/zknalloc/zknallocd.sock");
    snprintf(p, sizeof p, "%s/systemd/user/zknallocd.socket", root);
    ck_assert_ptr_nonnull(strstr(read_file(p), "\nListenSequentialPacket=%t/zknalloc/zknallocd.sock\n"));
    snprintf(p, sizeof p, "%s/systemd/user/zknallocd.service", root);
    ck_assert_ptr_nonnull(strstr(read_file(p), "--socket %t/zknalloc/zknallocd.sock"));
}
END_TEST

START_TEST(sysusers_creates_the_socket_group)
{
    SKIP_WITHOUT("systemd-sysusers");
    char r[128], conf[600], group[200];
    make_tmp();
    snprintf(r, sizeof r, "%s/root", tmp_);
    mkdir(r, 0755);
    snprintf(group, sizeof group, "%s/etc", r);
    mkdir(group, 0755); /* sysusers writes passwd and group there */
    snprintf(conf, sizeof conf, "%s/systemd/zknalloc.sysusers", repo_root());
    char rootopt[160];
    snprintf(rootopt, sizeof rootopt, "--root=%s", r);
    const char *argv[] = {"systemd-sysusers", rootopt, conf, NULL};
    struct out *o = run(argv);
    ck_assert_msg(o->status == 0, "systemd-sysusers failed:\n%s", o->err);
    snprintf(group, sizeof group, "%s/etc/group", r);
    ck_assert_msg(strstr(read_file(group), "zknalloc:"), "no group zknalloc in %s", group);
    snprintf(group, sizeof group, "%s/etc/passwd", r);
    ck_assert_msg(strstr(read_file(group), "zknalloc:"), "no user zknalloc in %s", group);
    rm_tmp();
}
END_TEST

/* The opt-in snippet writes "advise" where it says, tried on a fake /sys. */
START_TEST(thp_snippet_writes_advise)
{
    SKIP_WITHOUT("systemd-tmpfiles");
    char r[128], dir[200], file[260], conf[600], rootopt[160];
    make_tmp();
    snprintf(r, sizeof r, "%s/root", tmp_);
    snprintf(dir, sizeof dir, "mkdir -p %s/sys/kernel/mm/transparent_hugepage", r);
    const char *mk[] = {"sh", "-c", dir, NULL};
    ck_assert_int_eq(run(mk)->status, 0);
    snprintf(file, sizeof file, "%s/sys/kernel/mm/transparent_hugepage/shmem_enabled", r);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("always within_size advise [never] deny force\n", f);
    fclose(f);
    snprintf(conf, sizeof conf, "%s/systemd/zknalloc-thp.tmpfiles", repo_root());
    snprintf(rootopt, sizeof rootopt, "--root=%s", r);
    const char *argv[] = {"systemd-tmpfiles", rootopt, "--create", conf, NULL};
    struct out *o = run(argv);
    ck_assert_msg(o->status == 0, "systemd-tmpfiles failed:\n%s", o->err);
    ck_assert_msg(strncmp(read_file(file), "advise", 6) == 0, "snippet wrote '%s'",
                  read_file(file));
    rm_tmp();
}
END_TEST

/* ---- the real daemon under systemd's protocols ---- */

static void wait_exit(pid_t p, int *st)
{
    for (int i = 0; i < 500; i++) {
        if (waitpid(p, st, WNOHANG) == p)
            return;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, st, 0);
    ck_abort_msg("process %d did not exit within 5 s of SIGTERM", (int)p);
}

static int activation_log = -1;

static const char *activation_output(void)
{
    static char buf[4096];
    slurp(dup(activation_log), buf, sizeof buf);
    return buf;
}

START_TEST(socket_activation_serves_clients)
{
    SKIP_WITHOUT("systemd-socket-activate");
    char sock[128], bin[512];
    make_tmp();
    snprintf(sock, sizeof sock, "%s/zkn.sock", tmp_);
    snprintf(bin, sizeof bin, "%s", zkn_test_build_path("zknallocd"));
    /* Its chatter (and the daemon's) is shown only when the case fails. */
    int log = memfd_create("activate-log", MFD_CLOEXEC);
    ck_assert_int_ge(log, 0);
    fflush(NULL);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        /* Without --accept, systemd-socket-activate execs the daemon in its
         * own process once a client connects: same pid, LISTEN_FDS=1. It
         * passes on only the environment named with -E. */
        dup2(log, 2);
        execlp("systemd-socket-activate", "systemd-socket-activate", "--seqpacket", "-l", sock,
               "-E", "ZK_NALLOC_LOG_LEVEL=warn", bin, "--socket", sock, (char *)NULL);
        _exit(127);
    }
    activation_log = log;
    int s = -1;
    for (int i = 0; i < 500 && s < 0; i++) {
        s = zkn_test_connect(sock);
        if (s < 0)
            usleep(10000);
    }
    ck_assert_msg(s >= 0, "systemd-socket-activate never listened on %s:\n%s", sock,
                  activation_output());
    struct zkn_hello_ok ok;
    ck_assert_msg(zkn_test_hello(s, &ok) == 0, "no HELLO_OK through the activated socket:\n%s",
                  activation_output());
    ck_assert_int_eq(ok.daemon_pid, p);
    close(s);
    char *json = zkn_test_stats_json(sock);
    ck_assert_ptr_nonnull(json);
    json_t *root = json_loads(json, 0, NULL);
    free(json);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "pid")), p);
    json_decref(root);
    ck_assert_int_eq(kill(p, SIGTERM), 0);
    int st;
    wait_exit(p, &st);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d:\n%s", st,
                  activation_output());
    /* The socket belongs to the service manager, which keeps listening on it
     * across restarts: the daemon must not have removed it. */
    struct stat st_sock;
    ck_assert_msg(stat(sock, &st_sock) == 0 && S_ISSOCK(st_sock.st_mode),
                  "the daemon removed the socket it was passed");
    close(activation_log);
    unlink(sock);
    rm_tmp();
}
END_TEST

START_TEST(daemon_reports_readiness)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char path[96], buf[4096];
    int one = 1, ready = 0, status = 0;
    struct zkn_test_daemon d;

    make_tmp();
    snprintf(path, sizeof path, "%s/notify", tmp_);
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int n = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(n, 0);
    ck_assert_int_eq(setsockopt(n, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
    ck_assert_int_eq(bind(n, (struct sockaddr *)&a, sizeof a), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(zkn_test_daemon_start(&d, NULL), 0);
    unsetenv("NOTIFY_SOCKET");

    struct timeval tv = {.tv_sec = 5};
    ck_assert_int_eq(setsockopt(n, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    while (!(ready && status)) {
        ssize_t k = recv(n, buf, sizeof buf - 1, 0);
        if (k < 0)
            break;
        buf[k] = '\0';
        ready |= strstr(buf, "READY=1") != NULL;
        status |= strstr(buf, "STATUS=") != NULL;
    }
    zkn_test_daemon_stop(&d);
    zkn_test_daemon_cleanup(&d);
    close(n);
    ck_assert_msg(ready, "no READY=1 from the daemon");
    ck_assert_msg(status, "no STATUS= from the daemon");
    rm_tmp();
}
END_TEST


static Suite *systemd_suite(void)
{
    Suite *s = suite_create("systemd");
    TCase *u = zkn_test_tcase(s, "units", 120);
    tcase_add_test(u, units_pass_systemd_analyze_verify);
    tcase_add_test(u, units_agree_with_the_socket_rule);
    tcase_add_test(u, sysusers_creates_the_socket_group);
    tcase_add_test(u, thp_snippet_writes_advise);
    TCase *d = zkn_test_tcase(s, "daemon", 30);
    tcase_add_test(d, socket_activation_serves_clients);
    tcase_add_test(d, daemon_reports_readiness);
    return s;
}

ZKN_TEST_MAIN(systemd_suite)
