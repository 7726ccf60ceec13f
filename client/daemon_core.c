/* The process's one connection to zknallocd (proto/PROTOCOL.md), its core:
 * the shared state, framing, reading replies and waiting. daemon_session.c
 * connects, daemon_link.c makes the requests; together they are transport
 * only, handing lent regions to the caller as {fd, id, clean} (alloc.c maps).
 *
 * The daemon is an optimisation, so nothing here makes a caller wait for it
 * beyond a few milliseconds, and no lock is held while waiting:
 *   - dlock guards the socket and the link's state, and is only ever held
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
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon_core.h"
#include "os.h"
#include "wire.h"

struct zkn__link_state zkn__link = {
    .dlock = PTHREAD_MUTEX_INITIALIZER,
    .sock = -1,
    .next_req = 1,
    .quiet_ns = QUIET_MIN_NS,
};
static struct zkn__link_state *const L = &zkn__link;

int zkn__daemon_connected(void)
{
    return atomic_load_explicit(&L->connected, memory_order_relaxed);
}

int zkn__daemon_gen_current(uint32_t gen)
{
    return gen != 0 && gen == atomic_load_explicit(&L->live_gen, memory_order_relaxed);
}

uint32_t zkn__daemon_backing(void)
{
    return atomic_load_explicit(&L->backing, memory_order_relaxed);
}

int zkn__daemon_pid_changed(void)
{
    return L->sock >= 0 && L->owner_pid != getpid();
}

void zkn__link_be_quiet(uint64_t now)
{
    atomic_store(&L->quiet_until, now + L->quiet_ns);
    L->quiet_ns = L->quiet_ns * 2 > QUIET_MAX_NS ? QUIET_MAX_NS : L->quiet_ns * 2;
}

void zkn__link_mailbox_clear(void)
{
    zkn_close_fds(L->mb_fds, L->mb_nfds);
    L->mb_nfds = 0;
    L->mb_ready = 0;
}

/* Closes the socket and forgets every reply still expected on it. */
static void close_socket(void)
{
    if (L->sock >= 0)
        close(L->sock);
    L->sock = -1;
    L->epoch++;
    L->outstanding = 0;
    L->hello_rid = 0;
    L->lend_rid = 0;
    L->lend_abandoned = 0;
    zkn__link_mailbox_clear();
}

void zkn__link_disconnect(void)
{
    close_socket();
    if (atomic_exchange(&L->connected, 0))
        zkn__log_once("zknalloc: lost the zknallocd daemon; large blocks now come from private memory\n");
    zkn__link_be_quiet(zkn__now_ns());
}

int zkn__link_send_frame(uint16_t type, const void *payload, size_t len, uint32_t *rid)
{
    char frame[sizeof(struct zkn_hdr) + sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
    if (len > sizeof frame - sizeof(struct zkn_hdr))
        return -1;
    *rid = L->next_req++;
    if (L->next_req == 0)
        L->next_req = 1;
    zkn_hdr_init((struct zkn_hdr *)frame, type, (uint32_t)len, *rid);
    if (len)
        memcpy(frame + sizeof(struct zkn_hdr), payload, len);
    /* Never waits: a full socket buffer means a daemon that does not read. */
    ssize_t n = zkn_send_frame(L->sock, frame, sizeof(struct zkn_hdr) + len, NULL, 0);
    return n == (ssize_t)(sizeof(struct zkn_hdr) + len) ? 0 : -1;
}

static void hello_done_locked(const char *buf, ssize_t n)
{
    struct zkn_hdr hdr;
    struct zkn_hello_ok ok;
    L->hello_rid = 0;
    if (n != (ssize_t)(sizeof hdr + sizeof ok)) {
        zkn__link_disconnect();
        return;
    }
    memcpy(&hdr, buf, sizeof hdr);
    memcpy(&ok, buf + sizeof hdr, sizeof ok);
    if (hdr.type != ZKN_MSG_HELLO_OK || ok.version < ZKN_PROTO_MIN_VERSION ||
        ok.version > ZKN_PROTO_VERSION) {
        zkn__log_once("zknalloc: zknallocd speaks another protocol version; not using it\n");
        zkn__link_disconnect();
        return;
    }
    if (ok.class_count != ZKN_CLASS_COUNT) {
        zkn__log_once("zknalloc: zknallocd uses another size-class table; not using it\n");
        zkn__link_disconnect();
        return;
    }
    L->hello = ok;
    atomic_store(&L->backing, ok.backing);
    uint64_t inst[2];
    zkn__daemon_instance(L->sock, L->link_path, inst);
    if (!L->ever_connected || inst[0] != L->last_instance[0] || inst[1] != L->last_instance[1]) {
        /* A new instance: what the old one lent is ours to unmap, not to return. */
        if (++L->gen_counter == 0)
            L->gen_counter = 1;
        atomic_store(&L->live_gen, L->gen_counter);
    }
    if (L->ever_connected)
        atomic_fetch_add(&zkn__ctr.reconnects, 1);
    L->ever_connected = 1;
    L->last_instance[0] = inst[0];
    L->last_instance[1] = inst[1];
    L->quiet_ns = QUIET_MIN_NS;
    atomic_store(&L->connected, 1);
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
        zkn__queue_push(ZKN__OWED_RETURN, d.id, atomic_load(&L->live_gen));
    }
}

