/* Command line and environment for zknallocd. Every flag is also described
 * in README.md and zknallocd(8). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sizeclass.h"
#include "sockpath.h"
#include "zkn_proto.h"

#define GIB ((uint64_t)1 << 30)

uint64_t config_ram_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return 8 * GIB; /* a guess that keeps the defaults sane */
    return (uint64_t)pages * (uint64_t)page;
}

const char *config_env(const char *name, const char *old, const char **used)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        /* The old names stay for one release. */
        if (!(v = getenv(old)) || !*v)
            return NULL;
        log_warn("%s is deprecated: use %s", old, name);
        name = old;
    }
    if (used)
        *used = name;
    return v;
}

static void usage(FILE *out)
{
    fprintf(out,
"Usage: zknallocd [OPTION]...\n"
"Lends warm, sealed shared-memory regions to zk-nalloc clients.\n"
"\n"
"  --socket PATH          listen here (default: $ZK_NALLOC_SOCKET, else\n"
"                         " ZKN_SYSTEM_SOCKET " as root, else\n"
"                         $XDG_RUNTIME_DIR/zknalloc/zknallocd.sock)\n"
"  --socket-mode OCTAL    socket file mode (default 0660 as root, else 0600)\n"
"  --socket-group NAME    socket file group (default: zknalloc, when it exists)\n"
"  --pool-bytes SIZE      cap on idle pooled memory (default min(RAM/8, 1G);\n"
"                         env ZK_NALLOC_POOL_BYTES)\n"
"  --client-cap-bytes SIZE  cap on memory one client process may lease\n"
"                         (default RAM/2)\n"
"  --client-max-leases N  cap on regions one client may lease (default 65536)\n"
"  --max-lent-bytes SIZE  cap on memory lent to all clients together; a LEND\n"
"                         past it gets ERROR client_cap (default RAM/2)\n"
"  --max-clients N        cap on open connections (default 1024)\n"
"  --prewarm SIZE=COUNT   create COUNT warm, zeroed regions of SIZE at start\n"
"                         (repeatable, e.g. --prewarm 128M=4)\n"
"  --backing-dir DIR      back regions with files on DIR, a tmpfs mounted\n"
"                         huge=always (regions there cannot be sealed)\n"
"  --hugetlb              back regions with reserved hugetlb pages\n"
"  --no-private-mount     never mount a private huge=always tmpfs\n"
"  --idle-decay SECONDS   shrink a pool left unused this long (default 600,\n"
"                         0 = never)\n"
"  --low-watermark SIZE   pool kept when memory pressure trims (default 0)\n"
"  --no-psi               ignore /proc/pressure/memory\n"
"  --log-level LEVEL      error, warn, info (default) or debug; env\n"
"                         ZK_NALLOC_LOG_LEVEL\n"
"  --help                 this text\n"
"  --version              print the version\n"
"Sizes take K, M, G, T suffixes (powers of 1024).\n");
}

static int parse_size_arg(const char *flag, const char *text, uint64_t *out)
{
    if (zkn_parse_size(text, out) == 0)
        return 0;
    log_error("%s: not a size: '%s' (e.g. 512M, 2G)", flag, text);
    return -1;
}

static int parse_prewarm(struct config *cfg, const char *text)
{
    char size_text[64];
    const char *eq = strchr(text, '=');
    uint64_t size, count;
    if (!eq || (size_t)(eq - text) >= sizeof size_text)
        goto bad;
    memcpy(size_text, text, (size_t)(eq - text));
    size_text[eq - text] = '\0';
    if (zkn_parse_size(size_text, &size) || zkn_parse_size(eq + 1, &count) || count == 0 ||
        count > 1u << 20)
        goto bad;
    if (zkn_size_class(size) < 0) {
        log_error("--prewarm: %s is larger than the largest class (16G)",
                size_text);
        return -1;
    }
    if (cfg->nprewarm == CONFIG_MAX_PREWARM) {
        log_error("--prewarm: at most %d of them", CONFIG_MAX_PREWARM);
        return -1;
    }
    cfg->prewarm[cfg->nprewarm].size_class = zkn_size_class(size);
    cfg->prewarm[cfg->nprewarm].count = (uint32_t)count;
    cfg->nprewarm++;
    return 0;
bad:
    log_error("--prewarm: expected SIZE=COUNT (e.g. 128M=4), got '%s'", text);
    return -1;
}

