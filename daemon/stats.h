/* The STATS reply (see stats.c). */
#ifndef ZKND_STATS_H
#define ZKND_STATS_H

#include <stddef.h>
#include <sys/types.h>

struct server;

/* Malloc'd JSON text, NULL on failure. Per-client details are those of the
 * asking uid only, unless it is root or ours. */
char *stats_json(const struct server *s, size_t max_len, uid_t asker);

#endif
