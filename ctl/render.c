/* The readable form of a STATS reply. The daemon's JSON may come from another
 * version than this tool, so every field is looked up defensively: anything
 * missing or of the wrong type prints as "-". */
#include "ctl.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#define MISSING "-"

void ctl_human_bytes(char *buf, size_t cap, uint64_t v)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    uint64_t div = 1;

    while (u < 5 && v >= div * 1024)
        div *= 1024, u++;
    if (v % div == 0)
        snprintf(buf, cap, "%" PRIu64 " %s", v / div, unit[u]);
    else
        snprintf(buf, cap, "%.1f %s", (double)v / (double)div, unit[u]);
}

void ctl_human_duration(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 1e12) {
        snprintf(buf, cap, MISSING);
        return;
    }
    uint64_t t = (uint64_t)s;
    if (s < 60)
        snprintf(buf, cap, "%.1fs", s);
    else if (t < 3600)
        snprintf(buf, cap, "%" PRIu64 "m %02" PRIu64 "s", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, cap, "%" PRIu64 "h %02" PRIu64 "m", t / 3600, t / 60 % 60);
    else
        snprintf(buf, cap, "%" PRIu64 "d %02" PRIu64 "h", t / 86400, t / 3600 % 24);
}

/* root.a.b (b may be NULL); NULL when any step is missing or not an object. */
static json_t *get(json_t *root, const char *a, const char *b)
{
    json_t *v = json_is_object(root) ? json_object_get(root, a) : NULL;
    if (v && b)
        v = json_is_object(v) ? json_object_get(v, b) : NULL;
    return v;
}

/* A non-negative integer field (reals that hold one are accepted). */
static int get_u64(json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 1;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 1.8e19) {
        *out = (uint64_t)json_real_value(v);
        return 1;
    }
    return 0;
}

/* The formatters write into rotating static buffers so several can appear
 * in one printf. */
static char *slot(void)
{
    static char bufs[16][48];
    static unsigned next;
    return bufs[next++ % 16];
}

static const char *num(json_t *v)
{
    uint64_t x;
    if (!get_u64(v, &x))
        return MISSING;
    char *b = slot();
    snprintf(b, 48, "%" PRIu64, x);
    return b;
}

static const char *bytes(json_t *v)
{
    uint64_t x;
    if (!get_u64(v, &x))
        return MISSING;
    char *b = slot();
    ctl_human_bytes(b, 48, x);
    return b;
}

/* Strings from the daemon are printed as they are, but never with control
 * characters that could rewrite the terminal. */
static const char *str(json_t *v)
{
    if (!json_is_string(v))
        return MISSING;
    const char *s = json_string_value(v);
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "(unprintable)";
    return *s ? s : MISSING;
}

static void render_header(FILE *out, json_t *root)
{
    char up[48];
    json_t *u = get(root, "uptime_s", NULL);
    if (json_is_number(u))
        ctl_human_duration(up, sizeof up, json_number_value(u));
    else
        snprintf(up, sizeof up, MISSING);
    fprintf(out, "zknallocd %s  protocol %s  pid %s  up %s\n", str(get(root, "version", NULL)),
            num(get(root, "protocol", NULL)), num(get(root, "pid", NULL)), up);
    fprintf(out, "Socket    %s\n", str(get(root, "socket", NULL)));
}

static void render_backing(FILE *out, json_t *root)
{
    json_t *b = get(root, "backing", NULL);
    json_t *sealed = get(b, "sealed", NULL);
    fprintf(out, "Backing   %s  huge-mapped %s  sealed %s  shmem THP %s  anon THP %s\n",
            str(get(b, "kind", NULL)), bytes(get(b, "huge_mapped_bytes", NULL)),
            json_is_boolean(sealed) ? (json_is_true(sealed) ? "yes" : "no") : MISSING,
            str(get(b, "thp_shmem", NULL)), str(get(b, "thp_anon", NULL)));
    json_t *d = get(b, "detail", NULL);
    if (json_is_string(d) && *json_string_value(d))
        fprintf(out, "          %s\n", str(d));
}

