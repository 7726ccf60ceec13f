/* One LEND round trip to zknallocd, including the map, spoken with proto/
 * (protocol version 2: a LEND is answered at once, ERROR not_warm when
 * nothing of the class is ready).
 *
 *   lend_rtt SIZE_MIB [ITERS] [TOUCH_ITERS]
 *
 * The daemon is found as the library finds it ($ZK_NALLOC_SOCKET first).
 * Warm phase, per iteration: send LEND for one region of SIZE's class,
 * receive REGIONS with its fd, map it MAP_SHARED at a 2 MiB-aligned address,
 * close the fd (timed: "LEND+map"); for the first TOUCH_ITERS iterations also
 * populate every page table entry with MADV_POPULATE_WRITE (timed separately:
 * "populate"), which is what a first touch of the whole region costs; then
 * unmap and RETURN the id (timed: "RETURN"). A LEND answered not_warm there
 * is counted (the warm share), and asked again 1 ms later.
 * Cold phase (classes of 2 MiB and more): hold every ready region of the
 * class, then time one LEND that must be answered not_warm ("LEND not_warm"),
 * and hand them all back; ITERS/10 times (5 to 20). Times in microseconds;
 * the driver reports median and p99. */
#include "bench_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sizeclass.h"
#include "sockpath.h"
#include "wire.h"
#include "zkn_proto.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HUGE_ALIGN ((size_t)2 << 20)

static unsigned char frame[ZKN_MAX_FRAME];
static uint32_t next_req = 1;

static void die(const char *what)
{
    fprintf(stderr, "lend_rtt: %s\n", what);
    exit(1);
}

static void send_msg(int sock, uint16_t type, const void *payload, size_t len)
{
    struct zkn_hdr h;
    zkn_hdr_init(&h, type, (uint32_t)len, next_req++);
    memcpy(frame, &h, sizeof h);
    if (len)
        memcpy(frame + sizeof h, payload, len);
    if (zkn_send_frame(sock, frame, sizeof h + len, NULL, 0) < 0)
        die("send failed");
}

static uint32_t last_error; /* code of the last ERROR received */

/* Receives one frame; returns its type and payload length, fds to fds. An
 * ERROR is returned as ZKN_MSG_ERROR with its code in last_error. */
static uint16_t recv_msg(int sock, size_t *plen, int *fds, size_t *nfds)
{
    size_t nf = 0;
    ssize_t n = zkn_recv_frame(sock, frame, sizeof frame, fds, ZKN_MAX_REGIONS_PER_REPLY, &nf, 0);
    if (n <= 0)
        die(n == 0 ? "daemon closed the connection" : "receive failed");
    if (zkn_hdr_check(frame, (size_t)n) != 0)
        die("malformed reply");
    struct zkn_hdr h;
    memcpy(&h, frame, sizeof h);
    if (h.type == ZKN_MSG_ERROR) {
        struct zkn_error e;
        if (h.length < sizeof e)
            die("short ERROR");
        memcpy(&e, frame + sizeof h, sizeof e);
        last_error = e.code;
        if (e.code != ZKN_E_NOT_WARM) {
            fprintf(stderr, "lend_rtt: daemon error %s: %.*s\n", zkn_err_name(e.code),
                    (int)(h.length - sizeof e), (const char *)frame + sizeof h + sizeof e);
            exit(1);
        }
        zkn_close_fds(fds, nf);
        nf = 0;
    }
    *plen = h.length;
    if (nfds)
        *nfds = nf;
    else
        zkn_close_fds(fds, nf);
    return h.type;
}

