/* Where the daemon listens, one rule for daemon, client and tools:
 *   1. $ZK_NALLOC_SOCKET, when set and not empty;
 *   2. the daemon run as root, and any client that finds no per-user daemon:
 *      ZKN_SYSTEM_SOCKET (/run/zknalloc/zknallocd.sock);
 *   3. the per-user daemon: $XDG_RUNTIME_DIR/zknalloc/zknallocd.sock, or
 *      /tmp/zknalloc-UID/zknallocd.sock without XDG_RUNTIME_DIR.
 * A client (not root) uses the per-user path when a socket exists there,
 * else the system path. */
#ifndef ZKN_SOCKPATH_H
#define ZKN_SOCKPATH_H

#include <stddef.h>

#define ZKN_SYSTEM_SOCKET "/run/zknalloc/zknallocd.sock"
#define ZKN_SOCKET_ENV "ZK_NALLOC_SOCKET"

enum zkn_path_role { ZKN_PATH_CLIENT, ZKN_PATH_DAEMON };

/* Writes the path into buf (cap bytes, at most sizeof sun_path is usable).
 * Returns 0, or -1 when it does not fit a Unix socket address. No allocation. */
int zkn_socket_path(char *buf, size_t cap, enum zkn_path_role role);

/* The per-user path alone (rule 3), for tools that explain the choice. */
int zkn_user_socket_path(char *buf, size_t cap);

#endif