static void render_pool(FILE *out, json_t *root)
{
    json_t *c = get(root, "caps", NULL), *p = get(root, "pool", NULL), *t = get(root, "totals", NULL);
    fprintf(out, "Caps      pool %s  per client %s / %s leases  clients %s max",
            bytes(get(c, "pool_bytes", NULL)), bytes(get(c, "client_lease_bytes", NULL)),
            num(get(c, "client_leases", NULL)), num(get(c, "max_clients", NULL)));
    if (get(c, "max_lent_bytes", NULL))
        fprintf(out, "  lent %s max", bytes(get(c, "max_lent_bytes", NULL)));
    fprintf(out, "\n");
    fprintf(out, "Pool      idle %s (clean %s, dirty %s)  lent %s  zeroing %s\n",
            bytes(get(p, "idle_bytes", NULL)), bytes(get(p, "clean_bytes", NULL)),
            bytes(get(p, "dirty_bytes", NULL)), bytes(get(p, "lent_bytes", NULL)),
            num(get(p, "zeroing", NULL)));
    fprintf(out,
            "Totals    created %s  destroyed %s  zeroed %s  lends %s  returns %s  reclaimed %s  "
            "trimmed %s\n",
            num(get(t, "created", NULL)), num(get(t, "destroyed", NULL)),
            num(get(t, "zeroed", NULL)), num(get(t, "lends", NULL)), num(get(t, "returns", NULL)),
            num(get(t, "reclaimed", NULL)), bytes(get(t, "trimmed_bytes", NULL)));
    /* Optional sections: shown only when the daemon reports them. */
    json_t *share = get(p, "served_warm_share", NULL);
    if (get(p, "served_warm", NULL)) {
        char pct[16] = MISSING;
        if (json_is_number(share) && json_number_value(share) >= 0 &&
            json_number_value(share) <= 1)
            snprintf(pct, sizeof pct, "%.1f%%", json_number_value(share) * 100);
        fprintf(out, "LENDs     served warm %s (%s)  not warm %s  preparing %s  forgotten %s\n",
                num(get(p, "served_warm", NULL)), pct, num(get(p, "not_warm", NULL)),
                bytes(get(p, "preparing_bytes", NULL)), num(get(p, "forgotten", NULL)));
    }
    if (get(t, "saved", NULL) || get(t, "restored", NULL))
        fprintf(out, "Fd store  saved %s  restored %s  (regions kept across restarts)\n",
                num(get(t, "saved", NULL)), num(get(t, "restored", NULL)));
    json_t *pr = get(root, "pressure", NULL);
    if (json_is_object(pr))
        fprintf(out, "Pressure  source %s  events %s  trimmed %s  low watermark %s  decayed %s\n",
                str(get(pr, "source", NULL)), num(get(pr, "events", NULL)),
                bytes(get(pr, "trimmed_bytes", NULL)), bytes(get(pr, "low_watermark", NULL)),
                bytes(get(t, "decayed_bytes", NULL)));
}

static void render_rates(FILE *out, const struct ctl_rates *r)
{
    if (!r)
        return;
    if (!r->valid) {
        fprintf(out, "Rates     (after the next refresh)\n");
        return;
    }
    fprintf(out,
            "Rates/s   lends %.1f  returns %.1f  created %.1f  destroyed %.1f  zeroed %.1f  "
            "reclaimed %.1f\n",
            r->lends, r->returns, r->created, r->destroyed, r->zeroed, r->reclaimed);
}

static void render_refusals(FILE *out, json_t *root)
{
    json_t *r = get(root, "refusals", NULL);
    const char *key;
    json_t *v;
    int shown = 0;

    fprintf(out, "Refusals ");
    if (!json_is_object(r)) {
        fprintf(out, " %s\n", MISSING);
        return;
    }
    /* Every reason the daemon counts, including ones newer than this tool. */
    json_object_foreach(r, key, v) {
        uint64_t x;
        if (get_u64(v, &x) && x == 0)
            continue;
        fprintf(out, " %s %s", key, num(v));
        shown++;
    }
    fprintf(out, "%s\n", shown ? "" : " none");
}

/* A class row worth showing: anything pooled, lent or ever asked for. */
static int class_active(json_t *c)
{
    static const char *const keys[] = {"clean", "dirty", "lent", "hits", "misses", "bytes"};
    /* Newer fields count only where the daemon reports them. */
    static const char *const newer[] = {"served_warm", "not_warm", "prepared", "target"};
    uint64_t x;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!get_u64(get(c, keys[i], NULL), &x) || x != 0)
            return 1;
    for (size_t i = 0; i < sizeof newer / sizeof *newer; i++)
        if (get_u64(get(c, newer[i], NULL), &x) && x != 0)
            return 1;
    return 0;
}

