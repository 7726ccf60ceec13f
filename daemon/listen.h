/* The listening socket and who may connect to it (see listen.c). */
#ifndef ZKND_LISTEN_H
#define ZKND_LISTEN_H

#include "server.h"

/* Binds cfg->socket_path, or adopts inherited_fd >= 0 (socket activation).
 * Refuses (-1, reported) when a live daemon already answers on the path;
 * replaces a stale socket file. The socket's group and mode come from
 * --socket-group/--socket-mode (default: group zknalloc, 0660 as root). */
int server_listen(struct server *s, int inherited_fd);

#endif
