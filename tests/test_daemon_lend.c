/* Issue 11 against a real daemon: LEND never waits (not_warm, then served
 * from what the daemon prepared), learned ready targets and their decay,
 * RETURN with FORGET, and the client and global caps at hand-over. */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "wire.h"

static void return_all(int s, const struct zkn_region_desc *d, int n, const int *fds)
{
    uint64_t ids[ZKN_MAX_REGIONS_PER_REPLY];
    for (int i = 0; i < n; i++) {
        ids[i] = d[i].id;
        if (fds)
            close(fds[i]);
    }
    if (n > 0)
        ck_assert_int_eq(zkn_test_return(s, ids, (uint32_t)n), n);
}

/* RETURN with flags; returns the reply's type and its count or error code. */
static uint16_t return_flags(int s, const uint64_t *ids, uint32_t n, uint32_t flags,
                             uint32_t *value)
{
    char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * sizeof(uint64_t)];
    char buf[ZKN_MAX_FRAME];
    struct zkn_return r = {.count = n, .flags = flags};
    struct zkn_hdr h;
    memcpy(payload, &r, sizeof r);
    memcpy(payload + sizeof r, ids, n * sizeof *ids);
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_RETURN, 21, payload, sizeof r + n * sizeof *ids),
                     0);
    ck_assert_int_ge(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000),
                     (ssize_t)(sizeof h + 8));
    memcpy(&h, buf, sizeof h);
    memcpy(value, buf + sizeof h, sizeof *value); /* RETURN_OK count or ERROR code */
    return h.type;
}

/* A LEND refused with ERROR: its code, the text into text. */
static uint32_t lend_refusal(int s, int cls, int count, char *text, size_t cap)
{
    struct zkn_lend l = {.size_class = (uint16_t)cls, .count = (uint16_t)count};
    char buf[ZKN_MAX_FRAME];
    struct zkn_hdr h;
    struct zkn_error e;
    ck_assert_int_eq(zkn_test_send(s, ZKN_MSG_LEND, 22, &l, sizeof l), 0);
    ssize_t n = zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000);
    ck_assert_int_ge(n, (ssize_t)(sizeof h + sizeof e));
    memcpy(&h, buf, sizeof h);
    ck_assert_int_eq(h.type, ZKN_MSG_ERROR);
    memcpy(&e, buf + sizeof h, sizeof e);
    size_t tl = (size_t)n - sizeof h - sizeof e;
    if (tl >= cap)
        tl = cap - 1;
    memcpy(text, buf + sizeof h + sizeof e, tl);
    text[tl] = '\0';
    return e.code;
}

/* Starts a daemon with args and opens a session to it; -1 (closed again)
 * where the backing is memfd-4k, which makes every class inline: the cases
 * about classes prepared in the background do not apply there. */
static int start_session_unless_4k(const char *const *args)
{
    uint32_t backing;
    fx_start(args);
    int s = zkn_test_session(fx_daemon.sock, &backing);
    if (backing != ZKN_BACKING_MEMFD_4K)
        return s;
    close(s);
    return -1;
}

START_TEST(cold_lend_is_not_warm_at_once_then_served)
{
    int s = start_session_unless_4k(NULL);
    if (s < 0) {
        fprintf(stderr, "cold_lend: memfd-4k backing creates every class inline; skipped\n");
        return;
    }
    struct zkn_region_desc d;
    int fd;
    int cls = zkn_size_class(16 * MIB);
    /* Making and warming 16 MiB takes milliseconds; the answer must not. */
    double t0 = zkn_test_now_ms();
    int n = zkn_test_lend(s, cls, 1, 0, &d, &fd);
    double dt = zkn_test_now_ms() - t0;
    ck_assert_int_eq(n, -ZKN_E_NOT_WARM);
    ck_assert_msg(dt < 100, "not_warm took %.1f ms", dt);

    /* The daemon prepares the class: a later LEND is served from the pool. */
    for (int i = 0; i < 500 && n == -ZKN_E_NOT_WARM; i++) {
        zkn_test_sleep_ms(10);
        n = zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d, &fd);
    }
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(d.size, 16 * MIB);
    ck_assert_int_eq(d.flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    /* Prepared regions are warm: resident before the client touches them. */
    char *p = mmap(NULL, d.size, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    close(fd);
    static unsigned char vec[(16 * MIB) / 4096];
    ck_assert_int_eq(mincore(p, d.size, vec), 0);
    for (size_t i = 0; i < sizeof vec; i++)
        ck_assert_msg(vec[i] & 1, "page %zu of a prepared region is not resident", i);
    munmap(p, d.size);

    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_ge(zkn_test_class_int(j, cls, "not_warm"), 1);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "not_warm"), zkn_test_class_int(j, cls, "misses"));
    ck_assert_int_eq(zkn_test_class_int(j, cls, "served_warm"), 1);
    ck_assert_int_ge(zkn_test_class_int(j, cls, "prepared"), 1);
    ck_assert_int_ge(zkn_test_class_int(j, cls, "target"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "served_warm"), 1);
    ck_assert_int_ge(zkn_test_stat_int(j, "refusals", "not_warm"), 1);
    double share = json_real_value(json_object_get(json_object_get(j, "pool"),
                                                   "served_warm_share"));
    ck_assert_msg(share > 0 && share < 1, "served_warm_share %f", share);
    json_decref(j);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    close(s);
}
END_TEST