static int parse_u32(const char *flag, const char *text, uint32_t min, uint32_t *out)
{
    uint64_t v;
    if (zkn_parse_size(text, &v) || v < min || v > UINT32_MAX) {
        log_error("%s: expected a number >= %u, got '%s'", flag, min, text);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

enum {
    OPT_SOCKET = 256, OPT_MODE, OPT_GROUP, OPT_POOL, OPT_CLIENT_CAP, OPT_CLIENT_LEASES,
    OPT_MAX_CLIENTS, OPT_PREWARM, OPT_BACKING_DIR, OPT_HUGETLB, OPT_NO_MOUNT, OPT_DECAY,
    OPT_LOW, OPT_NO_PSI, OPT_LOG, OPT_HELP, OPT_VERSION, OPT_MAX_LENT,
};

int config_load(struct config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, 0, OPT_SOCKET},
        {"socket-mode", required_argument, 0, OPT_MODE},
        {"socket-group", required_argument, 0, OPT_GROUP},
        {"pool-bytes", required_argument, 0, OPT_POOL},
        {"client-cap-bytes", required_argument, 0, OPT_CLIENT_CAP},
        {"client-max-leases", required_argument, 0, OPT_CLIENT_LEASES},
        {"max-lent-bytes", required_argument, 0, OPT_MAX_LENT},
        {"max-clients", required_argument, 0, OPT_MAX_CLIENTS},
        {"prewarm", required_argument, 0, OPT_PREWARM},
        {"backing-dir", required_argument, 0, OPT_BACKING_DIR},
        {"hugetlb", no_argument, 0, OPT_HUGETLB},
        {"no-private-mount", no_argument, 0, OPT_NO_MOUNT},
        {"idle-decay", required_argument, 0, OPT_DECAY},
        {"low-watermark", required_argument, 0, OPT_LOW},
        {"no-psi", no_argument, 0, OPT_NO_PSI},
        {"log-level", required_argument, 0, OPT_LOG},
        {"help", no_argument, 0, OPT_HELP},
        {"version", no_argument, 0, OPT_VERSION},
        {0, 0, 0, 0},
    };
    uint64_t ram = config_ram_bytes();
    const char *env, *env_name;
    int c;

    memset(cfg, 0, sizeof *cfg);
    cfg->socket_mode = -1;
    cfg->pool_bytes = ram / 8 < GIB ? ram / 8 : GIB;
    cfg->client_cap_bytes = ram / 2;
    cfg->client_max_leases = 65536;
    cfg->max_lent_bytes = ram / 2; /* with the pool (at most RAM/8) leaves the rest room */
    cfg->max_clients = 1024;
    cfg->zero_workers = 2;
    cfg->idle_decay_s = 600;
    cfg->psi = 1;
    cfg->log_level = LOG_LVL_INFO;
    if ((env = config_env("ZK_NALLOC_POOL_BYTES", "ZKN_POOL_BYTES", &env_name)) &&
        parse_size_arg(env_name, env, &cfg->pool_bytes))
        return -1;
    if ((env = config_env("ZK_NALLOC_LOG_LEVEL", "ZKN_LOG_LEVEL", &env_name))) {
        if (log_parse_level(env) < 0) {
            log_error("%s: unknown level '%s'", env_name, env);
            return -1;
        }
        cfg->log_level = log_parse_level(env);
    }

    optind = 1;
    opterr = 0; /* reported below at error priority, so the journal shows it */
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case OPT_SOCKET:
            if (strlen(optarg) == 0 || strlen(optarg) >= sizeof cfg->socket_path) {
                log_error("--socket: path empty or longer than %zu bytes",
                        sizeof cfg->socket_path - 1);
                return -1;
            }
            strcpy(cfg->socket_path, optarg);
            break;
        case OPT_MODE: {
            char *end;
            long mode = strtol(optarg, &end, 8);
            if (*optarg == '\0' || *end || mode < 0 || mode > 0777) {
                log_error("--socket-mode: expected octal like 0660");
                return -1;
            }
            cfg->socket_mode = (int)mode;
            break;
        }
        case OPT_GROUP:
            if (strlen(optarg) >= sizeof cfg->socket_group) {
                log_error("--socket-group: name too long");
                return -1;
            }
            strcpy(cfg->socket_group, optarg);
            break;
        case OPT_POOL:
            if (parse_size_arg("--pool-bytes", optarg, &cfg->pool_bytes))
                return -1;
            break;
        case OPT_CLIENT_CAP:
            if (parse_size_arg("--client-cap-bytes", optarg, &cfg->client_cap_bytes))
                return -1;
            break;
        case OPT_CLIENT_LEASES:
            if (parse_u32("--client-max-leases", optarg, 1, &cfg->client_max_leases))
                return -1;
            break;
        case OPT_MAX_LENT:
            if (parse_size_arg("--max-lent-bytes", optarg, &cfg->max_lent_bytes))
                return -1;
            break;
        case OPT_MAX_CLIENTS:
            if (parse_u32("--max-clients", optarg, 1, &cfg->max_clients))
                return -1;
            break;
        case OPT_PREWARM:
            if (parse_prewarm(cfg, optarg))
                return -1;
            break;
        case OPT_BACKING_DIR:
            if (strlen(optarg) >= sizeof cfg->backing_dir) {
                log_error("--backing-dir: path too long");
                return -1;
            }
            strcpy(cfg->backing_dir, optarg);
            break;
        case OPT_HUGETLB: cfg->hugetlb = 1; break;
        case OPT_NO_MOUNT: cfg->no_private_mount = 1; break;
        case OPT_DECAY:
            if (zkn_parse_size(optarg, &v)) {
                log_error("--idle-decay: expected seconds");
                return -1;
            }
            cfg->idle_decay_s = v;
            break;
        case OPT_LOW:
            if (parse_size_arg("--low-watermark", optarg, &cfg->low_watermark))
                return -1;
            break;
        case OPT_NO_PSI: cfg->psi = 0; break;
        case OPT_LOG:
            if (log_parse_level(optarg) < 0) {
                log_error("--log-level: expected error, warn, info or debug");
                return -1;
            }
            cfg->log_level = log_parse_level(optarg);
            break;
        case OPT_HELP: usage(stdout); return 1;
        case OPT_VERSION: printf("zknallocd %s (protocol %u)\n", ZKN_VERSION, ZKN_PROTO_VERSION); return 1;
        case ':':
            log_error("%s: needs an argument (see --help)", argv[optind - 1]);
            return -1;
        default:
            log_error("unknown option '%s' (see --help)", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        log_error("unexpected argument '%s' (see --help)", argv[optind]);
        return -1;
    }
    if (cfg->hugetlb && cfg->backing_dir[0]) {
        log_error("--hugetlb and --backing-dir exclude each other");
        return -1;
    }
    if (!cfg->socket_path[0] &&
        zkn_socket_path(cfg->socket_path, sizeof cfg->socket_path, ZKN_PATH_DAEMON) < 0) {
        log_error("no usable socket path (set --socket or $%s)",
                ZKN_SOCKET_ENV);
        return -1;
    }
    return 0;
}
