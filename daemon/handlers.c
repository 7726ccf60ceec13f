/* The request handlers: one frame in, one reply out, never waiting on a
 * worker. Framing and sending are conn.c's. */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clients.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "prepare.h"
#include "server.h"
#include "stats.h"
#include "wire.h"
#include "zkn_proto.h"


static void handle_hello(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_hello h;
    memcpy(&h, payload, sizeof h);
    if (c->hello_done) {
        conn_reply_error(c, req, ZKN_E_BAD_TYPE, "HELLO was already sent on this connection");
        return;
    }
    unsigned lo = h.min_version > ZKN_PROTO_MIN_VERSION ? h.min_version : ZKN_PROTO_MIN_VERSION;
    unsigned hi = h.max_version < ZKN_PROTO_VERSION ? h.max_version : ZKN_PROTO_VERSION;
    if (lo > hi) {
        conn_reply_error(c, req, ZKN_E_VERSION, "no common version: client %u-%u, daemon %u-%u",
                    h.min_version, h.max_version, ZKN_PROTO_MIN_VERSION, ZKN_PROTO_VERSION);
        conn_close(c);
        return;
    }
    if (h.flags != 0) {
        conn_reply_error(c, req, ZKN_E_MALFORMED, "HELLO flags must be 0");
        return;
    }
    struct zkn_hello_ok ok = {
        .version = (uint16_t)hi,
        .class_count = ZKN_CLASS_COUNT,
        .max_regions_per_reply = ZKN_MAX_REGIONS_PER_REPLY,
        .client_cap_bytes = c->srv->cfg->client_cap_bytes,
        .daemon_pid = (uint32_t)getpid(),
        .backing = c->srv->backing->kind,
    };
    c->hello_done = 1;
    conn_reply(c, ZKN_MSG_HELLO_OK, req, &ok, sizeof ok, NULL, 0);
}

/* Whether one more region of size may be handed to c's process: checked
 * for every region as it is handed over, so no batch or set of connections
 * can pass a cap. Returns 0, or fills why with the refusal's text. */
static int lease_fits(const struct conn *c, uint64_t size, char *why, size_t why_len)
{
    const struct proc *p = c->proc;
    const struct config *cfg = c->srv->cfg;
    const struct pool *pool = c->srv->pool;
    if (p->leases.bytes + size > cfg->client_cap_bytes ||
        p->leases.count >= cfg->client_max_leases) {
        snprintf(why, why_len,
                 "client cap reached: %llu bytes in %llu regions held, cap %llu bytes / %u "
                 "regions (--client-cap-bytes, --client-max-leases)",
                 (unsigned long long)p->leases.bytes, (unsigned long long)p->leases.count,
                 (unsigned long long)cfg->client_cap_bytes, cfg->client_max_leases);
        return 0;
    }
    if (pool->lent_bytes + size > cfg->max_lent_bytes) {
        snprintf(why, why_len,
                 "daemon lent-bytes cap reached: %llu bytes lent to all clients, %llu more "
                 "asked, cap %llu (--max-lent-bytes)",
                 (unsigned long long)pool->lent_bytes, (unsigned long long)size,
                 (unsigned long long)cfg->max_lent_bytes);
        return 0;
    }
    return 1;
}

static void send_regions(struct conn *c, uint32_t req, struct region **rs, uint32_t n)
{
    char payload[sizeof(struct zkn_regions) + ZKN_MAX_REGIONS_PER_REPLY *
                                                  sizeof(struct zkn_region_desc)];
    struct zkn_regions head = {.count = n};
    int fds[ZKN_MAX_REGIONS_PER_REPLY];
    memcpy(payload, &head, sizeof head);
    for (uint32_t i = 0; i < n; i++) {
        struct zkn_region_desc d = {
            .id = rs[i]->id,
            .size = rs[i]->size,
            .size_class = (uint16_t)rs[i]->size_class,
            .flags = rs[i]->lent_clean ? ZKN_REGION_CLEAN : 0,
        };
        memcpy(payload + sizeof head + i * sizeof d, &d, sizeof d);
        fds[i] = rs[i]->fd;
    }
    pool_count_lend(c->srv->pool);
    conn_reply(c, ZKN_MSG_REGIONS, req, payload, sizeof head + n * sizeof(struct zkn_region_desc),
          fds, n);
}

