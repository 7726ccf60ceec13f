/* The daemon link's shared state and its core (daemon_core.c), for the
 * link's own files only: daemon_core.c (framing, replies, waiting),
 * daemon_session.c (connecting, HELLO) and daemon_link.c (LEND, RETURN,
 * FORGET). dlock guards all of it and is only held for non-blocking calls. */
#ifndef ZKN_CLIENT_DAEMON_CORE_H
#define ZKN_CLIENT_DAEMON_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <sys/un.h>

#include "internal.h"
#include "zkn_proto.h"

#define WAIT_MS_DEFAULT 10
#define WAIT_MS_MAX 1000
#define POLL_SLICE_MS 1 /* another thread may read our reply: look again this often */
#define QUIET_MIN_NS 250000000ull
#define QUIET_MAX_NS 2000000000ull
#define REFUSAL_HOLDOFF_NS 200000000ull /* after client_cap/nomem/busy */

struct zkn__link_state {
    pthread_mutex_t dlock;
    int sock;
    uint32_t epoch;               /* bumped whenever sock closes */
    pid_t owner_pid;              /* the process that opened sock */
    _Atomic int connected;        /* HELLO_OK received */
    uint32_t hello_rid;           /* HELLO sent, reply not yet read */
    struct zkn_hello_ok hello;
    uint32_t next_req;
    uint32_t outstanding;         /* RETURN replies not read yet */
    _Atomic uint64_t quiet_until; /* no connect or LEND before this */
    uint64_t quiet_ns;
    uint64_t class_holdoff[ZKN_CLASS_COUNT]; /* no LEND of the class before this */
    uint64_t last_instance[2];    /* who answered last time: zkn__daemon_instance() */
    int ever_connected;
    uint32_t gen_counter;
    _Atomic uint32_t live_gen;    /* the instance whose ids we RETURN */
    _Atomic uint32_t backing;
    int waiting;                  /* a thread waits for a reply (at most one) */
    _Atomic int lock_wanted;      /* threads blocked in zkn__link_lock() */
    char link_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    /* The LEND reply being waited for, or a late one to give back. */
    uint32_t lend_rid;            /* in flight; 0: none */
    _Atomic int lend_abandoned;   /* its waiter gave up: return what comes */
    int mb_ready;
    size_t mb_len, mb_nfds;
    char mb_buf[sizeof(struct zkn_hdr) + sizeof(struct zkn_regions) +
                ZKN_MAX_REGIONS_PER_REPLY * sizeof(struct zkn_region_desc)];
    int mb_fds[ZKN_MAX_REGIONS_PER_REPLY];
};

extern struct zkn__link_state zkn__link;

/* Takes dlock, ahead of a waiter that keeps re-taking it between polls. */
void zkn__link_lock(void);
/* daemon_core.c, all under dlock. */
void zkn__link_be_quiet(uint64_t now);   /* leave the daemon alone a while, doubling */
void zkn__link_mailbox_clear(void);
void zkn__link_disconnect(void);
/* One frame, never waiting; 0 or -1. *rid gets its request id. */
int zkn__link_send_frame(uint16_t type, const void *payload, size_t len, uint32_t *rid);
/* Reads every frame that has arrived and puts each where it belongs. */
void zkn__link_pump(void);
/* Waits until done() holds, at most timeout_ms, dlock released while polling:
 * 1 done, 0 timeout, -1 the connection went away. */
int zkn__link_wait(int (*done)(void), int timeout_ms);
/* Forgets the socket, replies and queued ids (a fork child, a foreign pid). */
void zkn__link_reset(void);
/* daemon_session.c: connected within the wait (0), else -1; and how long a
 * HELLO or LEND may wait (ZK_NALLOC_DAEMON_WAIT_MS). */
int zkn__link_connect(void);
int zkn__link_wait_ms(void);

#endif