START_TEST(batch_miss_learns_target)
{
    int s = start_session_unless_4k(NULL);
    if (s < 0)
        return;
    struct zkn_region_desc d[16];
    int fds[16];
    int cls = zkn_size_class(4 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 4, 0, d, fds), -ZKN_E_NOT_WARM);
    /* The target is the batch asked for, and that many are prepared. */
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 4);
    json_decref(j);
    zkn_test_wait_class(fx_daemon.sock, cls, "clean", 4);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "preparing_bytes", 0);
    ck_assert_int_eq(zkn_test_lend(s, cls, 4, 0, d, fds), 4);
    /* The four held meet the target: none is made beside them (top-ups are
     * planned before the LEND is answered), and when they come back they are
     * what the next LEND gets. */
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "preparing_bytes"), 0);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "prepared"), 4);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "served_warm"), 1);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "not_warm"), 1);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 4);
    json_decref(j);
    return_all(s, d, 4, fds);
    zkn_test_wait_class(fx_daemon.sock, cls, "clean", 4);
    ck_assert_int_eq(zkn_test_lend(s, cls, 4, ZKN_LEND_ZEROED, d, fds), 4);
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "prepared"), 4);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "destroyed"), 0);
    json_decref(j);
    return_all(s, d, 4, fds);
    close(s);
}
END_TEST

START_TEST(prewarmed_class_is_served_warm)
{
    const char *args[] = {"--prewarm", "8M=2", NULL};
    fx_start(args);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 16 * MIB);
    int s = fx_session();
    struct zkn_region_desc d[2];
    int fds[2];
    int cls = zkn_size_class(8 * MIB);
    for (int i = 0; i < 2; i++) {
        double t0 = zkn_test_now_ms();
        ck_assert_int_eq(zkn_test_lend(s, cls, 1, ZKN_LEND_ZEROED, &d[i], &fds[i]), 1);
        double took = zkn_test_now_ms() - t0;
        ck_assert_msg(took < 100, "a warm LEND took %.1f ms", took);
        ck_assert_int_eq(d[i].flags & ZKN_REGION_CLEAN, ZKN_REGION_CLEAN);
    }
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "served_warm"), 2);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "not_warm"), 0);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "misses"), 0);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "prepared"), 2);
    ck_assert(json_real_value(json_object_get(json_object_get(j, "pool"),
                                              "served_warm_share")) == 1.0);
    json_decref(j);
    return_all(s, d, 2, fds);
    close(s);
}
END_TEST

START_TEST(prewarmed_regions_count_toward_the_target)
{
    const char *args[] = {"--prewarm", "4M=8", NULL};
    int s = start_session_unless_4k(args);
    if (s < 0)
        return;
    int cls = zkn_size_class(4 * MIB);
    zkn_test_wait_class(fx_daemon.sock, cls, "clean", 8);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "preparing_bytes", 0);
    struct zkn_region_desc d[5];
    int fds[5];
    /* One region now and four expected: the target becomes 4, which the one
     * held and the seven prewarmed regions still ready cover. Nothing is made
     * (top-ups are planned before the LEND is answered, so STATS would see
     * them). */
    ck_assert_int_eq(zkn_test_lend_demand(s, cls, 1, 4, 0, d, fds), 1);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 4);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "prepared"), 8);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "preparing_bytes"), 0);
    json_decref(j);
    /* Four more, twelve expected: five held and three prewarmed ones still
     * ready, so four are made. */
    ck_assert_int_eq(zkn_test_lend_demand(s, cls, 4, 12, 0, d + 1, fds + 1), 4);
    zkn_test_wait_class(fx_daemon.sock, cls, "prepared", 12);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "preparing_bytes", 0);
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 12);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "prepared"), 12);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "clean"), 7);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "destroyed"), 0);
    json_decref(j);
    return_all(s, d, 5, fds);
    close(s);
}
END_TEST