/* Answered at once: from the pool, by an inline creation for cheap classes,
 * or ERROR not_warm while the pool prepares the class in the background.
 * Nothing here waits on a worker. */
static void handle_lend(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_lend l;
    struct region *got[ZKN_MAX_REGIONS_PER_REPLY];
    struct pool *pool = c->srv->pool;
    char why[ZKN_MAX_ERROR_TEXT + 1];
    uint32_t n = 0;
    int capped = 0;
    memcpy(&l, payload, sizeof l);
    if (l.size_class >= ZKN_CLASS_COUNT) {
        conn_reply_error(c, req, ZKN_E_BAD_CLASS, "size class %u out of range (0-%d)", l.size_class,
                    ZKN_CLASS_COUNT - 1);
        return;
    }
    if (l.count == 0 || l.count > ZKN_MAX_REGIONS_PER_REPLY || (l.flags & ~ZKN_LEND_ZEROED)) {
        conn_reply_error(c, req, ZKN_E_MALFORMED, "LEND count must be 1-%u and flags known",
                    ZKN_MAX_REGIONS_PER_REPLY);
        return;
    }
    uint64_t size = zkn_class_size(l.size_class);
    int want_zero = (l.flags & ZKN_LEND_ZEROED) != 0;
    uint32_t demand = l.demand > l.count ? l.demand : l.count; /* what to keep ready */
    if (!lease_fits(c, size, why, sizeof why)) {
        conn_reply_error(c, req, ZKN_E_CLIENT_CAP, "%s", why);
        return;
    }
    /* Each region becomes a lease before the next is checked against the caps. */
    while (n < l.count) {
        if (n > 0 && !lease_fits(c, size, why, sizeof why)) {
            capped = 1;
            break;
        }
        struct region *r = pool_take(pool, c->proc->uid, l.size_class, want_zero);
        if (!r)
            break;
        proc_add_lease(c->proc, r);
        got[n++] = r;
    }
    if (n > 0) {
        pool_note_served(pool, c->proc->uid, l.size_class, capped ? n : demand, n);
    } else if (pool_class_inline(pool, l.size_class)) {
        struct region *r;
        int rc = pool_create_inline(pool, c->proc->uid, l.size_class, &r);
        if (rc < 0) {
            conn_reply_error(c, req, ZKN_E_NOMEM, "cannot create a %llu-byte region: %s",
                        (unsigned long long)size, strerror(-rc));
            return;
        }
        proc_add_lease(c->proc, r);
        got[n++] = r;
    } else {
        pool_note_not_warm(pool, c->proc->uid, l.size_class, demand);
        conn_reply_error(c, req, ZKN_E_NOT_WARM,
                    "no %llu-byte region ready; preparing some, ask again later",
                    (unsigned long long)size);
        return;
    }
    send_regions(c, req, got, n);
}

static void handle_return(struct conn *c, uint32_t req, const char *payload, uint32_t len)
{
    struct zkn_return head;
    uint32_t ok = 0, bad = 0;
    if (len < sizeof head) {
        conn_reply_error(c, req, ZKN_E_MALFORMED, "RETURN shorter than its header");
        conn_close(c);
        return;
    }
    memcpy(&head, payload, sizeof head);
    if (head.flags & ~ZKN_RETURN_FORGET) {
        conn_reply_error(c, req, ZKN_E_MALFORMED, "RETURN flags 0x%x unknown (only FORGET = 1)",
                    head.flags);
        conn_close(c);
        return;
    }
    if (head.count == 0 || head.count > ZKN_MAX_RETURN_IDS ||
        len != sizeof head + (uint64_t)head.count * sizeof(uint64_t)) {
        conn_reply_error(c, req, ZKN_E_MALFORMED, "RETURN must carry 1-%u ids and nothing else",
                    ZKN_MAX_RETURN_IDS);
        conn_close(c);
        return;
    }
    for (uint32_t i = 0; i < head.count; i++) {
        uint64_t id;
        memcpy(&id, payload + sizeof head + i * sizeof id, sizeof id);
        struct region *r = rtable_find(&c->srv->pool->ids, id);
        if (!r || r->state != REGION_LENT || r->holder != c->proc) {
            bad++;
            continue;
        }
        if (head.flags & ZKN_RETURN_FORGET) {
            proc_drop_lease(c->proc, r);
            pool_forget(c->srv->pool, r); /* another process may map it: never reused */
        } else {
            proc_release_lease(c->proc, r); /* forgotten when the holder's liveness is unknown */
            pool_count_return(c->srv->pool);
        }
        ok++;
    }
    if (bad) {
        conn_reply_error(c, req, ZKN_E_UNKNOWN_ID, "%u of %u ids are not held by this client "
                    "(%u taken back)", bad, head.count, ok);
        return;
    }
    struct zkn_return_ok r = {.count = ok};
    conn_reply(c, ZKN_MSG_RETURN_OK, req, &r, sizeof r, NULL, 0);
}