/* Reads every frame that has arrived, without waiting, and puts each where it
 * belongs. Disconnects on EOF or nonsense. */
void zkn__link_pump(void)
{
    char buf[sizeof L->mb_buf + 256];
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    size_t nfds;
    while (L->sock >= 0) {
        ssize_t n = zkn_recv_frame(L->sock, buf, sizeof buf, fds, ZKN_MAX_REGIONS_PER_REPLY, &nfds,
                                   MSG_DONTWAIT);
        if (n == -EAGAIN)
            return;
        struct zkn_hdr h;
        if (n <= 0 || zkn_hdr_check(buf, (size_t)n) != 0) {
            if (n > 0)
                zkn_close_fds(fds, nfds);
            zkn__link_disconnect();
            return;
        }
        memcpy(&h, buf, sizeof h);
        if (L->hello_rid && h.request_id == L->hello_rid) {
            zkn_close_fds(fds, nfds);
            hello_done_locked(buf, n);
        } else if (L->lend_rid && h.request_id == L->lend_rid) {
            L->lend_rid = 0;
            if (L->lend_abandoned) {
                L->lend_abandoned = 0;
                zkn_close_fds(fds, nfds);
                if (h.type == ZKN_MSG_REGIONS)
                    give_back_late(buf, n);
            } else if ((size_t)n <= sizeof L->mb_buf) {
                memcpy(L->mb_buf, buf, (size_t)n);
                L->mb_len = (size_t)n;
                memcpy(L->mb_fds, fds, nfds * sizeof(int));
                L->mb_nfds = nfds;
                L->mb_ready = 1;
            } else {
                zkn_close_fds(fds, nfds);
                zkn__link_disconnect();
            }
        } else {
            zkn_close_fds(fds, nfds);
            if (L->outstanding == 0 ||
                (h.type != ZKN_MSG_RETURN_OK && h.type != ZKN_MSG_ERROR)) {
                zkn__link_disconnect();
                return;
            }
            L->outstanding--;
        }
    }
}

/* Waits until done() holds, at most timeout_ms, with dlock released while
 * polling. 1 when done, 0 on timeout, -1 when the connection went away. */
void zkn__link_lock(void)
{
    atomic_fetch_add(&L->lock_wanted, 1);
    pthread_mutex_lock(&L->dlock);
    atomic_fetch_sub(&L->lock_wanted, 1);
}

int zkn__link_wait(int (*done)(void), int timeout_ms)
{
    uint64_t deadline = zkn__now_ns() + (uint64_t)timeout_ms * 1000000u;
    uint32_t my_epoch = L->epoch;
    L->waiting = 1;
    int rc;
    for (;;) {
        zkn__link_pump();
        if (L->epoch != my_epoch) {
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
        struct pollfd p = {.fd = L->sock, .events = POLLIN};
        uint64_t left_ms = (deadline - now + 999999) / 1000000;
        pthread_mutex_unlock(&L->dlock);
        /* sock may be closed by another thread meanwhile: epoch tells. */
        (void)poll(&p, 1, left_ms < POLL_SLICE_MS ? (int)left_ms : POLL_SLICE_MS);
        /* A mutex is not fair: on a busy machine this loop could re-take it
         * every slice before a forking or releasing thread ever runs. */
        while (atomic_load_explicit(&L->lock_wanted, memory_order_relaxed))
            sched_yield();
        pthread_mutex_lock(&L->dlock);
    }
    L->waiting = 0;
    return rc;
}

/* The parent's socket, leases and queued ids are not the child's. */
void zkn__link_reset(void)
{
    close_socket();
    L->waiting = 0;
    atomic_store(&L->lock_wanted, 0); /* those threads are not in this process */
    atomic_store(&L->connected, 0);
    if (++L->gen_counter == 0)
        L->gen_counter = 1;
    atomic_store(&L->live_gen, L->gen_counter);
    L->ever_connected = 0; /* whatever daemon answers next is a new session */
    atomic_store(&L->quiet_until, 0);
    L->quiet_ns = QUIET_MIN_NS;
    memset(L->class_holdoff, 0, sizeof L->class_holdoff);
}