START_TEST(unused_target_decays)
{
    const char *args[] = {"--idle-decay", "1", NULL};
    int s = start_session_unless_4k(args);
    if (s < 0)
        return;
    struct zkn_region_desc d[2];
    int fds[2];
    int cls = zkn_size_class(2 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 2, 0, d, fds), -ZKN_E_NOT_WARM);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 2);
    json_decref(j);
    /* Nobody asks again: the target halves per idle period down to 0, and
     * the regions prepared for it decay too. */
    zkn_test_wait_class(fx_daemon.sock, cls, "target", 0);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "idle_bytes", 0);
    close(s);
}
END_TEST

START_TEST(preparing_stays_under_pool_cap)
{
    const char *args[] = {"--pool-bytes", "8M", NULL};
    int s = start_session_unless_4k(args);
    if (s < 0)
        return;
    struct zkn_region_desc d[16];
    int fds[16];
    int cls = zkn_size_class(4 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 16, 0, d, fds), -ZKN_E_NOT_WARM);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, cls, "target"), 2); /* what fits in 8 MiB */
    ck_assert_int_le(zkn_test_stat_int(j, "pool", "preparing_bytes") +
                         zkn_test_stat_int(j, "pool", "idle_bytes"),
                     8 * MIB);
    json_decref(j);
    zkn_test_wait_class(fx_daemon.sock, cls, "clean", 2);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "preparing_bytes", 0);
    /* A class larger than the whole pool is never prepared. */
    int big = zkn_size_class(64 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, big, 1, 0, d, fds), -ZKN_E_NOT_WARM);
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_class_int(j, big, "target"), 0);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "preparing_bytes"), 0);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "idle_bytes"), 8 * MIB);
    json_decref(j);
    close(s);
}
END_TEST

/* FORGET: the daemon lets go without zeroing, pooling or lending again. */
static void forget_case(int cls, int may_be_cold)
{
    int s = fx_session();
    struct zkn_region_desc d;
    int fd;
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d, &fd), 1);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    json_int_t regions = zkn_test_stat_int(j, "pool", "regions");
    json_decref(j);
    unsigned char *p = mmap(NULL, d.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    close(fd);
    memset(p, 0xc3, d.size);
    /* Still mapped here, as a fork child's copy would be. */
    uint32_t v;
    ck_assert_int_eq(return_flags(s, &d.id, 1, ZKN_RETURN_FORGET, &v), ZKN_MSG_RETURN_OK);
    ck_assert_int_eq(v, 1);
    j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "forgotten"), 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 0);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "regions"), regions - 1);
    ck_assert_int_eq(zkn_test_stat_int(j, "totals", "returns"), 0);
    json_decref(j);
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), -ZKN_E_UNKNOWN_ID);
    /* The id never comes back, warm pool or not. */
    for (int i = 0; i < 20; i++) {
        struct zkn_region_desc e;
        int efd;
        int n = zkn_test_lend(s, cls, 1, 0, &e, &efd);
        if (n == -ZKN_E_NOT_WARM) {
            ck_assert(may_be_cold); /* only classes lent from the pool */
            zkn_test_sleep_ms(20);
            continue;
        }
        ck_assert_int_eq(n, 1);
        ck_assert_uint_ne(e.id, d.id);
        close(efd);
        ck_assert_int_eq(zkn_test_return(s, &e.id, 1), 1);
    }
    /* Nothing zeroed what this process still maps. */
    for (uint64_t i = 0; i < d.size; i++)
        ck_assert_msg(p[i] == 0xc3, "byte %llu changed after FORGET", (unsigned long long)i);
    munmap(p, d.size);
    close(s);
}

START_TEST(forgotten_region_never_lent_again)
{
    fx_start(NULL);
    forget_case(zkn_size_class(1 * MIB), 0); /* made inline */
}
END_TEST

START_TEST(forgotten_pooled_region_never_lent_again)
{
    const char *args[] = {"--prewarm", "2M=1", NULL};
    fx_start(args);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 2 * MIB);
    forget_case(zkn_size_class(2 * MIB), 1);
}
END_TEST

