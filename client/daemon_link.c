/* The process's one connection to zknallocd (proto/PROTOCOL.md): transport
 * only. It hands lent regions to its caller as {fd, id, clean}; mapping them
 * is the caller's business (alloc.c).
 *
 * The daemon is an optimisation, so nothing here makes a caller wait for it
 * beyond a few milliseconds, and no lock is held while waiting:
 *   - dlock guards the socket and this file's state, and is only ever held
 *     for non-blocking socket calls. A thread waiting for a reply polls with
 *     dlock released, so frees, other threads' misses, zkn_release_cache()
 *     and fork() never queue behind a LEND.
 *   - One request waits at a time; another thread's miss meanwhile just uses
 *     private memory. Whoever reads a frame delivers it: the waiter's reply
 *     lands in a mailbox, late replies are handled when they come (a late
 *     REGIONS is returned at once, a late HELLO_OK completes the session).
 *   - A daemon that does not answer within wait_ms (10 ms unless
 *     ZK_NALLOC_DAEMON_WAIT_MS says otherwise; a healthy round trip is
 *     ~30 us) is left alone for a quiet period that
 *     doubles up to QUIET_MAX_NS, during which a miss costs one atomic load.
 *     A missing daemon (connect fails) is retried on the same schedule.
 *
 * Each daemon instance gets a generation number, stamped on every region it
 * lends. Regions of an instance that is gone stay valid here (the memfd pages
 * live as long as they are mapped) and are unmapped without a RETURN. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"
#include "sockpath.h"
#include "wire.h"
#include "zkn_proto.h"

#define WAIT_MS_DEFAULT 10
#define WAIT_MS_MAX 1000
#define POLL_SLICE_MS 1 /* another thread may read our reply: look again this often */
#define QUIET_MIN_NS 250000000ull
#define QUIET_MAX_NS 2000000000ull
#define REFUSAL_HOLDOFF_NS 200000000ull /* after client_cap/nomem/busy */

static pthread_mutex_t dlock = PTHREAD_MUTEX_INITIALIZER;
static int sock = -1;
static uint32_t epoch;                /* bumped whenever sock closes */
static pid_t owner_pid;               /* the process that opened sock */
static _Atomic int connected;         /* HELLO_OK received */
static uint32_t hello_rid;            /* HELLO sent, reply not yet read */
static struct zkn_hello_ok hello;
static uint32_t next_req = 1;
static uint32_t outstanding;          /* RETURN replies not read yet */
static _Atomic uint64_t quiet_until;  /* no connect or LEND before this */
static uint64_t quiet_ns = QUIET_MIN_NS;
static uint64_t class_holdoff[ZKN_CLASS_COUNT]; /* no LEND of the class before this */
static uint64_t last_instance[2];     /* who answered last time: zkn__daemon_instance() */
static int ever_connected;
static uint32_t gen_counter;
static _Atomic uint32_t live_gen;     /* the instance whose ids we RETURN */
static _Atomic uint32_t backing;
static int waiting;                   /* a thread waits for a reply (at most one) */
static char link_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* The LEND reply being waited for, or a late one to give back. */
static uint32_t lend_rid;             /* in flight; 0: none */
static _Atomic int lend_abandoned;    /* its waiter gave up: return what comes */
static int mb_ready;
static size_t mb_len, mb_nfds;
static char mb_buf[sizeof(struct zkn_hdr) + sizeof(struct zkn_regions) +
                   ZKN_MAX_REGIONS_PER_REPLY * sizeof(struct zkn_region_desc)];
static int mb_fds[ZKN_MAX_REGIONS_PER_REPLY];

int zkn__daemon_connected(void)
{
    return atomic_load_explicit(&connected, memory_order_relaxed);
}

int zkn__daemon_gen_current(uint32_t gen)
{
    return gen != 0 && gen == atomic_load_explicit(&live_gen, memory_order_relaxed);
}

uint32_t zkn__daemon_backing(void)
{
    return atomic_load_explicit(&backing, memory_order_relaxed);
}

static void be_quiet_locked(uint64_t now)
{
    atomic_store(&quiet_until, now + quiet_ns);
    quiet_ns = quiet_ns * 2 > QUIET_MAX_NS ? QUIET_MAX_NS : quiet_ns * 2;
}

