/* Whom a client trusts with its heap. A daemon at the client's socket path
 * gets to see and write every block it lends, so before the first byte is
 * shared the client checks, with no malloc (this runs inside it):
 *   - the socket's directory: owned by a trusted uid (root, our euid, the
 *     uid in ZK_NALLOC_DAEMON_UID), or by the uid root made it for (its
 *     parent is root's and writable by nobody else, like /run/zknalloc), and
 *     not writable by others. A directory another user made in /tmp fails;
 *   - the peer (SO_PEERCRED): root, our euid, ZK_NALLOC_DAEMON_UID, or the
 *     owner of that directory;
 *   - every received fd: a regular file on tmpfs/shmem or hugetlbfs of the
 *     announced size, sealed against shrinking and growing unless the daemon
 *     announced the tmpfs backing, whose files cannot be sealed.
 * Anything else: one log line, private memory, nothing shared. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"
#include "zkn_proto.h"

#define TMPFS_FS_MAGIC 0x01021994
#define HUGETLBFS_FS_MAGIC 0x958458f6

/* ZK_NALLOC_DAEMON_UID: a numeric uid (no name lookup: that would allocate).
 * (uid_t)-1 when unset or not a number. */
static uid_t configured_uid(void)
{
    const char *s = secure_getenv("ZK_NALLOC_DAEMON_UID");
    uint64_t v = 0;
    if (!s || !*s)
        return (uid_t)-1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > UINT32_MAX / 10)
            return (uid_t)-1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return v >= UINT32_MAX ? (uid_t)-1 : (uid_t)v;
}

static int uid_trusted(uid_t u)
{
    return u == 0 || u == geteuid() || u == configured_uid();
}

/* Cuts path at its last '/', into buf; "" for a path without one. */
static void dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (slash == path)
        n = 1; /* "/sock" lives in "/" */
    if (n >= cap)
        n = 0;
    memcpy(buf, path, n);
    buf[n] = '\0';
}

int zkn__trust_socket_dir(const char *sock_path, uid_t *dir_owner)
{
    char dir[256], parent[256];
    struct stat st, pst;
    dir_of(sock_path, dir, sizeof dir);
    if (!dir[0] || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || (st.st_mode & S_IWOTH))
        return -1;
    *dir_owner = st.st_uid;
    if (uid_trusted(st.st_uid))
        return 0;
    /* Not ours: acceptable when only root could have made it and handed it
     * to its owner (systemd's RuntimeDirectory= under /run, say). */
    dir_of(dir, parent, sizeof parent);
    if (!parent[0] || stat(parent, &pst) != 0 || pst.st_uid != 0 ||
        (pst.st_mode & (S_IWGRP | S_IWOTH)))
        return -1;
    return 0;
}

int zkn__trust_peer(int sock, uid_t dir_owner)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
        return -1;
    return uid_trusted(cr.uid) || cr.uid == dir_owner ? 0 : -1;
}

int zkn__trust_region_fd(int fd, uint64_t size, uint32_t backing)
{
    struct stat st;
    struct statfs fs;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
        return -1;
    if (fstatfs(fd, &fs) != 0 ||
        (fs.f_type != TMPFS_FS_MAGIC && fs.f_type != HUGETLBFS_FS_MAGIC))
        return -1;
    if (backing == ZKN_BACKING_TMPFS_HUGE)
        return 0;
    int seals = fcntl(fd, F_GET_SEALS);
    const int need = F_SEAL_SHRINK | F_SEAL_GROW;
    return seals >= 0 && (seals & need) == need ? 0 : -1;
}
