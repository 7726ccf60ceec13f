/* The process's one connection to zknallocd (proto/PROTOCOL.md).
 *
 * Connected lazily by the first large miss; every wait is bounded by poll()
 * timeouts, and any error, timeout or EOF counts as "daemon down": the caller
 * then maps private memory, and the next attempt waits out an exponential
 * backoff (1 s doubling to 30 s), so a missing daemon costs one failed
 * connect() a second at most.
 *
 * Each daemon instance gets a generation number, stamped on every region it lends. Regions of an instance that is
 * gone stay valid here (the memfd pages live as long as they are mapped) and
 * are unmapped without a RETURN when freed. RETURNs are queued and sent in
 * batches without waiting; their replies are read (and matched by
 * request_id) whenever a LEND waits for its own. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "sockpath.h"
#include "wire.h"
#include "zkn_proto.h"

#define HELLO_TIMEOUT_MS 1000
#define BACKOFF_MIN_NS 1000000000ull
#define BACKOFF_MAX_NS 30000000000ull
#define REFUSAL_HOLDOFF_NS 200000000ull /* after client_cap/nomem/busy */
#define QUEUE_MAX 4096

static pthread_mutex_t dlock = PTHREAD_MUTEX_INITIALIZER; /* the socket and its state */
static int sock = -1;
static _Atomic int connected;
static struct zkn_hello_ok hello;
static uint32_t next_req = 1;
static uint32_t outstanding;            /* RETURN replies not read yet */
static _Atomic uint64_t next_try_ns;    /* no connect attempt before this */
static uint64_t backoff_ns = BACKOFF_MIN_NS;
static uint64_t holdoff_ns;             /* no LEND before this (after a refusal) */
static uint64_t last_instance[2]; /* who answered last time: see instance_of() */
static int ever_connected;
static uint32_t gen_counter;
static _Atomic uint32_t live_gen;       /* the instance whose ids we RETURN */
static _Atomic uint32_t backing;

/* The RETURN queue: ids of unmapped regions of generation q_gen. */
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t q_ids[QUEUE_MAX];
static _Atomic uint32_t q_n;
static uint32_t q_gen;

int zkn_daemon_connected(void)
{
    return atomic_load_explicit(&connected, memory_order_relaxed);
}

int zkn_daemon_gen_current(uint32_t gen)
{
    return gen != 0 && gen == atomic_load_explicit(&live_gen, memory_order_relaxed);
}

int zkn_daemon_preferred(int c)
{
    /* A warm 4 KiB-page region still faults in every 4 KiB page table entry
     * when first touched here, which measured no faster than a fresh local
     * THP region of 2 MiB and up; huge-page backings win clearly. */
    if (zkn_daemon_connected() && atomic_load(&backing) == ZKN_BACKING_MEMFD_4K &&
        zkn_thp_anon && zkn_win.cls[c].size >= ZKN_HUGE_PAGE_SIZE)
        return 0;
    return 1;
}

static void disconnect_locked(void)
{
    if (sock >= 0)
        close(sock);
    sock = -1;
    outstanding = 0;
    if (atomic_exchange(&connected, 0))
        zkn_log_once("zknalloc: lost the zknallocd daemon; large blocks now come from private memory\n");
    atomic_store(&next_try_ns, zkn_now_ns() + backoff_ns);
    backoff_ns = backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff_ns * 2;
}

static int send_frame(uint16_t type, const void *payload, size_t len, uint32_t *rid)
{
    char frame[sizeof(struct zkn_hdr) + sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
    if (len > sizeof frame - sizeof(struct zkn_hdr))
        return -1;
    *rid = next_req++;
    if (next_req == 0)
        next_req = 1;
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, *rid);
    if (len)
        memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    for (;;) {
        ssize_t n = zkn_send_frame(sock, frame, sizeof(struct zkn_hdr) + len, NULL, 0);
        if (n == (ssize_t)(sizeof(struct zkn_hdr) + len))
            return 0;
        if (n != -EAGAIN)
            return -1;
        struct pollfd p = {.fd = sock, .events = POLLOUT};
        int r = poll(&p, 1, HELLO_TIMEOUT_MS);
        if (r <= 0 && !(r < 0 && errno == EINTR))
            return -1;
    }
}

/* A reply to an earlier pipelined RETURN: account for it. 0, or -1 when the
 * frame makes no sense here. */
static int absorb(const struct zkn_hdr *h)
{
    if (outstanding == 0 || (h->type != ZKN_MSG_RETURN_OK && h->type != ZKN_MSG_ERROR))
        return -1;
    outstanding--;
    return 0;
}