START_TEST(return_with_unknown_flags_is_malformed)
{
    fx_start(NULL);
    int s = fx_session();
    struct zkn_region_desc d;
    int fd;
    char buf[64];
    ck_assert_int_eq(zkn_test_lend(s, 0, 1, 0, &d, &fd), 1);
    close(fd);
    uint32_t code;
    ck_assert_int_eq(return_flags(s, &d.id, 1, 2, &code), ZKN_MSG_ERROR);
    ck_assert_int_eq(code, ZKN_E_MALFORMED);
    ck_assert_int_eq(zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 2000), 0); /* closed */
    close(s);
    /* The lease was not taken by the refused frame: the process still holds it. */
    s = fx_session();
    ck_assert_int_eq(return_flags(s, &d.id, 1, ZKN_RETURN_FORGET | 4, &code), ZKN_MSG_ERROR);
    ck_assert_int_eq(code, ZKN_E_MALFORMED);
    close(s);
    s = fx_session();
    ck_assert_int_eq(zkn_test_return(s, &d.id, 1), 1);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "refusals", "malformed"), 2);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "forgotten"), 0);
    json_decref(j);
    close(s);
}
END_TEST

/* Receives the reply to a LEND sent earlier: regions lent (fds closed, ids
 * appended to ids) or -(error code). */
static int lend_reply(int s, uint64_t *ids, int *nids)
{
    char buf[ZKN_MAX_FRAME];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds = 0;
    struct zkn_hdr h;
    ssize_t n = zkn_test_recv(s, buf, sizeof buf, fds, &nfds, 5000);
    ck_assert_int_ge(n, (ssize_t)(sizeof h + 8));
    zkn_close_fds(fds, nfds);
    memcpy(&h, buf, sizeof h);
    uint32_t v;
    memcpy(&v, buf + sizeof h, sizeof v);
    if (h.type == ZKN_MSG_ERROR)
        return -(int)v;
    ck_assert_int_eq(h.type, ZKN_MSG_REGIONS);
    ck_assert_int_eq(v, nfds);
    for (uint32_t i = 0; i < v; i++) {
        struct zkn_region_desc d;
        memcpy(&d, buf + sizeof h + sizeof(struct zkn_regions) + i * sizeof d, sizeof d);
        ids[(*nids)++] = d.id;
    }
    return (int)v;
}

START_TEST(client_cap_holds_over_concurrent_connections)
{
    /* 16 x 4 MiB ready, a 32 MiB cap: 4 connections of this process each ask
     * for all 16 at once. */
    const char *args[] = {"--client-cap-bytes", "32M", "--prewarm", "4M=16", "--pool-bytes",
                          "128M", NULL};
    fx_start(args);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 64 * MIB);
    int cls = zkn_size_class(4 * MIB), s[4];
    uint64_t ids[64];
    int nids = 0, refused = 0;
    for (int k = 0; k < 4; k++)
        s[k] = fx_session();
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 4; k++) {
            struct zkn_lend l = {.size_class = (uint16_t)cls, .count = 16};
            ck_assert_int_eq(zkn_test_send(s[k], ZKN_MSG_LEND, 30, &l, sizeof l), 0);
        }
        for (int k = 0; k < 4; k++) {
            int n = lend_reply(s[k], ids, &nids);
            if (n == -ZKN_E_CLIENT_CAP)
                refused++;
            else
                ck_assert_int_gt(n, 0);
        }
    }
    ck_assert_int_eq(nids, 8); /* exactly what 32 MiB holds */
    ck_assert_int_eq(refused, 11);
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 32 * MIB);
    json_decref(j);
    /* Past the cap even a cold class is refused, before any not_warm. */
    int big = zkn_size_class(16 * MIB);
    for (int k = 0; k < 4; k++) {
        struct zkn_lend l = {.size_class = (uint16_t)big, .count = 4};
        ck_assert_int_eq(zkn_test_send(s[k], ZKN_MSG_LEND, 31, &l, sizeof l), 0);
    }
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(lend_reply(s[k], ids, &nids), -ZKN_E_CLIENT_CAP);
    for (int i = 0; i < nids; i += 4)
        ck_assert_int_eq(zkn_test_return(s[0], ids + i, 4), 4);
    for (int k = 0; k < 4; k++)
        close(s[k]);
}
END_TEST

