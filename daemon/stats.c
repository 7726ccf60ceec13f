/* The STATS reply: the daemon's whole state as JSON (schema in README.md). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stats.h"

#include "prepare.h"
#include "server.h"
#include "zkn_proto.h"

#define STATS_MAX_CLIENTS 256

static json_t *refusals_json(const struct pool *p)
{
    json_t *o = json_object();
    for (uint32_t code = 1; code < POOL_REFUSAL_SLOTS; code++)
        if (strcmp(zkn_err_name(code), "unknown") != 0)
            json_object_set_new(o, zkn_err_name(code), json_integer((json_int_t)p->refusals[code]));
    return o;
}

/* Adds src's keys to dst and drops src (either may be NULL). */
static void merge(json_t *dst, json_t *src)
{
    if (dst && src)
        json_object_update(dst, src);
    json_decref(src);
}

/* Issue 11, in the pool section: how LENDs were answered overall (the share
 * served from the pool among LENDs that found nothing pooled or did), regions
 * let go of by FORGET, bytes being prepared. */
static void pool_lend_json(json_t *pool_obj, const struct pool *p)
{
    uint64_t warm = 0, not_warm = 0, misses = 0;
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        warm += p->cls[c].served_warm;
        not_warm += p->cls[c].not_warm;
        misses += p->cls[c].misses;
    }
    double share = warm + misses ? (double)warm / (double)(warm + misses) : 0.0;
    merge(pool_obj, json_pack("{s:I, s:I, s:f, s:I, s:I}", "served_warm", (json_int_t)warm,
                              "not_warm", (json_int_t)not_warm, "served_warm_share", share,
                              "forgotten", (json_int_t)p->forgotten, "preparing_bytes",
                              (json_int_t)p->preparing_bytes));
}

static json_t *classes_json(const struct pool *p)
{
    json_t *a = json_array();
    for (int c = 0; c < ZKN_CLASS_COUNT; c++) {
        uint64_t clean, dirty;
        const struct class_counters *k = &p->cls[c];
        pool_class_counts(p, c, &clean, &dirty);
        uint64_t target = pool_class_target(p, c);
        if (!clean && !dirty && !k->lent && !k->hits && !k->misses && !k->prepared && !target)
            continue;
        uint64_t size = zkn_class_size(c);
        json_t *o = json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "class", c, "size",
                              (json_int_t)size, "clean", (json_int_t)clean, "dirty",
                              (json_int_t)dirty, "lent", (json_int_t)k->lent, "bytes",
                              (json_int_t)((clean + dirty + k->lent) * size), "hits",
                              (json_int_t)k->hits, "misses", (json_int_t)k->misses);
        /* Issue 11: how LENDs of the class were answered, what is kept ready. */
        merge(o, json_pack("{s:I, s:I, s:I, s:I}", "served_warm", (json_int_t)k->served_warm,
                           "not_warm", (json_int_t)k->not_warm, "prepared",
                           (json_int_t)k->prepared, "target", (json_int_t)target));
        json_array_append_new(a, o);
    }
    return a;
}

/* Who holds what is private to each uid: root and the daemon's own uid see
 * every client, others only their own processes. */
static json_t *clients_json(const struct server *s, uid_t asker, int limit, int *omitted)
{
    json_t *a = json_array();
    int n = 0;
    int all = asker == 0 || asker == geteuid();
    *omitted = 0;
    const struct proc *p;
    list_for_each(p, &s->procs, link) {
        if (p->dead || (!all && p->uid != asker))
            continue;
        if (n++ >= limit) {
            (*omitted)++;
            continue;
        }
        json_array_append_new(a, json_pack("{s:i, s:i, s:b, s:i, s:I, s:I}", "pid", (int)p->pid,
                                           "uid", (int)p->uid, "connected", p->nconns > 0,
                                           "connections", (int)p->nconns, "leases",
                                           (json_int_t)p->leases.count, "bytes",
                                           (json_int_t)p->leases.bytes));
    }
    return a;
}

