/* zknallocctl internals: a small synchronous protocol client and the stats
 * renderer. See zknallocctl(1). */
#ifndef ZKN_CTL_H
#define ZKN_CTL_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "zkn_proto.h"

/* Exit statuses, documented in --help and zknallocctl(1): scripts rely on them. */
enum ctl_status {
    CTL_OK = 0,
    CTL_USAGE = 1,       /* bad command line */
    CTL_UNREACHABLE = 2, /* no socket, connection refused, permission denied */
    CTL_PROTO = 3,       /* the daemon answered wrongly, refused, or not in time */
};

/* Set by SIGINT/SIGTERM in `watch`: waits give up at once. */
extern volatile sig_atomic_t ctl_stop;

struct ctl_conn {
    int fd;
    const char *path;
    int timeout_ms;
    uint32_t next_req;
    char err[512]; /* why the last call failed, naming the socket */
};

/* Connects to path. Returns CTL_OK, or CTL_UNREACHABLE / CTL_PROTO with err set. */
int ctl_connect(struct ctl_conn *c, const char *path, int timeout_ms);
void ctl_close(struct ctl_conn *c);

/* Sends one request and waits for its reply of type `want`. The reply
 * (header included) lands in buf; *len is its size. Returns a ctl_status. */
int ctl_call(struct ctl_conn *c, uint16_t type, const void *payload, size_t plen, uint16_t want,
             void *buf, size_t cap, size_t *len);

/* HELLO; fills *ok when not NULL. */
int ctl_hello(struct ctl_conn *c, struct zkn_hello_ok *ok);

/* STATS: a malloc'd NUL-terminated copy of the JSON text in *json. */
int ctl_stats(struct ctl_conn *c, char **json);

/* ---- the command line (args.c) ---- */

enum ctl_cmd { CMD_NONE, CMD_STATS, CMD_WATCH, CMD_PING, CMD_TRIM, CMD_VERSION, CMD_HELP };

struct ctl_opts {
    enum ctl_cmd cmd;
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
struct ctl_target {
    char path[128];
    char why[192];
};

extern const char ctl_usage_text[];
/* "zknallocctl: " + the message + newline, on stderr. */
__attribute__((format(printf, 1, 2))) void ctl_err(const char *fmt, ...);
/* Fills *o from argv. CTL_OK, or CTL_USAGE (after saying why). */
int ctl_parse_args(int argc, char **argv, struct ctl_opts *o);
/* The socket to use and why (for messages). CTL_OK or CTL_USAGE. */
int ctl_resolve_target(const struct ctl_opts *o, struct ctl_target *t);

/* ---- rendering (render.c) ---- */

/* "512 B", "64 KiB", "1.5 GiB". */
void ctl_human_bytes(char *buf, size_t cap, uint64_t v);
/* "3d 04h", "1h 02m", "5m 07s", "12.3s". */
void ctl_human_duration(char *buf, size_t cap, double seconds);

/* Rates shown by `watch`: totals per second since the previous sample. */
struct ctl_rates {
    int valid;
    double lends, returns, created, destroyed, zeroed, reclaimed;
};

/* Prints the readable stats table for a parsed STATS reply. Every missing or
 * mistyped field prints as "-". */
void ctl_render_stats(FILE *out, json_t *root, const struct ctl_rates *rates);

/* Fills rates from two samples taken dt seconds apart (prev may be NULL). */
void ctl_compute_rates(struct ctl_rates *r, json_t *prev, json_t *cur, double dt);

#endif
