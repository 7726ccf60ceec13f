/* Shared by the suites about a lease's life across daemon restarts
 * (test_daemon_lifecycle.c, test_daemon_fdstore.c): a fake service manager
 * with an fd store, daemons spawned in various situations, temporary
 * directories, and a look at a daemon's fds. Everything here asserts. */
#ifndef ZKN_TEST_LIFECYCLE_FIXTURE_H
#define ZKN_TEST_LIFECYCLE_FIXTURE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include "harness.h"

#define KIB64 65536u
#define MAX_STORED 64
#define NOBODY 65534

#define NEED_ROOT()                                                                                \
    do {                                                                                           \
        if (geteuid() != 0) {                                                                      \
            fprintf(stderr, "%s: needs root; skipped\n", __func__);                                \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* ---- a fake service manager: NOTIFY_SOCKET and an fd store that behaves like
 * systemd's (an fd already stored keeps its first name; FDSTOREREMOVE drops
 * every fd of a name) ---- */

struct store {
    struct zkn_test_notify rx;
    int fds[MAX_STORED];
    char names[MAX_STORED][128];
    size_t n;
    char removed[MAX_STORED][128];
    size_t nremoved;
    size_t received; /* fds sent with FDSTORE=1, duplicates included */
    ino_t received_ino[MAX_STORED];
};

/* Opens an empty store and exports its NOTIFY_SOCKET. */
void lc_store_open(struct store *st);
/* Closes the stored fds and the socket. */
void lc_store_close(struct store *st);
/* Reads datagrams until none comes for timeout_ms, storing and removing fds. */
void lc_store_drain(struct store *st, int timeout_ms);
/* The value of "key" (e.g. "FDNAME=") up to the line's end into out; NULL
 * when absent. */
const char *lc_field(const char *buf, const char *key, char *out, size_t cap);
/* 1 when the two fds are the same file. */
int lc_same_file(int a, int b);

/* ---- starting the daemon in various situations ---- */

struct spawn {
    const char *sock;
    const char *const *args;
    const struct store *store; /* its fds become LISTEN_FDS */
    int nofile;                /* RLIMIT_NOFILE soft and hard; 0: as is */
    int new_pidns;             /* the daemon in a pid namespace of its own */
    const char *log_path;      /* stderr there */
    const char *log_level;
    const char *knob;          /* an extra NAME=VALUE in the environment */
};

struct spawned {
    pid_t pid;  /* to signal */
    pid_t reap; /* to wait for */
};

/* Starts a daemon as sp says and waits until it answers PING. */
struct spawned lc_spawn_daemon(const struct spawn *sp);
/* SIGTERM, wait; the wait status. */
int lc_stop_daemon(struct spawned *d);

/* A temporary directory (mode 0755: uid 65534 connects too) with the
 * daemon's socket and log paths in it. */
struct tmp {
    char dir[64], sock[96], log[96];
};
void lc_tmp_make(struct tmp *t);
void lc_tmp_remove(struct tmp *t);

/* ---- looking at a daemon ---- */

/* STATS section.key, which must be an integer. */
json_int_t lc_stat_value(const char *sock, const char *section, const char *key);
/* Maps a region's fd shared and writes byte all over its size. */
char *lc_fill_region(int fd, uint64_t size, int byte);
ino_t lc_ino_of(int fd);
/* memfds among pid's open fds. */
int lc_count_memfds(pid_t pid);
/* The daemon's open fds, once they stop changing (closes are asynchronous). */
int lc_count_fds_settled(pid_t pid);
/* A file's text (up to 64 KiB, "" when unreadable), in a static buffer. */
char *lc_read_file(const char *path);

#endif
