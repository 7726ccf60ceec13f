/* The listening socket: binding it (or adopting one passed by the service
 * manager), replacing a stale socket file, and who may connect (its group
 * and mode). Accepting connections is server.c's. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"

static int live_daemon_at(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), live;
    if (fd < 0)
        return 0;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    live = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return live;
}

static int make_parent_dir(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -1;
    /* One level, as systemd's RuntimeDirectory would: parents must exist. */
    return mkdir(dir, geteuid() == 0 ? 0755 : 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static void apply_socket_owner(const struct server *s)
{
    const struct config *cfg = s->cfg;
    const char *group = cfg->socket_group[0] ? cfg->socket_group : "zknalloc";
    struct group *g = getgrnam(group);
    int mode = cfg->socket_mode;
    if (g) {
        if (chown(cfg->socket_path, (uid_t)-1, g->gr_gid) < 0)
            log_warn("chown %s to group %s: %s", cfg->socket_path, group, strerror(errno));
    } else if (cfg->socket_group[0]) {
        log_warn("--socket-group %s: no such group; socket keeps its group", group);
    }
    if (mode < 0)
        mode = geteuid() == 0 ? 0660 : 0600;
    if (chmod(cfg->socket_path, (mode_t)mode) < 0)
        log_warn("chmod %s: %s", cfg->socket_path, strerror(errno));
    log_info("socket %s mode %04o%s%s", cfg->socket_path, mode, g ? " group " : "",
             g ? group : "");
}

int server_listen(struct server *s, int inherited_fd)
{
    const char *path = s->cfg->socket_path;
    if (inherited_fd >= 0) {
        int type = 0;
        socklen_t tl = sizeof type;
        if (getsockopt(inherited_fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
            type != SOCK_SEQPACKET) {
            log_error("the socket passed by the service manager is not SOCK_SEQPACKET "
                      "(use ListenSequentialPacket=)");
            return -1;
        }
        s->listen_fd = inherited_fd;
        fcntl(inherited_fd, F_SETFL, fcntl(inherited_fd, F_GETFL) | O_NONBLOCK);
        return 0;
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (live_daemon_at(path)) {
        log_error("another zknallocd is already serving %s; stop it first or pick another "
                  "--socket",
                  path);
        return -1;
    }
    if (make_parent_dir(path) < 0) {
        log_error("cannot create the directory of %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("%s exists and is not a socket; refusing to replace it", path);
            return -1;
        }
        log_info("replacing stale socket %s", path);
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        return -1;
    }
    /* Nobody may connect before the mode is right. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc < 0 || listen(fd, 128) < 0) {
        log_error("bind/listen %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    s->listen_fd = fd;
    s->own_socket_file = 1;
    apply_socket_owner(s);
    return 0;
}