char *stats_json(const struct server *s, size_t max_len, uid_t asker)
{
    const struct pool *p = s->pool;
    const struct config *cfg = s->cfg;
    const struct backing *b = s->backing;
    for (int limit = STATS_MAX_CLIENTS; limit >= 0; limit = limit ? limit / 4 : -1) {
        int omitted;
        json_t *root = json_pack(
            "{s:s, s:i, s:i, s:f, s:s}", "version", ZKN_VERSION, "protocol", ZKN_PROTO_VERSION,
            "pid", (int)getpid(), "uptime_s", (double)(uv_now(s->loop) - s->start_ms) / 1000.0,
            "socket", cfg->socket_path);
        if (!root)
            return NULL;
        json_object_set_new(
            root, "backing",
            json_pack("{s:s, s:s, s:b, s:I, s:s, s:s}", "kind", zkn_backing_name(b->kind),
                      "detail", b->detail, "sealed", b->sealed, "huge_mapped_bytes",
                      (json_int_t)backing_huge_mapped_bytes(), "thp_shmem", b->thp_shmem,
                      "thp_anon", b->thp_anon));
        json_object_set_new(root, "caps",
                            json_pack("{s:I, s:I, s:i, s:i}", "pool_bytes",
                                      (json_int_t)cfg->pool_bytes, "client_lease_bytes",
                                      (json_int_t)cfg->client_cap_bytes, "client_leases",
                                      (int)cfg->client_max_leases, "max_clients",
                                      (int)cfg->max_clients));
        merge(json_object_get(root, "caps"),
              json_pack("{s:I}", "max_lent_bytes", (json_int_t)cfg->max_lent_bytes));
        json_object_set_new(
            root, "pool",
            json_pack("{s:I, s:I, s:I, s:I, s:i, s:I}", "idle_bytes", (json_int_t)p->idle_bytes,
                      "clean_bytes", (json_int_t)pool_clean_bytes(p), "dirty_bytes",
                      (json_int_t)pool_dirty_bytes(p), "lent_bytes", (json_int_t)p->lent_bytes,
                      "zeroing", (int)p->zero_inflight, "regions", (json_int_t)p->ids.count));
        pool_lend_json(json_object_get(root, "pool"), p);
        json_object_set_new(
            root, "totals",
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "created",
                      (json_int_t)p->created, "destroyed", (json_int_t)p->destroyed, "zeroed",
                      (json_int_t)p->zeroed, "lends", (json_int_t)p->lends, "returns",
                      (json_int_t)p->returns, "reclaimed", (json_int_t)p->reclaimed,
                      "trimmed_bytes", (json_int_t)p->trimmed_bytes, "decayed_bytes",
                      (json_int_t)p->decayed, "connections", (json_int_t)s->accepted, "restored",
                      (json_int_t)p->restored, "saved", (json_int_t)p->saved, "forgotten",
                      (json_int_t)p->forgotten, "accept_exhausted",
                      (json_int_t)s->accept_exhausted));
        json_object_set_new(root, "refusals", refusals_json(p));
        json_object_set_new(root, "pressure",
                            json_pack("{s:s, s:I, s:I, s:I}", "source",
                                      p->pressure_source ? p->pressure_source : "off", "events",
                                      (json_int_t)p->pressure_events, "trimmed_bytes",
                                      (json_int_t)p->pressure_trimmed_bytes, "low_watermark",
                                      (json_int_t)cfg->low_watermark));
        json_object_set_new(root, "classes", classes_json(p));
        json_object_set_new(root, "clients", clients_json(s, asker, limit, &omitted));
        json_object_set_new(root, "clients_omitted", json_integer(omitted));
        char *text = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        if (!text)
            return NULL;
        if (strlen(text) <= max_len)
            return text;
        free(text); /* too long: list fewer clients */
    }
    return NULL;
}