/* Waits for the reply to rid, absorbing earlier RETURN replies. Returns its
 * length, -1 on timeout, EOF or a protocol error (the caller disconnects). */
static ssize_t wait_reply(uint32_t rid, char *buf, size_t cap, int *fds, size_t *nfds, int timeout_ms)
{
    uint64_t deadline = zkn_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        uint64_t now = zkn_now_ns();
        if (now >= deadline)
            return -1;
        struct pollfd p = {.fd = sock, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = zkn_recv_frame(sock, buf, cap, fds, ZKN_MAX_REGIONS_PER_REPLY, nfds, MSG_DONTWAIT);
        if (n == -EAGAIN)
            continue;
        if (n <= 0 || zkn_hdr_check(buf, (size_t)n) != 0) {
            if (n > 0)
                zkn_close_fds(fds, *nfds);
            return -1;
        }
        struct zkn_hdr h;
        memcpy(&h, buf, sizeof h);
        if (h.request_id == rid)
            return n;
        zkn_close_fds(fds, *nfds);
        if (absorb(&h) != 0)
            return -1;
    }
}

/* Reads whatever replies have already arrived, without waiting. */
static void drain_replies_locked(void)
{
    char buf[256];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds;
    while (sock >= 0 && outstanding > 0) {
        ssize_t n = zkn_recv_frame(sock, buf, sizeof buf, fds, ZKN_MAX_REGIONS_PER_REPLY, &nfds,
                                   MSG_DONTWAIT);
        if (n == -EAGAIN)
            return;
        struct zkn_hdr h;
        if (n > 0)
            zkn_close_fds(fds, nfds);
        if (n <= 0 || zkn_hdr_check(buf, (size_t)n) != 0 || (memcpy(&h, buf, sizeof h), absorb(&h)))
            disconnect_locked();
    }
}

/* The identity of the daemon process at the other end: its pid as we see it
 * (SO_PEERCRED) and its start time from /proc, so a restarted daemon that got
 * the same pid (pid 1 in a container, say) is still a new instance whose ids
 * must never receive our old RETURNs. Without /proc, the socket file's inode
 * stands in (a restarted daemon binds a new one). */
static void instance_of(int s, const char *path, uint64_t out[2])
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    out[0] = out[1] = 0;
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.pid > 0) {
        char name[40], buf[512];
        out[0] = (uint64_t)cr.pid;
        /* "/proc/%d/stat" by hand: no stdio in here. */
        char digits[24], *d = zkn_fmt_u64(digits, (uint64_t)cr.pid);
        size_t n = 0;
        for (const char *q = "/proc/"; *q; q++)
            name[n++] = *q;
        while (*d)
            name[n++] = *d++;
        for (const char *q = "/stat"; *q; q++)
            name[n++] = *q;
        name[n] = '\0';
        int fd = open(name, O_RDONLY | O_CLOEXEC);
        ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (r > 0) {
            buf[r] = '\0';
            char *p = strrchr(buf, ')'); /* the command name may hold spaces */
            /* After ") ": state is field 3, starttime field 22. */
            for (int field = 2; p && *p && field < 22; field++)
                p = strchr(p + 1, ' ');
            if (p && *p) {
                uint64_t v = 0;
                for (p++; *p >= '0' && *p <= '9'; p++)
                    v = v * 10 + (uint64_t)(*p - '0');
                out[1] = v;
            }
        }
    }
    struct stat st;
    if (out[1] == 0 && stat(path, &st) == 0)
        out[1] = ((uint64_t)st.st_dev << 32) ^ (uint64_t)st.st_ino;
}