static void render_classes(FILE *out, json_t *root)
{
    json_t *cl = get(root, "classes", NULL);
    size_t i, shown = 0;
    json_t *c;

    fprintf(out, "\n%5s %10s %6s %6s %6s %10s %9s %9s %9s %9s %6s\n", "CLASS", "SIZE", "CLEAN",
            "DIRTY", "LENT", "BYTES", "HITS", "MISSES", "WARM", "NOT_WARM", "TARGET");
    if (!json_is_array(cl)) {
        fprintf(out, "%5s\n", MISSING);
        return;
    }
    json_array_foreach(cl, i, c) {
        if (!class_active(c))
            continue;
        fprintf(out, "%5s %10s %6s %6s %6s %10s %9s %9s %9s %9s %6s\n",
                num(get(c, "class", NULL)), bytes(get(c, "size", NULL)),
                num(get(c, "clean", NULL)), num(get(c, "dirty", NULL)),
                num(get(c, "lent", NULL)), bytes(get(c, "bytes", NULL)),
                num(get(c, "hits", NULL)), num(get(c, "misses", NULL)),
                num(get(c, "served_warm", NULL)), num(get(c, "not_warm", NULL)),
                num(get(c, "target", NULL)));
        shown++;
    }
    if (!shown)
        fprintf(out, "  (no regions yet)\n");
}

static void render_clients(FILE *out, json_t *root)
{
    json_t *cl = get(root, "clients", NULL), *c;
    size_t i;
    uint64_t omitted;

    fprintf(out, "\n%8s %8s %6s %8s %10s\n", "PID", "UID", "CONN", "LEASES", "BYTES");
    if (!json_is_array(cl)) {
        fprintf(out, "%8s\n", MISSING);
        return;
    }
    json_array_foreach(cl, i, c) {
        json_t *conn = get(c, "connected", NULL);
        uint64_t pid;
        /* The tool's own session shows up too; say which line it is. */
        int self = get_u64(get(c, "pid", NULL), &pid) && pid == (uint64_t)getpid();
        fprintf(out, "%8s %8s %6s %8s %10s%s\n", num(get(c, "pid", NULL)),
                num(get(c, "uid", NULL)),
                json_is_boolean(conn) ? (json_is_true(conn) ? "yes" : "no") : MISSING,
                num(get(c, "leases", NULL)), bytes(get(c, "bytes", NULL)),
                self ? "  (this zknallocctl)" : "");
    }
    if (json_array_size(cl) == 0)
        fprintf(out, "  (no clients)\n");
    if (get_u64(get(root, "clients_omitted", NULL), &omitted) && omitted)
        fprintf(out, "  (%" PRIu64 " more not listed: the reply is capped at 64 KiB)\n", omitted);
}

void ctl_render_stats(FILE *out, json_t *root, const struct ctl_rates *rates)
{
    render_header(out, root);
    render_backing(out, root);
    render_pool(out, root);
    render_rates(out, rates);
    render_refusals(out, root);
    render_classes(out, root);
    render_clients(out, root);
}

static double delta(json_t *prev, json_t *cur, const char *key, double dt)
{
    uint64_t a, b;
    if (!get_u64(get(prev, "totals", key), &a) || !get_u64(get(cur, "totals", key), &b) || b < a)
        return 0; /* missing, or the daemon restarted: no meaningful rate */
    return (double)(b - a) / dt;
}

void ctl_compute_rates(struct ctl_rates *r, json_t *prev, json_t *cur, double dt)
{
    memset(r, 0, sizeof *r);
    if (!prev || !(dt > 0))
        return;
    r->valid = 1;
    r->lends = delta(prev, cur, "lends", dt);
    r->returns = delta(prev, cur, "returns", dt);
    r->created = delta(prev, cur, "created", dt);
    r->destroyed = delta(prev, cur, "destroyed", dt);
    r->zeroed = delta(prev, cur, "zeroed", dt);
    r->reclaimed = delta(prev, cur, "reclaimed", dt);
}
