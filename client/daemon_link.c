/* Requests to zknallocd: LEND, and the RETURNs and FORGETs owed (see
 * daemon_core.h for the state and daemon_core.c for how nothing waits). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "daemon_core.h"
#include "os.h"
#include "wire.h"

static struct zkn__link_state *const L = &zkn__link;

static int lend_arrived(void) { return L->mb_ready; }

/* How long a HELLO or LEND may wait: ZK_NALLOC_DAEMON_WAIT_MS (1-1000), for
 * hosts so loaded that a healthy daemon misses 10 ms; read once. */

static void send_queue_locked(enum zkn__owed kind)
{
    uint32_t flags = kind == ZKN__OWED_FORGET ? ZKN_RETURN_FORGET : 0;
    while (L->sock >= 0 && atomic_load(&L->connected) && zkn__queue_pending(kind)) {
        char payload[sizeof(struct zkn_return) + ZKN_MAX_RETURN_IDS * 8];
        uint64_t ids[ZKN_MAX_RETURN_IDS];
        struct zkn_return r = {.flags = flags};
        r.count = zkn__queue_take(kind, atomic_load(&L->live_gen), ids, ZKN_MAX_RETURN_IDS);
        if (r.count == 0)
            return;
        memcpy(payload, &r, sizeof r);
        memcpy(payload + sizeof r, ids, r.count * 8u);
        uint32_t rid;
        if (zkn__link_send_frame(ZKN_MSG_RETURN, payload, sizeof r + r.count * 8u, &rid) != 0) {
            /* Returns are lost and come back when we exit; forgets must not
             * be lost (the daemon would reuse what a child maps): keep them. */
            for (uint32_t i = 0; flags && i < r.count; i++)
                zkn__queue_push(kind, ids[i], atomic_load(&L->live_gen));
            zkn__link_disconnect();
            return;
        }
        L->outstanding++;
        if (!flags)
            atomic_fetch_add(&zkn__ctr.returns, r.count);
    }
}

static void send_queues_locked(void)
{
    send_queue_locked(ZKN__OWED_FORGET);
    send_queue_locked(ZKN__OWED_RETURN);
}

/* A process that forked without running our handlers (_Fork, raw clone)
 * where no fork token could be had still holds the parent's socket: it must
 * never speak for the parent. (fork.c resets the rest: zkn__fork_check.) */
static int foreign_locked(void)
{
    if (L->sock < 0 || L->owner_pid == getpid())
        return 0;
    zkn__link_reset();
    return 1;
}

void zkn__daemon_flush_returns(int wait_for_lock)
{
    if (!zkn__queue_pending(ZKN__OWED_RETURN) && !zkn__queue_pending(ZKN__OWED_FORGET) &&
        !atomic_load_explicit(&L->lend_abandoned, memory_order_relaxed))
        return; /* nothing to send, no late reply to read */
    if (!zkn__daemon_connected())
        return;
    if (wait_for_lock)
        zkn__link_lock();
    else if (pthread_mutex_trylock(&L->dlock) != 0)
        return; /* whoever holds the link sends them with its next request */
    if (!foreign_locked()) {
        zkn__link_pump();
        send_queues_locked();
    }
    pthread_mutex_unlock(&L->dlock);
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
        L->class_holdoff[c] = now + REFUSAL_HOLDOFF_NS; /* a refusal, not a failure */
    else
        zkn__link_disconnect();
}

int zkn__daemon_lend(int c, int count, uint32_t demand, int zeroed, struct zkn__lent *out,
                     uint32_t *gen)
{
    uint64_t now = zkn__now_ns();
    if (now < atomic_load_explicit(&L->quiet_until, memory_order_relaxed))
        return 0; /* a daemon that is missing or slow costs nothing here */
    int saved = errno;
    int got = 0;
    /* dlock is only ever held for non-blocking calls: this is short. */
    pthread_mutex_lock(&L->dlock);
    (void)foreign_locked();
    if (L->waiting || now < L->class_holdoff[c])
        goto out; /* another thread waits for the daemon: do not queue behind it */
    zkn__link_pump();
    if (L->lend_rid) { /* an earlier LEND is still unanswered: the daemon is stuck */
        zkn__link_be_quiet(now);
        goto out;
    }
    if (!atomic_load(&L->connected) && zkn__link_connect() != 0) {
        if (L->sock < 0)
            zkn__link_be_quiet(now);
        goto out;
    }
    send_queues_locked();
    if (!atomic_load(&L->connected))
        goto out;
    if (L->hello.max_regions_per_reply && (uint32_t)count > L->hello.max_regions_per_reply)
        count = (int)L->hello.max_regions_per_reply;
    if (count > (int)ZKN_MAX_REGIONS_PER_REPLY)
        count = ZKN_MAX_REGIONS_PER_REPLY;
    struct zkn_lend l = {.size_class = (uint16_t)c, .count = (uint16_t)count, .demand = demand,
                         .flags = zeroed ? ZKN_LEND_ZEROED : 0};
    if (zkn__link_send_frame(ZKN_MSG_LEND, &l, sizeof l, &L->lend_rid) != 0) {
        zkn__link_disconnect();
        goto out;
    }
    atomic_fetch_add(&zkn__ctr.lends, 1);
    int rc = zkn__link_wait(lend_arrived, zkn__link_wait_ms());
    if (rc <= 0) {
        if (rc == 0) { /* slow: its answer is given back when it comes */
            L->lend_abandoned = 1;
            zkn__link_be_quiet(zkn__now_ns());
        }
        goto out;
    }
    L->quiet_ns = QUIET_MIN_NS;
    const char *buf = L->mb_buf;
    size_t n = L->mb_len;
    struct zkn_hdr h;
    memcpy(&h, buf, sizeof h);
    if (h.type == ZKN_MSG_ERROR) {
        zkn__link_mailbox_clear();
        handle_error_reply(c, buf, n, now);
        goto out;
    }
    int rc2 = zkn__trust_regions(buf, n, L->mb_fds, L->mb_nfds, c, count, L->hello.backing, out);
    if (rc2 < 0) {
        zkn__link_mailbox_clear();
        zkn__link_disconnect();
        if (rc2 == -2) /* not what a zknallocd lends: stop trusting this daemon */
            atomic_store(&L->quiet_until, zkn__now_ns() + QUIET_MAX_NS);
        goto out;
    }
    got = rc2;
    *gen = atomic_load(&L->live_gen);
    L->mb_nfds = 0; /* the fds are the caller's now */
    L->mb_ready = 0;
out:
    pthread_mutex_unlock(&L->dlock);
    errno = saved;
    return got;
}

void zkn__daemon_poll(void)
{
    if (L->sock < 0 || pthread_mutex_trylock(&L->dlock) != 0)
        return;
    if (L->owner_pid == getpid())
        zkn__link_pump();
    pthread_mutex_unlock(&L->dlock);
}

void zkn__daemon_lock(void)
{
    zkn__link_lock();
}

void zkn__daemon_send_forgets_locked(void)
{
    /* Before the fork happens, so that a parent killed right after it cannot
     * leave the daemon reusing what the child maps. Never waits; unsent ids
     * stay queued for the next connection to the same daemon. */
    if (L->sock >= 0 && L->owner_pid == getpid() && atomic_load(&L->connected))
        send_queue_locked(ZKN__OWED_FORGET);
}

void zkn__daemon_unlock(void)
{
    pthread_mutex_unlock(&L->dlock);
}