START_TEST(global_lent_cap_over_two_processes)
{
    const char *args[] = {"--max-lent-bytes", "8M", "--prewarm", "4M=4", NULL};
    fx_start(args);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "clean_bytes", 16 * MIB);
    int cls = zkn_size_class(4 * MIB);
    struct zkn_region_desc d[4];
    int fds[4];
    int s = fx_session();
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d[0], &fds[0]), 1);
    close(fds[0]);

    int res[2];
    ck_assert_int_eq(pipe(res), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* Another process: one more region fits, then the daemon's cap. */
        struct zkn_region_desc cd[4];
        int cfd[4];
        char text[ZKN_MAX_ERROR_TEXT + 1] = "";
        int cs = zkn_test_connect(fx_daemon.sock);
        int got = -1;
        uint32_t code = 0;
        if (cs >= 0 && zkn_test_hello(cs, NULL) == 0) {
            got = zkn_test_lend(cs, cls, 4, 0, cd, cfd);
            struct zkn_lend l = {.size_class = (uint16_t)cls, .count = 1};
            char buf[ZKN_MAX_FRAME];
            if (zkn_test_send(cs, ZKN_MSG_LEND, 40, &l, sizeof l) == 0) {
                ssize_t n = zkn_test_recv(cs, buf, sizeof buf, NULL, NULL, 5000);
                if (n > (ssize_t)(sizeof(struct zkn_hdr) + 8)) {
                    memcpy(&code, buf + sizeof(struct zkn_hdr), sizeof code);
                    snprintf(text, sizeof text, "%.*s",
                             (int)(n - (ssize_t)sizeof(struct zkn_hdr) - 8),
                             buf + sizeof(struct zkn_hdr) + 8);
                }
            }
        }
        int ok = got == 1 && code == ZKN_E_CLIENT_CAP && strstr(text, "--max-lent-bytes");
        if (write(res[1], &ok, sizeof ok) != sizeof ok)
            _exit(3);
        pause(); /* holds its lease until killed */
        _exit(0);
    }
    close(res[1]);
    int ok = 0;
    ck_assert_int_eq(read(res[0], &ok, sizeof ok), sizeof ok);
    close(res[0]);
    ck_assert_msg(ok, "the second process was not capped at 8 MiB lent in all");

    char text[ZKN_MAX_ERROR_TEXT + 1];
    ck_assert_int_eq(lend_refusal(s, cls, 1, text, sizeof text), ZKN_E_CLIENT_CAP);
    ck_assert_ptr_nonnull(strstr(text, "--max-lent-bytes"));
    json_t *j = zkn_test_stats(fx_daemon.sock);
    ck_assert_int_eq(zkn_test_stat_int(j, "pool", "lent_bytes"), 8 * MIB);
    ck_assert_int_eq(zkn_test_stat_int(j, "caps", "max_lent_bytes"), 8 * MIB);
    json_decref(j);
    /* When the other process exits its lease comes back and fits again. */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    zkn_test_wait_stat(fx_daemon.sock, "pool", "lent_bytes", 4 * MIB);
    ck_assert_int_eq(zkn_test_lend(s, cls, 1, 0, &d[1], &fds[1]), 1);
    close(fds[1]);
    uint64_t ids[2] = {d[0].id, d[1].id};
    ck_assert_int_eq(zkn_test_return(s, ids, 2), 2);
    close(s);
}
END_TEST

static Suite *lend_suite(void)
{
    Suite *s = suite_create("daemon_lend");
    TCase *tc = zkn_test_tcase(s, "lend", 60);
    tcase_add_checked_fixture(tc, NULL, fx_teardown); /* each test starts its own daemon */
    tcase_add_test(tc, cold_lend_is_not_warm_at_once_then_served);
    tcase_add_test(tc, batch_miss_learns_target);
    tcase_add_test(tc, prewarmed_class_is_served_warm);
    tcase_add_test(tc, prewarmed_regions_count_toward_the_target);
    tcase_add_test(tc, unused_target_decays);
    tcase_add_test(tc, preparing_stays_under_pool_cap);
    tcase_add_test(tc, forgotten_region_never_lent_again);
    tcase_add_test(tc, forgotten_pooled_region_never_lent_again);
    tcase_add_test(tc, return_with_unknown_flags_is_malformed);
    tcase_add_test(tc, client_cap_holds_over_concurrent_connections);
    tcase_add_test(tc, global_lent_cap_over_two_processes);
    return s;
}

ZKN_TEST_MAIN(lend_suite)
