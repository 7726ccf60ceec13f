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

static void slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Runs argv[0] (found on PATH) with stdout/stderr captured. A nested make
 * must not see the outer make's jobserver, so its variables are dropped. */
static struct out *run(const char *const *argv)
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

static int have(const char *tool)
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

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void must_exist(const char *root, const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s%s", root, rel);
    ck_assert_msg(lstat(p, &st) == 0, "not installed: %s", p);
}

/* The source tree: the current directory when `make test` runs, else the
 * parent of the build directory. */
static const char *repo_root(void)
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
static const char *build_var(void)
{
    static char b[600];
    char *dir = realpath(zkn_test_build_path("."), NULL);
    ck_assert_ptr_nonnull(dir);
    snprintf(b, sizeof b, "B=%s", dir);
    free(dir);
    return b;
}

static char tmp_[64];

static void make_tmp(void)
{
    snprintf(tmp_, sizeof tmp_, "/tmp/zkn-sd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_));
}

static void rm_tmp(void)
{
    if (tmp_[0]) {
        const char *argv[] = {"rm", "-rf", tmp_, NULL};
        run(argv);
        tmp_[0] = '\0';
    }
}

static void make_install(const char *destdir, const char *prefix)
{
    char d[600], p[600];
    snprintf(d, sizeof d, "DESTDIR=%s", destdir);
    snprintf(p, sizeof p, "PREFIX=%s", prefix);
    const char *argv[] = {"make", "-s", "-C", repo_root(), build_var(), d, p, "install", NULL};
    struct out *o = run(argv);
    ck_assert_msg(o->status == 0, "make install failed:\n%s\n%s", o->text, o->err);
}

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

/* ---- make install ---- */

/* Installed text files must not mention DESTDIR: they are read after the
 * staged tree is copied to /. */
static void assert_no_destdir(const char *path, const char *destdir)
{
    char *t = read_file(path);
    ck_assert_msg(!strstr(t, destdir), "%s mentions DESTDIR %s", path, destdir);
}

START_TEST(install_with_destdir)
{
    char dest[128], p[512];
    make_tmp();
    snprintf(dest, sizeof dest, "%s/stage", tmp_);
    make_install(dest, "/usr/local");

    static const char *const files[] = {
        "/usr/local/sbin/zknallocd",
        "/usr/local/bin/zknallocctl",
        "/usr/local/lib/libzknalloc.so.0",
        "/usr/local/lib/libzknalloc.so",
        "/usr/local/lib/libzknalloc.a",
        "/usr/local/include/zknalloc.h",
        "/usr/local/lib/pkgconfig/zknalloc.pc",
        "/usr/local/share/man/man1/zknallocctl.1",
        "/usr/local/share/man/man3/zknalloc.3",
        "/usr/local/share/man/man7/zknalloc.7",
        "/usr/local/share/man/man8/zknallocd.8",
        "/usr/local/lib/systemd/system/zknallocd.service",
        "/usr/local/lib/systemd/system/zknallocd.socket",
        "/usr/local/lib/systemd/user/zknallocd.service",
        "/usr/local/lib/systemd/user/zknallocd.socket",
        "/usr/local/lib/sysusers.d/zknalloc.conf",
        "/usr/local/share/zknalloc/zknalloc-thp.conf",
        "/usr/local/share/doc/zknalloc/systemd.md",
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        must_exist(dest, files[i]);

    /* The THP snippet is opt-in: nowhere tmpfiles.d would read it. */
    snprintf(p, sizeof p, "%s/usr/local/lib/tmpfiles.d/zknalloc-thp.conf", dest);
    ck_assert_int_ne(access(p, F_OK), 0);

    snprintf(p, sizeof p, "%s/usr/local/lib/pkgconfig/zknalloc.pc", dest);
    assert_no_destdir(p, dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "prefix=/usr/local\n"));
    ck_assert_ptr_nonnull(strstr(read_file(p), "libdir=/usr/local/lib\n"));
    static const char *const text[] = {
        "/usr/local/lib/systemd/system/zknallocd.service",
        "/usr/local/lib/systemd/system/zknallocd.socket",
        "/usr/local/lib/systemd/user/zknallocd.service",
        "/usr/local/lib/systemd/user/zknallocd.socket",
        "/usr/local/lib/sysusers.d/zknalloc.conf",
        "/usr/local/share/zknalloc/zknalloc-thp.conf",
    };
    for (size_t i = 0; i < sizeof text / sizeof *text; i++) {
        snprintf(p, sizeof p, "%s%s", dest, text[i]);
        assert_no_destdir(p, dest);
    }
    snprintf(p, sizeof p, "%s/usr/local/lib/systemd/system/zknallocd.service", dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "\nExecStart=/usr/local/sbin/zknallocd "));
    rm_tmp();

    /* Another prefix: ExecStart follows SBINDIR. */
    make_tmp();
    snprintf(dest, sizeof dest, "%s/stage", tmp_);
    make_install(dest, "/usr");
    must_exist(dest, "/usr/lib/systemd/system/zknallocd.service");
    snprintf(p, sizeof p, "%s/usr/lib/systemd/system/zknallocd.service", dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "\nExecStart=/usr/sbin/zknallocd "));
    snprintf(p, sizeof p, "%s/usr/lib/pkgconfig/zknalloc.pc", dest);
    assert_no_destdir(p, dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "prefix=/usr\n"));
    rm_tmp();
}
END_TEST

/* ---- man pages ---- */

START_TEST(man_pages_format_cleanly)
{
    SKIP_WITHOUT("groff");
    static const char *const pages[] = {"zknallocd.8", "zknallocctl.1", "zknalloc.3",
                                        "zknalloc.7"};
    for (size_t i = 0; i < sizeof pages / sizeof *pages; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/man/%s", repo_root(), pages[i]);
        const char *argv[] = {"groff", "-man", "-Tutf8", "-ww", "-z", p, NULL};
        struct out *o = run(argv);
        ck_assert_msg(o->status == 0 && o->err[0] == '\0', "groff on %s (status %d):\n%s", p,
                      o->status, o->err);
    }
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
    TCase *i = zkn_test_tcase(s, "install", 180);
    tcase_add_test(i, install_with_destdir);
    tcase_add_test(i, man_pages_format_cleanly);
    TCase *d = zkn_test_tcase(s, "daemon", 30);
    tcase_add_test(d, socket_activation_serves_clients);
    tcase_add_test(d, daemon_reports_readiness);
    return s;
}

ZKN_TEST_MAIN(systemd_suite)