static int connect_locked(void)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (zkn_socket_path(path, sizeof path, ZKN_PATH_CLIENT) != 0)
        return -1;
    memcpy(a.sun_path, path, strlen(path) + 1);
    sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0)
        return -1;
    if (connect(sock, (struct sockaddr *)&a, sizeof a) != 0)
        goto fail;
    struct zkn_hello h = {.min_version = ZKN_PROTO_MIN_VERSION, .max_version = ZKN_PROTO_VERSION};
    uint32_t rid;
    char buf[256];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds = 0;
    if (send_frame(ZKN_MSG_HELLO, &h, sizeof h, &rid) != 0)
        goto fail;
    ssize_t n = wait_reply(rid, buf, sizeof buf, fds, &nfds, HELLO_TIMEOUT_MS);
    zkn_close_fds(fds, nfds);
    struct zkn_hdr hdr;
    struct zkn_hello_ok ok;
    if (n != (ssize_t)(sizeof hdr + sizeof ok))
        goto fail;
    memcpy(&hdr, buf, sizeof hdr);
    memcpy(&ok, buf + sizeof hdr, sizeof ok);
    if (hdr.type != ZKN_MSG_HELLO_OK || ok.version < ZKN_PROTO_MIN_VERSION ||
        ok.version > ZKN_PROTO_VERSION)
        goto fail;
    if (ok.class_count != ZKN_CLASS_COUNT) {
        zkn_log_once("zknalloc: zknallocd uses another size-class table; not using it\n");
        goto fail;
    }
    hello = ok;
    atomic_store(&backing, ok.backing);
    uint64_t inst[2];
    instance_of(sock, path, inst);
    if (!ever_connected || inst[0] != last_instance[0] || inst[1] != last_instance[1]) {
        /* A new instance: what the old one lent is ours to unmap, not to return. */
        if (++gen_counter == 0)
            gen_counter = 1;
        atomic_store(&live_gen, gen_counter);
        pthread_mutex_lock(&qlock);
        atomic_store(&q_n, 0);
        pthread_mutex_unlock(&qlock);
    }
    if (ever_connected)
        atomic_fetch_add(&zkn_ctr.reconnects, 1);
    ever_connected = 1;
    last_instance[0] = inst[0];
    last_instance[1] = inst[1];
    outstanding = 0;
    backoff_ns = BACKOFF_MIN_NS;
    atomic_store(&connected, 1);
    return 0;
fail:
    close(sock);
    sock = -1;
    return -1;
}

/* Sends every queued RETURN of the live generation. Under dlock. */
static void send_returns_locked(void)
{
    while (atomic_load(&q_n) && sock >= 0) {
        char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
        struct zkn_return r = {0};
        pthread_mutex_lock(&qlock);
        uint32_t n = atomic_load(&q_n);
        if (q_gen != atomic_load(&live_gen))
            n = 0; /* ids of an instance that is gone */
        r.count = n > ZKN_MAX_RETURN_IDS ? ZKN_MAX_RETURN_IDS : n;
        memcpy(payload + sizeof r, &q_ids[n - r.count], r.count * 8u);
        atomic_store(&q_n, n - r.count);
        pthread_mutex_unlock(&qlock);
        if (r.count == 0)
            return;
        memcpy(payload, &r, sizeof r);
        uint32_t rid;
        if (send_frame(ZKN_MSG_RETURN, payload, sizeof r + r.count * 8u, &rid) != 0) {
            disconnect_locked(); /* the ids are lost; the daemon reclaims them at our exit */
            return;
        }
        outstanding++;
        atomic_fetch_add(&zkn_ctr.returns, r.count);
    }
    drain_replies_locked();
}

void zkn_daemon_queue_return(uint64_t id, uint32_t gen)
{
    pthread_mutex_lock(&qlock);
    uint32_t n = atomic_load(&q_n);
    if (n && q_gen != gen)
        n = 0;
    q_gen = gen;
    if (n < QUEUE_MAX)
        q_ids[n++] = id; /* else dropped: the lease comes back when we exit */
    atomic_store(&q_n, n);
    pthread_mutex_unlock(&qlock);
}

void zkn_daemon_flush_returns(int wait_for_lock)
{
    if (!atomic_load_explicit(&q_n, memory_order_relaxed) || !zkn_daemon_connected())
        return;
    if (wait_for_lock)
        pthread_mutex_lock(&dlock);
    else if (pthread_mutex_trylock(&dlock) != 0)
        return; /* whoever holds the link sends them with its next request */
    if (atomic_load(&connected))
        send_returns_locked();
    pthread_mutex_unlock(&dlock);
}