static void mailbox_clear_locked(void)
{
    zkn_close_fds(mb_fds, mb_nfds);
    mb_nfds = 0;
    mb_ready = 0;
}

static void disconnect_locked(void)
{
    if (sock >= 0)
        close(sock);
    sock = -1;
    epoch++;
    outstanding = 0;
    hello_rid = 0;
    lend_rid = 0;
    lend_abandoned = 0;
    mailbox_clear_locked();
    if (atomic_exchange(&connected, 0))
        zkn__log_once("zknalloc: lost the zknallocd daemon; large blocks now come from private memory\n");
    be_quiet_locked(zkn__now_ns());
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
    /* Never waits: a full socket buffer means a daemon that does not read. */
    ssize_t n = zkn_send_frame(sock, frame, sizeof(struct zkn_hdr) + len, NULL, 0);
    return n == (ssize_t)(sizeof(struct zkn_hdr) + len) ? 0 : -1;
}

static void hello_done_locked(const char *buf, ssize_t n)
{
    struct zkn_hdr hdr;
    struct zkn_hello_ok ok;
    hello_rid = 0;
    if (n != (ssize_t)(sizeof hdr + sizeof ok)) {
        disconnect_locked();
        return;
    }
    memcpy(&hdr, buf, sizeof hdr);
    memcpy(&ok, buf + sizeof hdr, sizeof ok);
    if (hdr.type != ZKN_MSG_HELLO_OK || ok.version < ZKN_PROTO_MIN_VERSION ||
        ok.version > ZKN_PROTO_VERSION) {
        zkn__log_once("zknalloc: zknallocd speaks another protocol version; not using it\n");
        disconnect_locked();
        return;
    }
    if (ok.class_count != ZKN_CLASS_COUNT) {
        zkn__log_once("zknalloc: zknallocd uses another size-class table; not using it\n");
        disconnect_locked();
        return;
    }
    hello = ok;
    atomic_store(&backing, ok.backing);
    uint64_t inst[2];
    zkn__daemon_instance(sock, link_path, inst);
    if (!ever_connected || inst[0] != last_instance[0] || inst[1] != last_instance[1]) {
        /* A new instance: what the old one lent is ours to unmap, not to return. */
        if (++gen_counter == 0)
            gen_counter = 1;
        atomic_store(&live_gen, gen_counter);
    }
    if (ever_connected)
        atomic_fetch_add(&zkn__ctr.reconnects, 1);
    ever_connected = 1;
    last_instance[0] = inst[0];
    last_instance[1] = inst[1];
    quiet_ns = QUIET_MIN_NS;
    atomic_store(&connected, 1);
}

/* A late REGIONS (its waiter gave up): the leases go straight back. */
static void give_back_late(const char *buf, ssize_t n)
{
    struct zkn_regions r;
    if (n < (ssize_t)(sizeof(struct zkn_hdr) + sizeof r))
        return;
    memcpy(&r, buf + sizeof(struct zkn_hdr), sizeof r);
    for (uint32_t i = 0; i < r.count && i < ZKN_MAX_REGIONS_PER_REPLY; i++) {
        struct zkn_region_desc d;
        size_t off = sizeof(struct zkn_hdr) + sizeof r + i * sizeof d;
        if (off + sizeof d > (size_t)n)
            break;
        memcpy(&d, buf + off, sizeof d);
        zkn__queue_push(ZKN__OWED_RETURN, d.id, atomic_load(&live_gen));
    }
}

/* Reads every frame that has arrived, without waiting, and puts each where it
 * belongs. Disconnects on EOF or nonsense. */
