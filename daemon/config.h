/* zknallocd's settings: defaults, environment, command line. */
#ifndef ZKND_CONFIG_H
#define ZKND_CONFIG_H

#include <stdint.h>

#define CONFIG_MAX_PREWARM 16

struct prewarm_spec {
    int size_class;
    uint32_t count;
};

struct config {
    char socket_path[108];
    int socket_mode;        /* -1: default (0660 system, 0600 per-user) */
    char socket_group[64];  /* "": default group zknalloc when it exists */
    uint64_t pool_bytes;    /* cap on idle pooled bytes */
    uint64_t client_cap_bytes; /* cap on bytes leased to one client process */
    uint32_t client_max_leases;
    uint64_t max_lent_bytes; /* cap on bytes lent to all clients together */
    uint32_t max_clients;   /* open connections */
    uint32_t zero_workers;  /* background zeroing jobs in flight */
    struct prewarm_spec prewarm[CONFIG_MAX_PREWARM];
    int nprewarm;
    char backing_dir[256];  /* --backing-dir: a huge=always tmpfs */
    int hugetlb;            /* --hugetlb: use reserved hugetlb pages */
    int no_private_mount;   /* --no-private-mount */
    uint64_t idle_decay_s;  /* shrink a pool unused this long; 0 = never */
    uint64_t low_watermark; /* pool bytes kept when memory pressure trims */
    int psi;                /* react to /proc/pressure/memory */
    int log_level;
};

/* Fills defaults (from the machine and the environment), then the command
 * line. Returns 0 to run, 1 when --help/--version were answered, -1 on a
 * usage error (already logged at error priority). */
int config_load(struct config *cfg, int argc, char **argv);

/* The environment variable name (ZK_NALLOC_*), else its deprecated old
 * name with a warning; unset or empty gives NULL. *used, when given, is the
 * name the value came from (for messages). */
const char *config_env(const char *name, const char *old, const char **used);

/* Physical memory in bytes. */
uint64_t config_ram_bytes(void);

#endif
