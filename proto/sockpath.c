/* Socket path resolution, shared so daemon and clients always agree. */
#include "sockpath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fits(const char *path, char *buf, size_t cap)
{
    size_t n = strlen(path);
    if (n == 0 || n >= cap || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -1;
    memcpy(buf, path, n + 1);
    return 0;
}

int zkn_user_socket_path(char *buf, size_t cap)
{
    char tmp[256];
    const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(tmp, sizeof tmp, "%s/zknalloc/zknallocd.sock", xdg);
    else
        n = snprintf(tmp, sizeof tmp, "/tmp/zknalloc-%u/zknallocd.sock", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    return fits(tmp, buf, cap);
}

int zkn_socket_path(char *buf, size_t cap, enum zkn_path_role role)
{
    /* secure_getenv: a setuid prover must not be pointed at a hostile socket. */
    const char *env = secure_getenv(ZKN_SOCKET_ENV);
    if (env && *env)
        return fits(env, buf, cap);
    if (geteuid() == 0)
        return fits(ZKN_SYSTEM_SOCKET, buf, cap);
    if (role == ZKN_PATH_DAEMON)
        return zkn_user_socket_path(buf, cap);
    char user[256];
    struct stat st;
    if (zkn_user_socket_path(user, sizeof user) == 0 && stat(user, &st) == 0 &&
        S_ISSOCK(st.st_mode))
        return fits(user, buf, cap);
    return fits(ZKN_SYSTEM_SOCKET, buf, cap);
}
