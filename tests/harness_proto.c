/* The harness's raw protocol client and the daemon's STATS as JSON
 * (harness.h). */
#include "harness.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"


int zkn_test_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    return s;
}

int zkn_test_send(int sock, uint16_t type, uint32_t req, const void *payload, size_t len)
{
    char frame[ZKN_MAX_FRAME];
    if (len > ZKN_MAX_PAYLOAD)
        return -1;
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, req);
    if (len)
        memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    return zkn_send_frame(sock, frame, sizeof(struct zkn_hdr) + len, NULL, 0) < 0 ? -1 : 0;
}

ssize_t zkn_test_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds, int timeout_ms)
{
    struct pollfd p = {.fd = sock, .events = POLLIN};
    int dummy[ZKN_MAX_REGIONS_PER_REPLY];
    size_t dn;
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t n = zkn_recv_frame(sock, buf, cap, fds ? fds : dummy, ZKN_MAX_REGIONS_PER_REPLY,
                               nfds ? nfds : &dn, MSG_DONTWAIT);
    if (!fds)
        zkn_close_fds(dummy, dn);
    return n < 0 ? -1 : n;
}

int zkn_test_hello(int sock, struct zkn_hello_ok *ok)
{
    struct zkn_hello h = {.min_version = ZKN_PROTO_MIN_VERSION, .max_version = ZKN_PROTO_VERSION};
    char buf[ZKN_MAX_FRAME];
    if (zkn_test_send(sock, ZKN_MSG_HELLO, 1, &h, sizeof h) < 0)
        return -1;
    ssize_t n = zkn_test_recv(sock, buf, sizeof buf, NULL, NULL, 5000);
    struct zkn_hdr hdr;
    if (n < (ssize_t)(sizeof hdr + sizeof *ok))
        return -1;
    memcpy(&hdr, buf, sizeof hdr);
    if (hdr.type != ZKN_MSG_HELLO_OK)
        return -1;
    if (ok)
        memcpy(ok, buf + sizeof hdr, sizeof *ok);
    return 0;
}

static int error_code_of(const char *buf)
{
    struct zkn_error e;
    memcpy(&e, buf + sizeof(struct zkn_hdr), sizeof e);
    return -(int)e.code;
}

int zkn_test_lend(int sock, int cls, int count, uint32_t flags, struct zkn_region_desc *descs,
                  int *fds)
{
    return zkn_test_lend_demand(sock, cls, count, 0, flags, descs, fds);
}

int zkn_test_lend_demand(int sock, int cls, int count, uint32_t demand, uint32_t flags,
                         struct zkn_region_desc *descs, int *fds)
{
    struct zkn_lend l = {.size_class = (uint16_t)cls, .count = (uint16_t)count, .flags = flags,
                         .demand = demand};
    char buf[ZKN_MAX_FRAME];
    size_t nfds = 0;
    struct zkn_hdr hdr;
    struct zkn_regions r;
    if (zkn_test_send(sock, ZKN_MSG_LEND, 7, &l, sizeof l) < 0)
        return -1000;
    ssize_t n = zkn_test_recv(sock, buf, sizeof buf, fds, &nfds, 10000);
    if (n < (ssize_t)sizeof hdr)
        return -1000;
    memcpy(&hdr, buf, sizeof hdr);
    if (hdr.type == ZKN_MSG_ERROR)
        return error_code_of(buf);
    if (hdr.type != ZKN_MSG_REGIONS)
        return -1000;
    memcpy(&r, buf + sizeof hdr, sizeof r);
    if (r.count != nfds || n != (ssize_t)(sizeof hdr + sizeof r + r.count * sizeof *descs))
        return -1000;
    memcpy(descs, buf + sizeof hdr + sizeof r, r.count * sizeof *descs);
    return (int)r.count;
}

