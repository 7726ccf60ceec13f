/* zknallocctl: look at and steer a running zknallocd. See zknallocctl(1).
 *
 * Exit statuses are part of the interface (scripts test them):
 *   0 ok, 1 usage error, 2 daemon unreachable, 3 protocol or daemon error. */
#include "ctl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sizeclass.h"
#include "sockpath.h"

#ifndef ZKN_VERSION
#define ZKN_VERSION "unknown"
#endif


static void report(const struct ctl_conn *c, const struct ctl_target *t, int status)
{
    ctl_err("%s", c->err);
    if (status == CTL_UNREACHABLE)
        fprintf(stderr,
                "zknallocctl: socket %s (%s); start the daemon (systemctl start "
                "zknallocd.socket, or zknallocd) or choose another with --socket\n",
                t->path, t->why);
}

static int open_session(struct ctl_conn *c, const struct ctl_opts *o, const struct ctl_target *t,
                        struct zkn_hello_ok *ok)
{
    int r = ctl_connect(c, t->path, (int)(o->timeout_s * 1000));
    if (r == CTL_OK && (r = ctl_hello(c, ok)) != CTL_OK)
        ctl_close(c);
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmd_ping(const struct ctl_opts *o, const struct ctl_target *t)
{
    struct ctl_conn c;
    char buf[256];
    size_t len;

    int r = ctl_connect(&c, t->path, (int)(o->timeout_s * 1000));
    if (r != CTL_OK) {
        report(&c, t, r);
        return r;
    }
    double t0 = now_s();
    r = ctl_call(&c, ZKN_MSG_PING, NULL, 0, ZKN_MSG_PONG, buf, sizeof buf, &len);
    double dt = now_s() - t0;
    ctl_close(&c);
    if (r != CTL_OK) {
        report(&c, t, r);
        return r;
    }
    printf("PONG from %s in %.3f ms\n", t->path, dt * 1000);
    return CTL_OK;
}

/* STATS on an open session, parsed. *text gets the raw JSON. */
static int fetch_stats(struct ctl_conn *c, char **text, json_t **root)
{
    json_error_t je;
    int r = ctl_stats(c, text);
    if (r != CTL_OK)
        return r;
    *root = json_loads(*text, JSON_REJECT_DUPLICATES, &je);
    if (!*root || !json_is_object(*root)) {
        snprintf(c->err, sizeof c->err, "the STATS reply from %s is not a JSON object: %s",
                 c->path, *root ? "another JSON value" : je.text);
        json_decref(*root);
        *root = NULL;
        free(*text);
        *text = NULL;
        return CTL_PROTO;
    }
    return CTL_OK;
}

static int cmd_stats(const struct ctl_opts *o, const struct ctl_target *t)
{
    struct ctl_conn c;
    char *text = NULL;
    json_t *root = NULL;

    int r = open_session(&c, o, t, NULL);
    if (r == CTL_OK) {
        r = fetch_stats(&c, &text, &root);
        ctl_close(&c);
    }
    if (r != CTL_OK) {
        report(&c, t, r);
        return r;
    }
    if (o->json) {
        size_t n = strlen(text);
        fputs(text, stdout);
        if (n == 0 || text[n - 1] != '\n')
            putchar('\n');
    } else {
        ctl_render_stats(stdout, root, NULL);
    }
    json_decref(root);
    free(text);
    return CTL_OK;
}

static int cmd_trim(const struct ctl_opts *o, const struct ctl_target *t)
{
    struct ctl_conn c;
    struct zkn_trim req = {.target_bytes = o->trim_to};
    struct zkn_trim_ok ok;
    char buf[256];
    size_t len;

    int r = open_session(&c, o, t, NULL);
    if (r == CTL_OK) {
        r = ctl_call(&c, ZKN_MSG_TRIM, &req, sizeof req, ZKN_MSG_TRIM_OK, buf, sizeof buf, &len);
        ctl_close(&c);
    }
    if (r != CTL_OK) {
        report(&c, t, r);
        return r;
    }
    memcpy(&ok, buf + sizeof(struct zkn_hdr), sizeof ok);
    if (o->json) {
        printf("{\"target_bytes\":%llu,\"freed_bytes\":%llu,\"pool_bytes\":%llu}\n",
               (unsigned long long)o->trim_to, (unsigned long long)ok.freed_bytes,
               (unsigned long long)ok.pool_bytes);
    } else {
        char freed[48], pool[48], target[48];
        ctl_human_bytes(freed, sizeof freed, ok.freed_bytes);
        ctl_human_bytes(pool, sizeof pool, ok.pool_bytes);
        ctl_human_bytes(target, sizeof target, o->trim_to);
        printf("trimmed %s; the idle pool now holds %s (target %s)\n", freed, pool, target);
    }
    return CTL_OK;
}

static int cmd_version(const struct ctl_opts *o, const struct ctl_target *t)
{
    struct ctl_conn c;
    struct zkn_hello_ok ok;
    char *text = NULL;
    json_t *root = NULL;

    printf("zknallocctl %s (protocol %u)\n", ZKN_VERSION, ZKN_PROTO_VERSION);
    int r = open_session(&c, o, t, &ok);
    if (r == CTL_OK) {
        r = fetch_stats(&c, &text, &root);
        ctl_close(&c);
    }
    if (r != CTL_OK) {
        /* Still a success: the question "which version is this tool" has an answer. */
        ctl_err("no daemon version: %s", c.err);
        return CTL_OK;
    }
    json_t *v = json_object_get(root, "version");
    printf("zknallocd %s (protocol %u, pid %u, backing %s) at %s\n",
           json_is_string(v) ? json_string_value(v) : "-", ok.version, ok.daemon_pid,
           zkn_backing_name(ok.backing), t->path);
    json_decref(root);
    free(text);
    return CTL_OK;
}

static void on_signal(int sig)
{
    (void)sig;
    ctl_stop = 1;
}

/* Sleeps up to s seconds; returns early when interrupted. */
static void pause_for(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (!ctl_stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static uint64_t pid_of(json_t *root)
{
    json_t *p = json_object_get(root, "pid");
    return json_is_integer(p) ? (uint64_t)json_integer_value(p) : 0;
}

static int cmd_watch(const struct ctl_opts *o, const struct ctl_target *t)
{
    struct ctl_conn c = {.fd = -1};
    struct sigaction sa = {.sa_handler = on_signal};
    json_t *prev = NULL;
    double prev_t = 0;
    int tty = isatty(STDOUT_FILENO);

    /* No SA_RESTART: a Ctrl-C must cut short the wait for a reply or a tick. */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        ctl_err("cannot install signal handlers: %s", strerror(errno));
        return CTL_PROTO;
    }
    /* The first connection decides the exit status: a script that watches a
     * daemon that is not there learns it at once. Later failures (a restart)
     * are shown and retried. */
    int r = open_session(&c, o, t, NULL);
    if (r != CTL_OK) {
        report(&c, t, r);
        return r;
    }
    for (unsigned long n = 0; !ctl_stop && (o->count == 0 || n < o->count); n++) {
        char *text = NULL;
        json_t *root = NULL;

        if (n > 0)
            pause_for(o->interval_s);
        if (ctl_stop)
            break;
        /* On failure root stays NULL and c.err says why, for the view below. */
        if ((c.fd >= 0 || open_session(&c, o, t, NULL) == CTL_OK) &&
            fetch_stats(&c, &text, &root) != CTL_OK)
            ctl_close(&c);
        double now = now_s();
        time_t wall = time(NULL);
        struct tm tm;
        char clock[16] = "-";
        if (localtime_r(&wall, &tm))
            strftime(clock, sizeof clock, "%H:%M:%S", &tm);

        if (o->json) {
            if (root) {
                char *line = json_dumps(root, JSON_COMPACT);
                if (line) {
                    puts(line);
                    free(line);
                }
            } else if (!ctl_stop) {
                ctl_err("%s (retrying)", c.err);
            }
        } else if (!ctl_stop) {
            fputs(tty ? "\033[H\033[2J" : (n > 0 ? "\n" : ""), stdout);
            printf("zknallocctl watch  %s  every %.2gs  %s  (Ctrl-C to quit)\n\n", clock,
                   o->interval_s, t->path);
            if (root) {
                struct ctl_rates rates;
                /* A new pid means a restarted daemon: its totals start over. */
                json_t *base = prev && pid_of(prev) == pid_of(root) ? prev : NULL;
                ctl_compute_rates(&rates, base, root, now - prev_t);
                ctl_render_stats(stdout, root, &rates);
            } else {
                printf("daemon not answering: %s\nretrying every %.2gs\n", c.err,
                       o->interval_s);
            }
        }
        fflush(stdout);
        json_decref(prev);
        prev = root;
        prev_t = now;
        free(text);
    }
    json_decref(prev);
    ctl_close(&c);
    return CTL_OK;
}

int main(int argc, char **argv)
{
    struct ctl_opts o;
    struct ctl_target t;
    int r = ctl_parse_args(argc, argv, &o);

    if (r != CTL_OK)
        return r;
    if (o.cmd == CMD_HELP) {
        fputs(ctl_usage_text, stdout);
        return CTL_OK;
    }
    if ((r = ctl_resolve_target(&o, &t)) != CTL_OK)
        return r;
    switch (o.cmd) {
    case CMD_STATS: r = cmd_stats(&o, &t); break;
    case CMD_WATCH: r = cmd_watch(&o, &t); break;
    case CMD_PING: r = cmd_ping(&o, &t); break;
    case CMD_TRIM: r = cmd_trim(&o, &t); break;
    case CMD_VERSION: r = cmd_version(&o, &t); break;
    default: r = CTL_USAGE; break;
    }
    if (fflush(stdout) != 0 && errno != EPIPE) {
        ctl_err("writing the output: %s", strerror(errno));
        if (r == CTL_OK)
            r = CTL_PROTO;
    }
    return r;
}
