/* Warm restarts: at shutdown the idle pool's memfds go to the service
 * manager's fd store (FDSTORE=1), and the next instance gets them back
 * through LISTEN_FDS, so `systemctl restart zknallocd` keeps the pool warm.
 * Each fd is named "zkn-region-CLASS-UID-TOKEN", TOKEN unique per region
 * (fd names may not contain ':'). A restored fd's name is removed from the
 * store at once (FDSTOREREMOVE=1), and a restored region is dirty unless it
 * never had a page: unowned ones are zeroed before the daemon listens, owned
 * ones go back to their uid's partition and are zeroed in the background. */
#ifndef ZKND_FDSTORE_H
#define ZKND_FDSTORE_H

#include "pool.h"

#define FDSTORE_PREFIX "zkn-region-"

/* Hands every idle region to $NOTIFY_SOCKET's fd store. Returns how many
 * were stored (0 without a service manager). */
int fdstore_save(struct pool *p);

/* Takes the fds passed in by the service manager: the listening socket goes
 * to *listen_fd (or stays -1), stored regions back into the pool, anything
 * else is closed. Returns the number of regions restored. */
int fdstore_restore(struct pool *p, int *listen_fd);

#endif