static void pump_locked(void)
{
    char buf[sizeof mb_buf + 256];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds;
    while (sock >= 0) {
        ssize_t n = zkn_recv_frame(sock, buf, sizeof buf, fds, ZKN_MAX_REGIONS_PER_REPLY, &nfds,
                                   MSG_DONTWAIT);
        if (n == -EAGAIN)
            return;
        struct zkn_hdr h;
        if (n <= 0 || zkn_hdr_check(buf, (size_t)n) != 0) {
            if (n > 0)
                zkn_close_fds(fds, nfds);
            disconnect_locked();
            return;
        }
        memcpy(&h, buf, sizeof h);
        if (hello_rid && h.request_id == hello_rid) {
            zkn_close_fds(fds, nfds);
            hello_done_locked(buf, n);
        } else if (lend_rid && h.request_id == lend_rid) {
            lend_rid = 0;
            if (lend_abandoned) {
                lend_abandoned = 0;
                zkn_close_fds(fds, nfds);
                if (h.type == ZKN_MSG_REGIONS)
                    give_back_late(buf, n);
            } else if ((size_t)n <= sizeof mb_buf) {
                memcpy(mb_buf, buf, (size_t)n);
                mb_len = (size_t)n;
                memcpy(mb_fds, fds, nfds * sizeof(int));
                mb_nfds = nfds;
                mb_ready = 1;
            } else {
                zkn_close_fds(fds, nfds);
                disconnect_locked();
            }
        } else {
            zkn_close_fds(fds, nfds);
            if (outstanding == 0 ||
                (h.type != ZKN_MSG_RETURN_OK && h.type != ZKN_MSG_ERROR)) {
                disconnect_locked();
                return;
            }
            outstanding--;
        }
    }
}

/* Waits until done() holds, at most timeout_ms, with dlock released while
 * polling. 1 when done, 0 on timeout, -1 when the connection went away. */
static int wait_locked(int (*done)(void), int timeout_ms)
{
    uint64_t deadline = zkn__now_ns() + (uint64_t)timeout_ms * 1000000u;
    uint32_t my_epoch = epoch;
    waiting = 1;
    int rc;
    for (;;) {
        pump_locked();
        if (epoch != my_epoch) {
            rc = -1;
            break;
        }
        if (done()) {
            rc = 1;
            break;
        }
        uint64_t now = zkn__now_ns();
        if (now >= deadline) {
            rc = 0;
            break;
        }
        struct pollfd p = {.fd = sock, .events = POLLIN};
        uint64_t left_ms = (deadline - now + 999999) / 1000000;
        pthread_mutex_unlock(&dlock);
        /* sock may be closed by another thread meanwhile: epoch tells. */
        (void)poll(&p, 1, left_ms < POLL_SLICE_MS ? (int)left_ms : POLL_SLICE_MS);
        pthread_mutex_lock(&dlock);
    }
    waiting = 0;
    return rc;
}

static int hello_arrived(void) { return hello_rid == 0; }
static int lend_arrived(void) { return mb_ready; }

/* How long a HELLO or LEND may wait: ZK_NALLOC_DAEMON_WAIT_MS (1-1000), for
 * hosts so loaded that a healthy daemon misses 10 ms; read once. */
static int wait_ms(void)
{
    static int ms;
    if (!ms)
        ms = (int)zkn__env_uint("ZK_NALLOC_DAEMON_WAIT_MS", 1, WAIT_MS_MAX, WAIT_MS_DEFAULT);
    return ms;
}

/* Not connected: try to be, within wait_ms(). 0 when connected. */
static int connect_locked(void)
{
    const char *path = link_path;
    if (sock < 0) {
        if (zkn_socket_path(link_path, sizeof link_path, ZKN_PATH_CLIENT) != 0)
            return -1;
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        uid_t dir_owner;
        if (zkn__trust_socket_dir(path, &dir_owner) != 0) {
            /* Missing (no daemon) or not safe: either way nobody to talk to. */
            struct stat st;
            if (lstat(path, &st) == 0)
                zkn__log_once("zknalloc: not trusting the zknallocd socket (its directory is "
                             "not owned by root, this user or ZK_NALLOC_DAEMON_UID, or is "
                             "writable by others); large blocks come from private memory\n");
            return -1;
        }
        memcpy(a.sun_path, path, strlen(path) + 1);
        int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0)
            return -1;
        /* A Unix socket connects at once or fails (EAGAIN: backlog full). */
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            close(s);
            return -1;
        }
        if (zkn__trust_peer(s, dir_owner) != 0) {
            zkn__log_once("zknalloc: the process serving the zknallocd socket is not root, "
                         "this user or ZK_NALLOC_DAEMON_UID; large blocks come from private "
                         "memory\n");
            close(s);
            return -1;
        }
        sock = s;
        owner_pid = getpid();
        outstanding = 0;
        struct zkn_hello h = {.min_version = ZKN_PROTO_MIN_VERSION,
                              .max_version = ZKN_PROTO_VERSION};
        if (send_frame(ZKN_MSG_HELLO, &h, sizeof h, &hello_rid) != 0) {
            disconnect_locked();
            return -1;
        }
    }
    if (!hello_rid)
        return atomic_load(&connected) ? 0 : -1;
    int rc = wait_locked(hello_arrived, wait_ms());
    if (rc == 0) /* the late HELLO_OK is read by whoever comes next */
        be_quiet_locked(zkn__now_ns());
    return atomic_load(&connected) ? 0 : -1;
}

