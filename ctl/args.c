/* zknallocctl's command line: the usage text, option parsing and which
 * socket to talk to (the shared rule of proto/sockpath.h, and why). */
#include "ctl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sizeclass.h"
#include "sockpath.h"

const char ctl_usage_text[] =
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

void ctl_err(const char *fmt, ...)
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
    enum ctl_cmd cmd;
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

int ctl_parse_args(int argc, char **argv, struct ctl_opts *o)
{
    int only_positional = 0;

    *o = (struct ctl_opts){.timeout_s = 5.0, .interval_s = 1.0};
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
int ctl_resolve_target(const struct ctl_opts *o, struct ctl_target *t)
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