int zkn_daemon_lend(int c, int count, int zeroed, uint32_t *out)
{
    uint64_t size = zkn_win.cls[c].size;
    if (!atomic_load_explicit(&connected, memory_order_relaxed) &&
        zkn_now_ns() < atomic_load_explicit(&next_try_ns, memory_order_relaxed))
        return 0;
    int saved = errno;
    int got = 0;
    pthread_mutex_lock(&dlock);
    uint64_t now = zkn_now_ns();
    if (!atomic_load(&connected)) {
        if (now < atomic_load(&next_try_ns) || connect_locked() != 0) {
            if (now >= atomic_load(&next_try_ns)) {
                atomic_store(&next_try_ns, now + backoff_ns);
                backoff_ns = backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff_ns * 2;
            }
            goto out;
        }
    }
    if (now < holdoff_ns)
        goto out;
    send_returns_locked();
    if (!atomic_load(&connected))
        goto out;
    if (hello.max_regions_per_reply && (uint32_t)count > hello.max_regions_per_reply)
        count = (int)hello.max_regions_per_reply;
    if (count > (int)ZKN_MAX_REGIONS_PER_REPLY)
        count = ZKN_MAX_REGIONS_PER_REPLY;
    struct zkn_lend l = {.size_class = (uint16_t)c, .count = (uint16_t)count,
                         .flags = zeroed ? ZKN_LEND_ZEROED : 0};
    uint32_t rid;
    if (send_frame(ZKN_MSG_LEND, &l, sizeof l, &rid) != 0) {
        disconnect_locked();
        goto out;
    }
    /* The daemon may have to create (and warm) the regions: allow for that. */
    uint64_t ms = 2000 + (size >> 20) * (uint64_t)count;
    char buf[sizeof(struct zkn_hdr) + sizeof(struct zkn_regions) +
             ZKN_MAX_REGIONS_PER_REPLY * sizeof(struct zkn_region_desc) + 256];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds = 0;
    ssize_t n = wait_reply(rid, buf, sizeof buf, fds, &nfds, ms > 600000 ? 600000 : (int)ms);
    atomic_fetch_add(&zkn_ctr.lends, 1);
    if (n < 0) {
        disconnect_locked();
        goto out;
    }
    struct zkn_hdr h;
    memcpy(&h, buf, sizeof h);
    if (h.type == ZKN_MSG_ERROR && n >= (ssize_t)(sizeof h + sizeof(struct zkn_error))) {
        struct zkn_error e;
        memcpy(&e, buf + sizeof h, sizeof e);
        zkn_close_fds(fds, nfds);
        if (e.code == ZKN_E_CLIENT_CAP || e.code == ZKN_E_NOMEM || e.code == ZKN_E_BUSY)
            holdoff_ns = now + REFUSAL_HOLDOFF_NS; /* a refusal, not a failure */
        else
            disconnect_locked();
        goto out;
    }
    struct zkn_regions r = {0};
    if (n >= (ssize_t)(sizeof h + sizeof r))
        memcpy(&r, buf + sizeof h, sizeof r);
    if (h.type != ZKN_MSG_REGIONS || r.count == 0 ||
        r.count > (uint32_t)count || r.count != nfds ||
        n != (ssize_t)(sizeof h + sizeof r + r.count * sizeof(struct zkn_region_desc))) {
        zkn_close_fds(fds, nfds);
        disconnect_locked();
        goto out;
    }
    uint32_t gen = atomic_load(&live_gen);
    for (uint32_t i = 0; i < r.count; i++) {
        struct zkn_region_desc d;
        memcpy(&d, buf + sizeof h + sizeof r + i * sizeof d, sizeof d);
        uint32_t idx = UINT32_MAX;
        if (d.size == size && d.size_class == c)
            idx = zkn_region_map_fd(c, fds[i], d.id, (d.flags & ZKN_REGION_CLEAN) != 0, gen);
        else
            close(fds[i]);
        if (idx == UINT32_MAX)
            zkn_daemon_queue_return(d.id, gen); /* never mapped: give it straight back */
        else
            out[got++] = idx;
    }
    if (got < (int)r.count)
        send_returns_locked();
out:
    pthread_mutex_unlock(&dlock);
    errno = saved;
    return got;
}

void zkn_daemon_atfork_prepare(void)
{
    pthread_mutex_lock(&dlock);
    pthread_mutex_lock(&zkn_glock);
    pthread_mutex_lock(&qlock);
}

void zkn_daemon_atfork_parent(void)
{
    pthread_mutex_unlock(&qlock);
    pthread_mutex_unlock(&zkn_glock);
    pthread_mutex_unlock(&dlock);
}

void zkn_daemon_atfork_child(void)
{
    pthread_mutex_init(&dlock, NULL);
    pthread_mutex_init(&zkn_glock, NULL);
    pthread_mutex_init(&qlock, NULL);
    /* The parent's socket, leases and queued ids are not the child's. */
    if (sock >= 0)
        close(sock);
    sock = -1;
    outstanding = 0;
    atomic_store(&connected, 0);
    atomic_store(&q_n, 0);
    if (++gen_counter == 0)
        gen_counter = 1;
    atomic_store(&live_gen, gen_counter);
    ever_connected = 0; /* whatever daemon answers next is a new session */
    atomic_store(&next_try_ns, 0);
    backoff_ns = BACKOFF_MIN_NS;
    holdoff_ns = 0;
}