int zkn_test_return(int sock, const uint64_t *ids, uint32_t n)
{
    char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
    struct zkn_return r = {.count = n};
    char buf[ZKN_MAX_FRAME];
    struct zkn_hdr hdr;
    if (n > ZKN_MAX_RETURN_IDS)
        return -1000;
    memcpy(payload, &r, sizeof r);
    memcpy(payload + sizeof r, ids, n * 8u);
    if (zkn_test_send(sock, ZKN_MSG_RETURN, 9, payload, sizeof r + n * 8u) < 0)
        return -1000;
    ssize_t len = zkn_test_recv(sock, buf, sizeof buf, NULL, NULL, 10000);
    if (len < (ssize_t)sizeof hdr)
        return -1000;
    memcpy(&hdr, buf, sizeof hdr);
    if (hdr.type == ZKN_MSG_ERROR)
        return error_code_of(buf);
    if (hdr.type != ZKN_MSG_RETURN_OK)
        return -1000;
    struct zkn_return_ok ok;
    memcpy(&ok, buf + sizeof hdr, sizeof ok);
    return (int)ok.count;
}

char *zkn_test_stats_json(const char *sock_path)
{
    int s = zkn_test_connect(sock_path);
    char buf[ZKN_MAX_FRAME];
    struct zkn_hdr hdr;
    char *out = NULL;
    if (s < 0)
        return NULL;
    if (zkn_test_hello(s, NULL) == 0 && zkn_test_send(s, ZKN_MSG_STATS, 3, NULL, 0) == 0) {
        ssize_t n = zkn_test_recv(s, buf, sizeof buf, NULL, NULL, 5000);
        if (n >= (ssize_t)sizeof hdr) {
            memcpy(&hdr, buf, sizeof hdr);
            if (hdr.type == ZKN_MSG_STATS_REPLY && (out = malloc(hdr.length + 1))) {
                memcpy(out, buf + sizeof hdr, hdr.length);
                out[hdr.length] = '\0';
            }
        }
    }
    close(s);
    return out;
}


int zkn_test_session(const char *sock_path, uint32_t *backing)
{
    struct zkn_hello_ok ok;
    int s = zkn_test_connect(sock_path);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(zkn_test_hello(s, &ok), 0);
    if (backing)
        *backing = ok.backing;
    return s;
}

json_t *zkn_test_stats(const char *sock_path)
{
    char *text = zkn_test_stats_json(sock_path);
    ck_assert_ptr_nonnull(text);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    ck_assert_msg(j != NULL, "stats is not JSON: %s", err.text);
    free(text);
    return j;
}

json_int_t zkn_test_stat_int(json_t *j, const char *section, const char *key)
{
    json_t *v = json_object_get(j, section);
    if (key)
        v = json_object_get(v, key);
    ck_assert_msg(json_is_integer(v), "stats lacks %s.%s", section, key ? key : "");
    return json_integer_value(v);
}

json_int_t zkn_test_class_int(json_t *j, int cls, const char *key)
{
    json_t *classes = json_object_get(j, "classes"), *c;
    size_t i;
    json_array_foreach(classes, i, c) {
        if (json_integer_value(json_object_get(c, "class")) != cls)
            continue;
        json_t *v = json_object_get(c, key);
        ck_assert_msg(json_is_integer(v), "stats lacks classes[%d].%s", cls, key);
        return json_integer_value(v);
    }
    return 0;
}

/* Polls until get() == want: section.key, or classes[cls].key when section is NULL. */
static void wait_json(const char *sock_path, const char *section, int cls, const char *key,
                      json_int_t want)
{
    json_int_t got = -1;
    for (int i = 0; i < 500; i++) {
        json_t *j = zkn_test_stats(sock_path);
        got = section ? zkn_test_stat_int(j, section, key) : zkn_test_class_int(j, cls, key);
        json_decref(j);
        if (got == want)
            return;
        zkn_test_sleep_ms(10);
    }
    if (section)
        ck_abort_msg("%s.%s stayed %lld, expected %lld", section, key, (long long)got,
                     (long long)want);
    ck_abort_msg("classes[%d].%s stayed %lld, expected %lld", cls, key, (long long)got,
                 (long long)want);
}

void zkn_test_wait_stat(const char *sock_path, const char *section, const char *key,
                        json_int_t want)
{
    wait_json(sock_path, section, 0, key, want);
}

void zkn_test_wait_class(const char *sock_path, int cls, const char *key, json_int_t want)
{
    wait_json(sock_path, NULL, cls, key, want);
}

