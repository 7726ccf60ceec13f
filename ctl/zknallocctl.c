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

volatile sig_atomic_t ctl_stop;

static const char usage_text[] =
    "Usage: zknallocctl [--socket PATH] [--timeout S] COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  stats [--json]         pool, caps, backing, size classes and clients of the\n"
    "                         daemon, as a table, or the daemon's raw JSON\n"
    "  watch [--interval S] [--count N] [--json]\n"
    "                         refresh the stats every S seconds (default 1) until\n"
    "                         Ctrl-C, or N times; --json prints one line per refresh\n"
    "  ping                   check that the daemon answers (no HELLO needed)\n"
    "  trim [--to BYTES] [--json]\n"
    "                         destroy idle pooled regions until the pool holds at\n"
    "                         most BYTES (suffixes K, M, G, T; default 0)\n"
    "  version                this tool's version, and the daemon's when reachable\n"
    "  help                   this text\n"
    "\n"
    "Options:\n"
    "  -s, --socket PATH      the daemon's socket; default: $ZK_NALLOC_SOCKET, else\n"
    "                         the per-user daemon's socket when one exists, else\n"
    "                         " ZKN_SYSTEM_SOCKET "\n"
    "  -t, --timeout S        seconds to wait for each reply (default 5)\n"
    "  -j, --json             machine-readable output (stats, watch, trim)\n"
    "  -i, --interval S       watch: seconds between refreshes\n"
    "  -n, --count N          watch: stop after N refreshes\n"
    "      --to BYTES         trim: target pool size\n"
    "  -h, --help             this text\n"
    "  -V, --version          this tool's version only\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  usage error: unknown command or option, bad value\n"
    "  2  daemon unreachable: no socket, connection refused, permission denied\n"
    "  3  protocol or daemon error: the daemon refused the request (ERROR\n"
    "     reply), answered something malformed, or did not answer in time\n"
    "`version` exits 0 even when no daemon answers: it prints its own version.\n"
    "Errors go to stderr and name the socket tried, and how it was chosen.\n";

enum cmd { CMD_NONE, CMD_STATS, CMD_WATCH, CMD_PING, CMD_TRIM, CMD_VERSION, CMD_HELP };

struct opts {
    enum cmd cmd;
    const char *cmd_name;
    const char *socket;
    double timeout_s;
    int json;
    double interval_s;
    unsigned long count; /* 0: until interrupted */
    uint64_t trim_to;
    /* which command-specific options were given, to reject misplaced ones */
    int seen_interval, seen_count, seen_to;
};

/* Where the socket path came from, for messages. */
struct target {
    char path[128];
    char why[192];
};

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
    va_list ap;
    fputs("zknallocctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("zknallocctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'zknallocctl --help'.\n", stderr);
    return CTL_USAGE;
}

static int parse_seconds(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_count(const char *s, unsigned long *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0)
        return -1;
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    enum cmd cmd;
} commands[] = {
    {"stats", CMD_STATS},     {"watch", CMD_WATCH}, {"ping", CMD_PING}, {"trim", CMD_TRIM},
    {"version", CMD_VERSION}, {"help", CMD_HELP},
};

/* Matches "--name VALUE", "--name=VALUE" and "-x VALUE". Returns 1 with
 * *val set (advancing *i), 0 when arg is not this option, -1 when the value
 * is missing. */