static void *map_aligned(int fd, size_t size)
{
    unsigned char *r = mmap(NULL, size + HUGE_ALIGN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED)
        die("reserve failed");
    unsigned char *a = (unsigned char *)(((uintptr_t)r + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    if (a > r)
        munmap(r, (size_t)(a - r));
    munmap(a + size, (size_t)(r + size + HUGE_ALIGN - (a + size)));
    void *p = mmap(a, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED)
        die("map of a lent region failed");
    return p;
}

/* LEND one region of cls: 1 with *d and fds[0] set, or 0 when the daemon
 * answered not_warm. */
static int lend_one(int sock, int cls, struct zkn_region_desc *d, int *fds)
{
    struct zkn_lend req = {.size_class = (uint16_t)cls, .count = 1, .flags = 0};
    size_t plen, nfds = 0;
    send_msg(sock, ZKN_MSG_LEND, &req, sizeof req);
    uint16_t type = recv_msg(sock, &plen, fds, &nfds);
    if (type == ZKN_MSG_ERROR)
        return 0;
    if (type != ZKN_MSG_REGIONS || nfds != 1 ||
        plen != sizeof(struct zkn_regions) + sizeof(struct zkn_region_desc)) {
        zkn_close_fds(fds, nfds);
        die("bad REGIONS reply");
    }
    memcpy(d, frame + sizeof(struct zkn_hdr) + sizeof(struct zkn_regions), sizeof *d);
    return 1;
}

static void return_ids(int sock, const uint64_t *ids, uint32_t n)
{
    static unsigned char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
    struct zkn_return r = {.count = n};
    size_t plen;
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    memcpy(payload, &r, sizeof r);
    memcpy(payload + sizeof r, ids, n * sizeof *ids);
    send_msg(sock, ZKN_MSG_RETURN, payload, sizeof r + n * sizeof *ids);
    if (recv_msg(sock, &plen, fds, NULL) != ZKN_MSG_RETURN_OK)
        die("no RETURN_OK");
}

/* Holds every ready region of cls, times one LEND that finds none
 * (not_warm), returns them all. Returns the microseconds, or -1 when the
 * pool would not run dry within ZKN_MAX_RETURN_IDS regions. */
static double cold_sample(int sock, int cls)
{
    static uint64_t held[ZKN_MAX_RETURN_IDS];
    uint32_t n = 0;
    double us = -1;
    while (n < ZKN_MAX_RETURN_IDS) {
        struct zkn_region_desc d;
        int fds[ZKN_MAX_REGIONS_PER_REPLY];
        uint64_t t0 = bench_now_ns();
        if (!lend_one(sock, cls, &d, fds)) {
            us = (double)(bench_now_ns() - t0) / 1e3;
            break;
        }
        close(fds[0]);
        held[n++] = d.id;
    }
    for (uint32_t i = 0; i < n; i += 64)
        return_ids(sock, held + i, n - i < 64 ? n - i : 64);
    return us;
}

int main(int argc, char **argv)
{
    uint64_t size = (uint64_t)bench_arg(argc, argv, 1, 2) * MIB;
    long iters = bench_arg(argc, argv, 2, 200);
    long touch = bench_arg(argc, argv, 3, 20);
    int cls = zkn_size_class(size);
    if (cls <= 0 || iters < 1) {
        fprintf(stderr, "usage: lend_rtt SIZE_MIB [ITERS] [TOUCH_ITERS]\n");
        return 2;
    }
    char path[108];
    if (zkn_socket_path(path, sizeof path, ZKN_PATH_CLIENT) != 0)
        die("no socket path");
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "lend_rtt: cannot connect to %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct zkn_hello hello = {.min_version = ZKN_PROTO_MIN_VERSION,
                              .max_version = ZKN_PROTO_VERSION};
    send_msg(sock, ZKN_MSG_HELLO, &hello, sizeof hello);
    size_t plen;
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    if (recv_msg(sock, &plen, fds, NULL) != ZKN_MSG_HELLO_OK || plen != sizeof(struct zkn_hello_ok))
        die("no HELLO_OK");
    struct zkn_hello_ok ok;
    memcpy(&ok, frame + sizeof(struct zkn_hdr), sizeof ok);
    if (ok.class_count != ZKN_CLASS_COUNT)
        die("daemon's class table differs");

    struct bench_series lend, pop, ret, cold;
    bench_series_init(&lend, (size_t)iters);
    bench_series_init(&pop, (size_t)(touch > 0 ? touch : 1));
    bench_series_init(&ret, (size_t)iters);
    bench_series_init(&cold, 20);
    long warm = 5;
    uint64_t clean = 0, served = 0, not_warm = 0, asked_again = 0;
    for (long i = -warm; i < iters; i++) {
        struct zkn_region_desc d;
        uint64_t t0 = bench_now_ns();
        int got = lend_one(sock, cls, &d, fds);
        if (i >= 0) {
            served += got;
            not_warm += !got;
        }
        if (!got) {
            /* Not ready: the daemon prepares the class; ask again shortly. */
            if (++asked_again > 10000)
                die("the class never became ready (larger than the daemon's pool cap?)");
            usleep(1000);
            i--;
            continue;
        }
        void *p = map_aligned(fds[0], (size_t)d.size);
        close(fds[0]);
        uint64_t t1 = bench_now_ns();
        int do_touch = i >= 0 && i < touch;
        if (do_touch && madvise(p, (size_t)d.size, MADV_POPULATE_WRITE) != 0)
            die("populate failed");
        uint64_t t2 = bench_now_ns();
        munmap(p, (size_t)d.size);
        return_ids(sock, &d.id, 1);
        uint64_t t3 = bench_now_ns();
        if (i >= 0) {
            clean += (d.flags & ZKN_REGION_CLEAN) != 0;
            bench_series_add(&lend, (double)(t1 - t0) / 1e3);
            if (do_touch)
                bench_series_add(&pop, (double)(t2 - t1) / 1e3);
            bench_series_add(&ret, (double)(t3 - t2) / 1e3);
        }
    }
    /* Smaller classes are made inside the LEND: never not_warm. */
    int cold_class = size >= ((uint64_t)2 << 20) && ok.backing != ZKN_BACKING_MEMFD_4K;
    long ncold = iters / 10 < 5 ? 5 : iters / 10 > 20 ? 20 : iters / 10;
    for (long i = 0; cold_class && i < ncold; i++) {
        double us = cold_sample(sock, cls);
        if (us >= 0)
            bench_series_add(&cold, us);
    }
    close(sock);
    char c1[64], c2[64], c3[64], c4[64], extra[256];
    snprintf(c1, sizeof c1, "LEND+map %llu MiB", (unsigned long long)(size / MIB));
    snprintf(c2, sizeof c2, "populate %llu MiB", (unsigned long long)(size / MIB));
    snprintf(c3, sizeof c3, "RETURN %llu MiB", (unsigned long long)(size / MIB));
    snprintf(c4, sizeof c4, "LEND not_warm %llu MiB", (unsigned long long)(size / MIB));
    /* warm_share: LENDs of the timed warm phase answered with a region. */
    snprintf(extra, sizeof extra,
             "\"backing\":\"%s\",\"clean_lends\":%llu,\"class\":%d,\"served_warm\":%llu,"
             "\"not_warm\":%llu,\"warm_share\":%.4f",
             zkn_backing_name(ok.backing), (unsigned long long)clean, cls,
             (unsigned long long)served, (unsigned long long)not_warm,
             (double)served / (double)(served + not_warm));
    bench_emit("lend", c1, "us", &lend, NULL, extra);
    if (pop.n)
        bench_emit("lend", c2, "us", &pop, NULL, extra);
    bench_emit("lend", c3, "us", &ret, NULL, extra);
    if (cold.n)
        bench_emit("lend", c4, "us", &cold, NULL, extra);
    fprintf(stderr, "lend_rtt: %llu MiB: %llu of %llu LENDs served warm (%.1f%%)\n",
            (unsigned long long)(size / MIB), (unsigned long long)served,
            (unsigned long long)(served + not_warm),
            100.0 * (double)served / (double)(served + not_warm));
    return 0;
}
