/* Whom a client trusts: a daemon another user runs at the client's default
 * path learns nothing, and a daemon that lends anything but a sealed region
 * of the announced size is dropped. Needs root (to act as other uids). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
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
#include "zknalloc.h"
#include "zkn_proto.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define VICTIM_UID 54321
#define ATTACKER_UID 65534

static void become(uid_t uid)
{
    if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)
        _exit(99);
}

/* Starts zknallocd as uid on path; its pid, or -1. */
static pid_t daemon_as(uid_t uid, const char *path, const char *mode)
{
    pid_t pid = fork();
    if (pid == 0) {
        become(uid);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execl(zkn_test_build_path("zknallocd"), "zknallocd", "--socket", path, "--socket-mode",
              mode, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            return pid;
        zkn_test_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* As the victim, with no XDG_RUNTIME_DIR: allocates 768 KiB, writes a secret.
 * (A class the daemon creates inside the LEND when it has none ready; 1 MiB
 * would be asked as a 2 MiB region, answered not_warm by a fresh daemon.)
 * Exit 0 when the daemon connection state is `want_connected`. */
static int victim_run(int want_connected)
{
    pid_t pid = fork();
    if (pid == 0) {
        become(VICTIM_UID);
        unsetenv("XDG_RUNTIME_DIR");
        unsetenv("ZK_NALLOC_SOCKET");
        char *p = NULL;
        struct zkn_stats s = {0};
        for (int i = 0; i < 20 && !s.daemon_connected; i++) {
            p = zkn_malloc(768 * KiB);
            memset(p, 'V', 768 * KiB);
            zkn_stats(&s);
            if (!s.daemon_connected)
                zkn_test_sleep_ms(300); /* past the client's quiet period */
        }
        int ok = want_connected ? s.daemon_connected == 1 && s.bytes_leased > 0
                                : s.daemon_connected == 0 && s.bytes_leased == 0;
        _exit(ok ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(a_daemon_of_another_user_at_the_default_path_learns_nothing)
{
    char dir[64], path[128];
    snprintf(dir, sizeof dir, "/tmp/zknalloc-%d", VICTIM_UID);
    snprintf(path, sizeof path, "%s/zknallocd.sock", dir);
    /* The attacker gets there first: its directory, its daemon, mode 0666. */
    pid_t mk = fork();
    if (mk == 0) {
        become(ATTACKER_UID);
        _exit(mkdir(dir, 0777) == 0 && chmod(dir, 0777) == 0 ? 0 : 1);
    }
    int st;
    waitpid(mk, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cannot make %s as the attacker", dir);
    pid_t attacker = daemon_as(ATTACKER_UID, path, "0666");
    ck_assert_int_gt(attacker, 0);
    int rc = victim_run(0);
    char *json = zkn_test_stats_json(path);
    kill(attacker, SIGKILL);
    waitpid(attacker, NULL, 0);
    unlink(path);
    rmdir(dir);
    ck_assert_msg(rc == 0, "the victim used the attacker's daemon (status %d)", rc);
    ck_assert_ptr_nonnull(json);
    ck_assert_msg(strstr(json, "\"lends\":0,") != NULL, "the attacker lent: %s", json);
    free(json);

    /* Control: the victim's own daemon in its own directory is used. */
    pid_t own = fork();
    if (own == 0) {
        become(VICTIM_UID);
        _exit(mkdir(dir, 0700) == 0 ? 0 : 1);
    }
    waitpid(own, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pid_t mine = daemon_as(VICTIM_UID, path, "0600");
    ck_assert_int_gt(mine, 0);
    rc = victim_run(1);
    kill(mine, SIGKILL);
    waitpid(mine, NULL, 0);
    unlink(path);
    rmdir(dir);
    ck_assert_msg(rc == 0, "the victim did not use its own daemon (status %d)", rc);
}
END_TEST

/* A daemon another user runs is trusted once that user is named in
 * ZK_NALLOC_DAEMON_UID, and only in a directory others cannot write. */
START_TEST(a_configured_daemon_uid_is_trusted_in_a_safe_directory)
{
    char dir[64], path[128], uid[16];
    snprintf(dir, sizeof dir, "/tmp/zknalloc-%d", VICTIM_UID);
    snprintf(path, sizeof path, "%s/zknallocd.sock", dir);
    snprintf(uid, sizeof uid, "%d", ATTACKER_UID);
    for (int safe = 0; safe < 2; safe++) {
        pid_t mk = fork();
        if (mk == 0) {
            become(ATTACKER_UID);
            mode_t mode = safe ? 0755 : 0777;
            _exit(mkdir(dir, mode) == 0 && chmod(dir, mode) == 0 ? 0 : 1);
        }
        int st;
        waitpid(mk, &st, 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        pid_t d = daemon_as(ATTACKER_UID, path, "0666");
        ck_assert_int_gt(d, 0);
        setenv("ZK_NALLOC_DAEMON_UID", uid, 1);
        int rc = victim_run(safe);
        unsetenv("ZK_NALLOC_DAEMON_UID");
        kill(d, SIGKILL);
        waitpid(d, NULL, 0);
        unlink(path);
        rmdir(dir);
        ck_assert_msg(rc == 0, "%s directory: status %d", safe ? "a safe" : "a world-writable",
                      rc);
    }
}
END_TEST

/* ---- a daemon that lends what is not a region ---- */

struct fake {
    int listen_fd;
    int kind; /* 0: a pipe, 1: a memfd of the wrong size, 2: an unsealed memfd */
    int frames_after;
    _Atomic int lent_fds;
};

static int bogus_fd(int kind, uint64_t size)
{
    if (kind == 0) {
        int p[2];
        if (pipe(p) != 0)
            return -1;
        close(p[1]);
        return p[0];
    }
    int fd = memfd_create("bogus", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)(kind == 1 ? size / 2 : size)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void reply(int s, uint16_t type, uint32_t rid, const void *payload, size_t len, int *fds,
                  size_t nfds)
{
    char frame[1024];
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, rid);
    memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    zkn_send_frame(s, frame, sizeof(struct zkn_hdr) + len, fds, nfds);
}

static void *serve_bogus(void *arg)
{
    struct fake *f = arg;
    int s = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    char buf[1024];
    int fds[16];
    size_t nfds;
    for (;;) {
        ssize_t n = zkn_recv_frame(s, buf, sizeof buf, fds, 16, &nfds, 0);
        if (n <= 0)
            break;
        struct zkn_hdr h;
        memcpy(&h, buf, sizeof h);
        if (h.type == ZKN_MSG_HELLO) {
            struct zkn_hello_ok ok = {.version = ZKN_PROTO_VERSION,
                                      .class_count = ZKN_CLASS_COUNT,
                                      .max_regions_per_reply = 16,
                                      .client_cap_bytes = 1ull << 40,
                                      .daemon_pid = (uint32_t)getpid(),
                                      .backing = ZKN_BACKING_MEMFD_COLLAPSE};
            reply(s, ZKN_MSG_HELLO_OK, h.request_id, &ok, sizeof ok, NULL, 0);
        } else if (h.type == ZKN_MSG_LEND) {
            struct zkn_lend l;
            memcpy(&l, buf + sizeof h, sizeof l);
            char payload[sizeof(struct zkn_regions) + sizeof(struct zkn_region_desc)];
            struct zkn_regions r = {.count = 1};
            struct zkn_region_desc d = {.id = 42, .size = zkn_class_size(l.size_class),
                                        .size_class = l.size_class};
            memcpy(payload, &r, sizeof r);
            memcpy(payload + sizeof r, &d, sizeof d);
            int fd = bogus_fd(f->kind, d.size);
            reply(s, ZKN_MSG_REGIONS, h.request_id, payload, sizeof payload, &fd, 1);
            close(fd);
            f->lent_fds++;
        } else {
            f->frames_after++;
        }
    }
    close(s);
    return NULL;
}

START_TEST(a_daemon_lending_anything_but_a_sealed_region_is_dropped)
{
    char dir[] = "/tmp/zkn-fake-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s", dir);
    struct fake f = {.kind = _i};
    f.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    ck_assert_int_eq(bind(f.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(f.listen_fd, 4), 0);
    pthread_t t;
    pthread_create(&t, NULL, serve_bogus, &f);
    setenv("ZK_NALLOC_SOCKET", path, 1);
    setenv("ZK_NALLOC_DAEMON_WAIT_MS", "500", 1); /* the fake answers slowly under ASan */
    struct zkn_stats s;
    /* A reply slower than the client waits (a sanitizer build) is given back
     * unmapped; the next request after the quiet period sees the bogus fd. */
    for (int tries = 0; tries < 20; tries++) {
        unsigned char *p = zkn_malloc(2 * MiB);
        ck_assert_ptr_nonnull(p);
        memset(p, 'B', 2 * MiB);
        zkn_stats(&s);
        ck_assert_uint_eq(s.bytes_leased, 0); /* never mapped, whatever happened */
        ck_assert(zkn_test_all_byte(p, 2 * MiB, 'B'));
        zkn_free(p);
        zkn_release_cache();
        if (!s.daemon_connected && f.lent_fds > 0)
            break;
        zkn_test_sleep_ms(300);
    }
    ck_assert_uint_eq(s.daemon_connected, 0);
    ck_assert_uint_ge(s.fallbacks, 1);
    pthread_join(t, NULL); /* the client hung up */
    close(f.listen_fd);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_trust");
    TCase *t = zkn_test_tcase(s, "trust", 60);
    if (geteuid() == 0) {
        tcase_add_test(t, a_daemon_of_another_user_at_the_default_path_learns_nothing);
        tcase_add_test(t, a_configured_daemon_uid_is_trusted_in_a_safe_directory);
    } else {
        fprintf(stderr, "skipping the other-user tests: they need root\n");
    }
    tcase_add_loop_test(t, a_daemon_lending_anything_but_a_sealed_region_is_dropped, 0, 3);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