static void send_queue_locked(enum zkn__owed kind)
{
    uint32_t flags = kind == ZKN__OWED_FORGET ? ZKN_RETURN_FORGET : 0;
    while (sock >= 0 && atomic_load(&connected) && zkn__queue_pending(kind)) {
        char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
        uint64_t ids[ZKN_MAX_RETURN_IDS];
        struct zkn_return r = {.flags = flags};
        r.count = zkn__queue_take(kind, atomic_load(&live_gen), ids, ZKN_MAX_RETURN_IDS);
        if (r.count == 0)
            return;
        memcpy(payload, &r, sizeof r);
        memcpy(payload + sizeof r, ids, r.count * 8u);
        uint32_t rid;
        if (send_frame(ZKN_MSG_RETURN, payload, sizeof r + r.count * 8u, &rid) != 0) {
            /* Returns are lost and come back when we exit; forgets must not
             * be lost (the daemon would reuse what a child maps): keep them. */
            for (uint32_t i = 0; flags && i < r.count; i++)
                zkn__queue_push(kind, ids[i], atomic_load(&live_gen));
            disconnect_locked();
            return;
        }
        outstanding++;
        if (!flags)
            atomic_fetch_add(&zkn__ctr.returns, r.count);
    }
}

static void send_queues_locked(void)
{
    send_queue_locked(ZKN__OWED_FORGET);
    send_queue_locked(ZKN__OWED_RETURN);
}


static void reset_locked(void);

/* A process that forked without running our handlers (_Fork, raw clone)
 * where no fork token could be had still holds the parent's socket: it must
 * never speak for the parent. (fork.c resets the rest: zkn__fork_check.) */
static int foreign_locked(void)
{
    if (sock < 0 || owner_pid == getpid())
        return 0;
    reset_locked();
    return 1;
}

int zkn__daemon_pid_changed(void)
{
    return sock >= 0 && owner_pid != getpid();
}

void zkn__daemon_flush_returns(int wait_for_lock)
{
    if (!zkn__queue_pending(ZKN__OWED_RETURN) && !zkn__queue_pending(ZKN__OWED_FORGET) &&
        !atomic_load_explicit(&lend_abandoned, memory_order_relaxed))
        return; /* nothing to send, no late reply to read */
    if (!zkn__daemon_connected())
        return;
    if (wait_for_lock)
        pthread_mutex_lock(&dlock);
    else if (pthread_mutex_trylock(&dlock) != 0)
        return; /* whoever holds the link sends them with its next request */
    if (!foreign_locked()) {
        pump_locked();
        send_queues_locked();
    }
    pthread_mutex_unlock(&dlock);
}

static void handle_error_reply(int c, const char *buf, size_t n, uint64_t now)
{
    struct zkn_error e = {0};
    if (n >= sizeof(struct zkn_hdr) + sizeof e)
        memcpy(&e, buf + sizeof(struct zkn_hdr), sizeof e);
    /* not_warm: asked again at the next miss. The answer takes ~25 us, the
     * private memory used meanwhile at least a fresh 2 MiB page (~130 us),
     * and each LEND tells the daemon the demand so far (see alloc.c). */
    if (e.code == ZKN_E_NOT_WARM)
        return;
    if (e.code == ZKN_E_CLIENT_CAP || e.code == ZKN_E_NOMEM || e.code == ZKN_E_BUSY)
        class_holdoff[c] = now + REFUSAL_HOLDOFF_NS; /* a refusal, not a failure */
    else
        disconnect_locked();
}