static void handle_stats(struct conn *c, uint32_t req)
{
    char *json = stats_json(c->srv, ZKN_MAX_PAYLOAD, c->proc->uid);
    if (!json) {
        conn_reply_error(c, req, ZKN_E_NOMEM, "cannot build stats");
        return;
    }
    conn_reply(c, ZKN_MSG_STATS_REPLY, req, json, strlen(json), NULL, 0);
    free(json);
}

static void handle_trim(struct conn *c, uint32_t req, const char *payload)
{
    struct zkn_trim t;
    memcpy(&t, payload, sizeof t);
    if (c->proc->uid != 0 && c->proc->uid != geteuid()) {
        conn_reply_error(c, req, ZKN_E_DENIED, "TRIM needs root or the daemon's uid %u",
                    (unsigned)geteuid());
        return;
    }
    struct zkn_trim_ok ok = {.freed_bytes = pool_trim(c->srv->pool, t.target_bytes)};
    ok.pool_bytes = c->srv->pool->idle_bytes;
    log_info("trim to %llu bytes by pid %d: %llu bytes freed", (unsigned long long)t.target_bytes,
             (int)c->proc->pid, (unsigned long long)ok.freed_bytes);
    conn_reply(c, ZKN_MSG_TRIM_OK, req, &ok, sizeof ok, NULL, 0);
}

void handle_frame(struct conn *c, const char *frame, size_t len)
{
    struct zkn_hdr h;
    int bad = zkn_hdr_check(frame, len);
    if (bad == ZKN_E_MALFORMED) {
        conn_reply_error(c, 0, ZKN_E_MALFORMED, "bad frame header (%zu bytes)", len);
        conn_close(c);
        return;
    }
    memcpy(&h, frame, sizeof h);
    const char *payload = frame + sizeof h;
    if (bad == ZKN_E_VERSION) {
        conn_reply_error(c, h.request_id, ZKN_E_VERSION, "frame version %u, expected %u", h.version,
                    ZKN_PROTO_VERSION);
        return;
    }
    long fixed = zkn_fixed_payload_size(h.type);
    if (!zkn_msg_is_request(h.type)) {
        conn_reply_error(c, h.request_id, ZKN_E_BAD_TYPE, "message type %u (%s) is not a request",
                    h.type, zkn_msg_type_name(h.type));
        return;
    }
    if (fixed >= 0 && h.length != (uint32_t)fixed) {
        conn_reply_error(c, h.request_id, ZKN_E_MALFORMED, "%s payload must be %ld bytes, got %u",
                    zkn_msg_type_name(h.type), fixed, h.length);
        conn_close(c);
        return;
    }
    if (h.type == ZKN_MSG_PING) {
        conn_reply(c, ZKN_MSG_PONG, h.request_id, NULL, 0, NULL, 0);
        return;
    }
    if (h.type == ZKN_MSG_HELLO) {
        handle_hello(c, h.request_id, payload);
        return;
    }
    if (!c->hello_done) {
        conn_reply_error(c, h.request_id, ZKN_E_NEED_HELLO, "send HELLO first");
        return;
    }
    switch (h.type) {
    case ZKN_MSG_LEND: handle_lend(c, h.request_id, payload); break;
    case ZKN_MSG_RETURN: handle_return(c, h.request_id, payload, h.length); break;
    case ZKN_MSG_STATS: handle_stats(c, h.request_id); break;
    case ZKN_MSG_TRIM: handle_trim(c, h.request_id, payload); break;
    default: break;
    }
}