static int opt_value(int argc, char **argv, int *i, const char *lng, const char *shrt,
                     const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(lng);
    if (strncmp(a, lng, n) == 0 && a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (strcmp(a, lng) != 0 && !(shrt && strcmp(a, shrt) == 0))
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *val = argv[++*i];
    return 1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    int only_positional = 0;

    *o = (struct opts){.timeout_s = 5.0, .interval_s = 1.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;

        if (!only_positional && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                only_positional = 1;
                continue;
            }
            if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                o->cmd = CMD_HELP;
                return CTL_OK;
            }
            if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
                printf("zknallocctl %s (protocol %u)\n", ZKN_VERSION, ZKN_PROTO_VERSION);
                exit(CTL_OK);
            }
            if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0) {
                o->json = 1;
                continue;
            }
            if ((r = opt_value(argc, argv, &i, "--socket", "-s", &v)) != 0) {
                if (r < 0 || !*v)
                    return usage_error("--socket needs a path");
                o->socket = v;
                continue;
            }
            if ((r = opt_value(argc, argv, &i, "--timeout", "-t", &v)) != 0) {
                if (r < 0 || parse_seconds(v, 0.001, 3600, &o->timeout_s) < 0)
                    return usage_error("--timeout needs seconds between 0.001 and 3600, got '%s'",
                                       r < 0 ? "" : v);
                continue;
            }
            if ((r = opt_value(argc, argv, &i, "--interval", "-i", &v)) != 0) {
                if (r < 0 || parse_seconds(v, 0.01, 86400, &o->interval_s) < 0)
                    return usage_error("--interval needs seconds between 0.01 and 86400, got '%s'",
                                       r < 0 ? "" : v);
                o->seen_interval = 1;
                continue;
            }
            if ((r = opt_value(argc, argv, &i, "--count", "-n", &v)) != 0) {
                if (r < 0 || parse_count(v, &o->count) < 0)
                    return usage_error("--count needs a positive whole number, got '%s'",
                                       r < 0 ? "" : v);
                o->seen_count = 1;
                continue;
            }
            if ((r = opt_value(argc, argv, &i, "--to", NULL, &v)) != 0) {
                if (r < 0 || zkn_parse_size(v, &o->trim_to) < 0)
                    return usage_error("--to needs a size such as 0, 512M or 2G, got '%s'",
                                       r < 0 ? "" : v);
                o->seen_to = 1;
                continue;
            }
            return usage_error("unknown option '%s'", a);
        }
        if (o->cmd != CMD_NONE)
            return usage_error("unexpected argument '%s' after '%s'", a, o->cmd_name);
        for (size_t k = 0; k < sizeof commands / sizeof *commands; k++)
            if (strcmp(a, commands[k].name) == 0) {
                o->cmd = commands[k].cmd;
                o->cmd_name = commands[k].name;
            }
        if (o->cmd == CMD_NONE)
            return usage_error("unknown command '%s'", a);
    }
    if (o->cmd == CMD_NONE)
        return usage_error("no command given (stats, watch, ping, trim, version)");
    if ((o->seen_interval || o->seen_count) && o->cmd != CMD_WATCH)
        return usage_error("--interval and --count apply to watch only");
    if (o->seen_to && o->cmd != CMD_TRIM)
        return usage_error("--to applies to trim only");
    if (o->json && o->cmd != CMD_STATS && o->cmd != CMD_WATCH && o->cmd != CMD_TRIM)
        return usage_error("--json applies to stats, watch and trim");
    return CTL_OK;
}

/* The shared rule of proto/sockpath.h, plus a note of which step chose it. */
static int resolve_target(const struct opts *o, struct target *t)
{
    char user[128];
    const char *env = getenv(ZKN_SOCKET_ENV);

    if (o->socket) {
        if (strlen(o->socket) >= sizeof t->path || strlen(o->socket) >= 108)
            return usage_error("--socket path is too long for a Unix socket: %s", o->socket);
        snprintf(t->path, sizeof t->path, "%s", o->socket);
        snprintf(t->why, sizeof t->why, "given with --socket");
        return CTL_OK;
    }
    if (zkn_socket_path(t->path, sizeof t->path, ZKN_PATH_CLIENT) < 0)
        return usage_error("the socket path from $%s does not fit a Unix socket address",
                           ZKN_SOCKET_ENV);
    if (env && *env)
        snprintf(t->why, sizeof t->why, "from $%s", ZKN_SOCKET_ENV);
    else if (geteuid() != 0 && strcmp(t->path, ZKN_SYSTEM_SOCKET) == 0 &&
             zkn_user_socket_path(user, sizeof user) == 0)
        snprintf(t->why, sizeof t->why, "the system daemon's; no per-user daemon at %.100s",
                 user);
    else if (strcmp(t->path, ZKN_SYSTEM_SOCKET) == 0)
        snprintf(t->why, sizeof t->why, "the system daemon's");
    else
        snprintf(t->why, sizeof t->why, "the per-user daemon's");
    return CTL_OK;
}

static void report(const struct ctl_conn *c, const struct target *t, int status)
{
    err("%s", c->err);
    if (status == CTL_UNREACHABLE)
        fprintf(stderr,
                "zknallocctl: socket %s (%s); start the daemon (systemctl start "
                "zknallocd.socket, or zknallocd) or choose another with --socket\n",
                t->path, t->why);
}

static int open_session(struct ctl_conn *c, const struct opts *o, const struct target *t,
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

static int cmd_ping(const struct opts *o, const struct target *t)
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

static int cmd_stats(const struct opts *o, const struct target *t)
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

static int cmd_trim(const struct opts *o, const struct target *t)
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

static int cmd_version(const struct opts *o, const struct target *t)
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
        err("no daemon version: %s", c.err);
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

static int cmd_watch(const struct opts *o, const struct target *t)
{
    struct ctl_conn c = {.fd = -1};
    struct sigaction sa = {.sa_handler = on_signal};
    json_t *prev = NULL;
    double prev_t = 0;
    int tty = isatty(STDOUT_FILENO);

    /* No SA_RESTART: a Ctrl-C must cut short the wait for a reply or a tick. */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        err("cannot install signal handlers: %s", strerror(errno));
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
                err("%s (retrying)", c.err);
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
    struct opts o;
    struct target t;
    int r = parse_args(argc, argv, &o);

    if (r != CTL_OK)
        return r;
    if (o.cmd == CMD_HELP) {
        fputs(usage_text, stdout);
        return CTL_OK;
    }
    if ((r = resolve_target(&o, &t)) != CTL_OK)
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
        err("writing the output: %s", strerror(errno));
        if (r == CTL_OK)
            r = CTL_PROTO;
    }
    return r;
}