int zkn__daemon_lend(int c, int count, uint32_t demand, int zeroed, struct zkn__lent *out,
                     uint32_t *gen)
{
    uint64_t now = zkn__now_ns();
    if (now < atomic_load_explicit(&quiet_until, memory_order_relaxed))
        return 0; /* a daemon that is missing or slow costs nothing here */
    int saved = errno;
    int got = 0;
    /* dlock is only ever held for non-blocking calls: this is short. */
    pthread_mutex_lock(&dlock);
    (void)foreign_locked();
    if (waiting || now < class_holdoff[c])
        goto out; /* another thread waits for the daemon: do not queue behind it */
    pump_locked();
    if (lend_rid) { /* an earlier LEND is still unanswered: the daemon is stuck */
        be_quiet_locked(now);
        goto out;
    }
    if (!atomic_load(&connected) && connect_locked() != 0) {
        if (sock < 0)
            be_quiet_locked(now);
        goto out;
    }
    send_queues_locked();
    if (!atomic_load(&connected))
        goto out;
    if (hello.max_regions_per_reply && (uint32_t)count > hello.max_regions_per_reply)
        count = (int)hello.max_regions_per_reply;
    if (count > (int)ZKN_MAX_REGIONS_PER_REPLY)
        count = ZKN_MAX_REGIONS_PER_REPLY;
    struct zkn_lend l = {.size_class = (uint16_t)c, .count = (uint16_t)count, .demand = demand,
                         .flags = zeroed ? ZKN_LEND_ZEROED : 0};
    if (send_frame(ZKN_MSG_LEND, &l, sizeof l, &lend_rid) != 0) {
        disconnect_locked();
        goto out;
    }
    atomic_fetch_add(&zkn__ctr.lends, 1);
    int rc = wait_locked(lend_arrived, wait_ms());
    if (rc <= 0) {
        if (rc == 0) { /* slow: its answer is given back when it comes */
            lend_abandoned = 1;
            be_quiet_locked(zkn__now_ns());
        }
        goto out;
    }
    quiet_ns = QUIET_MIN_NS;
    const char *buf = mb_buf;
    size_t n = mb_len;
    struct zkn_hdr h;
    memcpy(&h, buf, sizeof h);
    if (h.type == ZKN_MSG_ERROR) {
        mailbox_clear_locked();
        handle_error_reply(c, buf, n, now);
        goto out;
    }
    int rc2 = zkn__trust_regions(buf, n, mb_fds, mb_nfds, c, count, hello.backing, out);
    if (rc2 < 0) {
        mailbox_clear_locked();
        disconnect_locked();
        if (rc2 == -2) /* not what a zknallocd lends: stop trusting this daemon */
            atomic_store(&quiet_until, zkn__now_ns() + QUIET_MAX_NS);
        goto out;
    }
    got = rc2;
    *gen = atomic_load(&live_gen);
    mb_nfds = 0; /* the fds are the caller's now */
    mb_ready = 0;
out:
    pthread_mutex_unlock(&dlock);
    errno = saved;
    return got;
}

void zkn__daemon_poll(void)
{
    if (sock < 0 || pthread_mutex_trylock(&dlock) != 0)
        return;
    if (owner_pid == getpid())
        pump_locked();
    pthread_mutex_unlock(&dlock);
}

void zkn__daemon_lock(void)
{
    pthread_mutex_lock(&dlock);
}

void zkn__daemon_send_forgets_locked(void)
{
    /* Before the fork happens, so that a parent killed right after it cannot
     * leave the daemon reusing what the child maps. Never waits; unsent ids
     * stay queued for the next connection to the same daemon. */
    if (sock >= 0 && owner_pid == getpid() && atomic_load(&connected))
        send_queue_locked(ZKN__OWED_FORGET);
}

void zkn__daemon_unlock(void)
{
    pthread_mutex_unlock(&dlock);
}

void zkn__daemon_atfork_child(void)
{
    pthread_mutex_init(&dlock, NULL);
    zkn__queue_child_reset();
    reset_locked();
}

/* The parent's socket, leases and queued ids are not the child's. */
static void reset_locked(void)
{
    if (sock >= 0)
        close(sock);
    sock = -1;
    epoch++;
    outstanding = 0;
    hello_rid = 0;
    lend_rid = 0;
    lend_abandoned = 0;
    waiting = 0;
    mailbox_clear_locked();
    atomic_store(&connected, 0);
    if (++gen_counter == 0)
        gen_counter = 1;
    atomic_store(&live_gen, gen_counter);
    ever_connected = 0; /* whatever daemon answers next is a new session */
    atomic_store(&quiet_until, 0);
    quiet_ns = QUIET_MIN_NS;
    memset(class_holdoff, 0, sizeof class_holdoff);
}
